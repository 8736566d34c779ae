import type { Context } from "hono";
import type { AccountStore, Authenticator, Principal } from "../accounts/index.js";
import type { Meter } from "../metering/meter.js";
import type { UsageReader } from "../metering/types.js";
import type { ModelStore } from "../catalog/store.js";
import type { Config } from "../config/index.js";
import { BordeError } from "../errors.js";
import type { CallContext, InferenceService } from "../inference/index.js";
import type { Logger, Metrics } from "../observability/index.js";
import type { Scheduler } from "../scheduler/index.js";
import type { Workers } from "../workers/deploy/index.js";
import type { Flavor } from "./errors.js";

export interface ApiDeps {
  config: Config;
  auth: Authenticator;
  accounts: AccountStore;
  meter: Meter;
  /** The ledger reports read (SQLite on one node, PostgreSQL in a cluster); null when this node has none. */
  usage: UsageReader | null;
  inference: InferenceService;
  store: ModelStore;
  scheduler: Scheduler;
  metrics: Metrics;
  logger: Logger;
  /** Deployed workers (deployments API and public worker routing); null when this node runs none. */
  workers: Workers | null;
  /** True once the node finished starting (preloads done). */
  isReady: () => boolean;
}

export type Env = {
  Variables: {
    requestId: string;
    log: Logger;
    principal: Principal;
    flavor: Flavor;
    /** Model label for metrics, set by routes that know it. */
    model: string;
    /** Size of the request body, for the usage record. */
    bytesIn: number;
    /** This node's PoP (`borde-pop` on every answer). */
    pop: string;
    /** Metrics route label for traffic no route pattern names (workers routed by Host). */
    routeLabel: string;
  };
};

export type Ctx = Context<Env>;

/**
 * The request's abort signal: its deadline (408/3007) and the client going away (3008). Both
 * reasons are BordeErrors so whatever catches them maps them without guessing.
 */
export interface Call {
  ctx: CallContext;
  controller: AbortController;
  /** Clears the deadline and the disconnect listener; safe to call more than once. */
  done: () => void;
}

export function callContext(c: Ctx, config: Config): Call {
  // Data residency per request; checked before anything is set up so a bad value costs nothing.
  const pin = c.req.header("borde-jurisdiction");
  if (pin !== undefined && !/^[a-z]{2,16}$/.test(pin)) throw new BordeError("InvalidInput", "Invalid borde-jurisdiction header: 2-16 lowercase letters, e.g. eu");
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new BordeError("Timeout", `Request timeout: no answer within ${config.requestTimeoutMs} ms`)),
    config.requestTimeoutMs,
  );
  const clientSignal = c.req.raw.signal;
  const onClientAbort = () => controller.abort(new BordeError("Aborted", "Request was aborted by the client"));
  if (clientSignal.aborted) onClientAbort();
  else clientSignal.addEventListener("abort", onClientAbort, { once: true });
  const ctx: CallContext = { requestId: c.get("requestId"), principal: c.get("principal"), signal: controller.signal, jurisdiction: pin ?? null };
  return {
    ctx,
    controller,
    done: () => {
      clearTimeout(timer);
      clientSignal.removeEventListener("abort", onClientAbort);
      ctx.release?.();
      ctx.release = undefined;
    },
  };
}

/** Where the answer was made: the PoP that took the request, and the one (or upstream) that ran it. */
export function placeHeaders(c: Ctx, ctx: CallContext): Record<string, string> {
  const pop = c.get("pop");
  return { "borde-pop": pop, "borde-served-by": ctx.servedBy ?? pop };
}
