import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { DEAD_AFTER_MS, decode, encode, HEARTBEAT_MS, HEARTBEAT_SUBJECT, type Heartbeat } from "./protocol.js";

interface Seen {
  beat: Heartbeat;
  at: number;
}

/**
 * Which PoPs are alive and what they serve, from heartbeats. Each node publishes its own every
 * HEARTBEAT_MS; a node not heard for DEAD_AFTER_MS is dropped — a killed PoP is noticed within
 * ~2 s by every other PoP (and at once by NATS's "no responders" for calls sent to it meanwhile).
 */
export class Membership {
  /** node id → last heartbeat. */
  private readonly nodes = new Map<string, Seen>();
  private sub: Subscription | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly nc: NatsConnection,
    private readonly self: () => Heartbeat,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    this.sub = this.nc.subscribe(HEARTBEAT_SUBJECT, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const beat = decode<Heartbeat>(msg.data);
          if (typeof beat.pop === "string" && typeof beat.node === "string" && Array.isArray(beat.models)) this.nodes.set(beat.node, { beat, at: this.now() });
        } catch {
          // A malformed heartbeat is ignored: it must not take the PoP's routing down.
        }
      },
    });
    const beat = () => {
      const b = this.self();
      this.nodes.set(b.node, { beat: b, at: this.now() });
      try {
        this.nc.publish(HEARTBEAT_SUBJECT, encode(b));
      } catch {
        // Connection down: NATS reconnects; peers will see us again.
      }
    };
    beat();
    this.timer = setInterval(beat, HEARTBEAT_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.sub?.unsubscribe();
  }

  private live(): Heartbeat[] {
    const t = this.now();
    const out: Heartbeat[] = [];
    for (const [node, s] of this.nodes) {
      if (t - s.at > DEAD_AFTER_MS) this.nodes.delete(node);
      else out.push(s.beat);
    }
    return out;
  }

  /** True when some live node of `pop` serves `model`. */
  serves(pop: string, model: string): boolean {
    return this.live().some((b) => b.pop === pop && b.models.some((m) => m.id === model));
  }

  /** A model some live PoP serves, with its task and engine. */
  model(id: string): Heartbeat["models"][number] | null {
    for (const b of this.live()) {
      const m = b.models.find((x) => x.id === id);
      if (m) return m;
    }
    return null;
  }

  /** Live PoPs (names) — for status output and tests. */
  pops(): string[] {
    return [...new Set(this.live().map((b) => b.pop))].sort();
  }
}
