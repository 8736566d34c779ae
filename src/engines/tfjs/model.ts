import type { EmbeddingResult, LoadedModel } from "../contract.js";
import { BordeError } from "../../errors.js";
import type { InferTask, RawImage, Task, TaskInput, TaskOutput } from "../../tasks/types.js";

/**
 * What every TF.js model shares. One forward pass runs at a time: the wasm backend has one thread,
 * so a second slot would only interleave passes, not speed them up. A call the model's task does
 * not offer answers a BordeError (as the llama engine does), never a TypeError.
 */
export abstract class TfjsModel implements LoadedModel {
  readonly slots = 1;
  abstract readonly maxBatch: number;

  constructor(
    readonly id: string,
    readonly task: Task,
    readonly memoryBytes: number,
  ) {}

  async embed(_texts: string[], _options: { signal: AbortSignal }): Promise<EmbeddingResult> {
    throw new BordeError("NoSuchModel", `model ${this.id} serves ${this.task}; it does not embed text`);
  }

  async infer<T extends InferTask>(_inputs: TaskInput<T>[], _options: { signal: AbortSignal }): Promise<TaskOutput<T>[]> {
    throw new BordeError("NoSuchModel", `model ${this.id} serves ${this.task}; it takes no image or audio inputs`);
  }

  /** Set by the engine, which disposes at shutdown whatever is still loaded. */
  onDispose: (() => void) | undefined;
  private disposed = false;

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.onDispose?.();
    this.release();
  }

  /** Frees the model's weights (their wasm heap space goes back to TF.js for the next model). */
  protected abstract release(): void;
}

/** The image of an input meant for `task`, checked (the API decoded it; a direct caller may not have). */
export function imageInput<K extends "image-classification" | "object-detection">(id: string, input: { task: InferTask }, task: K): TaskInput<K> {
  if (input.task !== task) throw new BordeError("InvalidInput", `model ${id} serves ${task}, not ${input.task}`);
  if (!validImage((input as { image?: RawImage }).image)) throw new BordeError("InvalidInput", "image: expected 8-bit RGB pixels (width * height * 3 bytes)");
  return input as unknown as TaskInput<K>;
}

function validImage(image: RawImage | undefined): boolean {
  return (
    image !== undefined &&
    image.data instanceof Uint8Array &&
    Number.isInteger(image.width) &&
    Number.isInteger(image.height) &&
    image.width > 0 &&
    image.height > 0 &&
    image.data.length === image.width * image.height * 3
  );
}

export function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason;
}
