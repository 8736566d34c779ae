import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { EngineName } from "../engines/contract.js";
import { BordeError } from "../errors.js";
import catalogJson from "./catalog.json" with { type: "json" };
import { parseModelId } from "./ids.js";
import { withPullLock } from "./lock.js";
import { pullRepo, stagingDir, type RepoPullResult } from "./pull-repo.js";
import { pullFile, type PullOptions, type PullResult } from "./pull.js";
import { isRepoSource, type BundledModel, type CatalogEntry, type ModelInfo, type Task } from "./types.js";

export const CATALOG: readonly CatalogEntry[] = Object.freeze(catalogJson as CatalogEntry[]);

/** Models in the package's own `models/` folder (same path from src/ and dist/). */
export const BUNDLED: readonly BundledModel[] = Object.freeze([
  {
    id: "@borde/stories260k",
    task: "text-generation",
    engine: "llama",
    description: "A 260K-parameter llama trained on TinyStories (ships with Borde; writes short children's stories)",
    path: fileURLToPath(new URL("../../models/stories260K.gguf", import.meta.url)),
    license: "MIT",
  },
]);

export interface ModelStoreOptions {
  dir: string;
  /** Reads a model file's (or folder's) task and engine (the engines know how); throws for what is not a model. */
  inspect: (file: string) => Promise<{ task: Task; engine: EngineName }>;
  catalog?: readonly CatalogEntry[];
  bundled?: readonly BundledModel[];
}

/** The folder under the models dir that catalog pulls go to; never an operator's model. */
const CATALOG_DIR = "catalog";

/**
 * The models folder. Its top-level `*.gguf` files and folders are the operator's own
 * (`@local/<stem>`, `@local/<folder>`); catalog models are pulled into `catalog/` under it, named
 * after their id (a file, or a folder for a repo), so the two never collide.
 */
export class ModelStore {
  readonly dir: string;
  private readonly catalog: Map<string, CatalogEntry>;
  private readonly bundled: Map<string, BundledModel>;
  private readonly inspect: ModelStoreOptions["inspect"];
  private readonly taskCache = new Map<string, { mtimeMs: number; size: number; task: Task; engine: EngineName }>();
  private readonly bundledSizes = new Map<string, number>();
  private readonly stamps = new Map<string, { at: number; stamp: Stamp }>();

  constructor(options: ModelStoreOptions) {
    this.dir = path.resolve(options.dir);
    this.inspect = options.inspect;
    this.catalog = new Map((options.catalog ?? CATALOG).map((e) => [e.id, e]));
    this.bundled = new Map((options.bundled ?? BUNDLED).map((b) => [b.id, b]));
  }

  catalogEntry(id: string): CatalogEntry | undefined {
    return this.catalog.get(id);
  }

  /** Where a catalog model lives once pulled: a file named after its id, or a folder for a repo. */
  catalogPath(entry: CatalogEntry): string {
    const safe = entry.id.slice(1).replaceAll("/", "__");
    const name = isRepoSource(entry.source) ? safe : `${safe}${path.extname(entry.source.file)}`;
    return path.join(this.dir, CATALOG_DIR, name);
  }

  async list(): Promise<ModelInfo[]> {
    const out: ModelInfo[] = [];
    for (const b of this.bundled.values()) {
      const size = await pathSize(b.path);
      if (size !== null) out.push(bundledInfo(b, size));
    }
    for (const entry of this.catalog.values()) {
      const installed = await this.installed(entry);
      out.push(catalogInfo(entry, installed));
    }
    let names: string[] = [];
    try {
      names = await fs.readdir(this.dir);
    } catch {
      // No models folder yet: nothing local.
    }
    for (const name of names.sort()) {
      const local = await this.local(name);
      if (!local) continue;
      // Not a model (or not one this node can read): skipped rather than failing the listing.
      const facts = await this.factsOf(local.path, local.stamp).catch(() => null);
      if (!facts) continue;
      const what = local.folder ? "folder" : "file";
      out.push({ ...localInfo(local.id, local.path, local.stamp.size, facts), description: `Operator ${what} ${name}` });
    }
    return out;
  }

