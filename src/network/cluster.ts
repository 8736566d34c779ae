import { randomUUID } from "node:crypto";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { ModelStore } from "../catalog/store.js";
import type { ModelInfo } from "../catalog/types.js";
import { BordeError } from "../errors.js";
import type { CallContext, InferenceService, ModelCall, Router, RunOutcome } from "../inference/index.js";
import type { CpuClock } from "../metering/cpu.js";
import type { Logger } from "../observability/index.js";
import { callPop, NotTaken, serveModel } from "./forward.js";
import { Membership } from "./membership.js";
import { placements } from "./placement.js";
import type { Heartbeat } from "./protocol.js";
import type { Pop, Topology } from "./topology.js";
import { callUpstream } from "./upstream.js";

export interface ClusterOptions {
  topology: Topology;
  pop: Pop;
  nc: NatsConnection;
  store: ModelStore;
  cpu: CpuClock;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
}

/**
 * A PoP node's part in the network: serves the PoP's models to other PoPs over NATS, tells them by
 * heartbeat what it serves, and places each call it takes — here when this PoP serves the model in
 * the allowed jurisdiction, else the nearest live PoP that does, else an upstream provider.
 */
export class ClusterRouter implements Router {
  readonly nodeId = randomUUID();
  private readonly served = new Map<string, ModelInfo>();
  private readonly subs: Subscription[] = [];
  private readonly membership: Membership;
  private inference: InferenceService | null = null;
  private active = 0;

  constructor(private readonly o: ClusterOptions) {
    this.membership = new Membership(o.nc, () => this.heartbeat());
  }

  /** Starts serving: the PoP's models that are installed here, then heartbeats. */
  async start(inference: InferenceService): Promise<void> {
    this.inference = inference;
    for (const id of this.o.pop.models) {
      const info = await this.o.store.resolve(id).catch((e: unknown) => {
        this.o.logger.warn({ model: id, err: e }, "topology model is not installed on this node; not serving it");
        return null;
      });
      if (!info) continue;
      this.served.set(id, info);
      this.subs.push(serveModel(this.o.nc, this.o.pop.name, id, this.o.pop.name, (req, c) => this.serveForwarded(info, req.call, c)));
    }
    this.membership.start();
    await this.o.nc.flush();
  }

  stop(): void {
    this.membership.stop();
    for (const s of this.subs.splice(0)) s.unsubscribe();
  }

  livePops(): string[] {
    return this.membership.pops();
  }

  lookup(modelId: string): ModelInfo | null {
    const m = this.membership.model(modelId);
    const upstream = this.o.topology.upstreams.some((u) => u.models.includes(modelId));
    if (!m && !upstream) return null;
    const task = m?.task ?? this.o.store.catalogEntry(modelId)?.task ?? "text-generation";
    return { id: modelId, task, engine: m?.engine ?? "llama", source: "remote", description: "Served by another PoP or an upstream provider", path: null, installed: false, sizeBytes: null, license: null, hub: null };
  }

  where(ctx: CallContext, info: ModelInfo): "here" | "elsewhere" | "busy" {
    const allowed = allowedJurisdictions(ctx);
    if (!(this.served.has(info.id) && (allowed === null || allowed.includes(this.o.pop.jurisdiction)))) return "elsewhere";
    return this.active >= this.o.pop.capacity ? "busy" : "here";
  }

  async here<T>(run: () => Promise<T>): Promise<T> {
    this.active++;
    try {
      return await run();
    } finally {
      this.active--;
    }
  }

