import { jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import pg from "pg";
import type { Logger } from "../observability/index.js";
import { bounded, delay, ensureLedgerConsumer, ensureUsageStream, LEDGER_CONSUMER, natsOptions, USAGE_STREAM } from "./outbox.js";
import { RECORD_COLUMN_LIST, RECORD_FIELDS, recordColumnsDdl } from "./columns.js";
import { toUsageRows, usageSelect } from "./sqlite.js";
import type { UsageQuery, UsageReader, UsageRecord, UsageRow } from "./types.js";

/** PostgreSQL allows 65,535 parameters in one statement: 17 per record. */
const MAX_BATCH = 1_000;

/** The cluster ledger in PostgreSQL: one row per answered request, keyed like everywhere else. */
export class PgLedger implements UsageReader {
  readonly pool: pg.Pool;

  constructor(url: string, private readonly logger?: Logger) {
    this.pool = new pg.Pool({ connectionString: url, max: 4 });
    // An idle client whose server went away must not take the process down; the next query reconnects.
    this.pool.on("error", (e) => this.logger?.warn({ err: e.message }, "idle PostgreSQL connection failed"));
  }

  /** Creates the table and its index; serialised by an advisory lock so concurrent starters do not race. */
  async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT pg_advisory_xact_lock(hashtext('borde.usage.migrate'))");
      await client.query(`CREATE TABLE IF NOT EXISTS usage (
  ${recordColumnsDdl("postgres")})`);
      await client.query("CREATE INDEX IF NOT EXISTS usage_day_account ON usage (day, account_id)");
      await client.query("COMMIT");
    } catch (e) {
      await client.query("ROLLBACK").catch(() => {});
      throw e;
    } finally {
      client.release();
    }
  }

  /**
   * Inserts records in one statement (one transaction): all or none. Records already in the ledger
   * are skipped, so a redelivered or republished record is never counted twice. Returns how many
   * were new.
   */
  async insertMany(records: readonly UsageRecord[]): Promise<number> {
    if (records.length === 0) return 0;
    if (records.length > MAX_BATCH) throw new Error(`at most ${MAX_BATCH} records per insert, got ${records.length}`);
    const params: unknown[] = [];
    const rows = records.map((r) => {
      const slots = RECORD_FIELDS.map(({ field }) => {
        params.push(r[field]);
        return `$${params.length}`;
      });
      return `(${slots.join(", ")})`;
    });
    const res = await this.pool.query(`INSERT INTO usage (${RECORD_COLUMN_LIST}) VALUES ${rows.join(", ")} ON CONFLICT (account_id, request_id) DO NOTHING`, params);
    return res.rowCount ?? 0;
  }

  async query(q: UsageQuery): Promise<UsageRow[]> {
    const { sql, params } = usageSelect("usage", q, (i) => `$${i}`);
    const res = await this.pool.query(sql, params);
    return toUsageRows(res.rows as Record<string, unknown>[]);
  }

  async requestIds(since: string, until: string): Promise<string[]> {
    const res = await this.pool.query<{ request_id: string }>("SELECT request_id FROM usage WHERE day >= $1 AND day <= $2 ORDER BY request_id", [since, until]);
    return res.rows.map((r) => r.request_id);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

// `served` is text too, but one of two words, checked on its own below.
const STRING_FIELDS = RECORD_FIELDS.filter((f) => f.kind === "text" && f.field !== "served").map((f) => f.field);
const NUMBER_FIELDS = RECORD_FIELDS.filter((f) => f.kind !== "text").map((f) => f.field);

/** A usage record from a message, or why it is not one (such a message can never be written). */
export function parseUsageMessage(data: Uint8Array): UsageRecord | string {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    return "not JSON";
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "not an object";
  const o = v as Record<string, unknown>;
  for (const f of STRING_FIELDS) if (typeof o[f] !== "string" || (o[f] as string).length === 0 || (o[f] as string).includes("\0")) return `${f} is not a non-empty string`;
  for (const f of NUMBER_FIELDS) if (typeof o[f] !== "number" || !Number.isFinite(o[f])) return `${f} is not a finite number`;
  for (const f of ["ts", "bytesIn", "bytesOut"] as const) if (!Number.isSafeInteger(o[f])) return `${f} is not an integer`;
  if (o.served !== "edge" && o.served !== "forwarded") return "served is not edge|forwarded";
  if (!/^\d{4}-\d{2}-\d{2}$/.test(o.day as string)) return "day is not YYYY-MM-DD";
  const record = {} as Record<string, unknown>;
  for (const { field } of RECORD_FIELDS) record[field] = o[field];
  return record as unknown as UsageRecord;
}

/** Errors that retrying cannot fix: the data, not the database, is wrong (SQLSTATE classes 22 and 23). */
function isDataError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && (code.startsWith("22") || code.startsWith("23"));
}

