import { jetstream } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { AccountStore, Replicated } from "../accounts/index.js";
import type { Logger } from "../observability/index.js";

/** The JetStream key-value bucket (on the core region) that holds the replicated configuration. */
export const CONFIG_BUCKET = "BORDE_CONFIG";

/**
 * Accounts and tokens, the same on every PoP: a change made on any PoP (admin API, CLI) is put in
 * the `BORDE_CONFIG` bucket as `<table>.<id>` → row, and every PoP watches the bucket and applies
 * what the others put. JetStream keeps the latest row per key, so a PoP that starts (or comes back
 * after a partition) replays the current state first, then follows changes. Token rows carry the
 * sha256 digest of the secret, never the secret.
 */
export class ConfigReplication {
  private kv: KV | null = null;
  private stopped = false;
  private watching: Promise<void> | null = null;
  private iter: { stop(): void } | null = null;
  /** Rows this node put, by key and revision: their echo from the watch is not applied again. */
  private readonly pending: Replicated[] = [];

  constructor(
    private readonly nc: NatsConnection,
    private readonly accounts: AccountStore,
    private readonly logger: Logger,
    private readonly origin: string,
  ) {}

  /**
   * Opens the bucket (retrying while JetStream is not reachable yet) and starts following it; local
   * changes made meanwhile are queued and put once it is open. Never blocks the node's start.
   */
  start(): void {
    this.accounts.onChange((change) => {
      this.pending.push(change);
      void this.flush();
    });
    this.watching = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.iter?.stop();
    await this.watching?.catch(() => undefined);
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
          try {
            const change = JSON.parse(new TextDecoder().decode(e.value)) as Replicated & { origin: string };
            if (change.origin !== this.origin) this.accounts.applyReplica(change);
          } catch (err) {
            this.logger.warn({ err, key: e.key }, "replicated config entry could not be applied");
          }
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

  private async flush(): Promise<void> {
    while (this.kv && this.pending.length > 0) {
      const change = this.pending[0]!;
      try {
        await this.kv.put(`${change.table}.${String(change.row.id)}`, JSON.stringify({ ...change, origin: this.origin }));
        this.pending.shift();
      } catch (err) {
        this.logger.warn({ err: String(err) }, "config replication: put failed; will retry");
        setTimeout(() => void this.flush(), 1000).unref();
        return;
      }
    }
  }
}
