import fs from "node:fs";
import path from "node:path";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import {
  BINDING_NAME,
  BINDING_NAME_RULE,
  CompatibilityDate,
  CompatibilityFlag,
  LimitsInput,
  MAX_OUTBOUND_HOSTS,
  MAX_VARS,
  OutboundHost,
  VarValue,
  WORKER_NAME,
  WORKER_NAME_RULE,
  type VersionSettings,
} from "./schema.js";

/** Wrangler's own order when a folder holds more than one. */
export const CONFIG_FILES = ["wrangler.json", "wrangler.jsonc", "wrangler.toml"] as const;

/** A wrangler project as Borde reads it. */
export interface WranglerProject {
  /** The config file read. */
  file: string;
  name: string | undefined;
  /** Absolute path of the entry module. */
  main: string;
  /** `tsconfig` from the config, absolute, if set. */
  tsconfig: string | undefined;
  settings: VersionSettings;
  /** Keys Borde ignores (unsupported bindings, environments…), one line each for the CLI to print. */
  warnings: string[];
}

export class ConfigFileError extends Error {
  override name = "ConfigFileError";
}

/** Keys with no meaning on a Borde node (routing, account, dashboards): ignored without a word. */
const IGNORED = new Set(["$schema", "account_id", "workers_dev", "preview_urls", "route", "routes", "observability", "upload_source_maps", "keep_vars", "logpush", "placement", "dev", "minify", "send_metrics", "legacy_env", "keep_names"]);

/** Bindings Borde does not provide: a worker using them would find `env.X` undefined. */
const UNSUPPORTED_BINDINGS = new Set([
  "kv_namespaces",
  "durable_objects",
  "r2_buckets",
  "d1_databases",
  "services",
  "queues",
  "vectorize",
  "hyperdrive",
  "analytics_engine_datasets",
  "browser",
  "images",
  "send_email",
  "dispatch_namespaces",
  "mtls_certificates",
  "workflows",
  "assets",
  "site",
  "version_metadata",
  "tail_consumers",
  "unsafe",
  "wasm_modules",
  "text_blobs",
  "data_blobs",
  "secrets_store_secrets",
  "pipelines",
  "containers",
]);

const Project = z
  .object({
    name: z.string().regex(WORKER_NAME, WORKER_NAME_RULE).optional(),
    main: z.string().min(1, "main is the entry module, e.g. src/index.js"),
    compatibility_date: CompatibilityDate.optional(),
    compatibility_flags: z.array(CompatibilityFlag).max(64).optional(),
    ai: z.object({ binding: z.string().regex(BINDING_NAME, BINDING_NAME_RULE) }).passthrough().optional(),
    vars: z
      .record(z.string().regex(BINDING_NAME, BINDING_NAME_RULE), z.unknown())
      .refine((v) => Object.keys(v).length <= MAX_VARS, `at most ${MAX_VARS} vars`)
      .optional(),
    limits: LimitsInput.optional(),
    outbound: z.object({ allow: z.array(OutboundHost).max(MAX_OUTBOUND_HOSTS) }).strict().optional(),
    tsconfig: z.string().optional(),
  })
  .passthrough();