export interface LedgerConsumerOptions {
  servers: string;
  /** The cluster's NATS token, when its servers require one. */
  token?: string;
  logger: Logger;
  /** How long a record delivered to a writer that died waits before it is delivered again (default 30 s). */
  ackWaitMs?: number;
  /** Most records per PostgreSQL transaction (default 256). */
  batch?: number;
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 2_000;

/**
 * The core's ledger writer: a durable pull consumer on the usage stream that writes each batch of
 * records into PostgreSQL in one transaction and acks the messages only after the commit.
 *
 * Exactly once: a crash before the commit leaves the messages unacked, so JetStream delivers them
 * again after ack_wait (nothing lost); a crash after the commit but before the acks reach the
 * server also redelivers them, and `ON CONFLICT DO NOTHING` on (account, request) makes the second
 * write a no-op (nothing doubled). While PostgreSQL is down the batch is held and retried with
 * backoff (`working()` keeps JetStream from handing it out again meanwhile).
 */
export class LedgerConsumer {
  private readonly logger: Logger;
  private readonly ackWaitMs: number;
  private readonly batchSize: number;
  private readonly servers: string;
  private readonly token: string | undefined;
  private nc: NatsConnection | null = null;
  private messages: ConsumerMessages | null = null;
  /** Delivered, not yet written. */
  private readonly queue: JsMsg[] = [];
  private arrived: (() => void) | null = null;
  private loop: Promise<void> = Promise.resolve();
  private stopping = false;
  private starting: Promise<void> | undefined;
  private stopped: Promise<void> | undefined;
  /** Aborted by stop(): cuts every wait short. */
  private readonly abort = new AbortController();
  private readonly stopSignal: Promise<void>;
  /** Records written (new rows), for logs and tests. */
  written = 0;

  constructor(
    private readonly ledger: PgLedger,
    opts: LedgerConsumerOptions,
  ) {
    this.logger = opts.logger.child({ component: "ledger" });
    this.ackWaitMs = opts.ackWaitMs ?? 30_000;
    this.batchSize = Math.min(opts.batch ?? 256, MAX_BATCH);
    this.servers = opts.servers;
    this.token = opts.token;
    const signal = this.abort.signal;
    this.stopSignal = new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
  }

  /** Connects (retrying until NATS answers or stop()), makes sure stream and consumer exist, starts consuming. */
  start(): Promise<void> {
    this.starting ??= this.connectAndConsume();
    return this.starting;
  }

