import fs from "node:fs";
import os from "node:os";
import { parse as parseToml } from "smol-toml";
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
  maxBodyBytes: ["BORDE_MAX_BODY_BYTES", "Largest accepted request body; larger gets 413/3006 (default 33554432: a minute of WAV sent as a JSON byte array fits)"],
  maxImagePixels: ["BORDE_MAX_IMAGE_PIXELS", "Largest image (width × height) a model call may send; checked before decoding (default 40000000)"],
  maxAudioSeconds: ["BORDE_MAX_AUDIO_SECONDS", "Longest audio a model call may send, in seconds (default 1800)"],
  maxBatch: ["BORDE_MAX_BATCH", "Most requests batched into one forward pass (embeddings, classification), within what the model allows; 1 turns batching off (default 32)"],
  batchWaitMs: ["BORDE_BATCH_WAIT_MS", "How long an embeddings or classification request waits for others to share its forward pass when the model is idle (default 2)"],
  maxTokensLimit: ["BORDE_MAX_TOKENS_LIMIT", "Largest max_tokens a request may ask for (default 4096)"],
  autoPull: ["BORDE_AUTO_PULL", "Pull a catalog model on first request instead of answering 5007 (default false)"],
  preload: ["BORDE_PRELOAD", "Comma-separated model ids to load at start-up"],
  logLevel: ["BORDE_LOG_LEVEL", "pino log level: fatal|error|warn|info|debug|trace|silent (default info)"],
  dataDir: ["BORDE_DATA_DIR", "Folder of the node's state: accounts, tokens, audit log and the usage ledger or outbox (SQLite, WAL) (default ~/.borde/data)"],
  ledgerSync: ["BORDE_LEDGER_SYNC", "SQLite durability of each usage record: normal survives a crash of the process, full also a power loss (fsync per commit) (default normal)"],
  pop: ["BORDE_POP", "Name of the point of presence this node is, recorded on every usage record (default local)"],
  natsUrl: ["BORDE_NATS_URL", "NATS server(s), comma-separated: usage records go to a local outbox and are shipped to JetStream instead of the local ledger"],
  natsToken: ["BORDE_NATS_TOKEN", "The cluster's NATS token (16+ characters): nodes present it, and `borde cluster nats-config` makes every server and link require it"],
  postgresUrl: ["BORDE_POSTGRES_URL", "PostgreSQL URL of the cluster ledger: usage reports read it (and `borde ledger` writes it)"],
  metering: ["BORDE_METERING", "Record a usage record for every answered request; off only for benchmarks (default true)"],
  freeNeurons: ["BORDE_FREE_NEURONS", "Free daily allocation of a free-plan account, in neurons, reset at 00:00 UTC; past it 429/3036 (default 10000)"],
  pricePer1000Neurons: ["BORDE_PRICE_PER_1000_NEURONS", "Price in USD of 1,000 neurons in usage reports (default 0.011)"],
  computeNeuronsPerCpuSecond: ["BORDE_COMPUTE_NEURONS_PER_CPU_SECOND", "Neurons per engine CPU-second for models with no listed price, e.g. @local files (default 0.3)"],
  rateLimits: ["BORDE_RATE_LIMITS", "Requests per minute per account and task, e.g. text-generation=300,text-embeddings=3000 (defaults: Workers AI's table)"],
  tokensPerMinute: ["BORDE_TOKENS_PER_MINUTE", "Text-generation tokens (in + out) per minute per account; 0 = no limit (default 200000)"],
  maxConcurrent: ["BORDE_MAX_CONCURRENT", "Requests one account may have running at once; more get 429/7104 (default 64)"],
  secretKey: ["BORDE_SECRET_KEY", "64 hex digits: the key that seals workers' secrets, the same on every PoP so that secrets replicate (default: a key per node in <data dir>/secret.key)"],
  jurisdiction: ["BORDE_JURISDICTION", "Jurisdiction this node runs in (e.g. eu); tokens limited to other jurisdictions are refused here"],
  devPlan: ["BORDE_DEV_PLAN", "Plan of the dev account: free (daily free allocation applies) or paid (default free)"],
  hfEndpoint: ["HF_ENDPOINT", "Base URL of the Hugging Face hub used by pulls (default https://huggingface.co)"],
  hfToken: ["HF_TOKEN", "Bearer token sent to the hub for gated or private repos"],
} as const satisfies Record<string, readonly [string, string]>;

/**
 * Requests per minute per account and task: Workers AI's published defaults, so that a client tuned
 * against Cloudflare meets the same limits here. A task not listed has no per-minute limit.
 */
export const DEFAULT_RATE_LIMITS: Readonly<Record<string, number>> = Object.freeze({
  "text-generation": 300,
  "text-embeddings": 3000,
  "text-classification": 2000,
  "image-classification": 3000,
  "object-detection": 3000,
  "automatic-speech-recognition": 720,
  "image-to-text": 720,
  "text-to-image": 720,
  translation: 720,
  summarization: 1500,
  "voice-activity-detection": 3000,
});

