import { env, InterruptableStoppingCriteria, LogLevel, pipeline, RawImage as HfImage } from "@huggingface/transformers";
import path from "node:path";
import { BordeError } from "../../errors.js";
import type { RawImage, Task } from "../../tasks/types.js";
import type { Dtype } from "./repo.js";

/**
 * transformers.js, set up once for a server: it reads only the folders it is given and never
 * fetches. With remote models off it does not consult the hub, and with the file-system cache off
 * it writes nothing (its cache would otherwise copy every file it reads under node_modules).
 * Warnings it logs for expected cases ("no language given, defaulting to English") are dropped.
 */
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.useFSCache = false;
env.useBrowserCache = false;
env.logLevel = LogLevel.ERROR;

/** The tasks this engine serves through transformers.js, and the pipeline of each. */
export const PIPELINES = {
  "text-embeddings": "feature-extraction",
  "text-classification": "text-classification",
  "image-classification": "image-classification",
  "object-detection": "object-detection",
  "image-to-text": "image-to-text",
  "automatic-speech-recognition": "automatic-speech-recognition",
  translation: "translation",
  summarization: "summarization",
} as const satisfies Partial<Record<Task, string>>;

export type PipelineTask = keyof typeof PIPELINES;

export function isPipelineTask(task: Task): task is PipelineTask {
  return task in PIPELINES;
}

export type Pipelines = { [K in PipelineTask]: Awaited<ReturnType<typeof pipeline<(typeof PIPELINES)[K]>>> };

/**
 * Loads a repo folder as the pipeline of `task`. `dtypes` names the file of each session
 * (`model` → fp32 reads `onnx/model.onnx`, q8 `onnx/model_quantized.onnx`). onnxruntime gets
 * `threads` intra-op threads and runs the graph's nodes one after another: the node's cores are
 * shared by every loaded model and by the requests in flight.
 */
export async function loadPipeline<K extends PipelineTask>(task: K, dir: string, dtypes: Record<string, Dtype>, threads: number): Promise<Pipelines[K]> {
  return (await pipeline(PIPELINES[task], path.resolve(dir), {
    dtype: dtypes,
    device: "cpu",
    local_files_only: true,
    session_options: { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: "sequential" },
  })) as Pipelines[K];
}

/** Borde's decoded pixels as transformers.js's image (same layout: interleaved 8-bit RGB). */
export function toHfImage(image: RawImage): HfImage {
  const { data, width, height } = image;
  if (!(data instanceof Uint8Array) || !Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || data.length !== width * height * 3) {
    throw new BordeError("InvalidInput", "image must be RGB pixels, width × height × 3 bytes");
  }
  return new HfImage(new Uint8ClampedArray(data.buffer, data.byteOffset, data.length), width, height, 3);
}

/**
 * Runs one generation with a stopping criterion that ends it at the next token once `signal`
 * aborts, so that a cancelled request frees the model at once instead of decoding to its limit.
 */
export async function generateAbortably<T>(signal: AbortSignal, call: (stopping_criteria: InterruptableStoppingCriteria) => Promise<T>): Promise<T> {
  if (signal.aborted) throw new BordeError("Aborted");
  const criteria = new InterruptableStoppingCriteria();
  const onAbort = () => criteria.interrupt();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const result = await call(criteria);
    if (signal.aborted) throw new BordeError("Aborted");
    return result;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
