import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { bundleProject, deployBody } from "../../src/workers/deploy/bundle.js";
import { ConfigFileError, parseJsonc, readWranglerConfig } from "../../src/workers/deploy/config.js";
import { MAX_UPLOAD_BYTES } from "../../src/workers/deploy/schema.js";
import type { LogEvent } from "../../src/workers/types.js";
import { ACCOUNT, PROJECTS, startWorkersServer, TOKEN, type WorkersServer } from "./deploy-helpers.js";

const project = (name: string) => path.join(PROJECTS, name);

/** A raw HTTP request (fetch would not let the test choose the Host header). */
function rawRequest(port: number, opts: { host: string; path: string; method?: string }): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: opts.path, method: opts.method ?? "GET", headers: { host: opts.host } }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Asserts a refusal: 4xx, Cloudflare's envelope, and the code given. */
function refused(r: { status: number; json: any }, status: number, code: number): void {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.equal(r.json.success, false);
  assert.equal(r.json.errors[0].code, code, JSON.stringify(r.json));
}

async function helloBody(vars: Record<string, string> = {}) {
  const b = await bundleProject(project("hello"));
  return deployBody(b.modules, { ...b.settings, vars: { ...b.settings.vars, ...vars } });
}

describe("bundling wrangler projects", () => {
  it("text generation (TypeScript, wrangler.toml): one ESM module, types stripped, the AI binding", async () => {
    const b = await bundleProject(project("text-generation"));
    assert.equal(b.name, "text-generation");
    assert.deepEqual(
      b.modules.map((m) => [m.name, m.type]),
      [["index.js", "esm"]],
    );
    const code = Buffer.from(b.modules[0]!.content).toString("utf8");
    assert.match(code, /env\.AI\.run\("@local\/stories"/);
    assert.doesNotMatch(code, /interface Env|: Request/);
    assert.match(code, /export\s*\{[^}]*default/);
    assert.equal(b.settings.aiBinding, "AI");
    assert.equal(b.settings.compatibilityDate, "2025-01-01");
    assert.deepEqual(b.warnings, []);
  });

  it("streaming and embeddings (wrangler.jsonc with comments and trailing commas)", async () => {
    const s = await bundleProject(project("streaming"));
    assert.equal(s.modules.length, 1);
    assert.match(Buffer.from(s.modules[0]!.content).toString(), /stream: true/);
    const e = await bundleProject(project("embeddings"));
    assert.equal(e.name, "embeddings");
    assert.equal(e.settings.aiBinding, "AI");
    assert.equal(path.basename(e.project.file), "wrangler.jsonc");
  });

  it("wasm: add.wasm stays a separate CompiledWasm module, named as wrangler names it, imported by that name", async () => {
    const b = await bundleProject(project("wasm"));
    assert.equal(b.name, "wasm-add");
    assert.equal(b.modules.length, 2);
    const [entry, wasm] = b.modules;
    assert.equal(entry!.type, "esm");
    assert.equal(wasm!.type, "wasm");
    assert.match(wasm!.name, /^[0-9a-f]{40}-add\.wasm$/);
    assert.deepEqual(Buffer.from(wasm!.content), await fs.readFile(path.join(PROJECTS, "wasm/src/add.wasm")));
    assert.ok(Buffer.from(entry!.content).toString().includes(`from "./${wasm!.name}"`));
  });

  it("hello: local imports bundled, a Text module, vars, Borde's [limits] and [outbound], a warning for KV", async () => {
    const b = await bundleProject(project("hello"));
    assert.deepEqual(
      b.modules.map((m) => m.type),
      ["esm", "text"],
    );
    assert.match(b.modules[1]!.name, /^[0-9a-f]{40}-banner\.txt$/);
    assert.match(Buffer.from(b.modules[0]!.content).toString(), /function describe/);
    assert.deepEqual(b.settings.vars, { GREETING: "hello" });
    assert.deepEqual(b.settings.limits, { cpu_ms: 100, subrequests: 10 });
    assert.deepEqual(b.settings.allowOutbound, ["example.com"]);
    assert.equal(b.warnings.length, 1);
    assert.match(b.warnings[0]!, /kv_namespaces/);
    assert.equal((await bundleProject(project("hello"), { name: "other-name" })).name, "other-name");
  });

  it("JSONC: comments and trailing commas outside strings only", () => {
    assert.deepEqual(parseJsonc('{"a": "x // not a comment", /* c */ "b": ["/* kept */", 2,], // end\n "c": "q\\"//",}'), { a: "x // not a comment", b: ["/* kept */", 2], c: 'q"//' });
    assert.throws(() => parseJsonc('{"a": 1 /* open'), SyntaxError);
  });

  it("bad configs are one-line errors", async () => {
    const dir = await fs.mkdtemp(path.join(PROJECTS, "..", "tmp-"));
    try {
      const write = (text: string) => fs.writeFile(path.join(dir, "wrangler.toml"), text);
      await fs.writeFile(path.join(dir, "index.js"), "export default { fetch() { return new Response('x') } }");
      await write('name = "Bad_Name"\nmain = "index.js"');
      assert.throws(() => readWranglerConfig(dir), (e: unknown) => e instanceof ConfigFileError && /name/.test(e.message));
      await write('name = "ok"\nmain = "missing.js"');
      assert.throws(() => readWranglerConfig(dir), /missing\.js does not exist/);
      await write('name = "ok"\nmain = "index.js"\n[vars]\nN = 5');
      assert.throws(() => readWranglerConfig(dir), /text vars only/);
      await write('name = "ok"\nmain = "index.js"\n[limits]\ncpu_ms = -1');
      assert.throws(() => readWranglerConfig(dir), /limits\.cpu_ms/);
      await write("name = ");
      assert.throws(() => readWranglerConfig(dir), ConfigFileError);
      await fs.writeFile(path.join(dir, "index.js"), "export default {");
      await write('name = "ok"\nmain = "index.js"');
      await assert.rejects(bundleProject(dir), /bundling failed: .*index\.js:1/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe("deployments API and worker routing", () => {
  let s: WorkersServer;
  before(async () => {
    s = await startWorkersServer();
  });
  after(async () => {
    await s.close();
    await fs.rm(s.dataDir, { recursive: true, force: true });
  });

  it("deploys a worker: new version, active, reachable by path and by Host", async () => {
    const r = await s.api("PUT", `${s.scripts}/hello`, await helloBody());
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.success, true);
    assert.equal(r.json.result.id, "hello");
    assert.equal(r.json.result.version, 1);
    assert.equal(r.json.result.active, true);
    assert.deepEqual(r.json.result.limits, { cpu_ms: 100, wall_ms: 30000, memory_mb: 128, subrequests: 10 });
    assert.deepEqual(r.json.result.urls, [`http://hello.workers.localhost:${s.port}/`, `${s.url}/workers/hello/`]);
    assert.equal(s.runtime.activations.at(-1)!.accountId, ACCOUNT);

    const byPath = await fetch(`${s.url}/workers/hello/a/b?c=d`, { headers: { "x-request-id": "req-path-1" } });
    assert.equal(byPath.status, 200);
    assert.equal(byPath.headers.get("x-request-id"), "req-path-1");
    const body = (await byPath.json()) as { greeting: string; path: string; search: string; banner: string; bindings: string[]; api_key: string | null };
    assert.deepEqual([body.greeting, body.path, body.search, body.banner, body.api_key], ["hello", "/a/b", "?c=d", "Hello from a Text module", null]);
    assert.deepEqual(body.bindings, ["GREETING"]);
    assert.equal(((await (await fetch(`${s.url}/workers/hello`)).json()) as { path: string }).path, "/");
    const posted = await fetch(`${s.url}/workers/hello/post`, { method: "POST", body: "x".repeat(100_000) });
    assert.equal(((await posted.json()) as { body: string }).body.length, 100_000);

    const byHost = await rawRequest(s.port, { host: `hello.workers.localhost:${s.port}`, path: "/client/v4/accounts/x/ai/run/y?q=1" });
    assert.equal(byHost.status, 200, byHost.body);
    assert.deepEqual([JSON.parse(byHost.body).path, JSON.parse(byHost.body).search], ["/client/v4/accounts/x/ai/run/y", "?q=1"]);
    assert.ok(byHost.headers["x-request-id"]);
    // Upper case is the same DNS name.
    assert.equal((await rawRequest(s.port, { host: "HELLO.workers.localhost", path: "/" })).status, 200);
  });

  it("a wasm worker runs its CompiledWasm module", async () => {
    const b = await bundleProject(project("wasm"));
    const r = await s.api("PUT", `${s.scripts}/wasm-add`, deployBody(b.modules, b.settings));
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(await (await fetch(`${s.url}/workers/wasm-add/?a=20&b=22`)).text(), "42");
  });

  it("Cloudflare's Workers AI examples deploy and call env.AI (stub AI bridge; the real one is the runtime's suites')", async (t) => {
    if (s.runtime.kind === "miniflare") return t.skip("the Miniflare double has no AI binding");
    for (const name of ["text-generation", "streaming", "embeddings"]) {
      const b = await bundleProject(project(name));
      const r = await s.api("PUT", `${s.scripts}/${name}`, deployBody(b.modules, b.settings));
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
    assert.deepEqual(await (await fetch(`${s.url}/workers/text-generation/`)).json(), { response: "stub: Once upon a time" });
    const stream = await fetch(`${s.url}/workers/streaming/`);
    assert.match(stream.headers.get("content-type") ?? "", /text\/event-stream/);
    assert.equal(await stream.text(), 'data: {"response":"stub"}\n\ndata: {"response":" stream"}\n\ndata: [DONE]\n\n');
    const emb = (await (await fetch(`${s.url}/workers/embeddings/`)).json()) as { shape: number[] };
    assert.deepEqual(emb.shape, [3, 2]);
    assert.deepEqual(
      s.runtime.aiCalls.map((c) => [c.accountId, c.worker, c.model]),
      [
        [ACCOUNT, "text-generation", "@local/stories"],
        [ACCOUNT, "streaming", "@local/stories"],
        [ACCOUNT, "embeddings", "@local/stories"],
      ],
    );
    for (const name of ["text-generation", "streaming", "embeddings"]) assert.equal((await s.api("DELETE", `${s.scripts}/${name}`)).status, 200);
  });

  it("unknown workers answer 404/10007 by path and by Host; the API itself is untouched", async () => {
    for (const p of ["/workers/nope/", "/workers/nope", "/workers/Bad_Name/x", "/workers/hello%2f..%2f/x", "/workers/hello%00/x"]) {
      const res = await fetch(`${s.url}${p}`);
      assert.equal(res.status, 404, p);
      assert.equal(((await res.json()) as { errors: { code: number }[] }).errors[0]!.code, 10007, p);
    }
    // Dot segments, even percent-encoded, are resolved by URL parsing before routing: no route then.
    for (const p of ["/workers/%2e%2e/x", "/workers/../workers/nope/"]) {
      const r = await rawRequest(s.port, { host: `127.0.0.1:${s.port}`, path: p });
      assert.equal(r.status, 404, `${p}: ${r.body}`);
      assert.equal(JSON.parse(r.body).success, false);
    }
    for (const host of ["nope.workers.localhost", "bad_name.workers.localhost:1", "a..workers.localhost"]) {
      const r = await rawRequest(s.port, { host, path: "/" });
      assert.ok(r.status === 404 && JSON.parse(r.body).errors[0].code === 10007, `${host}: ${r.status} ${r.body}`);
    }
    assert.equal((await rawRequest(s.port, { host: `127.0.0.1:${s.port}`, path: "/healthz" })).status, 200);
    assert.equal((await rawRequest(s.port, { host: "workers.localhost", path: "/healthz" })).status, 200);
  });

  it("lists workers and their versions", async () => {
    const list = await s.api("GET", s.scripts);
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.json.result.map((w: { id: string }) => w.id),
      ["hello", "wasm-add"],
    );
    const one = await s.api("GET", `${s.scripts}/hello`);
    assert.equal(one.json.result.active_version, 1);
    assert.equal(one.json.result.versions.length, 1);
    assert.deepEqual(
      one.json.result.versions[0].modules.map((m: { type: string }) => m.type),
      ["esm", "text"],
    );
    assert.equal(one.json.result.versions[0].vars.GREETING, "hello");
  });

  it("versions: a deploy activates the new version, rollback restores the previous behaviour", async () => {
    const greet = async () => ((await (await fetch(`${s.url}/workers/hello/`)).json()) as { greeting: string }).greeting;
    const v2 = await s.api("PUT", `${s.scripts}/hello`, await helloBody({ GREETING: "v2" }));
    assert.equal(v2.json.result.version, 2);
    assert.equal(await greet(), "v2");

    const rb = await s.api("POST", `${s.scripts}/hello/rollback`);
    assert.equal(rb.status, 200, JSON.stringify(rb.json));
    assert.deepEqual([rb.json.result.version, rb.json.result.previous_version], [1, 2]);
    assert.equal(await greet(), "hello");
    assert.equal((await s.api("GET", `${s.scripts}/hello`)).json.result.active_version, 1);
    refused(await s.api("POST", `${s.scripts}/hello/rollback`, {}), 409, 7122);

    // Numbering goes on from the newest version; an explicit target works both ways.
    const v3 = await s.api("PUT", `${s.scripts}/hello`, await helloBody({ GREETING: "v3" }));
    assert.equal(v3.json.result.version, 3);
    assert.equal(await greet(), "v3");
    assert.equal((await s.api("POST", `${s.scripts}/hello/rollback`, { version: 2 })).json.result.version, 2);
    assert.equal(await greet(), "v2");
    refused(await s.api("POST", `${s.scripts}/hello/rollback`, { version: 99 }), 404, 10007);
    const versions = (await s.api("GET", `${s.scripts}/hello`)).json.result.versions as { version: number; active: boolean }[];
    assert.deepEqual(
      versions.map((v) => [v.version, v.active]),
      [
        [3, false],
        [2, true],
        [1, false],
      ],
    );
  });

  it("a version that cannot start is refused with 400/10021 and the active one keeps serving", async () => {
    const body = await helloBody();
    body.modules[0]!.content_base64 = Buffer.from("export default {{ syntax error").toString("base64");
    const r = await s.api("PUT", `${s.scripts}/hello`, body);
    refused(r, 400, 10021);
    assert.match(r.json.errors[0].message, /SyntaxError/);
    assert.equal(((await (await fetch(`${s.url}/workers/hello/`)).json()) as { greeting: string }).greeting, "v2");
    assert.equal((await s.api("GET", `${s.scripts}/hello`)).json.result.versions.length, 3);
  });

  it("secrets: live without a redeploy, listed by name only, encrypted at rest, deleted", async () => {
    const secret = "pl41ntext-s3cret-value-never-on-disk";
    const put = await s.api("PUT", `${s.scripts}/hello/secrets`, { name: "API_KEY", text: secret, type: "secret_text" });
    assert.equal(put.status, 200, JSON.stringify(put.json));
    assert.deepEqual([put.json.result.name, put.json.result.type], ["API_KEY", "secret_text"]);
    const seen = (await (await fetch(`${s.url}/workers/hello/`)).json()) as { api_key: string; greeting: string; bindings: string[] };
    assert.equal(seen.api_key, secret);
    assert.equal(seen.greeting, "v2"); // same active version, now with the secret
    assert.deepEqual(seen.bindings, ["API_KEY", "GREETING"]);

    const list = await s.api("GET", `${s.scripts}/hello/secrets`);
    assert.deepEqual(
      list.json.result.map((x: { name: string }) => x.name),
      ["API_KEY"],
    );
    assert.ok(!JSON.stringify(list.json).includes(secret));

    // At rest: not in the database, its WAL, or the key file; the key file is private.
    s.db.pragma("wal_checkpoint(PASSIVE)");
    for (const f of ["borde.db", "borde.db-wal", "secret.key"]) {
      const bytes = await fs.readFile(path.join(s.dataDir, f)).catch(() => Buffer.alloc(0));
      assert.ok(!bytes.includes(Buffer.from(secret)), `${f} holds the plaintext`);
    }
    const key = await fs.stat(path.join(s.dataDir, "secret.key"));
    assert.equal(key.mode & 0o777, 0o600);
    const row = s.db.prepare("SELECT sealed FROM worker_secrets WHERE name = 'hello' AND secret = 'API_KEY'").get() as { sealed: Buffer };
    assert.ok(row.sealed.byteLength >= 28 + secret.length);

    // Rolling back keeps the worker's secrets.
    await s.api("POST", `${s.scripts}/hello/rollback`, { version: 3 });
    assert.equal(((await (await fetch(`${s.url}/workers/hello/`)).json()) as { api_key: string }).api_key, secret);

    assert.equal((await s.api("PUT", `${s.scripts}/hello/secrets`, { name: "TEMP", text: "x" })).status, 200);
    assert.equal((await s.api("DELETE", `${s.scripts}/hello/secrets/TEMP`)).status, 200);
    refused(await s.api("DELETE", `${s.scripts}/hello/secrets/TEMP`), 404, 7121);
    refused(await s.api("DELETE", `${s.scripts}/hello/secrets/..%2F..`), 404, 7121);
    refused(await s.api("PUT", `${s.scripts}/nope/secrets`, { name: "A", text: "x" }), 404, 10007);
    refused(await s.api("PUT", `${s.scripts}/hello/secrets`, { name: "bad-name", text: "x" }), 400, 5006);
    refused(await s.api("PUT", `${s.scripts}/hello/secrets`, { name: "BIG", text: "x".repeat(6000) }), 400, 5006);
    assert.deepEqual(
      (await s.api("GET", `${s.scripts}/hello/secrets`)).json.result.map((x: { name: string }) => x.name),
      ["API_KEY"],
    );
  });

  it("tail streams the worker's console lines as SSE until the client leaves", async () => {
    const controller = new AbortController();
    const res = await fetch(`${s.url}${s.scripts}/hello/tail`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: controller.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const readUntil = async (pred: (t: string) => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!pred(text)) {
        if (Date.now() > deadline) throw new Error(`tail timed out; got ${JSON.stringify(text)}`);
        const { value, done } = await reader.read();
        if (done) throw new Error("tail ended");
        text += decoder.decode(value, { stream: true });
      }
    };
    await readUntil((t) => t.includes(": tailing hello"));
    assert.equal((await fetch(`${s.url}/workers/hello/tail-probe`)).status, 200);
    await readUntil((t) => t.includes("tail-probe"));
    const events = text
      .split("\n\n")
      .filter((f) => f.startsWith("data: "))
      .map((f) => JSON.parse(f.slice(6)) as LogEvent);
    const e = events.find((x) => x.message.includes("hello GET /tail-probe"));
    assert.ok(e, JSON.stringify(events));
    assert.equal(e.worker, "hello");
    assert.equal(e.level, "log");
    assert.equal(s.workers.tailing, 1);
    controller.abort();
    await reader.cancel().catch(() => undefined);
    // The client left: its subscription ends.
    const deadline = Date.now() + 5000;
    while (s.workers.tailing > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.workers.tailing, 0);
  });

  it("scopes and accounts: ai:run cannot deploy, another account can neither act here nor take the name", async () => {
    const runOnly = s.token(["ai:run"]);
    refused(await s.api("PUT", `${s.scripts}/x1`, await helloBody(), runOnly), 403, 10001);
    refused(await s.api("GET", s.scripts, undefined, runOnly), 403, 10001);
    const deployer = s.token(["workers:deploy"]);
    assert.equal((await s.api("GET", s.scripts, undefined, deployer)).status, 200);
    refused(await s.api("GET", s.scripts, undefined, "bd_0000000000000000_0000000000000000000000000000000000000000000"), 401, 10000);

    const other = s.otherAccount(["workers:deploy"]);
    refused(await s.api("GET", s.scripts, undefined, other.token), 403, 10001);
    refused(await s.api("PUT", `${s.scripts}/x2`, await helloBody(), other.token), 403, 10001);
    const theirs = `/client/v4/accounts/${other.accountId}/workers/scripts`;
    refused(await s.api("PUT", `${theirs}/hello`, await helloBody(), other.token), 409, 7120);
    refused(await s.api("GET", `${theirs}/hello`, undefined, other.token), 404, 10007);
    refused(await s.api("GET", `${theirs}/hello/secrets`, undefined, other.token), 404, 10007);
    refused(await s.api("GET", `${theirs}/hello/tail`, undefined, other.token), 404, 10007);
    refused(await s.api("POST", `${theirs}/hello/rollback`, {}, other.token), 404, 10007);
    refused(await s.api("DELETE", `${theirs}/hello`, undefined, other.token), 404, 10007);
    assert.deepEqual((await s.api("GET", theirs, undefined, other.token)).json.result, []);
    // Their own worker, under another name, is theirs.
    assert.equal((await s.api("PUT", `${theirs}/theirs`, await helloBody(), other.token)).status, 200);
    assert.equal(s.runtime.activations.at(-1)!.accountId, other.accountId);
  });

  it("hostile input is a 4xx envelope, never a 500", async () => {
    const good = await helloBody();
    const entry = good.modules[0]!;
    const cases: [string, string, unknown, number, number][] = [
      ["PUT", `${s.scripts}/Bad_Name`, good, 400, 5006],
      ["PUT", `${s.scripts}/-leading-dash`, good, 400, 5006],
      ["PUT", `${s.scripts}/${"a".repeat(64)}`, good, 400, 5006],
      ["PUT", `${s.scripts}/..%2F..%2Fetc`, good, 400, 5006],
      ["PUT", `${s.scripts}/x`, "{not json", 400, 5006],
      ["PUT", `${s.scripts}/x`, [], 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, extra: 1 }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, modules: [] }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, modules: [{ ...entry, content_base64: "not base64!" }] }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, modules: [{ ...entry, content_base64: "abc" }] }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, modules: [{ ...entry, type: "python" }] }, 400, 5006],
      ...["../etc/passwd", "/abs.js", "a/../b.js", "a\\b.js", "./x.js", "", "a//b.js", "x\u0000.js"].map(
        (name): [string, string, unknown, number, number] => ["PUT", `${s.scripts}/x`, { ...good, modules: [{ ...entry, name }] }, 400, 5006],
      ),
      ["PUT", `${s.scripts}/x`, { ...good, modules: [entry, { ...entry }] }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, modules: [{ ...entry, type: "wasm" }] }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, modules: [{ ...entry, content_base64: Buffer.from([0xff, 0xfe, 0x00]).toString("base64") }] }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, vars: { A: 1 } }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, vars: { "bad-name": "x" } }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, vars: { AI: "x" }, ai_binding: "AI" }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, limits: { cpu_ms: 0 } }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, limits: { memory_mb: 1e9 } }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, outbound_allow: ["http://evil/"] }, 400, 5006],
      ["PUT", `${s.scripts}/x`, { ...good, compatibility_date: "tomorrow" }, 400, 5006],
      ["GET", `${s.scripts}/%2e%2e`, undefined, 404, 7000], // the URL resolves to …/workers/
      ["GET", `${s.scripts}/a%2F..%2F..`, undefined, 404, 10007],
      ["GET", `${s.scripts}/nope`, undefined, 404, 10007],
      ["DELETE", `${s.scripts}/nope`, undefined, 404, 10007],
      ["POST", `${s.scripts}/nope/rollback`, undefined, 404, 10007],
      ["POST", `${s.scripts}/hello/rollback`, { version: "1" }, 400, 5006],
      ["GET", `${s.scripts}/hello/nope`, undefined, 404, 7000],
    ];
    for (const [method, p, body, status, code] of cases) {
      const r = await s.api(method, p, body);
      assert.ok(r.status === status && r.json?.success === false && r.json.errors[0].code === code, `${method} ${p} ${JSON.stringify(body)?.slice(0, 200)} -> ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`);
    }
    const empty = await fetch(`${s.url}${s.scripts}/x`, { method: "PUT", headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(empty.status, 400);

    // Bigger than an upload may be: refused on its declared length, as 413/3006.
    const huge = Buffer.alloc(MAX_UPLOAD_BYTES + 1024, 0x61);
    const big = await fetch(`${s.url}${s.scripts}/x`, { method: "PUT", headers: { authorization: `Bearer ${TOKEN}` }, body: huge });
    assert.equal(big.status, 413);
    assert.equal(((await big.json()) as { errors: { code: number }[] }).errors[0]!.code, 3006);
    // Within the upload limit but over the worker size limit once decoded.
    const tooBig = Buffer.alloc(10 * 1024 * 1024 + 1, 0x20).toString("base64");
    refused(await s.api("PUT", `${s.scripts}/x`, { ...good, modules: [entry, { name: "big.txt", type: "text", content_base64: tooBig }] }), 400, 5006);
    assert.deepEqual(
      (await s.api("GET", s.scripts)).json.result.map((w: { id: string }) => w.id),
      ["hello", "wasm-add"],
    );
  });

  it("every change is in the audit log, never a secret's value", () => {
    const entries = s.accounts.audit(1000).filter((e) => e.action.startsWith("workers."));
    const actions = new Set(entries.map((e) => e.action));
    for (const a of ["workers.deploy", "workers.rollback", "workers.secret.put", "workers.secret.delete"]) assert.ok(actions.has(a), a);
    const deploy = entries.find((e) => e.action === "workers.deploy" && e.target === "hello")!;
    assert.equal(deploy.actor_account, ACCOUNT);
    assert.ok(!JSON.stringify(entries).includes("pl41ntext"));
  });

  it("concurrent deploys of one worker get distinct versions; the newest 10 versions are kept", async () => {
    const body = await helloBody();
    const results = await Promise.all([1, 2, 3].map(() => s.api("PUT", `${s.scripts}/busy`, body)));
    assert.deepEqual(results.map((r) => r.json.result.version).sort(), [1, 2, 3]);
    assert.equal((await s.api("GET", `${s.scripts}/busy`)).json.result.active_version, 3);
    for (let i = 0; i < 9; i++) assert.equal((await s.api("PUT", `${s.scripts}/busy`, body)).status, 200);
    const versions = (await s.api("GET", `${s.scripts}/busy`)).json.result.versions as { version: number }[];
    assert.deepEqual(
      versions.map((v) => v.version),
      [12, 11, 10, 9, 8, 7, 6, 5, 4, 3],
    );
    assert.equal((s.db.prepare("SELECT COUNT(*) AS n FROM worker_modules WHERE name = 'busy'").get() as { n: number }).n, 20);
    assert.equal((await s.api("DELETE", `${s.scripts}/busy`)).status, 200);
  });

  it("deleting a worker removes its versions, secrets and routes", async () => {
    assert.equal((await s.api("PUT", `${s.scripts}/doomed`, await helloBody())).status, 200);
    await s.api("PUT", `${s.scripts}/doomed/secrets`, { name: "S", text: "x" });
    assert.equal((await fetch(`${s.url}/workers/doomed/`)).status, 200);
    const del = await s.api("DELETE", `${s.scripts}/doomed`);
    assert.equal(del.status, 200);
    assert.equal((await fetch(`${s.url}/workers/doomed/`)).status, 404);
    refused(await s.api("GET", `${s.scripts}/doomed`), 404, 10007);
    for (const t of ["worker_versions", "worker_modules", "worker_secrets"]) assert.equal((s.db.prepare(`SELECT COUNT(*) AS n FROM ${t} WHERE name = 'doomed'`).get() as { n: number }).n, 0, t);
    // The name is free again, for anyone; versions start over.
    assert.equal((await s.api("PUT", `${s.scripts}/doomed`, await helloBody())).json.result.version, 1);
    await s.api("DELETE", `${s.scripts}/doomed`);
  });

  it("deployments survive a restart: active versions and secrets come back", async () => {
    await s.close();
    s = await startWorkersServer({ dataDir: s.dataDir });
    const hello = (await (await fetch(`${s.url}/workers/hello/`)).json()) as { greeting: string; api_key: string };
    assert.deepEqual([hello.greeting, hello.api_key], ["v3", "pl41ntext-s3cret-value-never-on-disk"]);
    assert.equal(await (await fetch(`${s.url}/workers/wasm-add/?a=1&b=2`)).text(), "3");
    assert.equal((await s.api("GET", `${s.scripts}/hello`)).json.result.active_version, 3);
  });
});
