/**
 * The cluster half of metering, in one process against a real nats-server (JetStream) and a real
 * PostgreSQL: PoP outbox → JetStream → ledger writer → PostgreSQL, and the crash windows in between
 * emulated at the exact point they open (after a PubAck, after a commit).
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { after, afterEach, before, describe, test, type TestContext } from "node:test";
import { createOutboxWriter, ensureLedgerConsumer, ensureUsageStream, LEDGER_CONSUMER, USAGE_STREAM, usageMsgId, type OutboxWriter } from "../../src/metering/outbox.js";
import { LedgerConsumer, PgLedger } from "../../src/metering/postgres.js";
import type { UsageRecord } from "../../src/metering/types.js";
import { utcDay } from "../../src/metering/types.js";
import { createLogger, type Logger } from "../../src/observability/index.js";
import { openDatabase, type Db } from "../../src/util/sqlite.js";
import { needService, servicesAvailable, startNats, startPostgres, type NatsService, type PostgresService } from "../services.js";

const DAY = utcDay(Date.now());

function record(i: number, over: Partial<UsageRecord> = {}): UsageRecord {
  const ts = Date.now();
  return {
    requestId: `req-${String(i).padStart(5, "0")}`,
    ts,
    day: utcDay(ts),
    accountId: "acct_a",
    tokenId: "tok_a",
    model: "@local/stories",
    task: "text-generation",
    pop: "madrid",
    served: "edge",
    unit: "tokens",
    inputUnits: 5,
    outputUnits: 8,
    neurons: 0.25,
    cpuMs: 1.5,
    wallMs: 3,
    bytesIn: 40,
    bytesOut: 300,
    ...over,
  };
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const logs: string[] = [];
function testLogger(): Logger {
  return createLogger(
    "info",
    new Writable({
      write(chunk, _enc, cb) {
        logs.push(String(chunk));
        cb();
      },
    }),
  );
}

const available = servicesAvailable();
let pgService: PostgresService | undefined;
let ledger: PgLedger;
let tmp: string;

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "borde-outbox-"));
  if (!available.postgres) return;
  pgService = await startPostgres();
  ledger = new PgLedger(pgService.url);
  await ledger.migrate();
  // Twice: migrate must be re-runnable (every ledger writer runs it at start).
  await ledger.migrate();
});

after(async () => {
  await ledger?.close();
  await pgService?.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** What each test started, torn down in reverse whatever happened. */
let cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  cleanups = [];
});

interface Rig {
  nats: NatsService;
  db: Db;
  outbox: OutboxWriter;
  nc: NatsConnection;
  startConsumer(opts?: { ackWaitMs?: number; batch?: number }): LedgerConsumer;
  pgIds(): Promise<string[]>;
  /** Stream and consumer drained: nothing left to deliver or awaiting an ack. */
  drained(): Promise<boolean>;
}

let dbCounter = 0;
async function rig(t: TestContext, opts: { natsDown?: boolean } = {}): Promise<Rig | null> {
  if (!needService(t, "nats", "postgres")) return null;
  await ledger.pool.query("TRUNCATE usage");
  const nats = await startNats({ jetstream: true });
  cleanups.push(() => nats.stop());
  if (opts.natsDown) await nats.kill();
  const db = openDatabase(path.join(tmp, `outbox-${++dbCounter}.db`));
  cleanups.push(async () => db.close());
  const logger = testLogger();
  const outbox = await createOutboxWriter(db, { servers: nats.url, pop: "madrid", logger });
  cleanups.push(() => outbox.close());
  let nc: NatsConnection | null = null;
  const admin = async () => (nc ??= await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 }));
  cleanups.push(async () => nc?.close());
  return {
    nats,
    db,
    outbox,
    get nc() {
      if (!nc) throw new Error("admin connection not open yet");
      return nc;
    },
    startConsumer(o = {}) {
      const consumer = new LedgerConsumer(ledger, { servers: nats.url, logger, ...o });
      cleanups.unshift(() => consumer.stop());
      void consumer.start();
      return consumer;
    },
    pgIds: () => ledger.requestIds(DAY, DAY),
    async drained() {
      const jsm = await jetstreamManager(await admin());
      const ci = await jsm.consumers.info(USAGE_STREAM, LEDGER_CONSUMER).catch(() => null);
      return ci !== null && ci.num_pending === 0 && ci.num_ack_pending === 0;
    },
  } as Rig;
}

