/**
 * The contract between the deploy side (bundling, versions, secrets, the deployments API) and the
 * runtime side (workerd processes, limits, the AI binding, tail). One file so both can be built
 * apart and meet here.
 */

/** Per-request limits of a worker (Cloudflare's defaults where Workers has one). */
export interface WorkerLimits {
  /** CPU time one request may use (default 50). */
  cpuMs: number;
  /** Wall time one request may take, waiting included (default 30000). */
  wallMs: number;
  /** Memory of the worker's isolate process (default 128). */
  memoryMb: number;
  /** fetch() calls and env.AI calls one request may make (default 50). */
  subrequests: number;
}

export const DEFAULT_WORKER_LIMITS: Readonly<WorkerLimits> = Object.freeze({ cpuMs: 50, wallMs: 30_000, memoryMb: 128, subrequests: 50 });

export interface WorkerModule {
  /** Module name as imported (`index.js`, `add.wasm`). The first module is the entry. */
  name: string;
  type: "esm" | "wasm" | "text" | "data";
  content: Uint8Array;
}

/** One deployed version of a worker, ready to run. Secrets are decrypted here, in memory only. */
export interface WorkerVersion {
  accountId: string;
  /** Unique across the node (routing by `{name}.workers.localhost` has no account in it). */
  name: string;
  version: number;
  modules: WorkerModule[];
  compatibilityDate?: string;
  compatibilityFlags: string[];
  /** Name of the env binding for Workers AI (`[ai] binding` in wrangler.toml), or null. */
  aiBinding: string | null;
  vars: Record<string, string>;
  secrets: Record<string, string>;
  limits: WorkerLimits;
  /** Hostnames outbound fetch may reach; empty = no outbound network. */
  allowOutbound: string[];
}

/** A line for `borde tail`: console output, uncaught errors, limit events. */
export interface LogEvent {
  ts: number;
  worker: string;
  level: "debug" | "log" | "info" | "warn" | "error" | "exception" | "limit";
  message: string;
  requestId?: string;
}

/**
 * How a worker's `env.AI.run(model, inputs, options)` reaches the node: through the same inference
 * service, auth (the worker's account), limits and metering as the REST API. Returns what the REST
 * API's `result` would be, or, with `stream: true`, SSE bytes as on Workers.
 */
export interface AiBridge {
  run(call: { accountId: string; worker: string; requestId: string; model: string; inputs: unknown; signal: AbortSignal }): Promise<unknown | ReadableStream<Uint8Array>>;
}

export interface WorkerRuntime {
  /** Makes this version the live one for its worker (replacing any other version). */
  activate(version: WorkerVersion): Promise<void>;
  remove(accountId: string, name: string): Promise<void>;
  /**
   * Runs one request on the worker. A limit exceeded answers 503 with Workers' error 1102
   * ("Worker exceeded resource limits"), recycles the worker's process, and emits a `limit` event.
   */
  fetch(accountId: string, name: string, request: Request, requestId: string): Promise<Response>;
  /** Live log events of one worker; returns the unsubscribe. */
  subscribe(accountId: string, name: string, onEvent: (e: LogEvent) => void): () => void;
  close(): Promise<void>;
}
