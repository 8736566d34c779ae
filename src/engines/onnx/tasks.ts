import type { Tensor } from "@huggingface/transformers";
import { BordeError } from "../../errors.js";
import type { Detection, InferTask, LabelScore, RawAudio, TaskInput, TaskInputs, TaskOutput, TaskOutputs, WordTiming } from "../../tasks/types.js";
import type { EmbeddingResult } from "../contract.js";
import { resolveLanguage } from "./languages.js";
import type { PoolingConfig } from "./repo.js";
import { generateAbortably, toHfImage, type Pipelines } from "./transformers.js";
import { buildVtt, type Cue } from "./vtt.js";

/**
 * Each task's call on its transformers.js pipeline: Borde's decoded inputs in, Workers AI's result
 * shapes out. Batched tasks make one pipeline call for the whole batch (one padded forward pass);
 * generation tasks run one input at a time, as transformers.js generates one sequence at a time.
 */

type Signal = { signal: AbortSignal };
export type TaskRunner<T extends InferTask> = (inputs: TaskInputs[T][], options: Signal) => Promise<TaskOutputs[T][]>;

/** Narrows the scheduler's inputs to the model's task: any other is the caller's mistake. */
export function inputsOf<T extends InferTask>(task: T, inputs: TaskInput[]): TaskInputs[T][] {
  return inputs.map((input) => {
    if (input.task !== task) throw new BordeError("InvalidInput", `this model serves ${task}, not ${String(input.task)}`);
    return input as unknown as TaskInputs[T];
  });
}

/** Runs `runner` on inputs the caller checked are all of task `T`; the outputs are that task's. */
export function runAs<T extends InferTask>(task: T, runner: TaskRunner<T>) {
  return async (inputs: TaskInput[], options: Signal): Promise<TaskOutput[]> => {
    if (options.signal.aborted) throw new BordeError("Aborted");
    return runner(inputsOf(task, inputs), options);
  };
}

function requireText(text: unknown, what = "text"): string {
  if (typeof text !== "string" || text.trim() === "") throw new BordeError("InvalidInput", `${what} must be a non-empty string`);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Text embeddings
// ---------------------------------------------------------------------------------------------

export async function embedTexts(pipe: Pipelines["text-embeddings"], config: PoolingConfig, texts: string[], { signal }: Signal): Promise<EmbeddingResult> {
  if (signal.aborted) throw new BordeError("Aborted");
  if (!Array.isArray(texts) || texts.length === 0) throw new BordeError("InvalidInput", "text must be a string or a non-empty array of strings");
  // Empty strings embed fine (the special tokens alone); only non-strings are refused.
  for (const t of texts) if (typeof t !== "string") throw new BordeError("InvalidInput", "text must be a string or an array of strings");

  // Tokenizer and model are called directly, not through the pipeline, to count the tokens and to
  // pool over the attention mask in one place whatever the pooling.
  const encoded = pipe.tokenizer(texts, { padding: true, truncation: true }) as { input_ids: Tensor; attention_mask: Tensor };
  const outputs = (await pipe.model(encoded)) as Record<string, Tensor | undefined>;
  const states = outputs.last_hidden_state ?? outputs.token_embeddings;
  if (!states || states.dims.length !== 3) throw new BordeError("Internal", "the embedding model gave no token states");
  const [batch = 0, length = 0, width = 0] = states.dims;
  const values = states.data as Float32Array;
  const mask = Array.from(encoded.attention_mask.data as BigInt64Array, Number);

  const vectors: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const rowMask = mask.slice(b * length, (b + 1) * length);
    const token = (t: number) => values.subarray((b * length + t) * width, (b * length + t + 1) * width);
    let vector: number[];
    if (config.pooling === "cls") {
      vector = Array.from(token(0));
    } else if (config.pooling === "last") {
      vector = Array.from(token(Math.max(0, rowMask.lastIndexOf(1))));
    } else {
      vector = new Array<number>(width).fill(0);
      let count = 0;
      rowMask.forEach((m, t) => {
        if (m === 0) return;
        count++;
        token(t).forEach((v, i) => (vector[i]! += v));
      });
      vector = vector.map((v) => v / Math.max(count, 1));
    }
    if (config.normalize) {
      const norm = Math.hypot(...vector) || 1;
      vector = vector.map((v) => v / norm);
    }
    vectors.push(vector);
  }
  return { vectors, promptTokens: mask.reduce((a, b) => a + b, 0), pooling: config.pooling };
}

// ---------------------------------------------------------------------------------------------
// Classification and detection
// ---------------------------------------------------------------------------------------------

