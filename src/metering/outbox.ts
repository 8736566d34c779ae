import { AckPolicy, DeliverPolicy, JetStreamApiCodes, JetStreamApiError, jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { connect, nanos, type NatsConnection } from "@nats-io/transport-node";
import { setTimeout as sleepFor } from "node:timers/promises";
import type { Logger } from "../observability/index.js";
import type { Db } from "../util/sqlite.js";
import { insertRecordSql, RECORD_COLUMNS, rowToRecord, sumTotals } from "./sqlite.js";
import type { DailyTotals, UsageRecord, UsageWriter } from "./types.js";

/**
 * The JetStream side of the cluster ledger, shared by the PoP outbox (which publishes) and the core
 * ledger writer (which consumes), so both create the stream with the same configuration.
 *
 * - Work-queue retention: a record stays in the stream until the ledger writer acks it (after its
 *   PostgreSQL commit), however long that writer is away, and the stream does not grow forever.
 *   (Interest retention would drop records published while no consumer exists; limits retention
 *   would keep them all or expire unwritten ones.)
 * - File storage: on a single server (R1) nats-server writes each message to its file before it
 *   sends the PubAck, so a SIGKILL of nats-server loses no acknowledged record (measured: 5 runs,
 *   kill in the middle of 16 concurrent publishers, every acked message was there after restart).
 * - A 10-minute duplicate window on `Nats-Msg-Id` = `<account>/<request>`: a PoP that crashed after
 *   the PubAck but before marking the row shipped republishes it, and the stream drops the copy.
 *   Past the window (or after the stream forgot ids it deleted) PostgreSQL's primary key is the
 *   final guard, so the window is an optimisation, not the guarantee.
 */
export const USAGE_STREAM = "BORDE_USAGE";
export const USAGE_SUBJECTS = "borde.usage.>";
export const LEDGER_CONSUMER = "ledger";
const DUPLICATE_WINDOW_MS = 10 * 60_000;

export function usageSubject(pop: string): string {
  return `borde.usage.${pop}`;
}

/** The JetStream message id of a record: the same idempotency key as everywhere else. */
export function usageMsgId(r: Pick<UsageRecord, "accountId" | "requestId">): string {
  return `${r.accountId}/${r.requestId}`;
}

/** Creates the usage stream if it is missing; an existing one (made by another process) is used as it is. */
export async function ensureUsageStream(jsm: JetStreamManager): Promise<void> {
  try {
    await jsm.streams.info(USAGE_STREAM);
    return;
  } catch (e) {
    if (!(e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamNotFound)) throw e;
  }
  try {
    await jsm.streams.add({
      name: USAGE_STREAM,
      subjects: [USAGE_SUBJECTS],
      storage: StorageType.File,
      retention: RetentionPolicy.Workqueue,
      duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    });
  } catch (e) {
    // Another PoP or the ledger writer created it between our look and our add.
    await jsm.streams.info(USAGE_STREAM).catch(() => {
      throw e;
    });
  }
}

/**
 * The ledger writer's durable pull consumer. Explicit acks (sent only after the PostgreSQL commit),
 * no delivery limit (a record is never given up on because PostgreSQL was down), and `ackWaitMs`
 * before a record delivered to a writer that died is delivered again.
 */
export async function ensureLedgerConsumer(jsm: JetStreamManager, ackWaitMs: number): Promise<void> {
  const config = {
    durable_name: LEDGER_CONSUMER,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ackWaitMs),
    max_deliver: -1,
  };
  let existing;
  try {
    existing = await jsm.consumers.info(USAGE_STREAM, LEDGER_CONSUMER);
  } catch (e) {
    if (!(e instanceof JetStreamApiError && e.code === JetStreamApiCodes.ConsumerNotFound)) throw e;
  }
  if (!existing) {
    try {
      await jsm.consumers.add(USAGE_STREAM, config);
    } catch (e) {
      await jsm.consumers.info(USAGE_STREAM, LEDGER_CONSUMER).catch(() => {
        throw e;
      });
    }
  } else if (existing.config.ack_wait !== config.ack_wait) {
    await jsm.consumers.update(USAGE_STREAM, LEDGER_CONSUMER, { ack_wait: config.ack_wait });
  }
}

/** Connection options both sides use: reconnect forever, quickly, because usage must keep flowing. */
export function natsOptions(servers: string, name: string, token?: string) {
  return {
    // The cluster's token (BORDE_NATS_TOKEN), when its servers require one.
    ...(token ? { token } : {}),
    servers: servers
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    // The first connect is retried by the callers' own loops, which can be stopped.
    waitOnFirstConnect: false,
  };
}

/** Waits `ms`, or less when `signal` aborts; never rejects. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return sleepFor(ms, undefined, signal ? { signal } : {}).catch(() => {});
}

/** Waits for `p` (errors ignored) at most `ms`, leaving no timer behind to hold the process open. */
export async function bounded(p: Promise<unknown>, ms: number): Promise<void> {
  const stop = new AbortController();
  await Promise.race([p.catch(() => {}), delay(ms, stop.signal)]);
  stop.abort();
}

