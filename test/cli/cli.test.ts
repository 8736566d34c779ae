/**
 * The real CLI, run as child processes from source (test/cli/borde.ts): help and usage errors,
 * `borde dev`, `borde ai run` against it, and `borde models list|pull|rm` against an imitation hub.
 * Every child gets its own HOME and no BORDE_* / HF_* variables but those a test sets.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { borde, cleanup, deadUrl, exists, startDev, startHub, STORIES, STORIES_REFERENCE, tmpDir, type DevNode, type Hub, type Result } from "./helpers.js";

const PROMPT = "Once upon a time";
const GEN = ["--prompt", PROMPT, "--temperature", "0", "--max-tokens", "20"];
const DEV_ACCOUNT = "acct_cli";
const DEV_TOKEN = "cli-test-token-0123456789";
/** A catalog entry without a pinned sha256, so a pull verifies against the hub's X-Linked-Etag. */
const PULL_ID = "@cf/baai/bge-base-en-v1.5";
const PULL_FILE = "catalog/cf__baai__bge-base-en-v1.5.gguf";

let home: string; // an empty HOME: no saved dev state
after(cleanup);
before(async () => {
  home = await tmpDir("borde-cli-home-");
});

function show(r: Result): string {
  return `exit ${r.code ?? r.signal}\n--- stdout\n${r.stdout.slice(0, 3000)}\n--- stderr\n${r.stderr.slice(-3000)}`;
}

/** Failed, with exactly one line on stderr, `borde: ...`, and no stack trace. */
function assertOneLineError(r: Result, code?: number, pattern?: RegExp): string {
  assert.notEqual(r.code, 0, show(r));
  if (code !== undefined) assert.equal(r.code, code, show(r));
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, show(r));
  assert.match(lines[0]!, /^borde: \S/, show(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, show(r));
  if (pattern) assert.match(lines[0]!, pattern, show(r));
  return lines[0]!;
}

/** A failed pull: progress lines may precede it, but the one `borde:` line is last and there is no stack. */
function assertFailedPull(r: Result, pattern: RegExp): void {
  assert.notEqual(r.code, 0, show(r));
  const lines = r.stderr.trimEnd().split("\n");
  const errors = lines.filter((l) => l.startsWith("borde:"));
  assert.equal(errors.length, 1, show(r));
  assert.equal(lines.at(-1), errors[0], show(r));
  assert.match(errors[0]!, pattern, show(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, show(r));
  for (const l of lines.slice(0, -1)) assert.ok(l.startsWith(PULL_ID), `not a progress line: ${l}\n${show(r)}`);
}

/** The text stories260K writes after PROMPT, as the CLI prints it. */
function assertContinuation(stdout: string): void {
  assert.ok(stdout.endsWith("\n"), JSON.stringify(stdout));
  const text = stdout.slice(0, -1);
  assert.ok(text.startsWith(", there was a little girl named Lily"), JSON.stringify(stdout));
  assert.ok(STORIES_REFERENCE.startsWith(PROMPT + text), JSON.stringify(stdout));
}

describe("help and usage errors", { timeout: 60_000 }, () => {
  test("--help of every command exits 0 and prints usage", async () => {
    const runs = await Promise.all([["--help"], ["dev", "--help"], ["ai", "--help"], ["models", "--help"], ["ai", "run", "--help"]].map((a) => borde(a, { home })));
    const [top, dev, ai, models, aiRun] = runs as [Result, Result, Result, Result, Result];
    for (const r of runs) {
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, /Usage: borde/, show(r));
      assert.equal(r.stderr, "", show(r));
    }
    assert.match(top.stdout, /Commands:[\s\S]*\bdev\b[\s\S]*\bai run\b[\s\S]*\bmodels\b/);
    assert.match(dev.stdout, /--port N[\s\S]*--models-dir DIR[\s\S]*BORDE_DEV_TOKEN/);
    assert.match(ai.stdout, /--prompt TEXT[\s\S]*--url URL[\s\S]*--token TOKEN/);
    assert.match(aiRun.stdout, /Usage: borde ai run/);
    assert.match(models.stdout, /list[\s\S]*pull <id>[\s\S]*rm <id>[\s\S]*HF_ENDPOINT/);
  });

  test("unknown command, unknown flag and bad values exit non-zero with one `borde:` line", async () => {
    const [cmd, flag, port, aiFlag, sub, noModel, bothInputs] = await Promise.all(
      [
        ["frobnicate"],
        ["dev", "--frobnicate"],
        ["dev", "--port", "abc"],
        ["ai", "run", "@borde/stories260k", "--prompt", "x", "--bogus"],
        ["models", "frob"],
        ["ai", "run", "--prompt", "x"],
        ["ai", "run", "@borde/stories260k", "--prompt", "x", "--text", "y"],
      ].map((a) => borde(a, { home })),
    );
    assertOneLineError(cmd!, 2, /unknown command "frobnicate"/);
    assertOneLineError(flag!, 2, /--frobnicate/);
    assertOneLineError(port!, 2, /--port must be an integer.*"abc"/);
    assertOneLineError(aiFlag!, 2, /--bogus/);
    assertOneLineError(sub!, 2, /unknown subcommand "models frob"/);
    assertOneLineError(noModel!, 2, /model id/);
    assertOneLineError(bothInputs!, 2, /--prompt or --text/);
    for (const r of [cmd, flag, port]) assert.equal(r!.stdout, "", show(r!));
  });

  test("no command prints help and exits 2", async () => {
    const r = await borde([], { home });
    assert.equal(r.code, 2, show(r));
    assert.match(r.stdout, /Usage: borde <command>/);
  });
});

