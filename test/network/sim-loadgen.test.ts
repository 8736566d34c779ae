import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, test } from "node:test";
import { BordeError } from "../../src/errors.js";
import { startDelayProxy, type DelayProxy } from "../../src/network/sim/delay-proxy.js";
import { runLoad } from "../../src/network/sim/loadgen.js";
import { summarize } from "../../src/network/sim/report.js";

let server: http.Server;
let port: number;
const proxies: DelayProxy[] = [];
const seen: Array<{ url: string; auth: string | undefined; type: string | undefined; body: string }> = [];

before(async () => {
  // Stands in for a Borde node: answers /ok with JSON and the routing headers, /fail with a 500.
  server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (b: Buffer) => parts.push(b));
    req.on("end", () => {
      seen.push({ url: req.url!, auth: req.headers.authorization, type: req.headers["content-type"], body: Buffer.concat(parts).toString() });
      if (req.url!.endsWith("/fail")) {
        res.writeHead(500, { "content-type": "application/json" }).end('{"success":false}');
        return;
      }
      res.writeHead(200, { "content-type": "application/json", "borde-served-by": "frankfurt", "borde-pop": "madrid" });
      res.end(JSON.stringify({ result: "x".repeat(100) }));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as net.AddressInfo).port;
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

async function via(delayMs: number): Promise<string> {
  const p = await startDelayProxy({ target: { host: "127.0.0.1", port }, delayMs });
  proxies.push(p);
  return `http://127.0.0.1:${p.port}`;
}

test("runLoad records every response with its latency, bytes and routing headers", async () => {
  const clients = [
    { city: "lisbon", lat: 38.7, lon: -9.1, targets: { edge: await via(2), central: await via(25) } },
    { city: "tokyo", lat: 35.7, lon: 139.7, targets: { edge: await via(2), central: await via(25) } },
  ];
  const requests = [
    { task: "classify", path: "/client/v4/accounts/acc/ai/run/@borde/ok", body: { text: "hi" } },
    { task: "broken", path: "/client/v4/accounts/acc/ai/run/@borde/fail", body: "raw text", headers: { "content-type": "text/plain" } },
  ];
  const edge = await runLoad({ clients, requests, token: "tok", mode: "edge", concurrencyPerClient: 2, durationMs: 300 });
  const central = await runLoad({ clients, requests, token: "tok", mode: "central", concurrencyPerClient: 2, durationMs: 300 });

  for (const [samples, delay] of [
    [edge, 2],
    [central, 25],
  ] as const) {
    assert.ok(samples.length >= 4, `${samples.length} samples: each of the 2 × 2 loops sends at least one`);
    for (const s of samples) {
      assert.ok(s.ms >= 2 * delay, `a request took ${s.ms} ms through a ${delay} ms proxy`);
      assert.ok(s.startedAt >= 0 && s.startedAt < 300, `started at ${s.startedAt} ms`);
      if (s.task === "classify") {
        assert.deepEqual([s.ok, s.status, s.servedBy, s.entryPop, s.bytesIn, s.bytesOut], [true, 200, "frankfurt", "madrid", 113, 13]);
      } else {
        assert.deepEqual([s.ok, s.status, s.servedBy, s.bytesOut], [false, 500, null, 8]);
      }
    }
    assert.deepEqual(new Set(samples.map((s) => s.city)), new Set(["lisbon", "tokyo"]));
  }
  const summary = summarize([...edge, ...central]);
  assert.deepEqual(summary.modes, ["edge", "central"]);
  assert.equal(summary.cells.find((c) => c.task === "broken")!.okPct, 0);

  const json = seen.find((r) => r.url.endsWith("/ok"))!;
  assert.deepEqual([json.auth, json.type, json.body], ["Bearer tok", "application/json", '{"text":"hi"}']);
  const raw = seen.find((r) => r.url.endsWith("/fail"))!;
  assert.deepEqual([raw.type, raw.body], ["text/plain", "raw text"]);
});

test("a target nobody listens on gives failed samples with status 0, not an exception", async () => {
  const dead = net.createServer();
  await new Promise<void>((r) => dead.listen(0, "127.0.0.1", r));
  const deadPort = (dead.address() as net.AddressInfo).port;
  await new Promise((r) => dead.close(r));
  const samples = await runLoad({
    clients: [{ city: "nowhere", lat: 0, lon: 0, targets: { edge: `http://127.0.0.1:${deadPort}` } }],
    requests: [{ task: "t", path: "/x", body: {} }],
    token: "tok",
    mode: "edge",
    concurrencyPerClient: 1,
    durationMs: 50,
  });
  assert.ok(samples.length >= 1, "at least one failed sample");
  for (const s of samples) assert.deepEqual([s.ok, s.status, s.bytesIn], [false, 0, 0]);
});

test("the signal stops the run at once, without recording the aborted requests", async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  const t = performance.now();
  const samples = await runLoad({
    clients: [{ city: "slow", lat: 0, lon: 0, targets: { central: await via(200) } }],
    requests: [{ task: "t", path: "/ok", body: {} }],
    token: "tok",
    mode: "central",
    concurrencyPerClient: 3,
    durationMs: 10_000,
    signal: ac.signal,
  });
  assert.ok(performance.now() - t < 1000, "runLoad returned soon after the abort");
  assert.deepEqual(samples, []);
});

test("bad options are refused up front", async () => {
  const base = { clients: [{ city: "a", lat: 0, lon: 0, targets: { edge: "http://127.0.0.1:1" } }], requests: [{ task: "t", path: "/", body: {} }], token: "t", durationMs: 10 };
  await assert.rejects(runLoad({ ...base, mode: "central", concurrencyPerClient: 1 }), (e) => e instanceof BordeError && /no target for mode "central"/.test(e.message));
  await assert.rejects(runLoad({ ...base, mode: "edge", concurrencyPerClient: 0 }), BordeError);
  await assert.rejects(runLoad({ ...base, requests: [], mode: "edge", concurrencyPerClient: 1 }), BordeError);
});