export function textClassification(pipe: Pipelines["text-classification"], labelCount: number): TaskRunner<"text-classification"> {
  return async (inputs) => {
    const texts = inputs.map((i) => requireText(i.text));
    // Every label with its score, as Workers AI's classifiers answer.
    const out = (await pipe(texts, { top_k: labelCount })) as LabelScore[] | LabelScore[][];
    return out.map((r) => (Array.isArray(r) ? r : [r])).map(plainScores);
  };
}

export function imageClassification(pipe: Pipelines["image-classification"], labelCount: number): TaskRunner<"image-classification"> {
  return async (inputs) => {
    const images = inputs.map((i) => toHfImage(i.image));
    const topKs = inputs.map((i) => Math.max(1, Math.min(Math.floor(i.topK) || 1, labelCount)));
    const out = (await pipe(images, { top_k: Math.max(...topKs) })) as LabelScore[][];
    return out.map((scores, n) => plainScores(scores.slice(0, topKs[n])));
  };
}

function plainScores(scores: LabelScore[]): LabelScore[] {
  return scores.map(({ label, score }) => ({ label, score }));
}

export function objectDetection(pipe: Pipelines["object-detection"]): TaskRunner<"object-detection"> {
  return async (inputs) => {
    const results: Detection[][] = [];
    for (const input of inputs) {
      const image = toHfImage(input.image);
      const threshold = Number.isFinite(input.threshold) ? input.threshold : 0.5;
      const found = (await pipe(image, { threshold, percentage: false })) as Detection[];
      // DETR's boxes may overshoot the picture; Workers AI answers pixel boxes within it.
      const clamp = (v: number, max: number) => Math.min(Math.max(v, 0), max);
      results.push(
        found
          .map(({ label, score, box }) => ({
            label,
            score,
            box: { xmin: clamp(box.xmin, image.width), ymin: clamp(box.ymin, image.height), xmax: clamp(box.xmax, image.width), ymax: clamp(box.ymax, image.height) },
          }))
          .sort((a, b) => b.score - a.score),
      );
    }
    return results;
  };
}

// ---------------------------------------------------------------------------------------------
// Generation: captions, summaries, translations
// ---------------------------------------------------------------------------------------------

/** `requested` new tokens, within what the model's positions allow. */
function newTokens(requested: number, limit: number): number {
  return Math.max(1, Math.min(Number.isFinite(requested) ? Math.floor(requested) : limit, limit));
}

export function imageToText(pipe: Pipelines["image-to-text"], limit: number): TaskRunner<"image-to-text"> {
  return async (inputs, { signal }) => {
    const results: TaskOutputs["image-to-text"][] = [];
    for (const input of inputs) {
      const image = toHfImage(input.image);
      // Encoder-decoder captioners take no prompt: it is not used.
      const max_new_tokens = newTokens(input.maxTokens, limit);
      const out = (await generateAbortably(signal, (stopping_criteria) => pipe(image, { max_new_tokens, stopping_criteria }))) as { generated_text: string }[];
      results.push({ description: out[0]?.generated_text.trim() ?? "" });
    }
    return results;
  };
}

export function summarization(pipe: Pipelines["summarization"], limit: number): TaskRunner<"summarization"> {
  return async (inputs, { signal }) => {
    const results: TaskOutputs["summarization"][] = [];
    for (const input of inputs) {
      const text = requireText(input.text, "input_text");
      const max_new_tokens = newTokens(input.maxLength, limit);
      const out = (await generateAbortably(signal, (stopping_criteria) => pipe(text, { max_new_tokens, stopping_criteria }))) as { summary_text: string }[];
      results.push({ summary: out[0]?.summary_text.trim() ?? "" });
    }
    return results;
  };
}

/**
 * Multilingual translators (m2m100, NLLB, mBART-50) list their language codes and take the source
 * and target per request; a pair model (Marian opus-mt) has none and translates its one pair.
 */
export function translation(pipe: Pipelines["translation"], limit: number): TaskRunner<"translation"> {
  const codes = (pipe.tokenizer as { language_codes?: unknown }).language_codes;
  const languages = Array.isArray(codes) ? (codes as string[]) : undefined;
  const resolve = (lang: unknown, role: string): string => {
    const code = languages && typeof lang === "string" ? resolveLanguage(lang, languages) : undefined;
    if (code === undefined) throw new BordeError("InvalidInput", `${role} ${JSON.stringify(lang)} is not a language this model translates`);
    return code;
  };
  return async (inputs, { signal }) => {
    const results: TaskOutputs["translation"][] = [];
    for (const input of inputs) {
      const text = requireText(input.text);
      const langs = languages ? { src_lang: resolve(input.sourceLang, "source_lang"), tgt_lang: resolve(input.targetLang, "target_lang") } : {};
      const out = (await generateAbortably(signal, (stopping_criteria) => pipe(text, { ...langs, max_new_tokens: limit, stopping_criteria }))) as {
        translation_text: string;
      }[];
      results.push({ translated_text: out[0]?.translation_text.trim() ?? "" });
    }
    return results;
  };
}

