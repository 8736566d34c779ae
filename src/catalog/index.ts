export { ModelStore, CATALOG, type ModelStoreOptions } from "./store.js";
export { parseModelId } from "./ids.js";
export { pullFile, PullError, type PullOptions, type PullProgress, type PullResult } from "./pull.js";
export { createProgressBar } from "./progress.js";
export type { CatalogEntry, HubSource, ModelInfo, Task } from "./types.js";