describe("borde dev and borde ai run", { timeout: 60_000 }, () => {
  let devHome: string;
  let modelsDir: string;
  let dev: DevNode;

  before(async () => {
    devHome = await tmpDir("borde-cli-devhome-");
    modelsDir = await tmpDir("borde-cli-models-");
    dev = await startDev(["--port", "0", "--host", "127.0.0.1", "--models-dir", modelsDir, "--threads", "1", "--parallel", "2"], {
      home: devHome,
      env: { BORDE_DEV_ACCOUNT: DEV_ACCOUNT, BORDE_DEV_TOKEN: DEV_TOKEN },
    });
  });
  after(async () => {
    await dev?.stop("SIGKILL");
  });

  test("prints its URL, the fixed account and token, and saves them for other commands", async () => {
    assert.match(dev.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(new URL(dev.url).port, "0");
    assert.equal(dev.account, DEV_ACCOUNT);
    assert.equal(dev.token, DEV_TOKEN);
    assert.equal(dev.generatedAccount, false, dev.stdout());
    assert.equal(dev.generatedToken, false, dev.stdout());
    assert.ok(dev.stdout().includes(`models   ${modelsDir}`), dev.stdout());
    const saved = JSON.parse(await fs.readFile(path.join(devHome, ".borde/dev.json"), "utf8")) as unknown;
    assert.deepEqual(saved, { url: dev.url, accountId: DEV_ACCOUNT, token: DEV_TOKEN });
    // stdout is for people; logs are JSON lines on stderr.
    const complete = dev.stderr().slice(0, dev.stderr().lastIndexOf("\n") + 1);
    assert.notEqual(complete, "");
    for (const line of complete.trimEnd().split("\n")) assert.doesNotThrow(() => JSON.parse(line), line);
  });

  test("serves @borde/stories260k over HTTP with the printed token", async () => {
    const res = await fetch(`${dev.url}/client/v4/accounts/${dev.account}/ai/run/@borde/stories260k`, {
      method: "POST",
      headers: { authorization: `Bearer ${dev.token}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: PROMPT, temperature: 0, max_tokens: 20 }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { success: boolean; result: { response: string } };
    assert.equal(body.success, true);
    assert.ok(body.result.response.startsWith(", there was a little girl named Lily"), body.result.response);
  });

  test("ai run --url --token prints the continuation", async () => {
    const r = await borde(["ai", "run", "@borde/stories260k", ...GEN, "--url", dev.url, "--token", dev.token], { home });
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stderr, "", show(r));
    assertContinuation(r.stdout);
  });

  test("ai run --stream prints the same text", async () => {
    // One after the other: requests batched together may differ in the last bits, and so in a greedy pick.
    const plain = await borde(["ai", "run", "@borde/stories260k", ...GEN, "--url", dev.url, "--token", dev.token], { home });
    const streamed = await borde(["ai", "run", "@borde/stories260k", ...GEN, "--stream", "--url", `${dev.url}/`, "--token", dev.token], { home });
    assert.equal(plain.code, 0, show(plain));
    assert.equal(streamed.code, 0, show(streamed));
    assertContinuation(streamed.stdout);
    assert.equal(streamed.stdout, plain.stdout);
  });

  test("ai run takes BORDE_URL / BORDE_TOKEN from the environment", async () => {
    const r = await borde(["ai", "run", "@borde/stories260k", ...GEN], { home, env: { BORDE_URL: dev.url, BORDE_TOKEN: dev.token } });
    assert.equal(r.code, 0, show(r));
    assertContinuation(r.stdout);
  });

  test("ai run without --url / --token finds the dev node saved in the same HOME", async () => {
    const r = await borde(["ai", "run", "@borde/stories260k", ...GEN], { home: devHome });
    assert.equal(r.code, 0, show(r));
    assertContinuation(r.stdout);
    // ...and with another HOME there is no token to use.
    const none = await borde(["ai", "run", "@borde/stories260k", ...GEN], { home });
    assertOneLineError(none, 2, /no API token/);
  });

  test("ai run --text prints an embedding as JSON", async () => {
    const r = await borde(["ai", "run", "@borde/stories260k", "--text", "hello", "--url", dev.url, "--token", dev.token], { home });
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stdout.trimEnd().split("\n").length, 1, show(r));
    const result = JSON.parse(r.stdout) as { shape: number[]; data: number[][] };
    assert.equal(result.shape[0], 1);
    assert.equal(result.data.length, 1);
    assert.equal(result.data[0]!.length, result.shape[1]);
    assert.ok(result.data[0]!.every((x) => typeof x === "number" && Number.isFinite(x)));
  });

  test("ai run --json prints the whole result", async () => {
    const r = await borde(["ai", "run", "@borde/stories260k", ...GEN, "--json", "--url", dev.url, "--token", dev.token], { home });
    assert.equal(r.code, 0, show(r));
    const result = JSON.parse(r.stdout) as { response: string };
    assertContinuation(`${result.response}\n`);
  });

  test("a wrong token exits 1 with one `borde: 401: ...` line", async () => {
    // Account unknown locally (asked of the node first), and known from the saved dev state.
    const [viaVerify, viaRun] = await Promise.all([
      borde(["ai", "run", "@borde/stories260k", ...GEN, "--url", dev.url, "--token", "wrong-token-123"], { home }),
      borde(["ai", "run", "@borde/stories260k", ...GEN, "--token", "wrong-token-123"], { home: devHome }),
    ]);
    for (const r of [viaVerify, viaRun]) {
      assertOneLineError(r, 1, /^borde: 401: .*invalid API token/);
      assert.equal(r.stdout, "", show(r));
    }
  });

  test("an unreachable node exits non-zero with one line", async () => {
    const url = await deadUrl();
    const r = await borde(["ai", "run", "@borde/stories260k", ...GEN, "--url", url, "--token", DEV_TOKEN], { home });
    assertOneLineError(r, undefined, new RegExp(`cannot reach ${url.replaceAll(".", "\\.")}`));
  });

  test("an unknown model exits 1 with the node's error", async () => {
    const r = await borde(["ai", "run", "@cf/meta/llama-3.2-1b-instruct", ...GEN, "--url", dev.url, "--token", dev.token], { home });
    assertOneLineError(r, 1, /^borde: \d{3}: .*borde models pull @cf\/meta\/llama-3\.2-1b-instruct/);
  });

  test("SIGTERM stops borde dev with exit 0", async () => {
    const exit = await dev.stop("SIGTERM");
    assert.deepEqual(exit, { code: 0, signal: null }, dev.stderr().slice(-2000));
    await assert.rejects(fetch(dev.url));
  });
});

test("borde dev without BORDE_DEV_* generates an account and a token and prints them", { timeout: 30_000 }, async () => {
  const devHome = await tmpDir("borde-cli-devhome-");
  const modelsDir = await tmpDir("borde-cli-models-");
  const dev = await startDev(["--port", "0", "--models-dir", modelsDir, "--threads", "1"], { home: devHome });
  try {
    assert.ok(dev.generatedAccount, dev.stdout());
    assert.ok(dev.generatedToken, dev.stdout());
    assert.match(dev.account, /^[A-Za-z0-9_-]{1,64}$/);
    assert.ok(dev.token.length >= 8, dev.token);
    assert.notEqual(dev.account, DEV_ACCOUNT);
    assert.notEqual(dev.token, DEV_TOKEN);
    const saved = JSON.parse(await fs.readFile(path.join(devHome, ".borde/dev.json"), "utf8")) as unknown;
    assert.deepEqual(saved, { url: dev.url, accountId: dev.account, token: dev.token });
    // The generated token is the one the node accepts.
    const res = await fetch(`${dev.url}/client/v4/user/tokens/verify`, { headers: { authorization: `Bearer ${dev.token}` } });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { result: { account_id: string } }).result.account_id, dev.account);
  } finally {
    assert.deepEqual(await dev.stop("SIGTERM"), { code: 0, signal: null }, dev.stderr().slice(-2000));
  }
});

interface Listed {
  id: string;
  task: string;
  source: string;
  installed: boolean;
  path: string | null;
  sizeBytes: number | null;
}

/** `models list` as a table: id → row cells. */
function table(stdout: string): Map<string, string[]> {
  const [head, ...rows] = stdout.trimEnd().split("\n");
  assert.deepEqual(head!.split(/\s{2,}/), ["ID", "TASK", "SOURCE", "INSTALLED", "SIZE"]);
  return new Map(rows.map((r) => r.split(/\s{2,}/)).map((cells) => [cells[0]!, cells]));
}

describe("borde models", { timeout: 60_000 }, () => {
  let dir: string;
  let hub: Hub;

  before(async () => {
    dir = await tmpDir("borde-cli-store-");
    hub = await startHub(STORIES);
  });
  after(async () => {
    await hub?.close();
  });

  const models = (args: string[], env: Record<string, string> = {}) =>
    borde(["models", ...args, "--models-dir", dir], { home, env: { HF_ENDPOINT: hub.endpoint, ...env } });

  test("list shows the bundled model and the catalog, nothing pulled", async () => {
    const r = await models(["list"]);
    assert.equal(r.code, 0, show(r));
    const rows = table(r.stdout);
    assert.deepEqual(rows.get("@borde/stories260k")?.slice(1, 4), ["text-generation", "bundled", "yes"]);
    const catalog = [...rows.values()].filter((c) => c[2] === "catalog");
    assert.ok(catalog.length >= 2, r.stdout);
    for (const c of catalog) assert.equal(c[3], "no", c.join(" "));
    assert.deepEqual(rows.get(PULL_ID)?.slice(1, 4), ["text-embeddings", "catalog", "no"]);
    assert.equal(rows.get(PULL_ID)?.[4], "?"); // no size in the catalog
  });

  test("a .gguf copied into the folder is listed as @local/<stem>; --json is JSON", async () => {
    await fs.copyFile(STORIES, path.join(dir, "my-story.gguf"));
    await fs.writeFile(path.join(dir, "notes.txt"), "not a model");
    try {
      const [text, json] = await Promise.all([models(["list"]), models(["list", "--json"])]);
      assert.equal(text.code, 0, show(text));
      assert.deepEqual(table(text.stdout).get("@local/my-story")?.slice(1, 4), ["text-generation", "local", "yes"]);
      assert.equal(json.code, 0, show(json));
      const list = JSON.parse(json.stdout) as Listed[];
      assert.ok(Array.isArray(list));
      const local = list.find((m) => m.id === "@local/my-story");
      assert.deepEqual(
        local && { task: local.task, source: local.source, installed: local.installed, path: local.path },
        { task: "text-generation", source: "local", installed: true, path: path.join(dir, "my-story.gguf") },
      );
      assert.equal(list.find((m) => m.id === PULL_ID)?.installed, false);
      assert.equal(list.find((m) => m.id === "@borde/stories260k")?.installed, true);
      assert.equal(list.filter((m) => m.source === "local").length, 1);
    } finally {
      await fs.rm(path.join(dir, "my-story.gguf"));
      await fs.rm(path.join(dir, "notes.txt"));
    }
  });

  test("pull with a checksum mismatch fails with one line and installs nothing", async () => {
    hub.mode.linkedEtag = "0".repeat(64);
    try {
      const r = await models(["pull", PULL_ID]);
      assertFailedPull(r, /^borde: sha256 mismatch/);
      assert.equal(r.stdout, "", show(r));
    } finally {
      delete hub.mode.linkedEtag;
    }
    assert.equal(await exists(path.join(dir, PULL_FILE)), false);
    assert.equal(await exists(path.join(dir, `${PULL_FILE}.partial`)), false);
    const list = JSON.parse((await models(["list", "--json"])).stdout) as Listed[];
    assert.equal(list.find((m) => m.id === PULL_ID)?.installed, false);
  });

  test("pull downloads from the hub (HF_ENDPOINT), verifies against X-Linked-Etag and installs", async () => {
    const before = hub.requests.length;
    const r = await models(["pull", PULL_ID]);
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, new RegExp(`^pulled ${PULL_ID.replaceAll(".", "\\.")} -> .*\\(${hub.size} bytes, sha256 ${hub.sha256}\\)\n$`));
    const file = path.join(dir, PULL_FILE);
    assert.ok(r.stdout.includes(file), r.stdout);
    const got = createHash("sha256").update(await fs.readFile(file)).digest("hex");
    assert.equal(got, hub.sha256);
    assert.equal(await exists(`${file}.partial`), false);
    const asked = hub.requests.slice(before);
    assert.deepEqual(asked, [{ path: "/CompendiumLabs/bge-base-en-v1.5-gguf/resolve/main/bge-base-en-v1.5-f16.gguf", range: undefined }]);

    const [text, json] = await Promise.all([models(["list"]), models(["list", "--json"])]);
    assert.deepEqual(table(text.stdout).get(PULL_ID)?.slice(1, 5), ["text-embeddings", "catalog", "yes", `${(hub.size / 1e6).toFixed(1)} MB`]);
    const entry = (JSON.parse(json.stdout) as Listed[]).find((m) => m.id === PULL_ID);
    assert.equal(entry?.installed, true);
    assert.equal(entry?.path, file);
    assert.equal(entry?.sizeBytes, hub.size);
  });

  test("rm removes a pulled model; a second rm fails with one line", async () => {
    const r = await models(["rm", PULL_ID]);
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stdout, `removed ${PULL_ID}\n`);
    assert.equal(await exists(path.join(dir, PULL_FILE)), false);
    const list = JSON.parse((await models(["list", "--json"])).stdout) as Listed[];
    assert.equal(list.find((m) => m.id === PULL_ID)?.installed, false);

    const again = await models(["rm", PULL_ID]);
    assertOneLineError(again, undefined, /not installed/);
    const bundled = await models(["rm", "@borde/stories260k"]);
    assertOneLineError(bundled, undefined, /cannot be removed/);
  });

  test("a pull cut mid-transfer resumes from the partial file with a Range request", async () => {
    const cut = 300_000;
    const file = path.join(dir, PULL_FILE);
    hub.mode.cutAfter = cut;
    const first = await models(["pull", PULL_ID]);
    assertFailedPull(first, /^borde: transfer of .* (was cut|ended early).*pull again to resume/);
    assert.equal(await exists(file), false);
    const partial = (await fs.stat(`${file}.partial`)).size;
    assert.ok(partial > 0 && partial <= cut, `partial is ${partial} bytes`);

    const before = hub.requests.length;
    const second = await models(["pull", PULL_ID]);
    assert.equal(second.code, 0, show(second));
    assert.match(second.stdout, new RegExp(`\\(${hub.size} bytes, sha256 ${hub.sha256}, resumed at ${partial}\\)\n$`));
    assert.deepEqual(
      hub.requests.slice(before).map((q) => q.range),
      [`bytes=${partial}-`],
    );
    assert.equal(createHash("sha256").update(await fs.readFile(file)).digest("hex"), hub.sha256);
    assert.equal(await exists(`${file}.partial`), false);
  });

  test("pull of an id that is not in the catalog fails with one line", async () => {
    const r = await models(["pull", "@cf/nobody/nothing"]);
    assertOneLineError(r, undefined, /No such model @cf\/nobody\/nothing in the catalog/);
  });
});