// ---------------------------------------------------------------------------------------------
// Speech recognition
// ---------------------------------------------------------------------------------------------

export interface SpeechModel {
  /** Sample rate the feature extractor wants (16000 for whisper). */
  sampleRate: number;
  /** Language codes a multilingual whisper takes (`en`, `fr`…); undefined for English-only models. */
  languages?: string[];
  /** Word timestamps: the model has alignment heads and its decoder outputs cross-attentions. */
  wordTimestamps: boolean;
  /** Whisper (timestamp tokens) or a CTC model (text only). */
  whisper: boolean;
  /** New tokens per 30 s window. */
  limit: number;
}

/** Whisper sees 30 s at a time: longer audio is cut into overlapping windows and merged. */
const WINDOW_SECONDS = 30;

interface AsrChunk {
  text: string;
  timestamp: [number | null, number | null];
}

export function speechRecognition(pipe: Pipelines["automatic-speech-recognition"], model: SpeechModel): TaskRunner<"automatic-speech-recognition"> {
  return async (inputs, { signal }) => {
    const results: TaskOutputs["automatic-speech-recognition"][] = [];
    for (const input of inputs) {
      const samples = checkAudio(input.audio, model.sampleRate);
      const duration = samples.length / model.sampleRate;
      const options: Record<string, unknown> = {};
      if (model.whisper) {
        options.return_timestamps = model.wordTimestamps ? "word" : true;
        // A set limit also keeps transformers.js from its seek loop, which can spin on audio the
        // model finds no words in; long audio goes through overlapping windows instead.
        options.max_new_tokens = model.limit;
        if (duration > WINDOW_SECONDS) options.chunk_length_s = WINDOW_SECONDS;
        if (model.languages) {
          options.task = "transcribe";
          if (input.language !== undefined && input.language !== "") {
            const code = resolveLanguage(input.language, model.languages);
            if (code === undefined) throw new BordeError("InvalidInput", `language ${JSON.stringify(input.language)} is not one this model transcribes`);
            options.language = code;
          }
        }
      }
      const out = (await generateAbortably(signal, (stopping_criteria) => pipe(samples, { ...options, stopping_criteria }))) as { text: string; chunks?: AsrChunk[] };
      results.push(transcript(out, duration, model.wordTimestamps));
    }
    return results;
  };
}

function checkAudio(audio: RawAudio, sampleRate: number): Float32Array {
  if (!(audio?.samples instanceof Float32Array) || audio.samples.length === 0) throw new BordeError("InvalidInput", "audio must be non-empty mono samples");
  // The API resamples every upload to 16 kHz; a model wanting another rate cannot take it as is.
  if (audio.sampleRate !== sampleRate) throw new BordeError("InvalidInput", `audio must be sampled at ${sampleRate} Hz, not ${audio.sampleRate}`);
  return audio.samples;
}

function transcript(out: { text: string; chunks?: AsrChunk[] }, duration: number, words: boolean): TaskOutputs["automatic-speech-recognition"] {
  const text = out.text.trim();
  const result: TaskOutputs["automatic-speech-recognition"] = { text, word_count: text === "" ? 0 : text.split(/\s+/).length };
  if (!out.chunks) return result;
  // An open chunk (the model gave no closing timestamp) runs to the end of the audio. Times are
  // kept within the audio: whisper sees it padded to 30 s, and its alignment can stray into the pad.
  const within = (t: number) => Math.min(Math.max(t, 0), duration);
  const timed = out.chunks
    .map((c) => {
      const start = within(c.timestamp[0] ?? 0);
      return { text: c.text.trim(), start, end: Math.max(start, within(c.timestamp[1] ?? duration)) };
    })
    .filter((c) => c.text !== "");
  let cues: Cue[] = timed;
  if (words) {
    const timings: WordTiming[] = timed.map((c) => ({ word: c.text, start: c.start, end: c.end }));
    result.words = timings;
    cues = cuesFromWords(timings);
  }
  result.vtt = buildVtt(cues);
  return result;
}

/** Subtitle lines from words: a line ends at a sentence's end, after 5 s or after 12 words. */
function cuesFromWords(words: WordTiming[]): Cue[] {
  const cues: Cue[] = [];
  let line: WordTiming[] = [];
  for (const w of words) {
    line.push(w);
    const first = line[0]!;
    if (/[.!?]$/.test(w.word) || w.end - first.start >= 5 || line.length >= 12) {
      cues.push({ start: first.start, end: w.end, text: line.map((x) => x.word).join(" ") });
      line = [];
    }
  }
  if (line.length > 0) cues.push({ start: line[0]!.start, end: line.at(-1)!.end, text: line.map((x) => x.word).join(" ") });
  return cues;
}
