import type { Engine, EngineName, LoadedModel, ModelSpec } from "./contract.js";
import { BordeError } from "../errors.js";

/** What the scheduler needs of the engines: one spec in, one loaded model out, whatever the engine. */
export type ModelLoader = Pick<Engine, "estimateMemory" | "slotsFor" | "load">;

/**
 * The engines of one node, chosen per model by `spec.engine`. Engines are created up front but
 * cheap: each starts its runtime (Wasm backend, worker thread, ONNX session) on its first load.
 */
export class EngineRegistry implements ModelLoader {
  private readonly engines: Map<EngineName, Engine>;

  constructor(engines: Engine[]) {
    this.engines = new Map(engines.map((e) => [e.name, e]));
  }

  get(name: EngineName): Engine {
    const e = this.engines.get(name);
    if (!e) throw new BordeError("ModelLoadFailed", `Engine ${name} is not available on this node`);
    return e;
  }

  estimateMemory(spec: ModelSpec): Promise<number> {
    return this.get(spec.engine).estimateMemory(spec);
  }

  slotsFor(spec: ModelSpec): number {
    return this.get(spec.engine).slotsFor(spec);
  }

  load(spec: ModelSpec): Promise<LoadedModel> {
    return this.get(spec.engine).load(spec);
  }

  /** Disposes every engine but `keep` (an engine the caller injected and still owns). */
  async dispose(keep?: Engine): Promise<void> {
    await Promise.allSettled([...this.engines.values()].filter((e) => e !== keep).map((e) => e.dispose()));
  }
}
