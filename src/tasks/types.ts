/**
 * Every task Borde serves, with the internal (already decoded) input and output of each. The wire
 * shapes (Workers AI's JSON) live in `schemas.ts`; the API decodes a wire input into a `TaskInput`
 * (images into pixels, audio into 16 kHz samples) before any engine sees it, so engines never parse
 * bytes a client sent.
 */

export const TASKS = [
  "text-generation",
  "text-embeddings",
  "text-classification",
  "image-classification",
  "object-detection",
  "image-to-text",
  "automatic-speech-recognition",
  "translation",
  "summarization",
  "voice-activity-detection",
] as const;

export type Task = (typeof TASKS)[number];

/** Tasks served through `LoadedModel.infer` (text generation and embeddings have their own calls). */
export type InferTask = Exclude<Task, "text-generation" | "text-embeddings">;

/** Decoded pixels: 8-bit RGB, interleaved, row-major (`data.length === width * height * 3`). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Decoded sound: mono float samples in [-1, 1] at `sampleRate` (the API always delivers 16000). */
export interface RawAudio {
  samples: Float32Array;
  sampleRate: number;
}

export interface LabelScore {
  label: string;
  score: number;
}

export interface BoundingBox {
  xmin: number;
  ymin: number;
  xmax: number;
  ymax: number;
}

export interface Detection {
  label: string;
  score: number;
  /** Pixel coordinates in the input image, as Workers AI's detr answers. */
  box: BoundingBox;
}

export interface WordTiming {
  word: string;
  start: number;
  end: number;
}

export interface SpeechSegment {
  /** Seconds from the start of the audio. */
  start: number;
  end: number;
}

/** Inputs by task, after the API decoded and validated them. */
export interface TaskInputs {
  "text-classification": { text: string };
  "image-classification": { image: RawImage; topK: number };
  "object-detection": { image: RawImage; threshold: number };
  "image-to-text": { image: RawImage; prompt?: string; maxTokens: number };
  "automatic-speech-recognition": { audio: RawAudio; language?: string };
  translation: { text: string; sourceLang: string; targetLang: string };
  summarization: { text: string; maxLength: number };
  "voice-activity-detection": { audio: RawAudio; threshold: number };
}

/** Outputs by task, in Workers AI's result shapes. */
export interface TaskOutputs {
  "text-classification": LabelScore[];
  "image-classification": LabelScore[];
  "object-detection": Detection[];
  /** OCR models also give their lines. */
  "image-to-text": { description: string; lines?: string[] };
  "automatic-speech-recognition": { text: string; word_count?: number; words?: WordTiming[]; vtt?: string };
  translation: { translated_text: string };
  summarization: { summary: string };
  "voice-activity-detection": { segments: SpeechSegment[]; duration: number };
}

export type TaskInput<T extends InferTask = InferTask> = { [K in T]: { task: K } & TaskInputs[K] }[T];
export type TaskOutput<T extends InferTask = InferTask> = TaskOutputs[T];
