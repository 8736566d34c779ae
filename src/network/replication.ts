import { jetstream } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { AccountStore, Replicated } from "../accounts/index.js";
import type { Logger } from "../observability/index.js";
import type { Workers, WorkerSnapshot } from "../workers/deploy/index.js";

/** The JetStream key-value bucket (on the core region) that holds the replicated configuration. */
export const CONFIG_BUCKET = "BORDE_CONFIG";

/** One entry of the bucket: who put it, and what. */
type Entry = { origin: string } & ({ kind: "row"; change: Replicated } | { kind: "worker"; worker: WorkerSnapshot });

/**
 * Accounts, tokens and deployed workers, the same on every PoP: a change made on any PoP (admin
 * API, CLI, `borde deploy`) is put in the `BORDE_CONFIG` bucket — `accounts.<id>` / `tokens.<id>` →
 * the row, `worker.<name>` → the worker's active version, code and sealed secrets — and every PoP
 * watches the bucket and applies what the others put. JetStream keeps the latest entry per key, so
 * a PoP that starts (or comes back after a partition) replays the current state first, then
 * follows changes. Token rows carry the sha256 digest of the secret, never the secret.
 */
export class ConfigReplication {
  private kv: KV | null = null;
  private stopped = false;
  private watching: Promise<void> | null = null;
  private iter: { stop(): void } | null = null;
  /**
   * Local changes not yet in the bucket (JetStream unreachable, or the bucket not open yet), by key:
   * a newer change of a key replaces the older one, so the backlog is bounded by what exists.
   */
  private readonly pending = new Map<string, Entry>();
  private flushing = false;
  /** Token rows that arrived before their account (replay order): applied when it comes. */
  private readonly parked = new Map<string, Replicated>();
  /** Worker changes are applied one at a time, in the bucket's order. */
  private workerQueue: Promise<void> = Promise.resolve();

  constructor(
    private readonly nc: NatsConnection,
    private readonly accounts: AccountStore,
    private readonly workers: Workers | null,
    private readonly logger: Logger,
    private readonly origin: string,
  ) {}

  /**
   * Opens the bucket (retrying while JetStream is not reachable yet) and starts following it; local
   * changes made meanwhile are queued and put once it is open. Never blocks the node's start.
   */
  start(): void {
    this.accounts.onChange((change) => this.put(`${change.table}.${String(change.row.id)}`, { origin: this.origin, kind: "row", change }));
    this.workers?.onChange((worker) => this.put(`worker.${worker.name}`, { origin: this.origin, kind: "worker", worker }));
    this.watching = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.iter?.stop();
    await this.watching?.catch(() => undefined);
    await this.workerQueue;
  }

  private put(key: string, entry: Entry): void {
    this.pending.delete(key); // re-inserted last: changes keep their order
    this.pending.set(key, entry);
    void this.flush();
  }

  private async run(): Promise<void> {
    for (let delay = 250; !this.stopped; delay = Math.min(delay * 2, 5000)) {
      try {
        const kvm = new Kvm(jetstream(this.nc, { timeout: 5000 }));
        this.kv = await kvm.create(CONFIG_BUCKET, { history: 1 });
        await this.flush();
        const iter = await this.kv.watch();
        this.iter = iter;
        for await (const e of iter) {
          if (this.stopped) break;
          if (e.operation !== "PUT") continue;
          let entry: Entry;
          try {
            entry = JSON.parse(new TextDecoder().decode(e.value)) as Entry;
          } catch (err) {
            this.logger.warn({ err, key: e.key }, "replicated config entry is not JSON; ignored");
            continue;
          }
          if (entry.origin === this.origin) continue;
          this.apply(e.key, entry);
        }
        return;
      } catch (err) {
        if (this.stopped) return;
        this.logger.warn({ err: String(err) }, "config replication: JetStream not reachable yet; retrying");
        this.kv = null;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private apply(key: string, entry: Entry): void {
    if (entry.kind === "row") {
      const change = entry.change;
      const accountId = String(change.table === "accounts" ? change.row.id : change.row.account_id);
      if (change.table === "tokens" && !this.accounts.getAccount(accountId)) {
        this.parked.set(key, change);
        return;
      }
      try {
        this.accounts.applyReplica(change);
      } catch (err) {
        this.logger.warn({ err, key }, "replicated account or token could not be applied");
      }
      if (change.table === "accounts") {
        for (const [k, t] of this.parked) {
          if (String(t.row.account_id) !== accountId) continue;
          this.parked.delete(k);
          this.apply(k, { origin: entry.origin, kind: "row", change: t });
        }
      }
    } else if (this.workers) {
      const workers = this.workers;
      this.workerQueue = this.workerQueue.then(() => workers.applyReplica(entry.worker)).catch((err: unknown) => this.logger.warn({ err, key }, "replicated worker could not be applied"));
    }
  }

  /** Puts the backlog in order; one flush at a time (two would race on the same entries). */
  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.kv && this.pending.size > 0) {
        const [key, entry] = this.pending.entries().next().value as [string, Entry];
        try {
          await this.kv.put(key, JSON.stringify(entry));
          // Changed again while it was being put: keep the newer one queued.
          if (this.pending.get(key) === entry) this.pending.delete(key);
        } catch (err) {
          this.logger.warn({ err: String(err) }, "config replication: put failed; will retry");
          setTimeout(() => void this.flush(), 1000).unref();
          return;
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}
