export { ModelStore, CATALOG, type ModelStoreOptions } from "./store.js";
export { parseModelId } from "./ids.js";
export { pullFile, PullError, type PullOptions, type PullProgress, type PullResult } from "./pull.js";
export { pullRepo, type RepoPullResult } from "./pull-repo.js";
export { createProgressBar } from "./progress.js";
export { isRepoSource, type CatalogEntry, type CatalogSource, type HubRepoSource, type HubSource, type ModelInfo, type RepoFile, type Task } from "./types.js";