const BATCH = 256;
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 2_000;
/**
 * PubAcks come back in milliseconds; when they do not, the server died with the requests in flight
 * (the client does not fail them on disconnect), and the batch is simply sent again after the
 * reconnect, so a short timeout shortens the stall after a nats-server crash.
 */
const PUBACK_TIMEOUT_MS = 2_000;
const CLOSE_BOUND_MS = 2_000;
const KEEP_SHIPPED_MS = 3 * 24 * 3_600_000;
const PRUNE_EVERY_MS = 3_600_000;

export interface OutboxWriter extends UsageWriter {
  /** Records not yet acknowledged by JetStream. */
  pending(): number;
  /** Resolves once nothing is pending (tests); rejects if the outbox closes first. */
  flushed(): Promise<void>;
}

/**
 * A PoP's usage writer in a cluster. `write()` is a synchronous SQLite insert into the outbox (so an
 * answered request is on disk before its last byte leaves, as with the single-node ledger); a
 * background shipper publishes unshipped rows to JetStream and marks them shipped only after their
 * PubAck. A crash anywhere leaves either an unshipped row (shipped again at start-up) or a row
 * JetStream already holds (its copy is dropped as a duplicate, or by PostgreSQL's primary key).
 * NATS being down never blocks start-up or requests: rows wait in the outbox.
 */
export async function createOutboxWriter(db: Db, opts: { servers: string; pop: string; logger: Logger; token?: string }): Promise<OutboxWriter> {
  const outbox = new Outbox(db, opts.servers, opts.pop, opts.logger.child({ component: "outbox" }), opts.token);
  outbox.start();
  return outbox;
}

class Outbox implements OutboxWriter {
  private readonly insert;
  private readonly exists;
  private readonly totals;
  private readonly unshipped;
  private readonly countUnshipped;
  private readonly markShipped;
  private readonly prune;
  private readonly subject: string;

  private nc: NatsConnection | null = null;
  private streamReady = false;
  private loop: Promise<void> = Promise.resolve();
  /** Set by close(): from then on the loop only ships what it can before this time, then ends. */
  private stopAt: number | null = null;
  private readonly stopNow = new AbortController();
  private wakeUp: (() => void) | null = null;
  private woken = false;
  private flushWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private failing = false;
  private lastPrune = 0;
  private closed: Promise<void> | undefined;

  constructor(
    private readonly db: Db,
    private readonly servers: string,
    pop: string,
    private readonly logger: Logger,
    private readonly token?: string,
  ) {
    // shipped_at first: SQLite wants every column before the table's PRIMARY KEY clause.
    db.exec(`CREATE TABLE IF NOT EXISTS outbox (shipped_at INTEGER, ${RECORD_COLUMNS}) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS outbox_unshipped ON outbox (ts) WHERE shipped_at IS NULL;
      CREATE INDEX IF NOT EXISTS outbox_shipped ON outbox (shipped_at) WHERE shipped_at IS NOT NULL;
      CREATE INDEX IF NOT EXISTS outbox_day ON outbox (day);`);
    this.insert = db.prepare(insertRecordSql("outbox"));
    this.exists = db.prepare("SELECT 1 FROM outbox WHERE account_id = ? AND request_id = ?");
    this.totals = db.prepare("SELECT account_id, token_id, SUM(neurons) AS neurons FROM outbox WHERE day = ? GROUP BY account_id, token_id");
    this.unshipped = db.prepare("SELECT * FROM outbox WHERE shipped_at IS NULL ORDER BY ts LIMIT ?");
    this.countUnshipped = db.prepare("SELECT COUNT(*) AS n FROM outbox WHERE shipped_at IS NULL");
    this.markShipped = db.prepare("UPDATE outbox SET shipped_at = ? WHERE account_id = ? AND request_id = ? AND shipped_at IS NULL");
    this.prune = db.prepare("DELETE FROM outbox WHERE shipped_at IS NOT NULL AND shipped_at < ?");
    this.subject = usageSubject(pop);
  }

  start(): void {
    this.loop = this.run();
  }

  write(record: UsageRecord): boolean {
    const added = this.insert.run(record).changes === 1;
    if (added) this.wake();
    return added;
  }

  has(accountId: string, requestId: string): boolean {
    return this.exists.get(accountId, requestId) !== undefined;
  }

  /** Shipped or not: the outbox keeps three days, so today's budget counters survive a restart. */
  dailyTotals(day: string): DailyTotals {
    return sumTotals(this.totals.all(day) as { account_id: string; token_id: string; neurons: number }[]);
  }

  pending(): number {
    return (this.countUnshipped.get() as { n: number }).n;
  }

