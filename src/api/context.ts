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
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new BordeError("Timeout", `Request timeout: no answer within ${config.requestTimeoutMs} ms`)),
    config.requestTimeoutMs,
  );
  const clientSignal = c.req.raw.signal;
  const onClientAbort = () => controller.abort(new BordeError("Aborted", "Request was aborted by the client"));
  if (clientSignal.aborted) onClientAbort();
  else clientSignal.addEventListener("abort", onClientAbort, { once: true });
  const ctx: CallContext = { requestId: c.get("requestId"), principal: c.get("principal"), signal: controller.signal };
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
