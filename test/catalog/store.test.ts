import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import type { EngineName } from "../../src/engines/contract.js";
import { BordeError } from "../../src/errors.js";
import { ModelStore } from "../../src/catalog/store.js";
import type { CatalogEntry, Task } from "../../src/catalog/types.js";
import { filler, REPO, startRepoHub, type RepoHub } from "./repo-hub.js";

const CONFIG = Buffer.from('{"model_type":"distilbert"}');
const WEIGHTS = filler(200_000, 3);
const ID = "@cf/org/tiny-classifier";

const ENTRY: CatalogEntry = {
  id: ID,
  task: "text-classification",
  engine: "onnx",
  description: "a tiny repo",
  source: {
    repo: REPO,
    revision: "main",
    license: "apache-2.0",
    files: [
      { file: "config.json", sha256: null, size: null },
      { file: "onnx/model_quantized.onnx", sha256: null, size: null },
    ],
  },
};
const GGUF: CatalogEntry = {
  id: "@cf/org/tiny-llama",
  task: "text-generation",
  description: "a GGUF",
  source: { repo: "org/tiny-llama", file: "tiny.Q4_K_M.gguf", revision: "main", sha256: null, size: 123, license: "mit" },
};

let hub: RepoHub;
const tmpDirs: string[] = [];

/** What the fake inspector was asked about, and what it answers: folders by their marker file. */
const inspected: string[] = [];
async function inspect(p: string): Promise<{ task: Task; engine: EngineName }> {
  inspected.push(p);
  const st = await fs.stat(p);
  if (st.isFile()) return { task: "text-generation", engine: "llama" };
  const has = (f: string) => fs.stat(path.join(p, f)).then(() => true, () => false);
  if (await has("config.json")) return { task: "text-classification", engine: "onnx" };
  if (await has("model.json")) return { task: "image-classification", engine: "tfjs" };
  throw new Error("neither a hub repo nor a TF.js model");
}

async function store(): Promise<ModelStore> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-store-"));
  tmpDirs.push(dir);
  return new ModelStore({ dir, inspect, catalog: [ENTRY, GGUF], bundled: [] });
}

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

before(async () => {
  hub = await startRepoHub([
    { file: "config.json", bytes: CONFIG, lfs: false },
    { file: "onnx/model_quantized.onnx", bytes: WEIGHTS, lfs: true },
  ]);
});

after(async () => {
  await hub.close();
  await Promise.all(tmpDirs.map((d) => fs.rm(d, { recursive: true, force: true })));
});

beforeEach(() => {
  hub.mode = {};
  hub.requests.length = 0;
  inspected.length = 0;
});

describe("ModelStore with repo entries", () => {
  test("an un-pulled repo model is 5007 with the pull hint, listed as not installed", async () => {
    const s = await store();
    await assert.rejects(s.resolve(ID), (e: unknown) => {
      assert.ok(e instanceof BordeError);
      assert.equal(e.code, 5007);
      assert.match(e.message, new RegExp(`not installed on this node: run \`borde models pull ${ID}\``));
      return true;
    });
    const listed = (await s.list()).find((m) => m.id === ID);
    assert.deepEqual(listed && { installed: listed.installed, path: listed.path, sizeBytes: listed.sizeBytes, engine: listed.engine }, {
      installed: false,
      path: null,
      sizeBytes: null,
      engine: "onnx",
    });
  });

  test("pull installs the folder; resolve and list give the folder; remove deletes it", async () => {
    const s = await store();
    const folder = path.join(s.dir, "catalog", "cf__org__tiny-classifier");
    const r = await s.pull(ID, { endpoint: hub.endpoint });
    assert.ok("files" in r && r.pulled);
    assert.equal(r.path, folder);
    assert.ok((await fs.readFile(path.join(folder, "onnx/model_quantized.onnx"))).equals(WEIGHTS));

    const info = await s.resolve(ID);
    assert.deepEqual(
      { path: info.path, engine: info.engine, task: info.task, installed: info.installed, size: info.sizeBytes, license: info.license },
      { path: folder, engine: "onnx", task: "text-classification", installed: true, size: CONFIG.length + WEIGHTS.length, license: "apache-2.0" },
    );
    const listed = (await s.list()).find((m) => m.id === ID);
    assert.equal(listed?.installed, true);
    assert.equal(listed?.path, folder);
    assert.equal(listed?.sizeBytes, CONFIG.length + WEIGHTS.length);

    // A second pull finds it installed and fetches nothing.
    hub.requests.length = 0;
    const again = await s.pull(ID, { endpoint: hub.endpoint });
    assert.ok("files" in again && !again.pulled);
    assert.equal(hub.requests.length, 0);

    assert.equal(await s.remove(ID), true);
    assert.equal(await exists(folder), false);
    assert.equal(await s.remove(ID), false);
    await assert.rejects(s.resolve(ID), (e: unknown) => e instanceof BordeError && e.code === 5007);
  });

  test("remove also clears what an interrupted pull left", async () => {
    const s = await store();
    hub.mode.cut = { file: "onnx/model_quantized.onnx", after: 50_000 };
    await assert.rejects(s.pull(ID, { endpoint: hub.endpoint }));
    const staging = path.join(s.dir, "catalog", "cf__org__tiny-classifier.partial-dir");
    assert.ok(await exists(staging));
    assert.equal(await s.remove(ID), true);
    assert.equal(await exists(staging), false);
  });

  test("GGUF entries keep their file path", async () => {
    const s = await store();
    assert.equal(s.catalogPath(GGUF), path.join(s.dir, "catalog", "cf__org__tiny-llama.gguf"));
    const listed = (await s.list()).find((m) => m.id === GGUF.id);
    assert.deepEqual(listed && { engine: listed.engine, sizeBytes: listed.sizeBytes, installed: listed.installed }, { engine: "llama", sizeBytes: 123, installed: false });
  });
});