describe("cluster metering: outbox → JetStream → PostgreSQL", { timeout: 60_000 }, () => {
  test("every record written to the outbox lands in PostgreSQL exactly once, with its values", async (t) => {
    const r = await rig(t);
    if (!r) return;
    const consumer = r.startConsumer();
    const N = 600;
    const written = Array.from({ length: N }, (_, i) => record(i, { accountId: i % 3 === 0 ? "acct_b" : "acct_a", served: i % 5 === 0 ? "forwarded" : "edge" }));
    for (const rec of written) assert.equal(r.outbox.write(rec), true);
    await r.outbox.flushed();
    assert.equal(r.outbox.pending(), 0);
    await waitFor("PostgreSQL to hold every record", async () => (await r.pgIds()).length === N);
    await waitFor("the consumer to ack everything", () => r.drained());
    assert.deepEqual(await r.pgIds(), written.map((w) => w.requestId).sort());
    assert.equal(consumer.written, N);

    const rows = await ledger.query({ since: DAY, until: DAY, groupBy: ["account"] });
    assert.deepEqual(
      rows.map((x) => [x.account_id, x.requests, x.output_units, x.bytes_out]),
      [
        ["acct_a", 400, 400 * 8, 400 * 300],
        ["acct_b", 200, 200 * 8, 200 * 300],
      ],
    );
    const [all] = await ledger.query({ since: DAY, until: DAY, groupBy: [], accountId: "acct_a" });
    assert.equal(all?.requests, 400);
    assert.equal(all!.edge_requests + all!.forwarded_requests, 400);
    // The outbox still answers budgets and reused ids after shipping.
    assert.equal(r.outbox.has("acct_a", "req-00001"), true);
    assert.equal(r.outbox.has("acct_b", "req-00001"), false);
    assert.equal(r.outbox.dailyTotals(DAY).accounts.get("acct_a"), 400 * 0.25);
  });

  test("while NATS is down records wait in the outbox; they ship once it is up", async (t) => {
    const r = await rig(t, { natsDown: true });
    if (!r) return;
    // The ledger writer starts while NATS is down too: it waits rather than failing.
    const consumer = r.startConsumer();
    const N = 50;
    for (let i = 0; i < N; i++) assert.equal(r.outbox.write(record(i)), true);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(r.outbox.pending(), N);
    await r.nats.restart();
    await r.outbox.flushed();
    await waitFor("PostgreSQL to hold every record", async () => (await r.pgIds()).length === N);
    await waitFor("the consumer to ack everything", () => r.drained());
    assert.equal((await r.pgIds()).length, N);
    assert.equal(consumer.written, N);
  });

  test("nats-server SIGKILLed mid-stream and restarted: nothing lost, nothing doubled", async (t) => {
    const r = await rig(t);
    if (!r) return;
    const consumer = r.startConsumer({ ackWaitMs: 1_000 });
    const N = 300;
    for (let i = 0; i < N; i++) {
      r.outbox.write(record(i));
      if (i === N / 2) {
        await r.nats.kill();
        setTimeout(() => void r.nats.restart(), 300);
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await r.outbox.flushed();
    await waitFor("PostgreSQL to hold every record", async () => (await r.pgIds()).length === N, 20_000);
    await waitFor("the consumer to ack everything", () => r.drained(), 20_000);
    assert.equal((await r.pgIds()).length, N);
    assert.ok(consumer.written <= N);
  });

  test("writing the same record twice is a no-op", async (t) => {
    const r = await rig(t);
    if (!r) return;
    r.startConsumer();
    const rec = record(1);
    assert.equal(r.outbox.write(rec), true);
    assert.equal(r.outbox.write({ ...rec, neurons: 99 }), false);
    assert.equal(r.outbox.pending() <= 1, true);
    await r.outbox.flushed();
    assert.equal(r.outbox.write(rec), false, "still a duplicate after shipping");
    assert.equal(r.outbox.pending(), 0);
    await waitFor("the record in PostgreSQL", async () => (await r.pgIds()).length === 1);
    await waitFor("the consumer to ack everything", () => r.drained());
    const [row] = await ledger.query({ since: DAY, until: DAY, groupBy: [] });
    assert.equal(row?.requests, 1);
    assert.equal(row?.neurons, 0.25);
  });

  test("a PoP that crashed after the PubAck republishes: JetStream drops the copy, PostgreSQL holds one", async (t) => {
    const r = await rig(t);
    if (!r) return;
    const consumer = r.startConsumer();
    const N = 20;
    for (let i = 0; i < N; i++) r.outbox.write(record(i));
    await r.outbox.flushed();
    // The crash window: JetStream acked, the row was never marked shipped.
    r.db.prepare("UPDATE outbox SET shipped_at = NULL").run();
    assert.equal(r.outbox.pending(), N);
    r.outbox.write(record(N)); // wakes the shipper
    await r.outbox.flushed();
    await waitFor("PostgreSQL to hold every record", async () => (await r.pgIds()).length === N + 1);
    await waitFor("the consumer to ack everything", () => r.drained());
    const jsm = await jetstreamManager(r.nc);
    assert.equal((await jsm.streams.info(USAGE_STREAM)).state.messages, 0, "work queue: acked records leave the stream");
    assert.equal(consumer.written, N + 1, "republished copies never reached the ledger writer");

    // Past the duplicate window (or after the server forgot the id) the copy reaches the writer:
    // PostgreSQL's primary key drops it.
    const js = jetstream(r.nc);
    const late = record(3);
    const ack = await js.publish("borde.usage.madrid", JSON.stringify(late), { msgID: `${usageMsgId(late)}#after-window` });
    assert.equal(ack.duplicate, false);
    const again = await js.publish("borde.usage.madrid", JSON.stringify(late), { msgID: usageMsgId(late) });
    assert.equal(again.duplicate, true, "the stream remembers the id inside the window");
    await waitFor("the late copy to be consumed", () => r.drained());
    assert.equal((await r.pgIds()).length, N + 1);
    assert.equal(consumer.written, N + 1);
  });

  test("a ledger writer that crashed between commit and ack: the redelivery writes nothing twice", async (t) => {
    const r = await rig(t);
    if (!r) return;
    const ackWaitMs = 1_000;
    const nc = await connect({ servers: r.nats.url });
    cleanups.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    await ensureUsageStream(jsm);
    await ensureLedgerConsumer(jsm, ackWaitMs);
    const N = 40;
    for (let i = 0; i < N; i++) r.outbox.write(record(i));
    await r.outbox.flushed();

    // The crashed writer: takes a batch, commits it, dies before any ack.
    const consumer = await jetstream(nc).consumers.get(USAGE_STREAM, LEDGER_CONSUMER);
    const taken: UsageRecord[] = [];
    for await (const m of await consumer.fetch({ max_messages: 25, expires: 2_000 })) {
      taken.push(m.json<UsageRecord>());
      if (taken.length === 25) break;
    }
    assert.equal(taken.length, 25);
    assert.equal(await ledger.insertMany(taken), 25);
    await nc.close();

    const writer = r.startConsumer({ ackWaitMs });
    await waitFor("PostgreSQL to hold every record", async () => (await r.pgIds()).length === N);
    await waitFor("the redelivered batch to be acked", () => r.drained(), 20_000);
    assert.equal((await r.pgIds()).length, N);
    assert.equal(writer.written, N - 25, "the 25 committed before the crash were redelivered and skipped");
  });

  test("PostgreSQL down: the writer holds the batch, retries, and writes it once PostgreSQL is back", async (t) => {
    const r = await rig(t);
    if (!r) return;
    const writer = r.startConsumer();
    r.outbox.write(record(0));
    await waitFor("the first record", async () => (await r.pgIds()).length === 1);
    await pgService!.down();
    try {
      for (let i = 1; i < 30; i++) r.outbox.write(record(i));
      await r.outbox.flushed();
      await waitFor("the writer to notice", () => logs.some((l) => l.includes("cannot write usage to PostgreSQL")));
    } finally {
      await pgService!.up();
    }
    await waitFor("PostgreSQL to hold every record", async () => (await r.pgIds().catch(() => [])).length === 30);
    await waitFor("the consumer to ack everything", () => r.drained());
    assert.equal(writer.written, 30);
  });

  test("malformed messages are logged and dropped; the writer goes on", async (t) => {
    const r = await rig(t);
    if (!r) return;
    const writer = r.startConsumer();
    const nc = await connect({ servers: r.nats.url });
    cleanups.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    await waitFor("the stream", async () => (await jsm.streams.info(USAGE_STREAM).catch(() => null)) !== null);
    const js = jetstream(nc);
    await js.publish("borde.usage.evil", "not json {");
    await js.publish("borde.usage.evil", JSON.stringify({ ...record(900), neurons: "lots" }));
    await js.publish("borde.usage.evil", JSON.stringify({ ...record(901), day: "yesterday" }));
    await js.publish("borde.usage.evil", new Uint8Array([0xff, 0xfe, 0x00]));
    r.outbox.write(record(1));
    r.outbox.write(record(2));
    await r.outbox.flushed();
    await waitFor("the good records", async () => (await r.pgIds()).length === 2);
    await waitFor("everything acked or terminated", () => r.drained());
    assert.deepEqual(await r.pgIds(), ["req-00001", "req-00002"]);
    assert.equal(writer.written, 2);
    assert.equal(logs.filter((l) => l.includes("malformed usage message dropped")).length, 4);
    assert.equal((await jsm.streams.info(USAGE_STREAM)).state.messages, 0, "terminated messages left the work queue too");
  });

  test("close() with NATS down returns promptly and keeps the records for the next start", async (t) => {
    const r = await rig(t, { natsDown: true });
    if (!r) return;
    for (let i = 0; i < 5; i++) r.outbox.write(record(i));
    const started = Date.now();
    await r.outbox.close();
    assert.ok(Date.now() - started < 3_000, `close took ${Date.now() - started} ms`);
    await assert.rejects(r.outbox.flushed(), /closed with records pending/);
    // The next start (same database) ships them.
    await r.nats.restart();
    r.startConsumer();
    const next = await createOutboxWriter(r.db, { servers: r.nats.url, pop: "madrid", logger: testLogger() });
    cleanups.push(() => next.close());
    assert.equal(next.pending(), 5);
    await next.flushed();
    await waitFor("PostgreSQL to hold every record", async () => (await r.pgIds()).length === 5);
  });
});
