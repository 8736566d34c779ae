import fs from "node:fs/promises";
import { BordeError } from "../../errors.js";
import type { Task } from "../../tasks/types.js";
import type { Engine, LoadedModel, ModelSpec } from "../contract.js";
import { ensureBackend, modelFormat, readModelJson, weightBytes } from "./backend.js";
import { loadCenterNet } from "./centernet.js";
import { loadClassifier } from "./classifier.js";
import type { TfjsModel } from "./model.js";
import { loadUseLite } from "./use-lite.js";

export { USE_MAX_TOKENS } from "./use-lite.js";

/**
 * The model kinds this engine knows, chosen by `spec.options.kind`. Without one, a TF.js folder whose
 * task is image classification is served as a classifier (layers or graph format).
 */
export type TfjsKind = "use-lite" | "layers-classifier" | "graph-classifier" | "centernet";

const TASK_OF: Record<TfjsKind, Task> = {
  "use-lite": "text-embeddings",
  "layers-classifier": "image-classification",
  "graph-classifier": "image-classification",
  centernet: "object-detection",
};

/**
 * Memory a model takes: its weights twice (their copy in the wasm heap, and the load-time copies read
 * from disk, which the heap's high-water mark keeps: a wasm heap never shrinks) plus the activations
 * of one full batch. Activations dominate and are per task, as measured (process RSS growth over a
 * load and one full pass, 1 thread): USE lite, 32 texts of the longest 1024 tokens: ~130–170 MB;
 * darknet-tiny at 224×224: ~23 MB per image, so ~190 MB for a batch of 8; CenterNet at 512×512:
 * ~86 MB. A classifier with a larger input needs more than its allowance.
 */
const WEIGHT_FACTOR = 2;
const ACTIVATION_BYTES: Partial<Record<Task, number>> = {
  "text-embeddings": 170e6,
  "image-classification": 200e6,
  "object-detection": 100e6,
};


export function createTfjsEngine(): Engine {
  return new TfjsEngine();
}

class TfjsEngine implements Engine {
  readonly name = "tfjs" as const;
  private readonly loaded = new Set<TfjsModel>();

  async estimateMemory(spec: ModelSpec): Promise<number> {
    return WEIGHT_FACTOR * (await weightBytes(spec.path)) + (ACTIVATION_BYTES[spec.task] ?? 0);
  }

  slotsFor(): number {
    return 1;
  }

  async load(spec: ModelSpec): Promise<LoadedModel> {
    let model: TfjsModel;
    try {
      await fs.access(spec.path);
      await ensureBackend();
      const memoryBytes = await this.estimateMemory(spec);
      const kind = await kindOf(spec);
      if (TASK_OF[kind] !== spec.task) throw new Error(`a ${kind} model serves ${TASK_OF[kind]}, not ${spec.task}`);
      model =
        kind === "use-lite"
          ? await loadUseLite(spec, memoryBytes)
          : kind === "centernet"
            ? await loadCenterNet(spec, memoryBytes)
            : await loadClassifier(spec, await readModelJson(spec.path), memoryBytes);
    } catch (cause) {
      if (cause instanceof BordeError) throw cause;
      throw new BordeError("ModelLoadFailed", `model ${spec.id} failed to load: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    }
    this.loaded.add(model);
    model.onDispose = () => this.loaded.delete(model);
    return model;
  }

  async dispose(): Promise<void> {
    await Promise.all([...this.loaded].map((m) => m.dispose()));
  }
}

async function kindOf(spec: ModelSpec): Promise<TfjsKind> {
  const kind = spec.options?.kind;
  if (kind !== undefined) {
    if (typeof kind === "string" && kind in TASK_OF) return kind as TfjsKind;
    throw new Error(`unknown options.kind ${JSON.stringify(kind)} (known: ${Object.keys(TASK_OF).join(", ")})`);
  }
  const format = modelFormat(await readModelJson(spec.path));
  if (spec.task === "image-classification" && format) return format === "layers-model" ? "layers-classifier" : "graph-classifier";
  throw new Error(`set options.kind to one of ${Object.keys(TASK_OF).join(", ")}`);
}
