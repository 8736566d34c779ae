/** Tasks the llama.cpp engine serves. Later engines add theirs here. */
export type Task = "text-generation" | "text-embeddings";

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

export interface CatalogEntry {
  /** Workers AI id (`@cf/...`) or Borde's own (`@borde/...`). */
  id: string;
  task: Task;
  description: string;
  source: HubSource;
}

/** A model the node can serve right now or after a pull. */
export interface ModelInfo {
  id: string;
  task: Task;
  source: "catalog" | "local" | "bundled";
  description: string;
  /** Absolute path of the GGUF file when installed. */
  path: string | null;
  installed: boolean;
  /** Bytes on disk when installed, else the catalog's size. */
  sizeBytes: number | null;
  license: string | null;
  hub: HubSource | null;
}

/** A model shipped inside the package (no download needed). */
export interface BundledModel {
  id: string;
  task: Task;
  description: string;
  path: string;
  license: string;
}