describe("ModelStore operator folders", () => {
  async function layout(): Promise<ModelStore> {
    const s = await store();
    const put = async (rel: string, text = "{}") => {
      await fs.mkdir(path.dirname(path.join(s.dir, rel)), { recursive: true });
      await fs.writeFile(path.join(s.dir, rel), text);
    };
    await put("my-bert/config.json");
    await put("my-bert/onnx/model.onnx", "weights");
    await put("my-tfjs/model.json");
    await put("junk/readme.txt", "not a model");
    await put("catalog/config.json"); // the catalog's own folder is never an operator model
    await put(".hidden/config.json");
    await put("bad name/config.json");
    await put("story.gguf", "gguf bytes");
    await put("story/config.json"); // the file of the same name wins
    await put("notes.txt", "not a model");
    return s;
  }

  test("top-level folders are @local/<name> when the inspector accepts them", async () => {
    const s = await layout();
    const local = (await s.list()).filter((m) => m.source === "local");
    assert.deepEqual(
      local.map((m) => [m.id, m.engine, m.task, path.relative(s.dir, m.path!), m.description]),
      [
        ["@local/my-bert", "onnx", "text-classification", "my-bert", "Operator folder my-bert"],
        ["@local/my-tfjs", "tfjs", "image-classification", "my-tfjs", "Operator folder my-tfjs"],
        ["@local/story", "llama", "text-generation", "story.gguf", "Operator file story.gguf"],
      ],
    );
    assert.equal(local[0]?.sizeBytes, "{}".length + "weights".length);
    for (const p of inspected) {
      const rel = path.relative(s.dir, p);
      assert.ok(!rel.startsWith("..") && !rel.includes(path.sep), `inspected only direct children: ${rel}`);
      assert.ok(!["catalog", ".hidden", "bad name", "story", "notes.txt"].includes(rel), `never inspected ${rel}`);
    }
  });

  test("resolve gives the folder; folders it rejects, catalog/ and escapes are 5007 or 3042", async () => {
    const s = await layout();
    const info = await s.resolve("@local/my-bert");
    assert.deepEqual([info.path, info.engine, info.task, info.source], [path.join(s.dir, "my-bert"), "onnx", "text-classification", "local"]);
    assert.equal((await s.resolve("@local/story")).path, path.join(s.dir, "story.gguf"));

    await assert.rejects(s.resolve("@local/junk"), (e: unknown) => e instanceof BordeError && e.code === 5007 && /junk is not a model folder/.test(e.message));
    await assert.rejects(s.resolve("@local/catalog"), (e: unknown) => e instanceof BordeError && e.code === 5007);
    await assert.rejects(s.resolve("@local/nothing"), (e: unknown) => e instanceof BordeError && e.code === 5007 && /a model folder named nothing/.test(e.message));
    for (const id of ["@local/..", "@local/../x", "@local/my-bert/onnx", "@local/.hidden"]) {
      await assert.rejects(s.resolve(id), (e: unknown) => e instanceof BordeError && (e.code === 3042 || e.code === 5007), id);
    }
  });

  test("the inspector's answer is kept until something in the folder changes (seen within a second)", async () => {
    const s = await layout();
    await s.resolve("@local/my-bert");
    await s.resolve("@local/my-bert");
    assert.equal(inspected.filter((p) => p.endsWith("my-bert")).length, 1);
    await fs.writeFile(path.join(s.dir, "my-bert/onnx/model.onnx"), "other weights");
    // A folder's stamp is reused for a second (one walk per burst of requests): a change shows after it.
    await new Promise((r) => setTimeout(r, 1100));
    await s.resolve("@local/my-bert");
    assert.equal(inspected.filter((p) => p.endsWith("my-bert")).length, 2);
  });

  test("remove deletes an operator folder", async () => {
    const s = await layout();
    assert.equal(await s.remove("@local/my-tfjs"), true);
    assert.equal(await exists(path.join(s.dir, "my-tfjs")), false);
    assert.equal(await s.remove("@local/junk"), false, "not a model: left alone");
    assert.ok(await exists(path.join(s.dir, "junk")));
  });
});
