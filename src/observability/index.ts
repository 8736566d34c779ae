import pino, { type Logger } from "pino";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export type { Logger };

/** Structured JSON logs on stderr (stdout stays for CLI output). */
export function createLogger(level: string, destination: NodeJS.WritableStream = process.stderr): Logger {
  return pino({ level, base: { svc: "borde" }, timestamp: pino.stdTimeFunctions.isoTime }, destination as pino.DestinationStream);
}

export type Metrics = ReturnType<typeof createMetrics>;

/** One registry per node (no globals), so several nodes can run in one process (tests, `borde sim`). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "borde_process_" });
  return {
    registry,
    requests: new Counter({ name: "borde_http_requests_total", help: "HTTP requests by route, model and status", labelNames: ["route", "model", "status"] as const, registers: [registry] }),
    latency: new Histogram({
      name: "borde_http_request_duration_seconds",
      help: "HTTP request latency by route and model (for streams: until the response headers)",
      labelNames: ["route", "model"] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [registry],
    }),
    ttft: new Histogram({
      name: "borde_time_to_first_token_seconds",
      help: "Time from request start to the first generated text",
      labelNames: ["model"] as const,
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    tokens: new Counter({ name: "borde_tokens_total", help: "Tokens in (prompt) and out (completion) by model", labelNames: ["model", "direction"] as const, registers: [registry] }),
    queueDepth: new Gauge({ name: "borde_queue_depth", help: "Requests waiting for a slot, by model", labelNames: ["model"] as const, registers: [registry] }),
    activeRequests: new Gauge({ name: "borde_active_requests", help: "Requests holding a slot, by model", labelNames: ["model"] as const, registers: [registry] }),
    modelsLoaded: new Gauge({ name: "borde_models_loaded", help: "Models resident in memory", registers: [registry] }),
    modelMemory: new Gauge({ name: "borde_model_memory_bytes", help: "Estimated memory held by each resident model", labelNames: ["model"] as const, registers: [registry] }),
  };
}
