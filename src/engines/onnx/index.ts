import path from "node:path";
import { BordeError } from "../../errors.js";
import type { TaskInput, TaskOutput } from "../../tasks/types.js";
import type { EmbeddingResult, Engine, LoadedModel, ModelSpec } from "../contract.js";
import { chooseOnnxFiles, maxPositions, readConfig, readJson, readPooling, type PoolingConfig, type RepoConfig } from "./repo.js";
import { estimateSileroVadMemory, loadSileroVad } from "./silero-vad.js";
import {
  embedTexts,
  imageClassification,
  imageToText,
  objectDetection,
  runAs,
  speechRecognition,
  summarization,
  textClassification,
  translation,
  type SpeechModel,
} from "./tasks.js";
import { isPipelineTask, loadPipeline, type Pipelines, type PipelineTask } from "./transformers.js";

export { inspectOnnxRepo } from "./repo.js";

/**
 * The ONNX engine: Hugging Face repo folders (config.json, tokenizer, preprocessor config,
 * onnx/*.onnx) run through transformers.js on onnxruntime's CPU provider, for every task of the
 * Workers AI catalog that has an ONNX export; and Silero VAD (`options.kind: "silero-vad"`), which
 * is one bare ONNX graph and runs on onnxruntime directly.
 */

export interface OnnxEngineOptions {
  /** onnxruntime intra-op threads per session (default 1: the node's cores are shared). */
  threads?: number;
}

/**
 * Weights are mapped into onnxruntime's arenas next to activations, tokenizer and pre-processing
 * buffers: 1.5 × the files' size is a guess (measured loosely on small models), not a measurement.
 */
const MEMORY_FACTOR = 1.5;

/**
 * Inputs per batched forward pass. Texts are short and pad to the longest; images are resized to
 * the model's input (224² for most), so a batch of 8 is already ~5 MB of pixels.
 */
const MAX_BATCH = { "text-embeddings": 32, "text-classification": 32, "image-classification": 8 } as const;

/** When a repo's config gives no position limit: the most new tokens one request may ask for. */
const DEFAULT_GENERATION_LIMIT = 512;

export function createOnnxEngine(options: OnnxEngineOptions = {}): Engine {
  const threads = Math.max(1, Math.floor(options.threads ?? 1));
  return {
    name: "onnx",
    // One sequence at a time per model: onnxruntime runs one session call at a time per thread
    // pool, so more slots would only queue inside it; batching is what raises throughput.
    slotsFor: () => 1,
    async estimateMemory(spec: ModelSpec): Promise<number> {
      if (isSileroVad(spec)) return estimateSileroVadMemory(spec);
      const { bytes } = await chooseOnnxFiles(spec.path, dtypeOption(spec));
      return Math.ceil(bytes * MEMORY_FACTOR);
    },
    load: (spec) => (isSileroVad(spec) ? loadSileroVad(spec) : loadRepo(spec, threads)),
    // Every session belongs to a loaded model and goes with its dispose(); the engine holds nothing.
    async dispose(): Promise<void> {},
  };
}

function isSileroVad(spec: ModelSpec): boolean {
  return spec.options?.kind === "silero-vad";
}

/** A bundled model may pin its weights' dtype (`options.dtype`: "q8", "fp32"…). */
function dtypeOption(spec: ModelSpec): string | undefined {
  const dtype = spec.options?.dtype;
  return typeof dtype === "string" ? dtype : undefined;
}

function poolingOption(spec: ModelSpec): Partial<PoolingConfig> {
  const pooling = spec.options?.pooling;
  return pooling === "mean" || pooling === "cls" || pooling === "last" ? { pooling } : {};
}

async function loadRepo(spec: ModelSpec, threads: number): Promise<LoadedModel> {
  const task = spec.task;
  if (!isPipelineTask(task)) throw new BordeError("ModelLoadFailed", `model ${spec.id}: the ONNX engine does not serve ${task}`);
  const dir = path.resolve(spec.path);
  const [config, files] = await Promise.all([readConfig(dir), chooseOnnxFiles(dir, dtypeOption(spec))]);
  let pipe: Pipelines[PipelineTask];
  try {
    pipe = await loadPipeline(task, dir, files.dtypes, threads);
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new BordeError("ModelLoadFailed", `model ${spec.id} failed to load: ${reason}`, { cause });
  }
  try {
    return await assemble(spec, task, pipe, config, dir, Math.ceil(files.bytes * MEMORY_FACTOR));
  } catch (cause) {
    // A repo whose other files are unreadable (a broken generation_config.json) frees its sessions.
    await pipe.dispose();
    throw cause;
  }
}

