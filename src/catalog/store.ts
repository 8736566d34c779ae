import fs from "node:fs/promises";
import path from "node:path";
import { BordeError } from "../errors.js";
import catalogJson from "./catalog.json" with { type: "json" };
import { parseModelId } from "./ids.js";
import { pullFile, type PullOptions, type PullResult } from "./pull.js";
import { fileURLToPath } from "node:url";
import type { BundledModel, CatalogEntry, ModelInfo, Task } from "./types.js";

export const CATALOG: readonly CatalogEntry[] = Object.freeze(catalogJson as CatalogEntry[]);

/** Models in the package's own `models/` folder (same path from src/ and dist/). */
export const BUNDLED: readonly BundledModel[] = Object.freeze([
  {
    id: "@borde/stories260k",
    task: "text-generation",
    description: "A 260K-parameter llama trained on TinyStories (ships with Borde; writes short children's stories)",
    path: fileURLToPath(new URL("../../models/stories260K.gguf", import.meta.url)),
    license: "MIT",
  },
]);

export interface ModelStoreOptions {
  dir: string;
  /** Reads a GGUF file's task from its metadata (the engine knows how). */
  inspect: (file: string) => Promise<{ task: Task }>;
  catalog?: readonly CatalogEntry[];
  bundled?: readonly BundledModel[];
}

/**
 * The models folder. Top-level `*.gguf` files are the operator's own (`@local/<stem>`); catalog
 * models are pulled into `catalog/` under it, named after their id, so the two never collide.
 */
export class ModelStore {
  readonly dir: string;
  private readonly catalog: Map<string, CatalogEntry>;
  private readonly bundled: Map<string, BundledModel>;
  private readonly inspect: ModelStoreOptions["inspect"];
  private readonly taskCache = new Map<string, { mtimeMs: number; size: number; task: Task }>();

  constructor(options: ModelStoreOptions) {
    this.dir = path.resolve(options.dir);
    this.inspect = options.inspect;
    this.catalog = new Map((options.catalog ?? CATALOG).map((e) => [e.id, e]));
    this.bundled = new Map((options.bundled ?? BUNDLED).map((b) => [b.id, b]));
  }

  catalogEntry(id: string): CatalogEntry | undefined {
    return this.catalog.get(id);
  }

  /** Where a catalog model lives once pulled. */
  catalogPath(entry: CatalogEntry): string {
    const safe = entry.id.slice(1).replaceAll("/", "__");
    return path.join(this.dir, "catalog", `${safe}.gguf`);
  }

  async list(): Promise<ModelInfo[]> {
    const out: ModelInfo[] = [];
    for (const b of this.bundled.values()) {
      const st = await statFile(b.path);
      if (st) out.push(bundledInfo(b, st.size));
    }
    for (const entry of this.catalog.values()) {
      const file = this.catalogPath(entry);
      const st = await statFile(file);
      out.push({
        id: entry.id,
        task: entry.task,
        source: "catalog",
        description: entry.description,
        path: st ? file : null,
        installed: st !== null,
        sizeBytes: st?.size ?? entry.source.size,
        license: entry.source.license,
        hub: entry.source,
      });
    }
    let names: string[] = [];
    try {
      names = await fs.readdir(this.dir);
    } catch {
      // No models folder yet: nothing local.
    }
    for (const name of names.sort()) {
      if (!name.endsWith(".gguf")) continue;
      const stem = name.slice(0, -".gguf".length);
      const id = `@local/${stem}`;
      try {
        parseModelId(id);
      } catch {
        continue; // a file name we could not address safely is not served
      }
      const file = path.join(this.dir, name);
      const st = await statFile(file);
      if (!st) continue;
      const task = await this.taskOf(file, st).catch(() => null);
      if (!task) continue; // not a readable GGUF: skipped rather than failing the listing
      out.push({ id, task, source: "local", description: `Operator file ${name}`, path: file, installed: true, sizeBytes: st.size, license: null, hub: null });
    }
    return out;
  }

  /** Resolves an id to an installed file; throws 5007 with a hint when it is not there. */
  async resolve(id: string): Promise<ModelInfo> {
    const { namespace, segments } = parseModelId(id);
    if (namespace === "local") {
      if (segments.length !== 1) throw noSuchModel(id);
      const file = path.join(this.dir, `${segments[0]}.gguf`);
      // Defence in depth: the id grammar already forbids separators, but never leave the folder.
      if (path.dirname(file) !== this.dir) throw noSuchModel(id);
      const st = await statFile(file);
      if (!st) throw noSuchModel(id, `No such model ${id}: the operator adds it by putting ${segments[0]}.gguf in the models folder`);
      const task = await this.taskOf(file, st).catch((cause) => {
        throw new BordeError("NoSuchModel", `No such model ${id}: ${path.basename(file)} is not a readable GGUF file`, { cause });
      });
      return { id, task, source: "local", description: "", path: file, installed: true, sizeBytes: st.size, license: null, hub: null };
    }
    const bundled = this.bundled.get(id);
    if (bundled) {
      const st = await statFile(bundled.path);
      if (!st) throw noSuchModel(id, `Bundled model ${id} is missing from this install`);
      return bundledInfo(bundled, st.size);
    }
    const entry = this.catalog.get(id);
    if (!entry) throw noSuchModel(id);
    const file = this.catalogPath(entry);
    const st = await statFile(file);
    if (!st) throw noSuchModel(id, `Model ${id} is not installed on this node: run \`borde models pull ${id}\``);
    return {
      id,
      task: entry.task,
      source: "catalog",
      description: entry.description,
      path: file,
      installed: true,
      sizeBytes: st.size,
      license: entry.source.license,
      hub: entry.source,
    };
  }

  async pull(id: string, options: PullOptions): Promise<PullResult> {
    parseModelId(id);
    const entry = this.catalog.get(id);
    if (!entry) throw noSuchModel(id, `No such model ${id} in the catalog (local files are added by copying them into ${this.dir})`);
    return pullFile(entry.source, this.catalogPath(entry), options);
  }

  /** Removes an installed model (a catalog download or an operator's file). Returns false when absent. */
  async remove(id: string): Promise<boolean> {
    if (this.bundled.has(id)) throw new BordeError("InvalidInput", `${id} ships with Borde and cannot be removed`);
    const info = await this.resolve(id).catch(() => null);
    if (!info?.path) return false;
    await fs.rm(info.path, { force: true });
    await fs.rm(`${info.path}.partial`, { force: true });
    return true;
  }

  private async taskOf(file: string, st: { size: number; mtimeMs: number }): Promise<Task> {
    const hit = this.taskCache.get(file);
    if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.task;
    const { task } = await this.inspect(file);
    this.taskCache.set(file, { mtimeMs: st.mtimeMs, size: st.size, task });
    return task;
  }
}

function bundledInfo(b: BundledModel, size: number): ModelInfo {
  return { id: b.id, task: b.task, source: "bundled", description: b.description, path: b.path, installed: true, sizeBytes: size, license: b.license, hub: null };
}

function noSuchModel(id: string, message?: string): BordeError {
  return new BordeError("NoSuchModel", message ?? `No such model ${id} or task`);
}

async function statFile(file: string): Promise<{ size: number; mtimeMs: number } | null> {
  try {
    const st = await fs.stat(file);
    return st.isFile() ? { size: st.size, mtimeMs: st.mtimeMs } : null;
  } catch {
    return null;
  }
}