/** Finds and reads the wrangler config of a project folder, or the config file given. */
export function readWranglerConfig(dirOrFile: string): WranglerProject {
  const file = findConfig(dirOrFile);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigFileError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  let raw: unknown;
  try {
    raw = file.endsWith(".toml") ? parseToml(text) : parseJsonc(text);
  } catch (e) {
    throw new ConfigFileError(`${path.basename(file)}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigFileError(`${path.basename(file)}: not a table of settings`);
  const parsed = Project.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigFileError(`${path.basename(file)}: ${issue.path.join(".") || "config"}: ${issue.message}`);
  }
  const p = parsed.data;
  const warnings: string[] = [];
  for (const key of Object.keys(raw)) {
    if (key in Project.shape || IGNORED.has(key)) continue;
    if (UNSUPPORTED_BINDINGS.has(key)) warnings.push(`${key}: this binding kind is not supported by Borde; the worker will not have it in env`);
    else if (key === "env") warnings.push("env: wrangler environments are not supported; the top-level settings are deployed");
    else warnings.push(`${key}: not supported by Borde, ignored`);
  }
  const vars: Record<string, string> = {};
  for (const [k, v] of Object.entries(p.vars ?? {})) {
    // Workers also takes JSON values here (env.X is then an object); Borde's bindings are text.
    if (typeof v !== "string") throw new ConfigFileError(`${path.basename(file)}: vars.${k}: Borde supports text vars only (got ${Array.isArray(v) ? "an array" : typeof v})`);
    const ok = VarValue.safeParse(v);
    if (!ok.success) throw new ConfigFileError(`${path.basename(file)}: vars.${k}: ${ok.error.issues[0]!.message}`);
    vars[k] = v;
  }
  const aiBinding = p.ai?.binding ?? null;
  if (aiBinding !== null && aiBinding in vars) throw new ConfigFileError(`${path.basename(file)}: vars.${aiBinding}: this name is the AI binding`);
  const dir = path.dirname(file);
  const main = path.resolve(dir, p.main);
  if (!fs.existsSync(main)) throw new ConfigFileError(`${path.basename(file)}: main: ${p.main} does not exist`);
  return {
    file,
    name: p.name,
    main,
    tsconfig: p.tsconfig === undefined ? undefined : path.resolve(dir, p.tsconfig),
    settings: {
      compatibilityDate: p.compatibility_date,
      compatibilityFlags: p.compatibility_flags ?? [],
      aiBinding,
      vars,
      limits: p.limits ?? {},
      allowOutbound: p.outbound?.allow ?? [],
    },
    warnings,
  };
}

function findConfig(dirOrFile: string): string {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dirOrFile);
  } catch {
    throw new ConfigFileError(`${dirOrFile} does not exist`);
  }
  if (stat.isFile()) return path.resolve(dirOrFile);
  for (const name of CONFIG_FILES) {
    const file = path.resolve(dirOrFile, name);
    if (fs.existsSync(file)) return file;
  }
  throw new ConfigFileError(`no wrangler.json, wrangler.jsonc or wrangler.toml in ${path.resolve(dirOrFile)}`);
}

/**
 * JSON with comments (`//`, `/* *\/`) and trailing commas, as wrangler.jsonc allows. Comments and
 * trailing commas are blanked outside strings (keeping positions for JSON.parse's messages).
 */
export function parseJsonc(text: string): unknown {
  const src = text.replace(/^\uFEFF/, "");
  const out = src.split("");
  let i = 0;
  const n = out.length;
  /** Index of the last `,` seen outside strings and comments, while only whitespace/comments follow it. */
  let pendingComma = -1;
  while (i < n) {
    const ch = out[i]!;
    if (ch === '"') {
      pendingComma = -1;
      i++;
      while (i < n && out[i] !== '"') i += out[i] === "\\" ? 2 : 1;
      i++;
    } else if (ch === "/" && out[i + 1] === "/") {
      while (i < n && out[i] !== "\n") out[i++] = " ";
    } else if (ch === "/" && out[i + 1] === "*") {
      const end = src.indexOf("*/", i + 2);
      if (end < 0) throw new SyntaxError("unterminated /* comment");
      for (; i < end + 2; i++) if (out[i] !== "\n") out[i] = " ";
    } else if (ch === ",") {
      pendingComma = i++;
    } else if (ch === "}" || ch === "]") {
      if (pendingComma >= 0) out[pendingComma] = " ";
      pendingComma = -1;
      i++;
    } else {
      if (!/\s/.test(ch)) pendingComma = -1;
      i++;
    }
  }
  return JSON.parse(out.join(""));
}