/** The loaded model around a pipeline: the call of its task, its batch size, its disposal. */
async function assemble(spec: ModelSpec, task: PipelineTask, pipe: Pipelines[PipelineTask], config: RepoConfig, dir: string, memoryBytes: number): Promise<LoadedModel> {
  let disposed = false;
  const base = {
    id: spec.id,
    task,
    memoryBytes,
    slots: 1,
    async dispose(): Promise<void> {
      if (disposed) return;
      disposed = true;
      await pipe.dispose();
    },
  };
  const alive = () => {
    if (disposed) throw new BordeError("Internal", `model ${spec.id} was disposed`);
  };

  if (task === "text-embeddings") {
    const embedPipe = pipe as Pipelines["text-embeddings"];
    // A catalog entry may say how its repo pools when the repo does not (Xenova's bge exports ship
    // without the sentence-transformers files, and bge pools the CLS token).
    const pooling = { ...(await readPooling(dir)), ...poolingOption(spec) };
    return {
      ...base,
      maxBatch: MAX_BATCH[task],
      embed(texts: string[], options: { signal: AbortSignal }): Promise<EmbeddingResult> {
        alive();
        return embedTexts(embedPipe, pooling, texts, options);
      },
    };
  }

  const run = await runnerFor(task, pipe, config, dir);
  return {
    ...base,
    maxBatch: task in MAX_BATCH ? MAX_BATCH[task as keyof typeof MAX_BATCH] : 1,
    infer(inputs: TaskInput[], options: { signal: AbortSignal }): Promise<TaskOutput[]> {
      alive();
      return run(inputs, options);
    },
  };
}

type Infer = (inputs: TaskInput[], options: { signal: AbortSignal }) => Promise<TaskOutput[]>;

async function runnerFor(task: Exclude<PipelineTask, "text-embeddings">, pipe: Pipelines[PipelineTask], config: RepoConfig, dir: string): Promise<Infer> {
  const labelCount = Math.max(1, Object.keys(config.id2label ?? {}).length);
  // New tokens stay within the decoder's positions (a couple kept for the start and end tokens).
  const limit = Math.max(1, (maxPositions(config) ?? DEFAULT_GENERATION_LIMIT + 2) - 2);
  switch (task) {
    case "text-classification":
      return runAs(task, textClassification(pipe as Pipelines[typeof task], labelCount));
    case "image-classification":
      return runAs(task, imageClassification(pipe as Pipelines[typeof task], labelCount));
    case "object-detection":
      return runAs(task, objectDetection(pipe as Pipelines[typeof task]));
    case "image-to-text":
      return runAs(task, imageToText(pipe as Pipelines[typeof task], limit));
    case "summarization":
      return runAs(task, summarization(pipe as Pipelines[typeof task], limit));
    case "translation":
      // Requests give no length; a translation runs about as long as its source, far below the
      // 1022 positions of m2m100: a runaway decoder stops at 512 tokens.
      return runAs(task, translation(pipe as Pipelines[typeof task], Math.min(limit, DEFAULT_GENERATION_LIMIT)));
    case "automatic-speech-recognition": {
      const asr = pipe as Pipelines[typeof task];
      return runAs(task, speechRecognition(asr, await speechModel(asr, config, dir)));
    }
  }
}

interface WhisperGenerationConfig {
  alignment_heads?: unknown[];
  is_multilingual?: boolean;
  lang_to_id?: Record<string, number>;
}

/** Whisper's prompt: start of transcript, language, task, no-timestamps. */
const WHISPER_PROMPT_TOKENS = 4;

async function speechModel(pipe: Pipelines["automatic-speech-recognition"], config: RepoConfig, dir: string): Promise<SpeechModel> {
  const whisper = config.model_type === "whisper" || config.model_type === "lite-whisper";
  const generation = (await readJson<WhisperGenerationConfig>(path.join(dir, "generation_config.json"))) ?? {};
  // transformers.js keeps its sessions on the model: the decoder's outputs say whether it was
  // exported with cross-attentions, which word timestamps are computed from.
  const sessions = (pipe.model as unknown as { sessions: Record<string, { outputNames: readonly string[] } | undefined> }).sessions;
  const crossAttentions = sessions.decoder_model_merged?.outputNames.some((n) => n.startsWith("cross_attentions")) ?? false;
  const sampleRate = (pipe.processor.feature_extractor?.config as { sampling_rate?: number } | undefined)?.sampling_rate ?? 16000;
  return {
    sampleRate,
    whisper,
    wordTimestamps: whisper && crossAttentions && Array.isArray(generation.alignment_heads) && generation.alignment_heads.length > 0,
    languages: generation.is_multilingual && generation.lang_to_id ? Object.keys(generation.lang_to_id).map((t) => t.replace(/^<\|(.*)\|>$/, "$1")) : undefined,
    limit: Math.max(1, (config.max_target_positions ?? 448) - WHISPER_PROMPT_TOKENS),
  };
}
