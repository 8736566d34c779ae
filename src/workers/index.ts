/**
 * Workers: user JavaScript/Wasm programs run in workerd, one process per account, limited and
 * metered like Cloudflare Workers. The contract between deploy and runtime is in ./types.ts.
 */
export * from "./types.js";
export {
  createWorkerRuntime,
  hostAllowed,
  LIMIT_EXCEEDED,
  limitExceededResponse,
  WORKER_THREW,
  WorkerdRuntime,
  WorkerNotActiveError,
  WorkerStartupError,
  type WorkerRuntimeOptions,
} from "./runtime/index.js";
