import { z } from "zod";
import type { InferTask, Task } from "./types.js";

/**
 * Workers AI's wire shapes, one input and one output schema per task. The API validates with the
 * input schemas; the models search endpoint and the OpenAI `/models` list publish both as JSON
 * Schema, so a client can see what a model takes without reading our docs.
 */

/** Images and audio: a byte array, a base64 string or data URL (JSON), or a file part (multipart). */
const Media = z.union([z.array(z.number()).max(200 * 2 ** 20), z.string().max(300 * 2 ** 20), z.instanceof(Uint8Array)], {
  error: "expected a byte array, a base64 string or a data URL",
});
const text = z.string().max(100_000);

export const TASK_INPUTS = {
  "text-classification": z.object({ text: text.min(1, "text is empty") }),
  "image-classification": z.object({ image: Media, top_k: z.coerce.number().int().min(1).max(1000).default(5) }),
  "object-detection": z.object({ image: Media, threshold: z.coerce.number().min(0).max(1).default(0.3) }),
  "image-to-text": z.object({
    image: Media,
    prompt: z.string().max(10_000).optional(),
    max_tokens: z.coerce.number().int().min(1).max(4096).default(512),
  }),
  "automatic-speech-recognition": z.object({ audio: Media, language: z.string().min(2).max(32).optional() }),
  translation: z.object({
    text: text.min(1, "text is empty"),
    source_lang: z.string().min(2).max(32).default("en"),
    target_lang: z.string().min(2).max(32),
  }),
  summarization: z.object({ input_text: text.min(1, "input_text is empty"), max_length: z.coerce.number().int().min(1).max(4096).default(1024) }),
  "voice-activity-detection": z.object({ audio: Media, threshold: z.coerce.number().min(0.05).max(0.95).default(0.5) }),
} satisfies Record<InferTask, z.ZodType>;

const labelScores = z.array(z.object({ label: z.string(), score: z.number() }));

export const TASK_OUTPUTS = {
  "text-classification": labelScores,
  "image-classification": labelScores,
  "object-detection": z.array(
    z.object({ label: z.string(), score: z.number(), box: z.object({ xmin: z.number(), ymin: z.number(), xmax: z.number(), ymax: z.number() }) }),
  ),
  "image-to-text": z.object({ description: z.string(), lines: z.array(z.string()).optional() }),
  "automatic-speech-recognition": z.object({
    text: z.string(),
    word_count: z.number().int().optional(),
    words: z.array(z.object({ word: z.string(), start: z.number(), end: z.number() })).optional(),
    vtt: z.string().optional(),
  }),
  translation: z.object({ translated_text: z.string() }),
  summarization: z.object({ summary: z.string() }),
  "voice-activity-detection": z.object({ segments: z.array(z.object({ start: z.number(), end: z.number() })), duration: z.number() }),
} satisfies Record<InferTask, z.ZodType>;

/** Which input fields carry media, and of which kind: the API decodes these before validation ends. */
export const MEDIA_FIELDS: Partial<Record<InferTask, { field: string; kind: "image" | "audio" }>> = {
  "image-classification": { field: "image", kind: "image" },
  "object-detection": { field: "image", kind: "image" },
  "image-to-text": { field: "image", kind: "image" },
  "automatic-speech-recognition": { field: "audio", kind: "audio" },
  "voice-activity-detection": { field: "audio", kind: "audio" },
};

/** Display names and ids as Workers AI's models search shows them. */
export const TASK_INFO: Record<Task, { id: string; name: string; description: string }> = {
  "text-generation": { id: "c329a1f9-323d-4e91-b2aa-582dd4188d34", name: "Text Generation", description: "Family of generative text models, such as large language models (LLM), that can be adapted for a variety of natural language tasks." },
  "text-embeddings": { id: "0137cdcf-162a-4108-94f2-1ca59e8c65ee", name: "Text Embeddings", description: "Feature extraction models transform raw data into numerical features that can be processed while preserving the information in the original dataset." },
  "text-classification": { id: "19606750-23ed-4371-aab2-c20349b53a60", name: "Text Classification", description: "Sentiment analysis or text classification is a common NLP task that classifies a text input into labels or classes." },
  "image-classification": { id: "00cd182b-bf30-4fc4-8481-84a3ab349657", name: "Image Classification", description: "Image classification models take an image input and assigns it labels or classes." },
  "object-detection": { id: "9c178979-90d9-49d8-9e2c-0f1cf01815d4", name: "Object Detection", description: "Object detection models can detect instances of objects like persons, faces, license plates, or others in an image." },
  "image-to-text": { id: "882a91d1-c331-4eec-bdad-834c919942a8", name: "Image-to-Text", description: "Image to text models output a text from a given image. Image captioning or optical character recognition can be considered as the most common applications of image to text." },
  "automatic-speech-recognition": { id: "dfce1c48-2a81-462e-a7fd-de97ce985207", name: "Automatic Speech Recognition", description: "Automatic speech recognition (ASR) models convert a speech signal, typically an audio input, to text." },
  translation: { id: "f57d07cb-9087-487a-bbbf-bc3e17fecc4b", name: "Translation", description: "Translation models convert a sequence of text from one language to another." },
  summarization: { id: "6f4e65d8-da0f-40d2-9aa4-db582a5a04fd", name: "Summarization", description: "Summarization is the task of producing a shorter version of a document while preserving its important information." },
  "voice-activity-detection": { id: "borde-voice-activity-detection", name: "Voice Activity Detection", description: "Finds the stretches of an audio clip that contain speech (a Borde extra: Workers AI has no such task)." },
};

const jsonCache = new Map<Task, { input: unknown; output: unknown }>();

/** The task's input and output as JSON Schema (computed once per task). */
export function taskJsonSchema(task: Task): { input: unknown; output: unknown } | null {
  if (task === "text-generation" || task === "text-embeddings") return null; // published by their own converters
  let s = jsonCache.get(task);
  if (!s) {
    s = { input: toJson(TASK_INPUTS[task]), output: toJson(TASK_OUTPUTS[task]) };
    jsonCache.set(task, s);
  }
  return s;
}

function toJson(schema: z.ZodType): unknown {
  // Uint8Array (multipart file parts) has no JSON form: describe it as binary rather than failing.
  return z.toJSONSchema(schema, { io: "input", unrepresentable: "any", override: (ctx) => {
    if ((ctx.zodSchema as { _zod?: { def?: { type?: string } } })._zod?.def?.type === "custom") Object.assign(ctx.jsonSchema, { type: "string", format: "binary" });
  } });
}
