import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import { builtinModules } from "node:module";
import path from "node:path";
import type { WorkerModule } from "../types.js";
import { readWranglerConfig, type WranglerProject } from "./config.js";
import { MAX_MODULES, MAX_SCRIPT_BYTES, WORKER_NAME, WORKER_NAME_RULE, type DeployBody, type VersionSettings } from "./schema.js";

/**
 * Bundles a wrangler project the way `wrangler deploy` does: esbuild, ESM, ES2022, browser platform
 * with the `workerd`, `worker`, `browser` conditions, `cloudflare:*` and `node:*` left to the
 * runtime. Non-JavaScript imports follow wrangler's default module rules: `*.wasm` and
 * `*.wasm?module` are CompiledWasm modules, `*.txt`, `*.html`, `*.sql` Text, `*.bin` Data — each is
 * kept as a separate module named `<sha1>-<basename>` (as wrangler names them) and the import is
 * rewritten to it, so `import add from "./add.wasm"` gives a `WebAssembly.Module` in workerd.
 */

export interface Bundle {
  /** The worker's name: `--name`, else the config's `name`. */
  name: string;
  /** The entry first (`<main's stem>.js`), then the attached modules. */
  modules: WorkerModule[];
  settings: VersionSettings;
  /** Config keys Borde ignores, for the CLI to print. */
  warnings: string[];
  project: WranglerProject;
}

export class BundleError extends Error {
  override name = "BundleError";
}

const RULES: { test: RegExp; type: WorkerModule["type"] }[] = [
  { test: /\.wasm(\?module)?$/, type: "wasm" },
  { test: /\.(txt|html|sql)$/, type: "text" },
  { test: /\.bin$/, type: "data" },
];
const ATTACHED = /\.(wasm|txt|html|sql|bin)(\?module)?$/;

export async function bundleProject(dirOrFile: string, opts: { name?: string } = {}): Promise<Bundle> {
  const project = readWranglerConfig(dirOrFile);
  const name = opts.name ?? project.name;
  if (name === undefined) throw new BundleError(`${path.basename(project.file)} has no name: add name = "my-worker" or pass --name`);
  if (!WORKER_NAME.test(name)) throw new BundleError(`invalid worker name ${JSON.stringify(name)}: ${WORKER_NAME_RULE}`);
  const nodeCompat = project.settings.compatibilityFlags.some((f) => f === "nodejs_compat" || f === "nodejs_compat_v2");
  const modules = await bundleEntry(project.main, { tsconfig: project.tsconfig, nodeCompat });
  return { name, modules, settings: project.settings, warnings: project.warnings, project };
}

/** Bundles one entry module; the result's first module is the entry. */
export async function bundleEntry(entry: string, opts: { tsconfig?: string; nodeCompat?: boolean } = {}): Promise<WorkerModule[]> {
  // Loaded on use: the node never bundles (it receives bundles), only the CLI does.
  const esbuild = await import("esbuild");
  const attached = new Map<string, WorkerModule>();
  const entryName = `${path.basename(entry).replace(/\.[^.]+$/, "")}.js`;
  const builtins = new Set(builtinModules.filter((m) => !m.startsWith("_")));
  const plugin: import("esbuild").Plugin = {
    name: "borde-modules",
    setup(build) {
      build.onResolve({ filter: ATTACHED }, async (args) => {
        if ((args.pluginData as { borde?: boolean } | undefined)?.borde) return undefined;
        const spec = args.path.replace(/\?module$/, "");
        let file: string;
        if (spec.startsWith(".") || path.isAbsolute(spec)) file = path.resolve(args.resolveDir, spec);
        else {
          const r = await build.resolve(spec, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: { borde: true } });
          if (r.errors.length > 0) return { errors: r.errors };
          file = r.path;
        }
        let content: Buffer;
        try {
          content = await fs.readFile(file);
        } catch (e) {
          return { errors: [{ text: `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` }] };
        }
        const type = RULES.find((r) => r.test.test(args.path))!.type;
        const name = `${createHash("sha1").update(content).digest("hex")}-${path.basename(file)}`;
        attached.set(name, { name, type, content: new Uint8Array(content.buffer, content.byteOffset, content.byteLength) });
        return { path: `./${name}`, external: true };
      });
      // With nodejs_compat workerd serves Node's built-ins; `import fs from "fs"` means `node:fs` there.
      if (opts.nodeCompat)
        build.onResolve({ filter: /^[a-z_/]+$/ }, (args) => (builtins.has(args.path) ? { path: `node:${args.path}`, external: true } : undefined));
    },
  };
  let result: import("esbuild").BuildResult<{ write: false }>;
  try {
    result = await esbuild.build({
      entryPoints: [entry],
      absWorkingDir: path.dirname(entry),
      bundle: true,
      write: false,
      outfile: path.join(path.dirname(entry), entryName),
      format: "esm",
      platform: "browser",
      target: "es2022",
      conditions: ["workerd", "worker", "browser"],
      mainFields: ["browser", "module", "main"],
      external: ["cloudflare:*", "node:*"],
      loader: { ".js": "jsx", ".mjs": "jsx", ".cjs": "jsx" },
      keepNames: true,
      sourcemap: false,
      logLevel: "silent",
      ...(opts.tsconfig ? { tsconfig: opts.tsconfig } : {}),
      plugins: [plugin],
    });
  } catch (e) {
    const errors = (e as { errors?: import("esbuild").Message[] }).errors;
    const first = errors?.[0];
    if (first) {
      const where = first.location ? `${path.relative(process.cwd(), first.location.file) || first.location.file}:${first.location.line}:${first.location.column}: ` : "";
      throw new BundleError(`bundling failed: ${where}${first.text}${errors.length > 1 ? ` (and ${errors.length - 1} more errors)` : ""}`);
    }
    throw new BundleError(`bundling failed: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`);
  }
  const out = result.outputFiles.find((f) => f.path.endsWith(".js"));
  if (!out) throw new BundleError("bundling produced no JavaScript output");
  const modules: WorkerModule[] = [{ name: entryName, type: "esm", content: out.contents }, ...[...attached.values()].filter((m) => m.name !== entryName)];
  const size = modules.reduce((n, m) => n + m.content.byteLength, 0);
  if (size > MAX_SCRIPT_BYTES) throw new BundleError(`the worker is ${size} bytes, more than the ${MAX_SCRIPT_BYTES} bytes a worker may be`);
  if (modules.length > MAX_MODULES) throw new BundleError(`the worker has ${modules.length} modules, more than ${MAX_MODULES}`);
  return modules;
}

/** The body the CLI uploads to `PUT …/workers/scripts/{name}`. */
export function deployBody(modules: WorkerModule[], s: VersionSettings): DeployBody {
  return {
    modules: modules.map((m) => ({ name: m.name, type: m.type, content_base64: Buffer.from(m.content.buffer, m.content.byteOffset, m.content.byteLength).toString("base64") })),
    ...(s.compatibilityDate ? { compatibility_date: s.compatibilityDate } : {}),
    compatibility_flags: s.compatibilityFlags,
    ai_binding: s.aiBinding,
    vars: s.vars,
    limits: s.limits,
    outbound_allow: s.allowOutbound,
  };
}
