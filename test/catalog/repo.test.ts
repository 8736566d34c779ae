import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { pullRepo } from "../../src/catalog/pull-repo.js";
import { PullError, type PullProgress } from "../../src/catalog/pull.js";
import type { HubRepoSource } from "../../src/catalog/types.js";
import { COMMIT, filler, REPO, sha256, startRepoHub, type RepoHub } from "./repo-hub.js";

const CONFIG = Buffer.from(JSON.stringify({ model_type: "bert", architectures: ["BertModel"] }));
const TOKENIZER = Buffer.from(JSON.stringify({ model: { vocab: Object.fromEntries(Array.from({ length: 4000 }, (_, i) => [`tok${i}`, i])) } }));
const WEIGHTS = filler(700_000, 7);
const DECODER = filler(300_000, 11);

let hub: RepoHub;
const tmpDirs: string[] = [];

function source(over: Partial<HubRepoSource> = {}): HubRepoSource {
  return {
    repo: REPO,
    revision: "main",
    license: "mit",
    files: [
      { file: "config.json", sha256: null, size: null },
      { file: "tokenizer.json", sha256: null, size: null },
      { file: "onnx/model_quantized.onnx", sha256: null, size: null },
      { file: "onnx/decoder_model_merged_quantized.onnx", sha256: null, size: null },
    ],
    ...over,
  };
}

async function dest(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-repo-"));
  tmpDirs.push(dir);
  return path.join(dir, "catalog", "org__tiny-onnx");
}

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

async function assertInstalled(folder: string): Promise<void> {
  assert.ok((await fs.readFile(path.join(folder, "config.json"))).equals(CONFIG));
  assert.ok((await fs.readFile(path.join(folder, "tokenizer.json"))).equals(TOKENIZER));
  assert.ok((await fs.readFile(path.join(folder, "onnx/model_quantized.onnx"))).equals(WEIGHTS));
  assert.ok((await fs.readFile(path.join(folder, "onnx/decoder_model_merged_quantized.onnx"))).equals(DECODER));
  // Exactly the repo's files: no partials, no pull bookkeeping.
  assert.deepEqual((await fs.readdir(folder, { recursive: true })).sort(), [
    "config.json",
    "onnx",
    "onnx/decoder_model_merged_quantized.onnx",
    "onnx/model_quantized.onnx",
    "tokenizer.json",
  ]);
  assert.equal(await exists(`${folder}.partial-dir`), false);
  assert.equal(await exists(`${folder}.lock`), false);
}

const TOTAL = CONFIG.length + TOKENIZER.length + WEIGHTS.length + DECODER.length;

before(async () => {
  hub = await startRepoHub([
    { file: "config.json", bytes: CONFIG, lfs: false },
    { file: "tokenizer.json", bytes: TOKENIZER, lfs: false },
    { file: "onnx/model_quantized.onnx", bytes: WEIGHTS, lfs: true },
    { file: "onnx/decoder_model_merged_quantized.onnx", bytes: DECODER, lfs: true },
  ]);
});

after(async () => {
  await hub.close();
  await Promise.all(tmpDirs.map((d) => fs.rm(d, { recursive: true, force: true })));
});

beforeEach(() => {
  hub.mode = {};
  hub.requests.length = 0;
});

