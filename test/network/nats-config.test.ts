/**
 * The generated nats-server configs, run for real: three nats-server processes (Frankfurt core and
 * Madrid edge in region eu-central, Virginia edge in us-east) from `natsConfigs`, on free ports.
 * Proves queue-group locality, failover through the gateway, and JetStream (core region only) used
 * from an edge region through the gateway.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { loadTopology, natsConfigs, type Topology } from "../../src/network/index.js";
import { freePort, needService } from "../services.js";

const FIXTURE = path.resolve(import.meta.dirname, "../fixtures/network/two-regions.toml");
const NATS_BIN = process.env.BORDE_TEST_NATS_SERVER ?? "nats-server";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const children: ChildProcess[] = [];
const connections: NatsConnection[] = [];
let tmp: string | undefined;
after(async () => {
  for (const nc of connections) await nc.close().catch(() => {});
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        }),
    ),
  );
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

test("configs: cluster per region, gateways between regions, JetStream in the core region only", () => {
  const topology = loadTopology(FIXTURE);
  const configs = natsConfigs(topology, { storeDir: "/var/lib/borde/nats" });
  assert.deepEqual([...configs.keys()], ["frankfurt.conf", "madrid.conf", "virginia.conf"]);
  const frankfurt = configs.get("frankfurt.conf")!;
  const virginia = configs.get("virginia.conf")!;
  assert.match(frankfurt, /^server_name: "frankfurt"$/m);
  assert.match(frankfurt, /^listen: "127\.0\.0\.1:14222"$/m);
  assert.match(frankfurt, /cluster \{\n  name: "eu-central"\n  listen: "127\.0\.0\.1:14223"\n  routes: \[\n    "nats-route:\/\/127\.0\.0\.1:14233"\n  \]\n\}/);
  assert.match(frankfurt, /\{ name: "us-east", urls: \["nats:\/\/127\.0\.0\.1:14244"\] \}/);
  assert.match(frankfurt, /jetstream \{\n  store_dir: "\/var\/lib\/borde\/nats\/frankfurt"\n\}/);
  assert.match(configs.get("madrid.conf")!, /store_dir: "\/var\/lib\/borde\/nats\/madrid"/);
  // A region of one server still names its cluster (it must equal the gateway name).
  assert.match(virginia, /cluster \{\n  name: "us-east"\n  listen: "127\.0\.0\.1:14243"\n  routes: \[\]\n\}/);
  assert.match(virginia, /\{ name: "eu-central", urls: \["nats:\/\/127\.0\.0\.1:14224", "nats:\/\/127\.0\.0\.1:14234"\] \}/);
  assert.doesNotMatch(virginia, /jetstream/);
  // One region: no gateway block.
  const single = loadTopology(FIXTURE);
  single.pops.splice(2, 1);
  single.regions.delete("us-east");
  assert.doesNotMatch(natsConfigs(single).get("frankfurt.conf")!, /gateway \{/);
});

async function getJson(url: string): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await fetch(url);
    return res.ok ? ((await res.json()) as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Until every server has its routes and an outbound gateway connection to every other region. */
async function waitForMesh(topology: Topology, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pending: string[] = [];
    for (const pop of topology.pops) {
      const base = `http://${pop.host}:${pop.monitor_port}`;
      const peers = topology.regions.get(pop.region)!.length - 1;
      const routez = await getJson(`${base}/routez`);
      if (!routez || (routez.num_routes as number) < peers) pending.push(`${pop.name} routes`);
      const gatewayz = await getJson(`${base}/gatewayz`);
      const outbound = (gatewayz?.outbound_gateways ?? {}) as Record<string, { connection?: unknown }>;
      for (const region of topology.regions.keys()) {
        if (region !== pop.region && !outbound[region]?.connection) pending.push(`${pop.name} gateway to ${region}`);
      }
    }
    if (pending.length === 0) return;
    if (Date.now() > deadline) throw new Error(`NATS mesh not ready after ${timeoutMs} ms: ${pending.join(", ")}`);
    await sleep(100);
  }
}