  /** Resolves an id to an installed file or folder; throws 5007 with a hint when it is not there. */
  async resolve(id: string): Promise<ModelInfo> {
    const { namespace, segments } = parseModelId(id);
    if (namespace === "local") {
      if (segments.length !== 1) throw noSuchModel(id);
      const name = segments[0]!;
      const local = (await this.local(`${name}.gguf`)) ?? (await this.local(name));
      if (!local || local.id !== id) {
        throw noSuchModel(id, `No such model ${id}: the operator adds it by putting ${name}.gguf, or a model folder named ${name}, in the models folder`);
      }
      const facts = await this.factsOf(local.path, local.stamp).catch((cause: unknown) => {
        const why = local.folder ? `is not a model folder this node can read (${cause instanceof Error ? cause.message : String(cause)})` : "is not a readable GGUF file";
        throw new BordeError("NoSuchModel", `No such model ${id}: ${path.basename(local.path)} ${why}`, { cause });
      });
      return localInfo(id, local.path, local.stamp.size, facts);
    }
    const bundled = this.bundled.get(id);
    if (bundled) {
      // Bundled files do not change while the process runs: sized once, not on every request.
      let size: number | null | undefined = this.bundledSizes.get(id);
      if (size === undefined) {
        size = await pathSize(bundled.path);
        if (size !== null) this.bundledSizes.set(id, size);
      }
      if (size === null) throw noSuchModel(id, `Bundled model ${id} is missing from this install`);
      return bundledInfo(bundled, size);
    }
    const entry = this.catalog.get(id);
    if (!entry) throw noSuchModel(id);
    const installed = await this.installed(entry);
    if (!installed) throw noSuchModel(id, `Model ${id} is not installed on this node: run \`borde models pull ${id}\``);
    return catalogInfo(entry, installed);
  }

  /** Downloads a catalog model; one pull per model at a time, even across processes. */
  async pull(id: string, options: PullOptions): Promise<PullResult | RepoPullResult> {
    parseModelId(id);
    const entry = this.catalog.get(id);
    if (!entry) throw noSuchModel(id, `No such model ${id} in the catalog (local models are added by copying them into ${this.dir})`);
    const dest = this.catalogPath(entry);
    const source = entry.source;
    if (isRepoSource(source)) return pullRepo(source, dest, options);
    return withPullLock(dest, options.signal, () => pullFile(source, dest, options));
  }

  /**
   * Removes an installed model (a catalog download, with what an interrupted pull left, or an
   * operator's file or folder). Returns false when there was nothing to remove.
   */
  async remove(id: string): Promise<boolean> {
    if (this.bundled.has(id)) throw new BordeError("InvalidInput", `${id} ships with Borde and cannot be removed`);
    parseModelId(id);
    const entry = this.catalog.get(id);
    if (entry) {
      const dest = this.catalogPath(entry);
      let removed = false;
      for (const p of [dest, isRepoSource(entry.source) ? stagingDir(dest) : `${dest}.partial`]) {
        if (!(await fs.lstat(p).catch(() => null))) continue;
        await fs.rm(p, { recursive: true, force: true });
        removed = true;
      }
      return removed;
    }
    const info = await this.resolve(id).catch(() => null);
    if (!info?.path) return false;
    await fs.rm(info.path, { recursive: true, force: true });
    return true;
  }

  private async installed(entry: CatalogEntry): Promise<{ path: string; size: number } | null> {
    const p = this.catalogPath(entry);
    const st = await fs.stat(p).catch(() => null);
    if (!st) return null;
    if (!isRepoSource(entry.source)) return st.isFile() ? { path: p, size: st.size } : null;
    if (!st.isDirectory()) return null;
    return { path: p, size: (await pathSize(p)) ?? 0 };
  }

  /**
   * A top-level entry of the models folder as an operator's model: a `<stem>.gguf` file, or a folder
   * (the inspector tells whether it is a model) other than `catalog/`. Only direct children of the
   * folder are looked at, so an id never reaches outside it (a link the operator put there is
   * followed, as for files). A folder named like a GGUF's stem gives way to the file, which is what
   * `@local/<stem>` resolves to.
   */
  private async local(name: string): Promise<{ id: string; path: string; folder: boolean; stamp: Stamp } | null> {
    const p = path.join(this.dir, name);
    if (path.dirname(p) !== this.dir || name === CATALOG_DIR) return null;
    const st = await fs.stat(p).catch(() => null);
    if (!st) return null;
    let id: string;
    if (st.isFile()) {
      if (!name.endsWith(".gguf")) return null;
      id = `@local/${name.slice(0, -".gguf".length)}`;
    } else if (st.isDirectory()) {
      if (await fs.stat(`${p}.gguf`).then((s) => s.isFile(), () => false)) return null;
      id = `@local/${name}`;
    } else {
      return null;
    }
    try {
      parseModelId(id);
    } catch {
      return null; // a name we could not address safely is not served
    }
    const stamp = st.isFile() ? { mtimeMs: st.mtimeMs, size: st.size } : await this.folderStampCached(p, st.mtimeMs);
    return { id, path: p, folder: st.isDirectory(), stamp };
  }