describe("pullRepo", () => {
  test("pulls every file, verified, into one folder installed at once; progress sums the files", async () => {
    const folder = await dest();
    const progress: PullProgress[] = [];
    const result = await pullRepo(source(), folder, { endpoint: hub.endpoint, onProgress: (p) => progress.push(p) });

    await assertInstalled(folder);
    assert.equal(result.path, folder);
    assert.equal(result.pulled, true);
    assert.equal(result.size, TOTAL);
    assert.equal(result.resumedFrom, 0);
    assert.deepEqual(
      result.files.map((f) => [path.relative(folder, f.path), f.sha256, f.size]),
      [
        ["config.json", sha256(CONFIG), CONFIG.length],
        ["tokenizer.json", sha256(TOKENIZER), TOKENIZER.length],
        ["onnx/model_quantized.onnx", sha256(WEIGHTS), WEIGHTS.length],
        ["onnx/decoder_model_merged_quantized.onnx", sha256(DECODER), DECODER.length],
      ],
    );
    // A HEAD per file first (sizes for the total, and the commit), then every file at that commit.
    const heads = hub.requests.filter((r) => r.method === "HEAD");
    assert.equal(heads.length, 4);
    assert.match(heads[0]!.path, /\/resolve\/main\/config\.json$/);
    for (const h of heads.slice(1)) assert.ok(h.path.includes(`/resolve/${COMMIT}/`), h.path);
    for (const r of hub.requests.filter((r) => r.method === "GET" && r.path.includes("/resolve/"))) assert.ok(r.path.includes(`/resolve/${COMMIT}/`), r.path);
    assert.deepEqual(
      hub.contentGets().map((g) => [g.file, g.range]),
      source().files.map((f) => [f.file, undefined]),
    );

    assert.ok(progress.length >= 4);
    for (const p of progress) assert.equal(p.total, TOTAL);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i]!.received >= progress[i - 1]!.received, "received never goes back");
    assert.equal(progress.at(-1)?.received, TOTAL);
    assert.equal(progress.at(-1)?.etaSec, 0);
  });

  test("a cut transfer resumes file by file: verified files are kept, the cut one continues with a Range", async () => {
    const folder = await dest();
    hub.mode.cut = { file: "onnx/model_quantized.onnx", after: 250_000 };
    await assert.rejects(pullRepo(source(), folder, { endpoint: hub.endpoint }), (e: unknown) => {
      assert.ok(e instanceof PullError, String(e));
      assert.match(e.message, /pull again to resume/);
      return true;
    });
    assert.equal(await exists(folder), false, "nothing installed");
    const staging = `${folder}.partial-dir`;
    assert.ok((await fs.readFile(path.join(staging, "config.json"))).equals(CONFIG));
    assert.ok((await fs.readFile(path.join(staging, "tokenizer.json"))).equals(TOKENIZER));
    const partial = (await fs.stat(path.join(staging, "onnx/model_quantized.onnx.partial"))).size;
    assert.ok(partial > 0 && partial <= 250_000, `partial holds ${partial} bytes`);

    hub.requests.length = 0;
    const progress: PullProgress[] = [];
    const result = await pullRepo(source(), folder, { endpoint: hub.endpoint, onProgress: (p) => progress.push(p) });
    await assertInstalled(folder);
    // Only what was missing is fetched again: no finished file, and only the cut file's missing bytes.
    assert.deepEqual(
      hub.contentGets().map((g) => [g.file, g.range, g.sent]),
      [
        ["onnx/model_quantized.onnx", `bytes=${partial}-`, WEIGHTS.length - partial],
        ["onnx/decoder_model_merged_quantized.onnx", undefined, DECODER.length],
      ],
    );
    assert.deepEqual(
      hub.requests.filter((r) => r.method === "HEAD").map((r) => path.basename(r.path)),
      ["model_quantized.onnx", "decoder_model_merged_quantized.onnx"],
    );
    assert.equal(result.resumedFrom, CONFIG.length + TOKENIZER.length + partial);
    assert.equal(result.size, TOTAL);
    assert.equal(progress.at(-1)?.received, TOTAL);
    assert.equal(progress.at(-1)?.resumedFrom, CONFIG.length + TOKENIZER.length + partial);
  });

  test("an LFS file that does not hash to X-Linked-Etag fails, and nothing is installed", async () => {
    const folder = await dest();
    hub.mode.corrupt = "onnx/model_quantized.onnx";
    await assert.rejects(pullRepo(source(), folder, { endpoint: hub.endpoint }), (e: unknown) => {
      assert.ok(e instanceof PullError);
      assert.equal(e.reason, "checksum");
      assert.match(e.message, new RegExp(`sha256 mismatch .*model_quantized\\.onnx: expected ${sha256(WEIGHTS)}`));
      return true;
    });
    assert.equal(await exists(folder), false);
    assert.equal(await exists(path.join(`${folder}.partial-dir`, "onnx/model_quantized.onnx.partial")), false, "the bad bytes are dropped");
    assert.equal(await exists(path.join(`${folder}.partial-dir`, "onnx/model_quantized.onnx")), false);

    hub.mode = {};
    await pullRepo(source(), folder, { endpoint: hub.endpoint });
    await assertInstalled(folder);
  });

  test("a git file is checked against the git blob id the hub sends as ETag", async () => {
    const folder = await dest();
    hub.mode.etag = { file: "tokenizer.json", value: "f".repeat(40) };
    await assert.rejects(pullRepo(source(), folder, { endpoint: hub.endpoint }), (e: unknown) => {
      assert.ok(e instanceof PullError);
      assert.equal(e.reason, "checksum");
      assert.match(e.message, /git blob id mismatch for .*tokenizer\.json: expected f{40} \(the hub's ETag\), got [0-9a-f]{40}$/);
      return true;
    });
    assert.equal(await exists(folder), false);
  });

  test("a file with neither X-Linked-Etag nor a git blob ETag is refused", async () => {
    const folder = await dest();
    hub.mode.etag = { file: "config.json", value: null };
    await assert.rejects(pullRepo(source(), folder, { endpoint: hub.endpoint }), (e: unknown) => e instanceof PullError && e.reason === "unverifiable");
    assert.equal(await exists(folder), false);
  });

  test("a catalog sha256 is used when given, whatever the hub says", async () => {
    const folder = await dest();
    const files = source().files.map((f) => (f.file === "config.json" ? { ...f, sha256: "0".repeat(64) } : f));
    await assert.rejects(pullRepo(source({ files }), folder, { endpoint: hub.endpoint }), /sha256 mismatch for .*config\.json: expected 0{64}/);
    assert.equal(await exists(folder), false);
  });

  test("concurrent pulls of the same repo fetch each file once and install one good folder", async () => {
    const folder = await dest();
    hub.mode.delayMs = 20;
    const results = await Promise.all([1, 2, 3].map(() => pullRepo(source(), folder, { endpoint: hub.endpoint })));
    await assertInstalled(folder);
    assert.deepEqual(results.map((r) => r.pulled).sort(), [false, false, true]);
    for (const r of results) assert.equal(r.size, TOTAL);
    assert.deepEqual(
      hub.contentGets().map((g) => g.file),
      source().files.map((f) => f.file),
    );
  });

  test("a lock left by a dead process is taken over", async () => {
    const folder = await dest();
    const dead = spawnSync(process.execPath, ["-e", "0"]).pid;
    await fs.mkdir(path.dirname(folder), { recursive: true });
    await fs.writeFile(`${folder}.lock`, String(dead));
    await pullRepo(source(), folder, { endpoint: hub.endpoint });
    await assertInstalled(folder);
  });

  test("an optional file the repo lacks is left out; a required one fails before any download", async () => {
    const folder = await dest();
    const files = [...source().files, { file: "generation_config.json", sha256: null, size: null, optional: true }];
    const result = await pullRepo(source({ files }), folder, { endpoint: hub.endpoint });
    await assertInstalled(folder);
    assert.equal(result.size, TOTAL);

    const other = await dest();
    hub.requests.length = 0;
    const missing = [...source().files, { file: "generation_config.json", sha256: null, size: null }];
    await assert.rejects(pullRepo(source({ files: missing }), other, { endpoint: hub.endpoint }), (e: unknown) => e instanceof PullError && e.httpStatus === 404);
    assert.deepEqual(hub.contentGets(), [], "refused at the HEAD stage");
    assert.equal(await exists(other), false);
  });

  test("file names that could leave the folder or collide are refused before any request", async () => {
    const folder = await dest();
    for (const file of ["../escape.json", "onnx/../../x", "/abs.json", "a\\b.json", "x.partial"]) {
      const files = [{ file, sha256: null, size: null }];
      await assert.rejects(pullRepo(source({ files }), folder, { endpoint: hub.endpoint }), (e: unknown) => e instanceof PullError && e.reason === "invalid", file);
    }
    const clash = [
      { file: "onnx", sha256: null, size: null },
      { file: "onnx/model.onnx", sha256: null, size: null },
    ];
    await assert.rejects(pullRepo(source({ files: clash }), folder, { endpoint: hub.endpoint }), /invalid file name "onnx"/);
    await assert.rejects(pullRepo(source({ files: [] }), folder, { endpoint: hub.endpoint }), /no files listed/);
    assert.equal(hub.requests.length, 0);
  });

  test("a partial folder from another revision is started afresh", async () => {
    const folder = await dest();
    const staging = `${folder}.partial-dir`;
    await fs.mkdir(staging, { recursive: true });
    await fs.writeFile(path.join(staging, ".borde-pull.json"), JSON.stringify({ revision: "v0", commit: "a".repeat(40) }));
    await fs.writeFile(path.join(staging, "config.json"), "{}"); // from that other revision
    await pullRepo(source(), folder, { endpoint: hub.endpoint });
    await assertInstalled(folder);
  });
});
