import type { Task } from "../catalog/types.js";
import type { Unit } from "./types.js";

/** Neurons per input and per output unit. */
export interface Price {
  input: number;
  output: number;
}

const perM = (input: number, output = 0): Price => ({ input: input / 1e6, output: output / 1e6 });

/**
 * Workers AI's published prices, in neurons (developers.cloudflare.com/workers-ai/platform/pricing),
 * so that a model billed here costs what it costs on Cloudflare. Models not listed (an operator's
 * `@local/...` file, Borde's own ids) are priced from measured compute instead: never free.
 */
export const PRICES: Readonly<Record<string, Price>> = Object.freeze({
  "@cf/meta/llama-3.2-1b-instruct": perM(2457, 18252),
  "@cf/meta/llama-3.2-3b-instruct": perM(4625, 30475),
  "@cf/meta/llama-3.1-8b-instruct": perM(25608, 75147),
  "@cf/meta/llama-3.1-8b-instruct-fp8-fast": perM(4119, 34868),
  "@cf/baai/bge-small-en-v1.5": perM(1841),
  "@cf/baai/bge-base-en-v1.5": perM(6058),
  "@cf/baai/bge-large-en-v1.5": perM(18582),
  "@cf/meta/m2m100-1.2b": perM(31050, 31050),
  // Per image, per audio second (Cloudflare lists 41.14 neurons per audio minute).
  "@cf/microsoft/resnet-50": { input: 228055 / 1e6, output: 0 },
  "@cf/openai/whisper": { input: 41.14 / 60, output: 0 },
});

/** What a task's input and output are counted in. */
export function unitOf(task: Task | string): Unit {
  switch (task) {
    case "image-classification":
    case "object-detection":
    case "image-to-text":
      return "images";
    case "automatic-speech-recognition":
    case "voice-activity-detection":
      return "audio_seconds";
    default:
      return "tokens";
  }
}

export interface Pricing {
  /** Neurons per engine CPU-second for models without a listed price. */
  computeNeuronsPerCpuSecond: number;
}

/**
 * Neurons for one request. Listed models: units × price. Others: engine CPU time × rate, with the
 * wall time as the floor of the measurement, so a request never comes out at zero.
 */
export function neuronsFor(model: string, inputUnits: number, outputUnits: number, cpuMs: number, wallMs: number, pricing: Pricing): number {
  const price = PRICES[model];
  if (price) return inputUnits * price.input + outputUnits * price.output;
  const ms = cpuMs > 0 ? cpuMs : Math.max(wallMs, 0.001);
  return (ms / 1000) * pricing.computeNeuronsPerCpuSecond;
}