  private async connectAndConsume(): Promise<void> {
    let backoff = BACKOFF_MIN_MS;
    let warned = false;
    while (!this.stopping) {
      try {
        this.nc ??= await connect(natsOptions(this.servers, "borde-ledger", this.token));
        const jsm = await jetstreamManager(this.nc);
        await ensureUsageStream(jsm);
        await ensureLedgerConsumer(jsm, this.ackWaitMs);
        break;
      } catch (e) {
        if (!warned) this.logger.warn({ err: errorText(e) }, "cannot reach JetStream yet; retrying");
        warned = true;
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
    if (this.stopping) return;
    this.logger.info({ server: this.nc?.getServer(), stream: USAGE_STREAM, consumer: LEDGER_CONSUMER }, "ledger writer consuming");
    this.loop = this.consumeForever();
  }

  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    // A start() still connecting must finish (and see `stopping`) before the connection is closed.
    await this.starting?.catch(() => {});
    await this.messages?.close().catch(() => {});
    await this.loop;
    const nc = this.nc;
    this.nc = null;
    if (nc && !nc.isClosed()) {
      await bounded(nc.drain(), 2_000);
      if (!nc.isClosed()) await nc.close();
    }
  }

  private pause(ms: number): Promise<void> {
    return delay(ms, this.abort.signal);
  }

  private async consumeForever(): Promise<void> {
    let backoff = BACKOFF_MIN_MS;
    while (!this.stopping) {
      try {
        const consumer = await jetstream(this.nc!).consumers.get(USAGE_STREAM, LEDGER_CONSUMER);
        // The callback only queues (it cannot be async); the loop below takes whatever has arrived
        // as one transaction, without waiting for a batch to fill. Server-side max_ack_pending
        // bounds the queue.
        const messages = await consumer.consume({
          max_messages: this.batchSize,
          callback: (m) => {
            this.queue.push(m);
            this.arrived?.();
          },
        });
        this.messages = messages;
        let ended = false;
        const closed = messages.closed().then(() => void (ended = true));
        void this.watch(messages);
        while (!this.stopping) {
          if (this.queue.length === 0) {
            if (ended) break;
            await Promise.race([new Promise<void>((resolve) => (this.arrived = resolve)), closed, this.stopSignal]);
            this.arrived = null;
            continue;
          }
          backoff = BACKOFF_MIN_MS;
          await this.handle(this.queue.splice(0, this.batchSize));
        }
        await messages.close().catch(() => {});
      } catch (e) {
        if (this.stopping) break;
        this.logger.warn({ err: errorText(e) }, "consuming usage failed; retrying");
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
    // Taken but not written: back to the stream at once rather than after ack_wait.
    for (const m of this.queue.splice(0)) m.nak();
  }

  /** A stream or consumer deleted under us (a wiped JetStream store) is created again. */
  private async watch(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const s of messages.status()) {
        if (s.type === "consumer_not_found" || s.type === "stream_not_found" || s.type === "consumer_deleted") {
          this.logger.warn({ status: s.type }, "usage stream or consumer missing; creating it again");
          const jsm = await jetstreamManager(this.nc!);
          await ensureUsageStream(jsm);
          await ensureLedgerConsumer(jsm, this.ackWaitMs);
        }
      }
    } catch (e) {
      if (!this.stopping) this.logger.warn({ err: errorText(e) }, "could not recreate the usage stream or consumer");
    }
  }

  private async handle(batch: JsMsg[]): Promise<void> {
    const good: { msg: JsMsg; record: UsageRecord }[] = [];
    for (const msg of batch) {
      const parsed = parseUsageMessage(msg.data);
      if (typeof parsed === "string") {
        // No retry can make it a record: term it so it is not delivered again. (No reason string:
        // servers before 2.11 treat `+TERM <reason>` as an unknown ack and would redeliver forever.)
        this.logger.error({ seq: msg.seq, subject: msg.subject, why: parsed, data: previewOf(msg.data) }, "malformed usage message dropped");
        msg.term();
      } else {
        good.push({ msg, record: parsed });
      }
    }
    if (good.length === 0) return;
    const dropped = new Set<JsMsg>();
    const written = await this.writeWithRetry(good, dropped);
    if (written === null) {
      for (const { msg } of good) if (!dropped.has(msg)) msg.nak();
      return;
    }
    this.written += written;
    // Only now, after the commit: an ack lost to a crash costs a redelivery, never a record.
    for (const { msg } of good) if (!dropped.has(msg)) msg.ack();
  }

  /** New rows written, or null when stopping before PostgreSQL took them. */
  private async writeWithRetry(good: { msg: JsMsg; record: UsageRecord }[], dropped: Set<JsMsg>): Promise<number | null> {
    let backoff = BACKOFF_MIN_MS;
    let warned = false;
    let lastWorking = Date.now();
    for (;;) {
      try {
        const n = await this.ledger.insertMany(good.map((g) => g.record));
        if (warned) this.logger.info({ records: good.length }, "PostgreSQL is writable again");
        return n;
      } catch (e) {
        if (isDataError(e)) return this.writeOneByOne(good, dropped);
        if (!warned) this.logger.warn({ err: errorText(e), records: good.length }, "cannot write usage to PostgreSQL; holding the batch and retrying");
        warned = true;
        if (this.stopping) return null;
        if (Date.now() - lastWorking > this.ackWaitMs / 3) {
          // Also the queued ones: otherwise a long outage would have them all delivered again.
          for (const { msg } of good) msg.working();
          for (const msg of this.queue) msg.working();
          lastWorking = Date.now();
        }
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
  }

  /** PostgreSQL refused the batch for its data: write the records singly and drop only the bad ones. */
  private async writeOneByOne(good: { msg: JsMsg; record: UsageRecord }[], dropped: Set<JsMsg>): Promise<number | null> {
    let n = 0;
    for (let i = 0; i < good.length; i++) {
      const { msg, record } = good[i]!;
      try {
        n += await this.ledger.insertMany([record]);
      } catch (e) {
        if (!isDataError(e)) {
          // The database itself failed meanwhile: retry the rest (already-written ones are no-ops).
          const rest = await this.writeWithRetry(good.slice(i), dropped);
          return rest === null ? null : n + rest;
        }
        this.logger.error({ seq: msg.seq, err: errorText(e), requestId: record.requestId, accountId: record.accountId }, "usage record refused by PostgreSQL; dropped");
        msg.term();
        dropped.add(msg);
      }
    }
    return n;
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function previewOf(data: Uint8Array): string {
  return Buffer.from(data.subarray(0, 200)).toString("utf8");
}
