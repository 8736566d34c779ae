import { BordeError } from "../errors.js";
import { bytesFromInput, decodeAudio, decodeImage } from "./media.js";
import { MEDIA_FIELDS, TASK_INPUTS } from "./schemas.js";
import type { InferTask, TaskInput } from "./types.js";

export { TASKS, type InferTask, type Task, type TaskInput, type TaskOutput, type RawAudio, type RawImage } from "./types.js";
export { MEDIA_FIELDS, TASK_INFO, TASK_INPUTS, TASK_OUTPUTS, taskJsonSchema } from "./schemas.js";

export interface DecodeLimits {
  maxPixels: number;
  maxAudioSeconds: number;
}

/** "a" or "an" before a task name, for messages. */
export function article(word: string): "a" | "an" {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}

export function isInferTask(task: string): task is InferTask {
  return task in TASK_INPUTS;
}

/**
 * A wire body (Workers AI's JSON, or the fields of a multipart upload) to the task's decoded input:
 * validated by the task's schema, media decoded to pixels or 16 kHz samples. Every failure is a 4xx
 * naming the field.
 */
export async function decodeTaskInput(task: InferTask, body: unknown, limits: DecodeLimits): Promise<TaskInput> {
  const parsed = TASK_INPUTS[task].safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? `${issue.path.join(".")}: ` : "";
    throw new BordeError("InvalidInput", `Invalid input for ${article(task)} ${task} model: ${where}${issue.message}`);
  }
  const media = MEDIA_FIELDS[task];
  const raw = media ? bytesFromInput((parsed.data as Record<string, unknown>)[media.field], media.field) : null;
  switch (task) {
    case "text-classification": {
      const d = parsed.data as { text: string };
      return { task, text: d.text };
    }
    case "image-classification": {
      const d = parsed.data as { top_k: number };
      return { task, image: await decodeImage(raw!, limits), topK: d.top_k };
    }
    case "object-detection": {
      const d = parsed.data as { threshold: number };
      return { task, image: await decodeImage(raw!, limits), threshold: d.threshold };
    }
    case "image-to-text": {
      const d = parsed.data as { prompt?: string; max_tokens: number };
      return { task, image: await decodeImage(raw!, limits), prompt: d.prompt, maxTokens: d.max_tokens };
    }
    case "automatic-speech-recognition": {
      const d = parsed.data as { language?: string };
      return { task, audio: await decodeAudio(raw!, { maxSeconds: limits.maxAudioSeconds }), language: d.language };
    }
    case "voice-activity-detection": {
      const d = parsed.data as { threshold: number };
      return { task, audio: await decodeAudio(raw!, { maxSeconds: limits.maxAudioSeconds }), threshold: d.threshold };
    }
    case "translation": {
      const d = parsed.data as { text: string; source_lang: string; target_lang: string };
      return { task, text: d.text, sourceLang: d.source_lang, targetLang: d.target_lang };
    }
    case "summarization": {
      const d = parsed.data as { input_text: string; max_length: number };
      return { task, text: d.input_text, maxLength: d.max_length };
    }
  }
}
