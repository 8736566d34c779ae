/**
 * Isolation and limits of the workers runtime, with hostile workers: CPU (infinite loop, unbounded
 * promise chain, work after the response), memory (a bomb), wall time, subrequests, response
 * size, outbound network to the node's own services, filesystem and environment, other tenants —
 * and the neighbour check: another account's latency while one account attacks.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { createWorkerRuntime, type WorkerdRuntime } from "../../src/workers/runtime/index.js";
import type { LogEvent, WorkerRuntime } from "../../src/workers/types.js";
import { fixtureVersion, median, memoryLogger, percentile, recordingBridge, sourceVersion } from "../fixtures/workers/runtime-kit.js";

type Runtime = WorkerdRuntime & WorkerRuntime;

const LIMIT_BODY = { result: null, success: false, errors: [{ code: 1102, message: "Worker exceeded resource limits" }], messages: [] };

async function call(rt: Runtime, account: string, worker: string, path: string, rid = `r-${Math.random().toString(36).slice(2)}`) {
  const t0 = performance.now();
  const res = await rt.fetch(account, worker, new Request(`https://${worker}.workers.localhost${path}`), rid);
  const body = await res.text();
  return { status: res.status, body, ms: performance.now() - t0 };
}

function assertLimit(r: { status: number; body: string }): void {
  assert.equal(r.status, 503, r.body.slice(0, 300));
  assert.deepEqual(JSON.parse(r.body), LIMIT_BODY);
}

async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`condition not met in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("workers runtime: limits", () => {
  let rt: Runtime;
  const bridge = recordingBridge();
  const log = memoryLogger();
  const events: LogEvent[] = [];
  // A canary in Node's own environment: no worker may ever see it.
  process.env.BORDE_TEST_CANARY = "canary-value-7d1f";

  before(async () => {
    rt = createWorkerRuntime({ ai: bridge, logger: log.logger, maxResponseBytes: 16 * 1024 * 1024 });
    await rt.poolReady();
    await rt.activate(fixtureVersion("acct_evil", "hostile", ["hostile.js"], { allowOutbound: ["allowed.example"] }));
    await rt.activate(fixtureVersion("acct_good", "hello", ["hello.js"], { vars: { NAME: "good" } }));
    rt.subscribe("acct_evil", "hostile", (e) => events.push(e));
  });
  after(async () => {
    await rt.close();
    delete process.env.BORDE_TEST_CANARY;
  });

  test("an infinite loop is answered 503/1102 within the CPU limit plus a sample, its process recycled; the next request works", async (t) => {
    const pid = rt.processOf("acct_evil")?.pid;
    const r = await call(rt, "acct_evil", "hostile", "/loop", "req-loop");
    assertLimit(r);
    t.diagnostic(`infinite loop answered 503/1102 after ${r.ms.toFixed(0)} ms (CPU limit 50 ms, sampled every 10 ms)`);
    assert.ok(r.ms < 1000, `took ${r.ms} ms`);
    const event = events.find((e) => e.requestId === "req-loop");
    assert.equal(event?.level, "limit");
    assert.match(event!.message, /CPU time limit exceeded: \d+ ms > 50 ms/);
    assert.ok(log.lines.some((l) => l.includes("worker process recycled")));
    const next = await call(rt, "acct_evil", "hostile", "/ok");
    assert.equal(next.status, 200);
    assert.equal(next.body, "ok");
    assert.notEqual(rt.processOf("acct_evil")?.pid, pid, "a new process serves the account");
  });

  test("the account's other requests in flight on that process get 503/1102 too; other accounts keep serving", async () => {
    // A request of the same account waiting on a model (1 s) while another one loops.
    const slow = sourceVersion("acct_evil", "slow", [{ name: "index.js", type: "esm", content: `export default { async fetch(req, env) { await env.AI.run("@slow", {}); return new Response("slow done"); } };` }], { aiBinding: "AI" });
    await rt.activate(slow);
    const slowEvents: LogEvent[] = [];
    const off = rt.subscribe("acct_evil", "slow", (e) => slowEvents.push(e));
    const inFlight = call(rt, "acct_evil", "slow", "/", "req-slow");
    await new Promise((r) => setTimeout(r, 50));
    const [loop, neighbour] = await Promise.all([call(rt, "acct_evil", "hostile", "/loop"), (async () => {
      await new Promise((r) => setTimeout(r, 10));
      return call(rt, "acct_good", "hello", "/");
    })()]);
    assertLimit(loop);
    assertLimit(await inFlight);
    assert.match(slowEvents[0]?.message ?? "", /another request of this account/);
    off();
    assert.equal(neighbour.status, 200);
    assert.equal(neighbour.body, "Hello from good at /");
    await rt.remove("acct_evil", "slow");
  });

  test("a memory bomb is answered 503/1102: in the JavaScript heap (V8's limit) or outside it (RSS above the idle baseline)", async (t) => {
    // A high CPU limit, so that it is the memory limit that stops it.
    const bomb = fixtureVersion("acct_bomb", "bomb", ["hostile.js"], { limits: { cpuMs: 10_000, memoryMb: 128 } });
    await rt.activate(bomb);
    const info = rt.processOf("acct_bomb");
    assert.ok(info && info.baselineRss > 0);
    const bombEvents: LogEvent[] = [];
    rt.subscribe("acct_bomb", "bomb", (e) => bombEvents.push(e));
    const r = await call(rt, "acct_bomb", "bomb", "/bomb", "req-bomb");
    assertLimit(r);
    assert.match(bombEvents.find((e) => e.requestId === "req-bomb")?.message ?? "", /memory limit exceeded: a JavaScript heap reached 128 MB/);
    t.diagnostic(`memory bomb (JS heap) answered after ${r.ms.toFixed(0)} ms; idle baseline RSS of a workerd process ${(info.baselineRss / 2 ** 20).toFixed(0)} MB`);
    assert.equal((await call(rt, "acct_bomb", "bomb", "/ok")).status, 200);
    // Outside the heap (ArrayBuffers): the process's RSS over its baseline.
    const b = await call(rt, "acct_bomb", "bomb", "/buffers", "req-buffers");
    assertLimit(b);
    assert.match(bombEvents.find((e) => e.requestId === "req-buffers")?.message ?? "", /memory limit exceeded: \d+ MB of process memory > 512 MB allowed/);
    t.diagnostic(`memory bomb (ArrayBuffers) answered after ${b.ms.toFixed(0)} ms`);
    assert.equal((await call(rt, "acct_bomb", "bomb", "/ok")).status, 200);
  });

  test("a worker's own memory limit sets its isolate's heap limit", async () => {
    const limits = { cpuMs: 10_000, memoryMb: 256 };
    await rt.activate(fixtureVersion("acct_big", "big", ["hostile.js"], { limits }));
    await rt.activate(fixtureVersion("acct_small", "small", ["hostile.js"], { limits: { cpuMs: 10_000 } }));
    const big = await call(rt, "acct_big", "big", "/alloc?mb=180");
    assert.equal(big.status, 200, big.body);
    assert.deepEqual(JSON.parse(big.body), { held: 180 });
    assertLimit(await call(rt, "acct_small", "small", "/alloc?mb=180"));
  });

  test("a workerd process that dies under a request (a crash) is answered 503/1102 and replaced", async () => {
    await rt.activate(fixtureVersion("acct_crash", "hang", ["hostile.js"], { limits: { wallMs: 10_000 } }));
    const pending = call(rt, "acct_crash", "hang", "/hang", "req-crash");
    await new Promise((r) => setTimeout(r, 100));
    const pid = rt.processOf("acct_crash")!.pid;
    process.kill(pid, "SIGKILL");
    const r = await pending;
    assertLimit(r);
    assert.ok(r.ms < 2000);
    assert.ok(log.lines.some((l) => l.includes("exited unexpectedly")));
    assert.equal((await call(rt, "acct_crash", "hang", "/ok")).status, 200);
    assert.notEqual(rt.processOf("acct_crash")?.pid, pid);
  });

  test("an unbounded promise chain is answered 503/1102", async () => {
    assertLimit(await call(rt, "acct_evil", "hostile", "/promises"));
    assert.equal((await call(rt, "acct_evil", "hostile", "/ok")).status, 200);
  });

  test("a request that never ends is stopped at the wall-time limit", async () => {
    await rt.activate(fixtureVersion("acct_wall", "hang", ["hostile.js"], { limits: { wallMs: 300 } }));
    const r = await call(rt, "acct_wall", "hang", "/hang");
    assertLimit(r);
    assert.ok(r.ms >= 290 && r.ms < 2000, `${r.ms} ms`);
    assert.equal((await call(rt, "acct_wall", "hang", "/ok")).status, 200);
  });

  test("CPU burnt after the response (a loop in waitUntil) recycles the process and is logged", async () => {
    const pid = rt.processOf("acct_evil")?.pid;
    const before = events.length;
    const r = await call(rt, "acct_evil", "hostile", "/background");
    assert.equal(r.status, 200);
    await until(() => events.slice(before).some((e) => e.level === "limit" && /after the response/.test(e.message)));
    await until(() => rt.processOf("acct_evil")?.pid !== pid || rt.processOf("acct_evil") === null);
    assert.equal((await call(rt, "acct_evil", "hostile", "/ok")).status, 200);
  });

  test("a response over the size cap: 503/1102 when its length is known, a broken body when it streams", async () => {
    const big = sourceVersion("acct_size", "big", [{ name: "index.js", type: "esm", content: `export default { fetch() { return new Response(new Uint8Array(20 * 1024 * 1024)); } };` }]);
    await rt.activate(big);
    assertLimit(await call(rt, "acct_size", "big", "/"));
    const res = await rt.fetch("acct_evil", "hostile", new Request("http://h/huge"), "req-huge");
    assert.equal(res.status, 200);
    let received = 0;
    await assert.rejects(
      (async () => {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) received += chunk.length;
      })(),
    );
    assert.ok(received <= 16 * 1024 * 1024, `${received} bytes received`);
    assert.ok(events.some((e) => e.requestId === "req-huge" && e.level === "limit"));
  });

  test("subrequests (fetch and AI calls) over the limit: 503/1102", async () => {
    // Allowed host, no network here: each fetch fails, but each one counts.
    const r = await call(rt, "acct_evil", "hostile", "/subrequests?n=60");
    assertLimit(r);
    assert.match(events.at(-1)?.message ?? "", /subrequest limit exceeded: more than 50/);
    const within = await call(rt, "acct_evil", "hostile", "/subrequests?n=5");
    assert.equal(within.status, 200);
    const ai = `export default { async fetch(req, env) { for (let i = 0; i < 51; i++) await env.AI.run("@m", { prompt: "x" }); return new Response("all done"); } };`;
    await rt.activate(sourceVersion("acct_ai", "ai-loop", [{ name: "index.js", type: "esm", content: ai }], { aiBinding: "AI" }));
    bridge.calls.length = 0;
    assertLimit(await call(rt, "acct_ai", "ai-loop", "/"));
    assert.equal(bridge.calls.length, 50);
  });

  test("outbound network is denied by default: the Borde API, NATS, PostgreSQL and any local port, by any spelling", async () => {
    const hits: string[] = [];
    const local = http.createServer((req, res) => {
      hits.push(req.url ?? "");
      res.end("reached");
    });
    await new Promise<void>((r) => local.listen(0, "127.0.0.1", r));
    const port = (local.address() as AddressInfo).port;
    try {
      const targets = [
        `http://127.0.0.1:${port}/`,
        `http://localhost:${port}/`,
        `http://[::1]:${port}/`,
        `http://0.0.0.0:${port}/`,
        `http://127.1:${port}/`,
        `http://2130706433:${port}/`,
        `http://[::ffff:127.0.0.1]:${port}/`,
        `http://good.workers.localhost:${port}/`,
        "http://127.0.0.1:8787/client/v4/accounts/acct_good/ai/run/@local/stories",
        "http://127.0.0.1:4222/",
        "http://127.0.0.1:5432/",
        "http://169.254.169.254/latest/meta-data/",
        "https://not-allowed.example/",
        "file:///etc/passwd",
      ];
      for (const target of targets) {
        const r = await call(rt, "acct_evil", "hostile", `/fetch?url=${encodeURIComponent(target)}`);
        assert.equal(r.status, 200);
        const out = JSON.parse(r.body) as { ok: boolean; error?: string };
        assert.equal(out.ok, false, `${target} was reachable: ${r.body}`);
      }
      for (const to of [`127.0.0.1:${port}`, "127.0.0.1:5432", "127.0.0.1:4222", "example.com:443"]) {
        const r = JSON.parse((await call(rt, "acct_evil", "hostile", `/connect?to=${to}`)).body) as { ok: boolean };
        assert.equal(r.ok, false, `connect(${to}) succeeded`);
      }
      // Even an allow-list naming a local address does not open it.
      await rt.activate(fixtureVersion("acct_evil", "lenient", ["hostile.js"], { allowOutbound: ["127.0.0.1", "localhost"] }));
      const r = JSON.parse((await call(rt, "acct_evil", "lenient", `/fetch?url=${encodeURIComponent(`http://127.0.0.1:${port}/`)}`)).body) as { ok: boolean };
      assert.equal(r.ok, false);
      assert.deepEqual(hits, [], "no request reached the local server");
    } finally {
      local.close();
    }
  });

  test("no filesystem, no process environment — even with nodejs_compat", async () => {
    const plain = JSON.parse((await call(rt, "acct_evil", "hostile", "/globals")).body) as { process: string; require: string; fs: { ok: boolean } };
    assert.equal(plain.process, "undefined");
    assert.equal(plain.require, "undefined");
    assert.equal(plain.fs.ok, false);
    await rt.activate(fixtureVersion("acct_evil", "node", ["hostile.js"], { compatibilityDate: "2026-07-01", compatibilityFlags: ["nodejs_compat"], vars: { OWN_VAR: "mine" } }));
    const r = await call(rt, "acct_evil", "node", "/node");
    assert.equal(r.status, 200, r.body);
    const out = JSON.parse(r.body) as Record<string, { ok: boolean; value?: unknown; error?: string }>;
    assert.ok(!r.body.includes("canary-value-7d1f"), "Node's environment leaked");
    // process.env holds the worker's own vars (workerd fills it from its text bindings), nothing else.
    assert.deepEqual(JSON.parse(out.processEnv!.value as string), { OWN_VAR: "mine" });
    // node:fs is workerd's virtual filesystem (/bundle, /tmp, /dev), not the host's.
    assert.equal(out.readPasswd!.ok, false, `read /etc/passwd: ${JSON.stringify(out.readPasswd)}`);
    assert.ok(!(out.readCwd!.value as string[]).includes("etc"), `the host's root is visible: ${JSON.stringify(out.readCwd)}`);
    assert.equal(out.childProcess!.ok, false);
  });

  test("a worker cannot reach another account's workers or the platform's internals", async () => {
    await rt.activate(sourceVersion("acct_victim", "secret-keeper", [{ name: "index.js", type: "esm", content: `export default { fetch(req, env) { return new Response(env.SECRET); } };` }], { secrets: { SECRET: "victim-secret" }, aiBinding: "AI" }));
    // The attacker reaches for the raw env (with the platform's gate) and forges request ids.
    const attacker = `
      import { env as rawEnv } from "cloudflare:workers";
      export default {
        async fetch(req, env) {
          const out = { keys: Object.keys(rawEnv), forged: [], fetches: [] };
          const gate = rawEnv.__BORDE_GATE;
          for (let p = 1; p <= 12; p++) for (let s = 1; s <= 4; s++) {
            try { await gate.ai(p + "." + s, "@m", { prompt: "billed to someone else?" }); out.forged.push("accepted " + p + "." + s); }
            catch (e) { out.forged.push(String(e.message)); }
          }
          for (const u of ["http://secret-keeper.workers.localhost/", "https://secret-keeper.workers.localhost/", "http://127.0.0.1/workers/secret-keeper/"]) {
            try { const r = await fetch(u); out.fetches.push(await r.text()); } catch (e) { out.fetches.push("denied"); }
          }
          return Response.json(out);
        },
      };`;
    await rt.activate(sourceVersion("acct_evil", "attacker", [{ name: "index.js", type: "esm", content: attacker }], { aiBinding: "AI" }));
    const victim = call(rt, "acct_victim", "secret-keeper", "/"); // a request of the victim in flight meanwhile
    bridge.calls.length = 0;
    const r = await call(rt, "acct_evil", "attacker", "/");
    assert.equal(r.status, 200, r.body);
    const out = JSON.parse(r.body) as { keys: string[]; forged: string[]; fetches: string[] };
    assert.ok(!out.keys.includes("LOADER") && !out.keys.includes("NODE") && !out.keys.includes("KEY"), `raw env: ${out.keys}`);
    assert.ok(out.forged.every((m) => !m.startsWith("accepted")), "a forged request id was accepted");
    assert.equal(bridge.calls.length, 0);
    assert.deepEqual(out.fetches, ["denied", "denied", "denied"]);
    assert.equal((await victim).body, "victim-secret");
    assert.notEqual(rt.processOf("acct_victim")?.pid, rt.processOf("acct_evil")?.pid);
  });
});

describe("workers runtime: a neighbour's latency while another account attacks", () => {
  let rt: Runtime;
  const nlog = memoryLogger();

  before(async () => {
    // No backoff between recycles: the attacker's code runs (and is killed) as often as it is
    // sent, the hardest case for its neighbours; in production the backoff slows it further.
    rt = createWorkerRuntime({ ai: recordingBridge(), logger: nlog.logger, recycleBackoff: process.env.BACKOFF === "1" });
    await rt.poolReady();
    await rt.activate(fixtureVersion("acct_b", "hello", ["hello.js"]));
    await rt.activate(fixtureVersion("acct_a", "hostile", ["hostile.js"]));
  });
  after(async () => {
    await rt.close();
    if (process.env.SHOW_LOGS) console.error(nlog.lines.join(""));
  });

  /** p99 of each of `windows` windows of `size` sequential requests to B's hello worker. */
  async function windows(count: number, size: number): Promise<number[]> {
    const p99s: number[] = [];
    for (let w = 0; w < count; w++) {
      const times: number[] = [];
      for (let i = 0; i < size; i++) {
        const t0 = performance.now();
        const res = await rt.fetch("acct_b", "hello", new Request("http://hello/"), "b");
        assert.equal(res.status, 200);
        await res.text();
        times.push(performance.now() - t0);
      }
      p99s.push(percentile(times, 0.99));
    }
    return p99s;
  }

  /** Starts `attackers` clients hammering A's hostile worker; returns a stop function with the counts. */
  function attack(path: string, attackers: number): () => Promise<{ answered: number; limited: number }> {
    let stop = false;
    let answered = 0;
    let limited = 0;
    const clients = Array.from({ length: attackers }, async () => {
      while (!stop) {
        const res = await rt.fetch("acct_a", "hostile", new Request(`http://hostile${path}`), "a");
        await res.text();
        answered++;
        if (res.status === 503) limited++;
      }
    });
    return async () => {
      stop = true;
      await Promise.all(clients);
      return { answered, limited };
    };
  }

  /**
   * Baseline and attack windows interleaved (so drifts in the machine's load, which on a shared
   * 2-core box are large, fall on both alike); the medians of the windows' p99s are compared.
   */
  async function measure(path: string): Promise<{ baseline: number[]; attacked: number[]; answered: number; limited: number }> {
    const baseline: number[] = [];
    const attacked: number[] = [];
    let answered = 0;
    let limited = 0;
    for (let i = 0; i < 8; i++) {
      baseline.push(...(await windows(1, 150)));
      const stop = attack(path, 3);
      await new Promise((r) => setTimeout(r, 30)); // the attack is under way before measuring
      attacked.push(...(await windows(1, 150)));
      const counts = await stop();
      answered += counts.answered;
      limited += counts.limited;
    }
    return { baseline, attacked, answered, limited };
  }

  for (const [label, path] of [
    ["infinite loop", "/loop"],
    ["memory bomb", "/bomb"],
  ] as const) {
    test(`B's p99 stays within 2x of its baseline while A's ${label} worker is hammered`, async (t) => {
      await windows(2, 100); // warm-up
      // A noisy neighbour of the test itself (other suites on this shared 2-core machine) can
      // spoil a measurement: up to three are taken before concluding.
      let verdict = "";
      for (let attempt = 1; attempt <= 3; attempt++) {
        const m = await measure(path);
        const base = median(m.baseline);
        const during = median(m.attacked);
        t.diagnostic(
          `${label}, attempt ${attempt}: B p99 per window of 150 — baseline ${m.baseline.map((x) => x.toFixed(2)).join(", ")} (median ${base.toFixed(2)} ms); ` +
            `under attack ${m.attacked.map((x) => x.toFixed(2)).join(", ")} (median ${during.toFixed(2)} ms); A: ${m.answered} answered, ${m.limited} with 503/1102`,
        );
        assert.ok(m.limited > 0, "the attack ran and was stopped");
        if (during <= 2 * base) return;
        verdict = `B's p99 under attack ${during.toFixed(2)} ms > 2 × baseline ${base.toFixed(2)} ms`;
      }
      assert.fail(verdict);
    });
  }
});
