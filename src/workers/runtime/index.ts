/**
 * The workers runtime: user JS/Wasm in workerd, one process per account, supervised for CPU,
 * memory, wall time, subrequests and response size; `env.AI` through the node's inference service.
 */
import type { WorkerRuntime } from "../types.js";
import { WorkerdRuntime, type WorkerRuntimeOptions } from "./runtime.js";

export { WorkerdRuntime, WorkerNotActiveError, WorkerStartupError, hostAllowed, type WorkerRuntimeOptions } from "./runtime.js";
export { LIMIT_EXCEEDED, WORKER_THREW, limitExceededResponse } from "./responses.js";

export function createWorkerRuntime(opts: WorkerRuntimeOptions): WorkerdRuntime & WorkerRuntime {
  return new WorkerdRuntime(opts);
}
