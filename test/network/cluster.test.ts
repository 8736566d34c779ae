/**
 * A real multi-process network on loopback: a nats-server per PoP (regions joined by gateways,
 * latency-emulating proxies on the links) and a `borde node` process per PoP, started by the same
 * launcher `borde sim` uses. Routing locality, streaming across PoPs, data residency, and failover
 * when a PoP is SIGKILLed under load.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as connectNats } from "@nats-io/transport-node";
import { startSim, type Sim } from "../../src/network/sim/launcher.js";
import { servicesAvailable } from "../services.js";
import { modelCaller, NODE_COMMAND, natsOrSkip } from "./cluster-helpers.js";

const ACCOUNT = "acct_cluster";
const TOKEN = "cluster-token-0123456789";
const TOPOLOGY = path.resolve(import.meta.dirname, "../fixtures/network/cluster.toml");

const run = modelCaller(ACCOUNT, TOKEN);

describe("edge network (real nats-server and borde node processes)", () => {
  let sim: Sim;
  let work: string;
  const url = (pop: string) => sim.pops.find((p) => p.name === pop)!.url;

  before(async () => {
    if (!natsOrSkip(servicesAvailable().nats)) return;
    work = fs.mkdtempSync(path.join(os.tmpdir(), "borde-cluster-"));
    sim = await startSim({
      topologyText: fs.readFileSync(TOPOLOGY, "utf8"),
      topologyFile: TOPOLOGY,
      workDir: work,
      nodeCommand: NODE_COMMAND,
      modelsDir: path.join(work, "models"),
      // One secrets key for every PoP, so that workers' sealed secrets replicate.
      env: { BORDE_DEV_ACCOUNT: ACCOUNT, BORDE_DEV_TOKEN: TOKEN, BORDE_DEV_PLAN: "paid", BORDE_SECRET_KEY: "ab".repeat(32) },
    });
    // Every PoP has heard every other's heartbeat (they go out every 500 ms).
    await new Promise((r) => setTimeout(r, 1500));
  });
  after(async () => {
    await sim?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it("answers where the model is: locally when the PoP serves it, else at the nearest PoP that does", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const prompt = { prompt: "Once upon a time", max_tokens: 8, temperature: 0 };
    const v = await run(url("virginia"), "@borde/stories260k", prompt);
    assert.equal(v.status, 200, v.text);
    assert.deepEqual([v.pop, v.servedBy], ["virginia", "virginia"]);
    // Madrid does not serve stories260k: Frankfurt (1,450 km) is nearer than Virginia (6,100 km).
    const m = await run(url("madrid"), "@borde/stories260k", prompt);
    assert.equal(m.status, 200, m.text);
    assert.deepEqual([m.pop, m.servedBy], ["madrid", "frankfurt"]);
    assert.equal(m.json.result.response, v.json.result.response, "the same model answers the same wherever it runs");
    const lid = await run(url("madrid"), "@borde/fasttext-lid-176", { text: "Bonjour tout le monde, comment allez-vous ?" });
    assert.equal(lid.status, 200, lid.text);
    assert.equal(lid.servedBy, "madrid");
    assert.equal(lid.json.result[0].label, "fr");
  });

  it("refuses NATS clients without the cluster token (servers, routes and gateways require it)", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const pop = sim.topology.pops[0]!;
    await assert.rejects(connectNats({ servers: `nats://${pop.host}:${pop.nats_port}`, reconnect: false, timeout: 3000 }), /Authorization|authorization/);
    const bad = connectNats({ servers: `nats://${pop.host}:${pop.nats_port}`, reconnect: false, timeout: 3000, token: "not-the-cluster-token" });
    await assert.rejects(bad, /Authorization|authorization/);
  });

  it("streams across PoPs", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const s = await run(url("madrid"), "@borde/stories260k", { prompt: "Once upon a time", max_tokens: 16, temperature: 0, stream: true });
    assert.equal(s.status, 200, s.text);
    assert.match(s.type ?? "", /text\/event-stream/);
    assert.equal(s.servedBy, "frankfurt");
    const events = s.text.split("\n\n").filter(Boolean);
    assert.ok(events.length >= 4, `several events, got ${events.length}`);
    assert.equal(events.at(-1), "data: [DONE]");
    const usage = JSON.parse(events.at(-2)!.slice(6)).usage;
    assert.equal(usage.completion_tokens, 16);
  });

  it("keeps a pinned request inside its jurisdiction, or refuses it with 451/7131", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const prompt = { prompt: "Once upon a time", max_tokens: 4, temperature: 0 };
    // Entering Virginia (us), pinned to eu: served in Frankfurt, never by Virginia's own copy.
    for (let i = 0; i < 5; i++) {
      const r = await run(url("virginia"), "@borde/stories260k", prompt, { "borde-jurisdiction": "eu" });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.servedBy, "frankfurt");
    }
    // Pinned to a jurisdiction with no PoP: refused, not served anywhere else.
    const none = await run(url("madrid"), "@borde/stories260k", prompt, { "borde-jurisdiction": "apac" });
    assert.equal(none.status, 451, none.text);
    assert.equal(none.json.errors[0].code, 7131);
    // Pinned to us from Madrid: Madrid (eu) has no stories260k, Virginia does.
    const us = await run(url("madrid"), "@borde/stories260k", prompt, { "borde-jurisdiction": "us" });
    assert.equal(us.servedBy, "virginia");
    // A malformed pin is a 400, not a silent "anywhere".
    const bad = await run(url("madrid"), "@borde/stories260k", prompt, { "borde-jurisdiction": "EU!" });
    assert.equal(bad.status, 400);
  });

  it("spills over to the next PoP when the entry PoP is at capacity", async (t) => {
    if (!sim) return t.skip("no nats-server");
    // Virginia takes 2 calls at once (capacity = 2); the others go to the nearest other PoP.
    const all = await Promise.all(Array.from({ length: 6 }, () => run(url("virginia"), "@borde/stories260k", { prompt: "Once upon a time", max_tokens: 200, temperature: 0 })));
    assert.ok(all.every((r) => r.status === 200), JSON.stringify(all.map((r) => r.status)));
    const by = new Set(all.map((r) => r.servedBy));
    assert.ok(by.has("virginia") && by.has("frankfurt"), `served by ${[...by].join(", ")}`);
  });

  it("replicates accounts and tokens: made on one PoP, they work on every PoP; revoked anywhere, everywhere", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const admin = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
    const acct = await fetch(`${url("virginia")}/client/v4/admin/accounts`, { method: "POST", headers: admin, body: JSON.stringify({ name: "replicated", plan: "paid" }) });
    assert.equal(acct.status, 200, await acct.clone().text());
    const id = ((await acct.json()) as { result: { id: string } }).result.id;
    const tok = await fetch(`${url("virginia")}/client/v4/admin/tokens`, { method: "POST", headers: admin, body: JSON.stringify({ account_id: id, scopes: ["ai:run"] }) });
    const token = ((await tok.json()) as { result: { token: string; id: string } }).result;
    const call = (pop: string) =>
      fetch(`${url(pop)}/client/v4/accounts/${id}/ai/run/@borde/fasttext-lid-176`, { method: "POST", headers: { authorization: `Bearer ${token.token}` }, body: JSON.stringify({ text: "hello there" }) });
    const until = async (pop: string, status: number) => {
      for (let i = 0; i < 50; i++) {
        if ((await call(pop)).status === status) return true;
        await new Promise((r) => setTimeout(r, 100));
      }
      return false;
    };
    assert.ok(await until("madrid", 200), "the token made in Virginia works in Madrid");
    assert.ok(await until("frankfurt", 200), "and in Frankfurt");
    const revoke = await fetch(`${url("madrid")}/client/v4/admin/tokens/${token.id}`, { method: "DELETE", headers: admin });
    assert.equal(revoke.status, 200, await revoke.text());
    assert.ok(await until("virginia", 401), "revoked in Madrid, refused in Virginia");
  });

  it("replicates deployed workers and their secrets: deployed on one PoP, they run on every PoP; deleted anywhere, gone everywhere", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const api = (pop: string, method: string, p: string, body?: unknown) =>
      fetch(`${url(pop)}/client/v4/accounts/${ACCOUNT}/workers/scripts${p}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const code = `export default { async fetch(req, env) { return Response.json({ hello: env.GREETING, secret: env.API_KEY ?? null }); } };`;
    const put = await api("virginia", "PUT", "/edge-hello", {
      modules: [{ name: "index.js", type: "esm", content_base64: Buffer.from(code).toString("base64") }],
      compatibility_date: "2024-09-23",
      vars: { GREETING: "hola" },
    });
    assert.equal(put.status, 200, await put.text());
    const secret = await api("virginia", "PUT", "/edge-hello/secrets", { name: "API_KEY", text: "s3cret", type: "secret_text" });
    assert.equal(secret.status, 200, await secret.text());
    const until = async (pop: string, ok: (status: number, body: string) => boolean) => {
      for (let i = 0; i < 80; i++) {
        const r = await fetch(`${url(pop)}/workers/edge-hello/`);
        if (ok(r.status, await r.text())) return true;
        await new Promise((res) => setTimeout(res, 100));
      }
      return false;
    };
    const expected = JSON.stringify({ hello: "hola", secret: "s3cret" });
    assert.ok(await until("madrid", (s, b) => s === 200 && b === expected), "deployed in Virginia, running in Madrid with its secret");
    assert.ok(await until("frankfurt", (s, b) => s === 200 && b === expected), "and in Frankfurt");
    assert.equal((await api("frankfurt", "DELETE", "/edge-hello")).status, 200);
    assert.ok(await until("virginia", (s) => s === 404), "deleted in Frankfurt, gone in Virginia");
    assert.ok(await until("madrid", (s) => s === 404), "and in Madrid");
  });

  it("routes around a PoP killed under load: no hang, in-flight calls fail fast, new ones go elsewhere", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const results: { status: number; servedBy: string | null; ms: number; code?: number }[] = [];
    let stop = false;
    const loops = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const t0 = performance.now();
        const r = await run(url("madrid"), "@borde/stories260k", { prompt: "Once upon a time", max_tokens: 48, temperature: 0 });
        results.push({ status: r.status, servedBy: r.servedBy, ms: performance.now() - t0, code: r.json?.errors?.[0]?.code });
      }
    });
    await new Promise((r) => setTimeout(r, 1500));
    const before = results.length;
    sim.kill("frankfurt");
    const killedAt = results.length;
    await new Promise((r) => setTimeout(r, 4000));
    stop = true;
    await Promise.all(loops);
    assert.ok(before > 0 && results.slice(0, before).every((r) => r.servedBy === "frankfurt"), "Frankfurt served the load before the kill");
    t.diagnostic(`${results.length} calls: ${before} before the kill, ${results.filter((r) => r.status !== 200).length} failed, slowest ${Math.round(Math.max(...results.map((r) => r.ms)))} ms`);
    const failed = results.filter((r) => r.status !== 200);
    // At most the calls running on Frankfurt at the moment it died fail, with 502/7130, quickly.
    assert.ok(failed.length <= 4, `${failed.length} failed: ${JSON.stringify(failed)}`);
    for (const f of failed) {
      assert.equal(f.status, 502, JSON.stringify(f));
      assert.equal(f.code, 7130);
    }
    assert.ok(Math.max(...results.map((r) => r.ms)) < 5000, "no request hung");
    const afterKill = results.slice(killedAt + 4);
    assert.ok(afterKill.length > 5, "load went on after the kill");
    assert.ok(afterKill.filter((r) => r.status === 200).every((r) => r.servedBy === "virginia"), "later calls served by Virginia");
  });
});
