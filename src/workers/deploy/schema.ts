import { z } from "zod";
import { DEFAULT_WORKER_LIMITS, type WorkerLimits, type WorkerModule } from "../types.js";

/** Fatal: text and JS modules must be valid UTF-8. One decoder for every upload. */
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * What a deployment is made of, checked in one place: the names, the upload body of
 * `PUT …/workers/scripts/{name}` (the CLI bundles locally and sends this), and the bounds of every
 * field. The CLI checks a project against the same rules before uploading it.
 */

/** Worker names: they are DNS labels (`{name}.workers.localhost`), unique across the node. */
export const WORKER_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const WORKER_NAME_RULE = "worker names are 1-63 of a-z, 0-9 and '-', starting with a letter or digit";

/** Env binding names (vars, secrets, the AI binding): JavaScript identifiers. */
export const BINDING_NAME = /^[A-Za-z_$][A-Za-z0-9_$]{0,63}$/;
export const BINDING_NAME_RULE = "binding names are identifiers of 1-64 of A-Z, a-z, 0-9, _ and $, not starting with a digit";

/**
 * Module names as imported from the entry: one or more path segments, each starting with a letter,
 * digit or `_`, so that `.`, `..`, empty segments, absolute paths and backslashes cannot occur.
 */
export const MODULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}(?:\/[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}){0,7}$/;

export const MODULE_TYPES = ["esm", "wasm", "text", "data"] as const satisfies readonly WorkerModule["type"][];

/** Cloudflare's paid-plan limit on a worker's size (modules, decoded). */
export const MAX_SCRIPT_BYTES = 10 * 1024 * 1024;
/** The upload body: base64 of the limit above plus room for the JSON around it. */
export const MAX_UPLOAD_BYTES = Math.ceil((MAX_SCRIPT_BYTES * 4) / 3) + 1024 * 1024;
export const MAX_MODULES = 64;
export const MAX_VARS = 128;
/** Cloudflare's limit on one environment variable or secret. */
export const MAX_VAR_BYTES = 5 * 1024;
export const MAX_SECRETS = 128;
export const MAX_OUTBOUND_HOSTS = 64;
/** Versions kept per worker (besides the active one); older ones are pruned on deploy. */
export const KEEP_VERSIONS = 10;
export const MAX_WORKERS_PER_ACCOUNT = 100;

/** Bounds of the per-worker limits (`[limits]` in wrangler.toml). */
export const LIMIT_BOUNDS = {
  cpu_ms: [1, 300_000],
  wall_ms: [1, 900_000],
  memory_mb: [16, 1024],
  subrequests: [0, 10_000],
} as const;

/** Standard base64, padded. (A grouped `(?:…{4})*` pattern overflows V8's regexp stack on megabytes.) */
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const isBase64 = (s: string) => s.length % 4 === 0 && BASE64.test(s);

const utf8Length = (s: string) => Buffer.byteLength(s, "utf8");

export const LimitsInput = z
  .object({
    cpu_ms: z.number().int().min(LIMIT_BOUNDS.cpu_ms[0]).max(LIMIT_BOUNDS.cpu_ms[1]).optional(),
    wall_ms: z.number().int().min(LIMIT_BOUNDS.wall_ms[0]).max(LIMIT_BOUNDS.wall_ms[1]).optional(),
    memory_mb: z.number().int().min(LIMIT_BOUNDS.memory_mb[0]).max(LIMIT_BOUNDS.memory_mb[1]).optional(),
    subrequests: z.number().int().min(LIMIT_BOUNDS.subrequests[0]).max(LIMIT_BOUNDS.subrequests[1]).optional(),
  })
  .strict();
export type LimitsInput = z.output<typeof LimitsInput>;

/** A hostname outbound fetch may reach (lowercase; no scheme, port, path or wildcard). */
export const OutboundHost = z
  .string()
  .max(253)
  .regex(/^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/, "outbound hosts are lowercase hostnames, e.g. api.example.com");

export const CompatibilityDate = z.string().regex(/^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])$/, "compatibility dates are YYYY-MM-DD");
export const CompatibilityFlag = z.string().regex(/^[a-z0-9_]{1,64}$/, "compatibility flags are 1-64 of a-z, 0-9 and _");
export const VarValue = z.string().refine((s) => utf8Length(s) <= MAX_VAR_BYTES, `values are at most ${MAX_VAR_BYTES} bytes`);

