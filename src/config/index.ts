import os from "node:os";
import path from "node:path";
import { z } from "zod";

/**
 * Every setting a node reads, with its environment variable and meaning. Precedence is
 * option (CLI flag / programmatic) > environment > default; the result is validated once and frozen.
 */
export const ENV_VARS = {
  host: ["BORDE_HOST", "Address the HTTP API listens on (default 127.0.0.1)"],
  port: ["BORDE_PORT", "Port the HTTP API listens on; 0 picks a free port (default 8787)"],
  modelsDir: ["BORDE_MODELS_DIR", "Folder of the model store; every *.gguf in it is served as @local/<stem> (default ~/.borde/models)"],
  devAccount: ["BORDE_DEV_ACCOUNT", "Account id of the single dev account (default: generated and printed)"],
  devToken: ["BORDE_DEV_TOKEN", "API token of the dev account (default: generated and printed)"],
  memoryBudgetMb: ["BORDE_MEMORY_BUDGET_MB", "Memory that loaded models may use; least-recently-used models are evicted past it (default 50% of RAM)"],
  threads: ["BORDE_THREADS", "Engine threads shared by all loaded models; 0 = the cores free at start-up (default 0)"],
  parallel: ["BORDE_PARALLEL", "Concurrent sequences per loaded text model, batched together (default 16)"],
  contextSize: ["BORDE_CONTEXT_SIZE", "Context tokens per sequence, capped by the model's training context (default 2048)"],
  maxQueue: ["BORDE_MAX_QUEUE", "Requests that may wait for a free sequence per model; more are answered 429/3040 (default 64)"],
  requestTimeoutMs: ["BORDE_REQUEST_TIMEOUT_MS", "Deadline of one request, queueing included; past it 408/3007 (default 120000)"],
  maxBodyBytes: ["BORDE_MAX_BODY_BYTES", "Largest accepted request body; larger gets 413/3006 (default 10485760)"],
  maxTokensLimit: ["BORDE_MAX_TOKENS_LIMIT", "Largest max_tokens a request may ask for (default 4096)"],
  autoPull: ["BORDE_AUTO_PULL", "Pull a catalog model on first request instead of answering 5007 (default false)"],
  preload: ["BORDE_PRELOAD", "Comma-separated model ids to load at start-up"],
  logLevel: ["BORDE_LOG_LEVEL", "pino log level: fatal|error|warn|info|debug|trace|silent (default info)"],
  hfEndpoint: ["HF_ENDPOINT", "Base URL of the Hugging Face hub used by pulls (default https://huggingface.co)"],
  hfToken: ["HF_TOKEN", "Bearer token sent to the hub for gated or private repos"],
} as const satisfies Record<string, readonly [string, string]>;

const boolish = z.union([z.boolean(), z.enum(["1", "0", "true", "false", "yes", "no"]).transform((v) => ["1", "true", "yes"].includes(v))]);
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const ConfigSchema = z.object({
  host: z.string().min(1).default("127.0.0.1"),
  port: int(0, 65535).default(8787),
  modelsDir: z.string().min(1).default(path.join(os.homedir(), ".borde", "models")),
  devAccount: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "account ids are 1-64 of [A-Za-z0-9_-]").optional(),
  devToken: z.string().min(8, "tokens are at least 8 characters").max(256).optional(),
  memoryBudgetMb: int(16, 1 << 22).default(Math.floor(os.totalmem() / 2 / 2 ** 20)),
  threads: int(0, 256).default(0),
  parallel: int(1, 256).default(16),
  contextSize: int(64, 1 << 20).default(2048),
  maxQueue: int(0, 100_000).default(64),
  requestTimeoutMs: int(100, 86_400_000).default(120_000),
  maxBodyBytes: int(1024, 1 << 30).default(10 * 2 ** 20),
  maxTokensLimit: int(1, 1 << 20).default(4096),
  autoPull: boolish.default(false),
  preload: z.union([z.array(z.string()), z.string().transform((s) => s.split(",").map((x) => x.trim()).filter(Boolean))]).default([]),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  hfEndpoint: z.string().url().default("https://huggingface.co"),
  hfToken: z.string().optional(),
});

export type Config = Readonly<z.output<typeof ConfigSchema>>;
export type ConfigInput = Partial<z.input<typeof ConfigSchema>>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Builds the node's configuration: options > environment > defaults. Throws ConfigError with every problem listed. */
export function loadConfig(options: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const merged: Record<string, unknown> = {};
  for (const [key, [envName]] of Object.entries(ENV_VARS)) {
    const fromEnv = env[envName];
    if (fromEnv !== undefined && fromEnv !== "") merged[key] = fromEnv;
  }
  for (const [key, value] of Object.entries(options)) if (value !== undefined) merged[key] = value;
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? "");
      const envName = key in ENV_VARS ? ` (${ENV_VARS[key as keyof typeof ENV_VARS][0]})` : "";
      return `${key}${envName}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration: ${lines.join("; ")}`);
  }
  return Object.freeze({ ...parsed.data, modelsDir: path.resolve(parsed.data.modelsDir), preload: Object.freeze([...parsed.data.preload]) as string[] });
}