  async forward(ctx: CallContext, info: ModelInfo, call: ModelCall, onText?: (text: string) => void): Promise<RunOutcome> {
    const allowed = allowedJurisdictions(ctx);
    const query = { topology: this.o.topology, entry: this.o.pop, model: info.id, serves: (pop: string, model: string) => this.membership.serves(pop, model), upstreamsAllowed: call.kind !== "infer" };
    const targets = placements({ ...query, allowed }).filter((t) => t.kind !== "pop" || t.pop !== this.o.pop);
    const tried: string[] = [];
    for (const [i, t] of targets.entries()) {
      if (t.kind === "pop") {
        // Known before the first streamed byte: the stream's headers name the PoP serving it.
        ctx.servedBy = t.pop.name;
        try {
          const r = await callPop(
            this.o.nc,
            t.pop.name,
            { model: info.id, requestId: ctx.requestId, principal: { accountId: ctx.principal.accountId, tokenId: ctx.principal.tokenId }, deadline: Date.now() + 600_000, stream: onText !== undefined, call, from: this.o.pop.name, mayRefuse: i < targets.length - 1 },
            { signal: ctx.signal, onText },
          );
          return { result: r.result as RunOutcome["result"], input: r.input, output: r.output, remote: { servedBy: r.servedBy, cpuMs: r.cpuMs } };
        } catch (e) {
          ctx.servedBy = undefined;
          if (!(e instanceof NotTaken)) throw e;
          tried.push(e.message);
          this.o.logger.info({ requestId: ctx.requestId, reason: e.message }, "PoP did not take the call; trying the next place");
        }
      } else {
        ctx.servedBy = t.upstream.name;
        const r = await callUpstream(t.upstream, info.id, call, { signal: ctx.signal, onText, env: this.o.env });
        return { ...r, remote: { servedBy: t.upstream.name, cpuMs: 0 } };
      }
    }
    // 451 only when nothing inside the jurisdiction serves it at all (this PoP included); places that
    // exist inside but refused (full, not answering) are a 503 like anywhere else.
    const selfInside = this.served.has(info.id) && (allowed === null || allowed.includes(this.o.pop.jurisdiction));
    const outside = placements({ ...query, allowed: null }).some((t) => t.kind !== "pop" || t.pop !== this.o.pop);
    if (allowed !== null && targets.length === 0 && !selfInside && outside) {
      throw new BordeError("NotServedInJurisdiction", `Nothing in jurisdiction ${allowed.join(" or ")} serves ${info.id} now; the request was not sent outside it`);
    }
    throw new BordeError("NoLivePlace", `No live PoP or upstream serves ${info.id} now${tried.length ? ` (tried ${tried.join("; ")})` : ""}`, { retryAfter: 1 });
  }

  /** A call another PoP sent here: run on this node's engines; that PoP metered and limited it. */
  private async serveForwarded(info: ModelInfo, call: ModelCall, c: { signal: AbortSignal; onText?: (t: string) => void; mayRefuse: boolean }) {
    const { signal, onText } = c;
    // Full: refused before it runs, so the calling PoP tries the next place — unless this is the
    // last place there is, where waiting in the queue beats a refusal.
    if (c.mayRefuse && this.active >= this.o.pop.capacity) throw new BordeError("OutOfCapacity", `PoP ${this.o.pop.name} is at capacity (${this.o.pop.capacity} calls)`);
    const stop = this.o.cpu.start();
    this.active++;
    try {
      const r = await this.inference!.runLocal(info, call, signal, onText);
      return { result: r.result, input: r.input, output: r.output, cpuMs: stop() };
    } finally {
      stop();
      this.active--;
    }
  }

  private heartbeat(): Heartbeat {
    return {
      pop: this.o.pop.name,
      node: this.nodeId,
      jurisdiction: this.o.pop.jurisdiction,
      role: this.o.pop.role,
      models: [...this.served.values()].map((m) => ({ id: m.id, task: m.task, engine: m.engine })),
      active: this.active,
    };
  }
}

/**
 * Where a call may be served: the request's `borde-jurisdiction` pin, the account's setting and the
 * token's list, intersected. null = anywhere.
 */
export function allowedJurisdictions(ctx: CallContext): string[] | null {
  let allowed: string[] | null = null;
  const narrow = (set: readonly string[]) => (allowed = allowed === null ? [...set] : allowed.filter((j) => set.includes(j)));
  if (ctx.jurisdiction) narrow([ctx.jurisdiction]);
  const account = ctx.principal.limits?.jurisdiction;
  if (account) narrow([account]);
  if (ctx.principal.jurisdictions) narrow(ctx.principal.jurisdictions);
  return allowed;
}