export const ModuleInput = z
  .object({
    name: z.string().max(1100).regex(MODULE_NAME, "module names are relative paths of [A-Za-z0-9_.@+-] segments, with no '.' or '..' segments"),
    type: z.enum(MODULE_TYPES),
    content_base64: z.string().max(MAX_UPLOAD_BYTES).refine(isBase64, "content_base64 must be standard padded base64"),
  })
  .strict();

/** The body of `PUT /client/v4/accounts/{id}/workers/scripts/{name}`. */
export const DeployBody = z
  .object({
    modules: z.array(ModuleInput).min(1).max(MAX_MODULES),
    compatibility_date: CompatibilityDate.optional(),
    compatibility_flags: z.array(CompatibilityFlag).max(64).default([]),
    ai_binding: z.string().regex(BINDING_NAME, BINDING_NAME_RULE).nullable().default(null),
    vars: z
      .record(z.string().regex(BINDING_NAME, BINDING_NAME_RULE), VarValue)
      .refine((v) => Object.keys(v).length <= MAX_VARS, `at most ${MAX_VARS} vars`)
      .default({}),
    limits: LimitsInput.default({}),
    outbound_allow: z.array(OutboundHost).max(MAX_OUTBOUND_HOSTS).default([]),
  })
  .strict();
export type DeployBody = z.input<typeof DeployBody>;

export const SecretBody = z
  .object({
    name: z.string().regex(BINDING_NAME, BINDING_NAME_RULE),
    text: z.string().refine((s) => utf8Length(s) <= MAX_VAR_BYTES, `secrets are at most ${MAX_VAR_BYTES} bytes`),
    /** Cloudflare's API sends it; only secret_text exists. */
    type: z.literal("secret_text").optional(),
  })
  .strict();

export const RollbackBody = z.object({ version: z.number().int().min(1).optional() }).strict();

/** What a version runs with, besides its modules and secrets: stored as JSON with each version. */
export interface VersionSettings {
  compatibilityDate?: string;
  compatibilityFlags: string[];
  aiBinding: string | null;
  vars: Record<string, string>;
  /** Only the limits the project set; the defaults apply to the rest when it runs. */
  limits: LimitsInput;
  allowOutbound: string[];
}

export function effectiveLimits(l: LimitsInput): WorkerLimits {
  return {
    cpuMs: l.cpu_ms ?? DEFAULT_WORKER_LIMITS.cpuMs,
    wallMs: l.wall_ms ?? DEFAULT_WORKER_LIMITS.wallMs,
    memoryMb: l.memory_mb ?? DEFAULT_WORKER_LIMITS.memoryMb,
    subrequests: l.subrequests ?? DEFAULT_WORKER_LIMITS.subrequests,
  };
}

/** Checks that can't be said in the schema: decoded sizes, unique names, the entry's type, binding clashes. Throws a message. */
export function decodeModules(modules: z.output<typeof ModuleInput>[]): WorkerModule[] {
  const seen = new Set<string>();
  let total = 0;
  const out: WorkerModule[] = [];
  for (const [i, m] of modules.entries()) {
    if (seen.has(m.name)) throw new Error(`modules.${i}.name: duplicate module name ${JSON.stringify(m.name)}`);
    seen.add(m.name);
    const content = Buffer.from(m.content_base64, "base64");
    total += content.byteLength;
    if (total > MAX_SCRIPT_BYTES) throw new Error(`modules: the worker is larger than ${MAX_SCRIPT_BYTES} bytes`);
    if (m.type === "esm" || m.type === "text") {
      try {
        UTF8.decode(content);
      } catch {
        throw new Error(`modules.${i}: ${m.type} modules must be UTF-8 text`);
      }
    }
    if (m.type === "wasm" && !isWasm(content)) throw new Error(`modules.${i}: not a WebAssembly module (no \\0asm header)`);
    out.push({ name: m.name, type: m.type, content: new Uint8Array(content.buffer, content.byteOffset, content.byteLength) });
  }
  if (out[0]?.type !== "esm") throw new Error("modules.0: the first module is the entry and must be an esm module");
  return out;
}

function isWasm(b: Uint8Array): boolean {
  return b.byteLength >= 8 && b[0] === 0x00 && b[1] === 0x61 && b[2] === 0x73 && b[3] === 0x6d;
}