function parseRateLimits(s: string, ctx: z.RefinementCtx): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of s.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z-]{1,64})=(\d{1,12})$/.exec(part);
    if (!m) {
      ctx.addIssue({ code: "custom", message: `expected task=requests_per_minute, got ${JSON.stringify(part.slice(0, 80))}` });
      return z.NEVER;
    }
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

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
  maxBodyBytes: int(1024, 1 << 30).default(32 * 2 ** 20),
  maxImagePixels: int(1, 1 << 30).default(40_000_000),
  maxAudioSeconds: int(1, 86_400).default(1800),
  batchWaitMs: int(0, 1000).default(2),
  maxBatch: int(1, 1024).default(32),
  maxTokensLimit: int(1, 1 << 20).default(4096),
  autoPull: boolish.default(false),
  preload: z.union([z.array(z.string()), z.string().transform((s) => s.split(",").map((x) => x.trim()).filter(Boolean))]).default([]),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  dataDir: z.string().min(1).default(path.join(os.homedir(), ".borde", "data")),
  ledgerSync: z.enum(["normal", "full"]).default("normal"),
  pop: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, "PoP names are 1-64 of [a-z0-9_-]").default("local"),
  natsUrl: z.string().min(1).optional(),
  natsToken: z.string().min(16, "the NATS token is at least 16 characters").max(512).regex(/^[\x21-\x7e]+$/, "the NATS token is printable ASCII without spaces").optional(),
  postgresUrl: z.string().min(1).optional(),
  metering: boolish.default(true),
  freeNeurons: z.coerce.number().min(0).max(1e12).default(10_000),
  pricePer1000Neurons: z.coerce.number().min(0).max(1e6).default(0.011),
  computeNeuronsPerCpuSecond: z.coerce.number().positive().max(1e9).default(0.3),
  rateLimits: z
    .union([z.record(z.string(), z.coerce.number().int().min(0)), z.string().transform(parseRateLimits)])
    .transform((given) => Object.freeze({ ...DEFAULT_RATE_LIMITS, ...given }))
    .pipe(z.record(z.string().regex(/^[a-z-]{1,64}$/, "tasks are lowercase names like text-generation"), z.number().int().min(0)))
    .default(DEFAULT_RATE_LIMITS),
  tokensPerMinute: int(0, 1e12).default(200_000),
  maxConcurrent: int(1, 1_000_000).default(64),
  jurisdiction: z.string().regex(/^[a-z]{2,16}$/, "jurisdictions are 2-16 lowercase letters, e.g. eu").optional(),
  secretKey: z.string().regex(/^[0-9a-f]{64}$/, "the secrets key is 64 lowercase hex digits (32 bytes)").optional(),
  devPlan: z.enum(["free", "paid"]).default("free"),
  hfEndpoint: z.string().url().default("https://huggingface.co"),
  hfToken: z.string().optional(),
});

export type Config = Readonly<z.output<typeof ConfigSchema>>;
export type ConfigInput = Partial<z.input<typeof ConfigSchema>>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Reads a config file (TOML, or JSON when it ends in .json). Keys are the settings' names in
 * snake_case (`free_neurons = 5000`) or camelCase; `[rate_limits]` is a table of task = rpm.
 */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  let raw: unknown;
  try {
    raw = file.endsWith(".json") ? JSON.parse(text) : parseToml(text);
  } catch (e) {
    throw new ConfigError(`config file ${file}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigError(`config file ${file}: expected a table of settings`);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    const camel = key.replace(/_([a-z0-9])/g, (_, ch: string) => ch.toUpperCase());
    if (!(camel in ConfigSchema.shape)) throw new ConfigError(`config file ${file}: unknown setting ${JSON.stringify(key)}`);
    out[camel] = value;
  }
  return out;
}

/**
 * Builds the node's configuration: options > environment > config file (`configFile` option or
 * BORDE_CONFIG) > defaults. Throws ConfigError with every problem listed.
 */
export function loadConfig(options: ConfigInput & { configFile?: string } = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const { configFile, ...opts } = options;
  const file = configFile ?? (env.BORDE_CONFIG || undefined);
  const merged: Record<string, unknown> = file ? readConfigFile(file) : {};
  for (const [key, [envName]] of Object.entries(ENV_VARS)) {
    const fromEnv = env[envName];
    if (fromEnv !== undefined && fromEnv !== "") merged[key] = fromEnv;
  }
  for (const [key, value] of Object.entries(opts)) if (value !== undefined) merged[key] = value;
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? "");
      const envName = key in ENV_VARS ? ` (${ENV_VARS[key as keyof typeof ENV_VARS][0]})` : "";
      return `${key}${envName}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration: ${lines.join("; ")}`);
  }
  return Object.freeze({ ...parsed.data, modelsDir: path.resolve(parsed.data.modelsDir), dataDir: path.resolve(parsed.data.dataDir), preload: Object.freeze([...parsed.data.preload]) as string[] });
}