  flushed(): Promise<void> {
    if (this.pending() === 0) return Promise.resolve();
    if (this.stopAt !== null) return Promise.reject(new Error("outbox closed with records pending"));
    return new Promise((resolve, reject) => this.flushWaiters.push({ resolve, reject }));
  }

  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.stopAt = Date.now() + CLOSE_BOUND_MS;
    this.wake();
    this.stopNow.abort();
    // A batch waiting on PubAcks from a server that went away would hold close() for the PubAck
    // timeout; closing the connection fails those publishes at once (their rows stay unshipped).
    const timer = setTimeout(() => void this.nc?.close(), CLOSE_BOUND_MS + 100);
    await this.loop;
    clearTimeout(timer);
    const nc = this.nc;
    this.nc = null;
    if (nc && !nc.isClosed()) {
      await bounded(nc.drain(), 1_000);
      if (!nc.isClosed()) await nc.close();
    }
    const left = this.pending();
    if (left > 0) this.logger.warn({ pending: left }, "outbox closed with records not yet shipped; they ship at the next start");
    for (const w of this.flushWaiters.splice(0)) w.reject(new Error("outbox closed with records pending"));
  }

  private wake(): void {
    this.woken = true;
    const w = this.wakeUp;
    this.wakeUp = null;
    w?.();
  }

  /** Idle: waits for a write, close(), or `ms`, whichever comes first. */
  private async sleep(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.wakeUp = null;
        resolve();
      }, ms);
      this.wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.woken = false;
  }

  private closing(): boolean {
    return this.stopAt !== null;
  }

  private async run(): Promise<void> {
    let backoff = BACKOFF_MIN_MS;
    for (;;) {
      if (this.closing() && (Date.now() >= this.stopAt! || this.nc === null)) return;
      try {
        this.maybePrune();
        const rows = this.unshipped.all(BATCH) as Record<string, unknown>[];
        if (rows.length === 0) {
          this.notifyFlushed();
          if (this.closing()) return;
          await this.sleep(PRUNE_EVERY_MS);
          continue;
        }
        await this.ship(rows.map(rowToRecord));
        backoff = BACKOFF_MIN_MS;
        if (this.failing) {
          this.failing = false;
          this.logger.info({ pending: this.pending() }, "shipping usage to JetStream again");
        }
      } catch (e) {
        if (!this.failing) {
          this.failing = true;
          this.logger.warn({ err: e instanceof Error ? e.message : String(e), pending: this.pending() }, "cannot ship usage to JetStream; records wait in the outbox, retrying");
        }
        // Not woken by writes: a busy PoP must not turn a NATS outage into a reconnect storm.
        // close() cuts the wait short; while closing, the wait is bounded by the close deadline.
        if (this.closing()) await delay(Math.min(backoff, Math.max(0, this.stopAt! - Date.now())));
        else await delay(backoff, this.stopNow.signal);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
  }

  private async ship(records: UsageRecord[]): Promise<void> {
    const nc = await this.connection();
    if (!this.streamReady) {
      await ensureUsageStream(await jetstreamManager(nc));
      this.streamReady = true;
    }
    const js = jetstream(nc);
    const timeout = this.closing() ? Math.max(1, Math.min(PUBACK_TIMEOUT_MS, this.stopAt! - Date.now())) : PUBACK_TIMEOUT_MS;
    // All in flight at once (one round trip for the batch), in ts order on one connection, so the
    // stream keeps the order they were answered in.
    const results = await Promise.allSettled(records.map((r) => js.publish(this.subject, JSON.stringify(r), { msgID: usageMsgId(r), timeout })));
    const now = Date.now();
    this.db.transaction(() => {
      results.forEach((res, i) => {
        const r = records[i]!;
        // A duplicate PubAck means JetStream already holds it: shipped all the same.
        if (res.status === "fulfilled") this.markShipped.run(now, r.accountId, r.requestId);
      });
    })();
    const failed = results.find((res): res is PromiseRejectedResult => res.status === "rejected");
    if (failed) {
      // Look the stream up again on recovery: the server may have come back without it.
      this.streamReady = false;
      throw failed.reason;
    }
  }

  private async connection(): Promise<NatsConnection> {
    if (this.nc && !this.nc.isClosed()) return this.nc;
    if (this.closing()) throw new Error("closing: no new NATS connection");
    const nc = await connect(natsOptions(this.servers, "borde-outbox", this.token));
    this.nc = nc;
    this.streamReady = false;
    this.logger.info({ server: nc.getServer() }, "outbox connected to NATS");
    void nc.closed().then(() => {
      if (this.nc === nc) this.nc = null;
    });
    return nc;
  }

  private notifyFlushed(): void {
    if (this.flushWaiters.length === 0 || this.pending() > 0) return;
    for (const w of this.flushWaiters.splice(0)) w.resolve();
  }

  private maybePrune(): void {
    const now = Date.now();
    if (now - this.lastPrune < PRUNE_EVERY_MS) return;
    this.lastPrune = now;
    const n = this.prune.run(now - KEEP_SHIPPED_MS).changes;
    if (n > 0) this.logger.debug({ pruned: n }, "pruned shipped usage from the outbox");
  }
}