/** Retries until `fn` succeeds (interest takes a moment to cross routes and gateways). */
async function eventually<T>(fn: () => Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${what}: ${e instanceof Error ? e.message : String(e)}`);
      await sleep(100);
    }
  }
}

test("real nats-servers: queue-group locality, failover through the gateway, JetStream from the edge", async (t) => {
  if (!needService(t, "nats")) return;
  const started = Date.now();
  const topology = loadTopology(FIXTURE);
  for (const pop of topology.pops) {
    pop.nats_port = await freePort();
    pop.cluster_port = await freePort();
    pop.gateway_port = await freePort();
    pop.monitor_port = await freePort();
  }
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "borde-natscfg-"));
  const configs = natsConfigs(topology, { storeDir: path.join(tmp, "store") });
  for (const [name, text] of configs) {
    const file = path.join(tmp, name);
    await fs.writeFile(file, text);
    const child = spawn(NATS_BIN, ["-c", file], { stdio: ["ignore", "ignore", "ignore"] });
    children.push(child);
  }
  await waitForMesh(topology);
  t.diagnostic(`mesh ready in ${Date.now() - started} ms`);

  const url = (name: string) => {
    const pop = topology.pops.find((p) => p.name === name)!;
    return `nats://${pop.host}:${pop.nats_port}`;
  };
  const conn = async (name: string) => {
    const nc = await connect({ servers: url(name), name });
    connections.push(nc);
    return nc;
  };
  const frankfurt = await conn("frankfurt"); // region eu-central
  const madrid = await conn("madrid"); // region eu-central
  const virginia = await conn("virginia"); // region us-east

  const respond = (nc: NatsConnection, region: string): Subscription =>
    nc.subscribe("borde.test", { queue: "q", callback: (_err, msg) => {
        msg.respond(region);
      },
    });
  const servedBy = async (nc: NatsConnection) => (await nc.request("borde.test", "", { timeout: 2_000 })).string();
  const servedByAll = async (nc: NatsConnection, n = 20) => Promise.all(Array.from({ length: n }, () => servedBy(nc)));

  respond(frankfurt, "eu-central");
  let us = respond(virginia, "us-east");
  await Promise.all([frankfurt.flush(), virginia.flush()]);
  // Both members are visible everywhere before we judge locality.
  await eventually(async () => assert.ok((await servedByAll(madrid)).every((r) => r === "eu-central")), "eu member from madrid");

  // Locality: each region's clients are served by their own region's member.
  assert.deepEqual(new Set(await servedByAll(virginia)), new Set(["us-east"]));
  assert.deepEqual(new Set(await servedByAll(madrid)), new Set(["eu-central"]));

  // Failover: us-east's member leaves; Virginia's requests cross the gateway to eu-central.
  await us.drain();
  await virginia.flush();
  await eventually(async () => assert.deepEqual(new Set(await servedByAll(virginia)), new Set(["eu-central"])), "failover to eu-central");

  // And back: a new us-east member takes over again.
  us = respond(virginia, "us-east");
  await virginia.flush();
  await eventually(async () => assert.deepEqual(new Set(await servedByAll(virginia)), new Set(["us-east"])), "back to us-east");
  t.diagnostic(`locality and failover checked at ${Date.now() - started} ms`);

  // JetStream lives in eu-central only; a client of the us-east server uses it through the gateway.
  const jsm = await eventually(async () => {
    const m = await jetstreamManager(virginia, { timeout: 2_000 });
    await m.streams.add({ name: "BORDE_TEST", subjects: ["borde.events.>"] });
    return m;
  }, "stream created from us-east");
  const ack = await jetstream(virginia).publish("borde.events.usage", "hello");
  assert.equal(ack.stream, "BORDE_TEST");
  assert.equal(ack.seq, 1);
  const info = await (await jetstreamManager(frankfurt)).streams.info("BORDE_TEST");
  assert.equal(info.state.messages, 1);
  assert.ok(info.cluster?.leader === "frankfurt" || info.cluster?.leader === "madrid", `stream leader ${info.cluster?.leader} is in the core region`);
  const stored = await jsm.streams.getMessage("BORDE_TEST", { seq: 1 });
  assert.equal(stored?.string(), "hello");
  t.diagnostic(`JetStream through the gateway checked at ${Date.now() - started} ms`);
});
