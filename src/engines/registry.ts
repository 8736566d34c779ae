import type { Engine, EngineName, LoadedModel, ModelSpec } from "./contract.js";
import { BordeError } from "../errors.js";

/** What the scheduler needs of the engines: one spec in, one loaded model out, whatever the engine. */
export type ModelLoader = Pick<Engine, "estimateMemory" | "slotsFor" | "load">;

/**
 * An engine whose module is imported on first use: transformers.js, onnxruntime, TF.js and
 * Tesseract cost ~0.3 s and ~55 MB to import, which a node serving only LLMs (or `borde models
 * list`) should not pay. `slotsFor` is only asked after `estimateMemory` (the scheduler estimates
 * a model before it loads it), by which time the module is in.
 */
export class LazyEngine implements Engine {
  private engine: Engine | null = null;
  private opening: Promise<Engine> | null = null;

  constructor(
    readonly name: EngineName,
    private readonly open: () => Promise<Engine>,
  ) {}

  private get(): Promise<Engine> {
    this.opening ??= this.open().then((e) => (this.engine = e));
    return this.opening;
  }

  async estimateMemory(spec: ModelSpec): Promise<number> {
    return (await this.get()).estimateMemory(spec);
  }

  slotsFor(spec: ModelSpec): number {
    if (!this.engine) throw new Error(`engine ${this.name}: slotsFor before estimateMemory`);
    return this.engine.slotsFor(spec);
  }

  async load(spec: ModelSpec): Promise<LoadedModel> {
    return (await this.get()).load(spec);
  }

  async dispose(): Promise<void> {
    await this.engine?.dispose();
  }
}

/** The engines of one node, chosen per model by `spec.engine`. */
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
