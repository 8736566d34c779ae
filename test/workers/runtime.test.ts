/**
 * The workers runtime (src/workers/runtime): Workers semantics in workerd — fetch, vars and
 * secrets, ctx.waitUntil, Wasm and text modules, the tail, env.AI against a real node — plus
 * versions, isolation between accounts, cold start and the warm pool.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createWorkerRuntime, WorkerNotActiveError, WorkerStartupError, type WorkerdRuntime } from "../../src/workers/runtime/index.js";
import type { AiBridge, LogEvent, WorkerRuntime } from "../../src/workers/types.js";
import { fixtureVersion, median, memoryLogger, percentile, recordingBridge, sourceVersion } from "../fixtures/workers/runtime-kit.js";
import { sseEvents, startTestNode, type TestNode } from "../helpers.js";

type Runtime = WorkerdRuntime & WorkerRuntime;

async function text(rt: Runtime, account: string, worker: string, url: string, init?: RequestInit, rid = `r-${Math.random().toString(36).slice(2)}`) {
  const res = await rt.fetch(account, worker, new Request(url, init), rid);
  return { status: res.status, headers: res.headers, body: await res.text() };
}

/** Waits until `pred` holds for the collected events (tail delivery is asynchronous). */
async function until<T>(events: T[], pred: (e: T) => boolean, ms = 3000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const hit = events.find(pred);
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`event not seen in ${ms} ms; got ${JSON.stringify(events)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("workers runtime: Workers semantics", () => {
  let rt: Runtime;
  const bridge = recordingBridge();
  const log = memoryLogger();

  before(async () => {
    rt = createWorkerRuntime({ ai: bridge, logger: log.logger });
    await rt.poolReady();
  });
  after(async () => { await rt.close(); if (process.env.SHOW_LOGS) console.error(log.lines.join("")); });

  test("a hello worker answers, seeing the URL the client used", async () => {
    await rt.activate(fixtureVersion("acct_a", "hello", ["hello.js"], { vars: { NAME: "hello" } }));
    const r = await text(rt, "acct_a", "hello", "https://hello.workers.localhost:8787/some/path?q=1");
    assert.equal(r.status, 200);
    assert.equal(r.body, "Hello from hello at /some/path?q=1");
    assert.equal(r.headers.get("content-type"), "text/plain");
  });

  test("vars and secrets are plain strings in env; the platform's own headers and globals are not visible", async () => {
    await rt.activate(fixtureVersion("acct_a", "env", ["env.js"], { vars: { GREETING: "hi", LEVEL: "3" }, secrets: { API_KEY: "s3cret" }, aiBinding: "AI" }));
    const r = await text(rt, "acct_a", "env", "https://env.workers.localhost/", {
      method: "POST",
      body: "x",
      headers: { "x-custom": "yes", "x-borde-key": "forged", "x-borde-flight": "1.1", "x-borde-op": "load" },
    });
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as { env: Record<string, string>; headers: Record<string, string>; url: string; process: string; require: string };
    assert.deepEqual(seen.env, { GREETING: "hi", LEVEL: "3", API_KEY: "s3cret", AI: "object" });
    assert.equal(seen.headers["x-custom"], "yes");
    assert.equal(seen.headers.host, "env.workers.localhost");
    assert.deepEqual(Object.keys(seen.headers).filter((h) => h.startsWith("x-borde")), []);
    assert.equal(seen.url, "https://env.workers.localhost/");
    assert.equal(seen.process, "undefined");
    assert.equal(seen.require, "undefined");
  });

  test("ctx.waitUntil runs after the response; console output and exceptions reach the tail with the request id", async () => {
    await rt.activate(fixtureVersion("acct_a", "tail", ["waituntil.js"]));
    const events: LogEvent[] = [];
    const unsubscribe = rt.subscribe("acct_a", "tail", (e) => events.push(e));
    try {
      const started = Date.now();
      const r = await text(rt, "acct_a", "tail", "http://tail.workers.localhost/first", undefined, "req-first");
      assert.equal(r.body, "sent");
      assert.ok(Date.now() - started < 1000);
      const late = await until(events, (e) => e.message === "after the response");
      assert.equal(late.level, "info");
      assert.equal(late.requestId, "req-first");
      assert.equal(late.worker, "tail");
      assert.ok(events.some((e) => e.level === "log" && e.message === "handling /first" && e.requestId === "req-first"));
      assert.ok(events.some((e) => e.level === "warn" && e.message === '{"structured":true,"n":1}'));

      const thrown = await text(rt, "acct_a", "tail", "http://tail.workers.localhost/throw", undefined, "req-throw");
      assert.equal(thrown.status, 500);
      assert.deepEqual(JSON.parse(thrown.body).errors, [{ code: 1101, message: "Worker threw exception" }]);
      const exception = await until(events, (e) => e.level === "exception" && e.requestId === "req-throw");
      assert.match(exception.message, /boom from the worker/);

      await text(rt, "acct_a", "tail", "http://tail.workers.localhost/reject", undefined, "req-reject");
      const rejected = await until(events, (e) => e.level === "exception" && e.requestId === "req-reject");
      assert.match(rejected.message, /rejected in waitUntil/);
    } finally {
      unsubscribe();
    }
    // Nobody listening: console lines are not even shipped out of the isolate; exceptions are still logged.
    const before = events.length;
    await text(rt, "acct_a", "tail", "http://tail.workers.localhost/quiet");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(events.length, before);
  });

  test("request bodies reach the worker, small or streamed; a worker may ignore them", async () => {
    const worker = `export default { async fetch(req) {
      if (new URL(req.url).pathname === "/ignore") return new Response("ignored");
      let n = 0;
      for await (const chunk of req.body) n += chunk.byteLength;
      return Response.json({ n, method: req.method, type: req.headers.get("content-type") });
    } };`;
    await rt.activate(sourceVersion("acct_a", "body", [{ name: "index.js", type: "esm", content: worker }]));
    const small = await text(rt, "acct_a", "body", "http://body/", { method: "PUT", body: JSON.stringify({ a: 1 }), headers: { "content-type": "application/json" } });
    assert.deepEqual(JSON.parse(small.body), { n: 7, method: "PUT", type: "application/json" });
    const big = new Uint8Array(3 * 1024 * 1024 + 5).fill(7);
    const streamed = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < big.length; i += 65536) c.enqueue(big.subarray(i, i + 65536));
        c.close();
      },
    });
    const large = await text(rt, "acct_a", "body", "http://body/", { method: "POST", body: streamed, duplex: "half" } as RequestInit);
    assert.equal(JSON.parse(large.body).n, big.length);
    for (let i = 0; i < 30; i++) {
      const r = await text(rt, "acct_a", "body", "http://body/ignore", { method: "POST", body: i % 10 === 9 ? new Uint8Array(4 * 1024 * 1024) : "x".repeat(i * 100) });
      assert.equal(r.status, 200, r.body);
      assert.equal(r.body, "ignored");
    }
  });

  test("Wasm and text modules import as on Workers", async () => {
    await rt.activate(fixtureVersion("acct_a", "wasm", ["wasm.js", "add.wasm", "greeting.txt"]));
    const r = await text(rt, "acct_a", "wasm", "http://wasm.workers.localhost/?a=40&b=2");
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), { sum: 42, greeting: "hello from a text module" });
  });

  test("env.AI.run goes through the bridge with the worker's account and a per-call request id", async () => {
    bridge.calls.length = 0;
    await rt.activate(fixtureVersion("acct_a", "ai", ["ai.js"], { aiBinding: "AI" }));
    const r = await text(rt, "acct_a", "ai", "http://ai.workers.localhost/", undefined, "req-ai");
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), { response: "echo @local/stories" });
    assert.deepEqual(bridge.calls, [{ accountId: "acct_a", worker: "ai", requestId: "req-ai:ai:1", model: "@local/stories", inputs: { prompt: "Once upon a time", max_tokens: 16, temperature: 0 } }]);
    // A binding named otherwise (wrangler's `[ai] binding = "BRAIN"`) is where the worker put it.
    const worker = `export default { async fetch(req, env) { return Response.json({ ai: typeof env.AI, brain: await env.BRAIN.run("@m", { prompt: "x" }) }); } };`;
    await rt.activate(sourceVersion("acct_a", "brain", [{ name: "index.js", type: "esm", content: worker }], { aiBinding: "BRAIN" }));
    const b = await text(rt, "acct_a", "brain", "http://brain.workers.localhost/");
    assert.deepEqual(JSON.parse(b.body), { ai: "undefined", brain: { response: "echo @m" } });
    // Bytes (an image for a classifier) arrive as the REST API's array of numbers.
    const image = `export default { async fetch(req, env) { return Response.json(await env.AI.run("@img", { image: new Uint8Array([1, 2, 255]) })); } };`;
    await rt.activate(sourceVersion("acct_a", "image", [{ name: "index.js", type: "esm", content: image }], { aiBinding: "AI" }));
    await text(rt, "acct_a", "image", "http://image/");
    assert.deepEqual(bridge.calls.at(-1)?.inputs, { image: [1, 2, 255] });
  });

  test("a new version replaces the old one on the same process; a version that cannot start is refused and the old one keeps serving", async () => {
    const v1 = sourceVersion("acct_v", "ver", [{ name: "index.js", type: "esm", content: `export default { fetch() { return new Response("v1"); } };` }]);
    await rt.activate(v1);
    assert.equal((await text(rt, "acct_v", "ver", "http://x/")).body, "v1");
    const pid = rt.processOf("acct_v")?.pid;
    await rt.activate({ ...v1, version: 2, modules: [{ name: "index.js", type: "esm", content: new TextEncoder().encode(`export default { fetch() { return new Response("v2"); } };`) }] });
    assert.equal((await text(rt, "acct_v", "ver", "http://x/")).body, "v2");
    assert.equal(rt.processOf("acct_v")?.pid, pid, "activating a version does not restart the account's process");

    const broken = { ...v1, version: 3, modules: [{ name: "index.js", type: "esm" as const, content: new TextEncoder().encode(`export default { fetch( { syntax error`) }] };
    await assert.rejects(rt.activate(broken), (e: unknown) => e instanceof WorkerStartupError && !e.limitExceeded && /failed to start/.test(e.message));
    const throwing = { ...v1, version: 4, modules: [{ name: "index.js", type: "esm" as const, content: new TextEncoder().encode(`throw new Error("top-level"); export default {};`) }] };
    await assert.rejects(rt.activate(throwing), /top-level/);
    const looping = { ...v1, version: 5, modules: [{ name: "index.js", type: "esm" as const, content: new TextEncoder().encode(`for (;;) {} export default {};`) }] };
    await assert.rejects(rt.activate(looping), (e: unknown) => e instanceof WorkerStartupError && e.limitExceeded);
    assert.equal((await text(rt, "acct_v", "ver", "http://x/")).body, "v2", "the live version is untouched");

    await rt.remove("acct_v", "ver");
    await assert.rejects(rt.fetch("acct_v", "ver", new Request("http://x/"), "r"), WorkerNotActiveError);
    await assert.rejects(rt.fetch("acct_nobody", "nothing", new Request("http://x/"), "r"), WorkerNotActiveError);
  });

  test("each account has its own workerd process; module state never crosses accounts", async () => {
    const counter = `let n = 0; export default { fetch() { n++; return Response.json({ n }); } };`;
    await rt.activate(sourceVersion("acct_x", "count-x", [{ name: "index.js", type: "esm", content: counter }]));
    await rt.activate(sourceVersion("acct_y", "count-y", [{ name: "index.js", type: "esm", content: counter }]));
    for (let i = 0; i < 3; i++) await text(rt, "acct_x", "count-x", "http://x/");
    assert.deepEqual(JSON.parse((await text(rt, "acct_y", "count-y", "http://y/")).body), { n: 1 });
    const px = rt.processOf("acct_x");
    const py = rt.processOf("acct_y");
    const pa = rt.processOf("acct_a");
    assert.ok(px && py && pa);
    assert.equal(new Set([px.pid, py.pid, pa.pid]).size, 3);
  });

  test("warm overhead of a hello worker", async (t) => {
    await rt.activate(fixtureVersion("acct_bench", "hello", ["hello.js"]));
    for (let i = 0; i < 50; i++) await text(rt, "acct_bench", "hello", "http://hello/");
    const times: number[] = [];
    for (let i = 0; i < 400; i++) {
      const t0 = performance.now();
      await text(rt, "acct_bench", "hello", "http://hello/");
      times.push(performance.now() - t0);
    }
    t.diagnostic(`hello worker through runtime.fetch: p50 ${median(times).toFixed(2)} ms, p99 ${percentile(times, 0.99).toFixed(2)} ms (400 sequential requests)`);
    assert.ok(median(times) < 20);
  });
});

describe("workers runtime: idle processes", () => {
  test("an account's idle process is stopped; its next request takes a pooled one", async () => {
    const rt = createWorkerRuntime({ ai: recordingBridge(), logger: memoryLogger().logger, idleTimeoutMs: 200 });
    try {
      await rt.activate(fixtureVersion("acct_idle", "hello", ["hello.js"]));
      assert.equal((await text(rt, "acct_idle", "hello", "http://x/")).status, 200);
      const pid = rt.processOf("acct_idle")?.pid;
      assert.ok(pid);
      const end = Date.now() + 3000;
      while (rt.processOf("acct_idle") !== null && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assert.equal(rt.processOf("acct_idle"), null, "the idle process was released");
      assert.equal((await text(rt, "acct_idle", "hello", "http://x/")).body, "Hello from a worker at /");
      assert.notEqual(rt.processOf("acct_idle")?.pid, pid);
    } finally {
      await rt.close();
    }
  });
});

describe("workers runtime: no orphans", () => {
  test("workerd processes die with a Node process that is killed outright", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "../fixtures/workers/orphan-child.ts")], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout.on("data", (d: Buffer) => {
          out += String(d);
          if (out.includes("\n")) resolve(out);
        });
        child.once("exit", (code) => reject(new Error(`child exited (${code}) before reporting`)));
      });
      const { pid } = JSON.parse(line) as { pid: number };
      assert.ok(pid > 0);
      process.kill(pid, 0); // alive
      child.kill("SIGKILL");
      const end = Date.now() + 5000;
      let alive = true;
      while (alive && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 20));
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
      }
      assert.equal(alive, false, `workerd ${pid} outlived its Node process`);
    } finally {
      child.kill("SIGKILL");
    }
  });
});

describe("workers runtime: env.AI against a real node", () => {
  let node: TestNode;
  let rt: Runtime;

  /** The bridge as a client of the node's REST API with its token: real auth, scheduler, metering. */
  function httpBridge(n: TestNode): AiBridge {
    return {
      async run({ requestId, model, inputs, signal }) {
        const res = await fetch(`${n.ai}/run/${model}`, { method: "POST", headers: { ...n.headers, "x-request-id": requestId }, body: JSON.stringify(inputs), signal });
        if ((res.headers.get("content-type") ?? "").startsWith("text/event-stream")) return res.body!;
        const body = (await res.json()) as { success: boolean; result: unknown; errors: Array<{ code: number; message: string }> };
        if (!body.success) throw Object.assign(new Error(body.errors[0]?.message ?? "error"), { code: body.errors[0]?.code ?? 3043, status: res.status });
        return body.result;
      },
    };
  }

  before(async () => {
    node = await startTestNode();
    rt = createWorkerRuntime({ ai: httpBridge(node), logger: memoryLogger().logger });
    await rt.activate(fixtureVersion("acct_test", "ai", ["ai.js"], { aiBinding: "AI" }));
  });
  after(async () => {
    await rt?.close();
    await node?.close();
  });

  test("Cloudflare's text-generation example: env.AI.run returns the result object", async () => {
    const r = await text(rt, "acct_test", "ai", "http://ai.workers.localhost/", undefined, "worker-req-1");
    assert.equal(r.status, 200, r.body);
    const result = JSON.parse(r.body) as { response: string; usage: { completion_tokens: number } };
    assert.ok(result.response.startsWith(", there was a little girl"), result.response);
    assert.ok(result.usage.completion_tokens > 0);
    const today = new Date().toISOString().slice(0, 10);
    assert.ok((await node.usage!.requestIds(today, today)).includes("worker-req-1:ai:1"), "the AI call is billed under the worker request's id");
  });

  test("streaming: env.AI.run with stream: true returns SSE bytes the worker can return as its body", async () => {
    const r = await text(rt, "acct_test", "ai", "http://ai.workers.localhost/stream", undefined, "worker-req-2");
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers.get("content-type"), "text/event-stream");
    const events = sseEvents(r.body);
    assert.equal(events.at(-1), "[DONE]");
    const text_ = events
      .slice(0, -1)
      .map((e) => (JSON.parse(e) as { response: string }).response)
      .join("");
    assert.ok(text_.startsWith(", there was a little girl"), text_);
    assert.ok((JSON.parse(events.at(-2)!) as { usage?: unknown }).usage);
  });

  test("an AI error reaches the worker as an exception carrying Workers AI's code", async () => {
    const r = await text(rt, "acct_test", "ai", "http://ai.workers.localhost/error");
    assert.match((JSON.parse(r.body) as { error: string }).error, /^5007: /);
  });
});

describe("workers runtime: cold start and the warm pool", () => {
  const hello = (account: string) => fixtureVersion(account, "hello", ["hello.js"]);
  const loop = (account: string) => sourceVersion(account, "loop", [{ name: "index.js", type: "esm", content: `export default { fetch(r) { if (new URL(r.url).pathname === "/loop") for (;;) {} return new Response("ok"); } };` }]);

  async function firstResponse(rt: Runtime, account: string): Promise<number> {
    const t0 = performance.now();
    await rt.activate(hello(account));
    const r = await rt.fetch(account, "hello", new Request("http://hello/"), "first");
    assert.equal(r.status, 200);
    await r.text();
    return performance.now() - t0;
  }

  async function recycled(rt: Runtime, account: string): Promise<number> {
    const killed = await rt.fetch(account, "loop", new Request("http://loop/loop"), "loop");
    assert.equal(killed.status, 503);
    await killed.text();
    const t0 = performance.now();
    const r = await rt.fetch(account, "loop", new Request("http://loop/"), "after");
    assert.equal(r.status, 200);
    await r.text();
    return performance.now() - t0;
  }

  test("activate → first response and recycled → first response, cold and from the pool", async (t) => {
    const results: Record<string, number[]> = { activateCold: [], activatePool: [], recycleCold: [], recyclePool: [] };
    for (const [pool, label] of [
      [0, "Cold"],
      [1, "Pool"],
    ] as const) {
      const rt = createWorkerRuntime({ ai: recordingBridge(), logger: memoryLogger().logger, warmPool: pool });
      try {
        await rt.poolReady();
        for (let i = 0; i < 5; i++) {
          await rt.poolReady();
          results[`activate${label}`]!.push(await firstResponse(rt, `acct_cold_${i}`));
        }
        for (let i = 0; i < 5; i++) {
          // Separate accounts: one strike each, so no backoff enters the figure.
          const account = `acct_recycle_${i}`;
          await rt.activate(loop(account));
          await rt.poolReady();
          results[`recycle${label}`]!.push(await recycled(rt, account));
        }
      } finally {
        await rt.close();
      }
    }
    for (const [k, v] of Object.entries(results)) t.diagnostic(`${k}: median ${median(v).toFixed(1)} ms (runs: ${v.map((x) => x.toFixed(1)).join(", ")})`);
    assert.ok(median(results.activatePool!) <= median(results.activateCold!) * 1.5 + 5, "the pool is not slower than a cold start");
    assert.ok(median(results.activatePool!) < 500);
    assert.ok(median(results.recyclePool!) < 500);
  });
});