  /**
   * A folder's stamp walks the whole folder; on the request path it is reused for a second, so a
   * burst of requests to one `@local` folder costs one walk (a change is seen within a second).
   */
  private async folderStampCached(p: string, mtimeMs: number): Promise<Stamp> {
    const hit = this.stamps.get(p);
    const now = Date.now();
    if (hit && now - hit.at < 1000) return hit.stamp;
    const stamp = await folderStamp(p, mtimeMs);
    this.stamps.set(p, { at: now, stamp });
    return stamp;
  }

  private async factsOf(p: string, stamp: Stamp): Promise<{ task: Task; engine: EngineName }> {
    const hit = this.taskCache.get(p);
    if (hit && hit.mtimeMs === stamp.mtimeMs && hit.size === stamp.size) return { task: hit.task, engine: hit.engine };
    const { task, engine } = await this.inspect(p);
    this.taskCache.set(p, { ...stamp, task, engine });
    return { task, engine };
  }
}

/** What the inspector's cached answer is checked against: a file's mtime and size, or a folder's (see `folderStamp`). */
interface Stamp {
  mtimeMs: number;
  size: number;
}

/** Subfolders deeper than this are not looked into (a hub layout is one or two deep). */
const MAX_DEPTH = 4;

/**
 * A folder changes when a file is added, removed or rewritten in it or in its subfolders (`onnx/`):
 * the newest mtime and the total size over all of it tell so, without reading any file. Linked
 * files are followed (a hub cache snapshot links its files to blobs); linked folders are not
 * descended into, so a link loop cannot trap the walk.
 */
async function folderStamp(dir: string, mtimeMs: number, depth = 0): Promise<Stamp> {
  let stamp = { mtimeMs, size: 0 };
  for (const entry of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, entry.name);
    const st = await fs.stat(p).catch(() => null);
    if (!st) continue;
    let sub: Stamp = { mtimeMs: st.mtimeMs, size: st.isFile() ? st.size : 0 };
    if (entry.isDirectory() && depth < MAX_DEPTH) sub = await folderStamp(p, st.mtimeMs, depth + 1);
    stamp = { mtimeMs: Math.max(stamp.mtimeMs, sub.mtimeMs), size: stamp.size + sub.size };
  }
  return stamp;
}

/** Bytes of a file, or of all files in a folder; null when there is nothing there. */
async function pathSize(p: string): Promise<number | null> {
  const st = await fs.stat(p).catch(() => null);
  if (!st) return null;
  return st.isDirectory() ? (await folderStamp(p, st.mtimeMs)).size : st.size;
}

function catalogInfo(entry: CatalogEntry, installed: { path: string; size: number } | null): ModelInfo {
  const source = entry.source;
  const catalogSize = isRepoSource(source) ? sumOrNull(source.files.map((f) => f.size)) : source.size;
  return {
    id: entry.id,
    task: entry.task,
    engine: entry.engine ?? "llama",
        options: entry.options,
    source: "catalog",
    description: entry.description,
    path: installed?.path ?? null,
    installed: installed !== null,
    sizeBytes: installed?.size ?? catalogSize,
    license: source.license,
    hub: source,
  };
}

function localInfo(id: string, p: string, size: number, facts: { task: Task; engine: EngineName }): ModelInfo {
  return { id, ...facts, source: "local", description: "", path: p, installed: true, sizeBytes: size, license: null, hub: null };
}

function bundledInfo(b: BundledModel, size: number): ModelInfo {
  return { id: b.id, task: b.task, engine: b.engine, options: b.options, source: "bundled", description: b.description, path: b.path, installed: true, sizeBytes: size, license: b.license, hub: null };
}

function sumOrNull(sizes: (number | null)[]): number | null {
  return sizes.every((s): s is number => s !== null) ? sizes.reduce((a, b) => a + b, 0) : null;
}

function noSuchModel(id: string, message?: string): BordeError {
  return new BordeError("NoSuchModel", message ?? `No such model ${id} or task`);
}
