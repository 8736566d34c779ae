import fs from "node:fs/promises";
import path from "node:path";
import type { Task } from "../tasks/types.js";
import type { Engine, EngineName } from "./contract.js";
import { createLlamaEngine, inspectGguf, type LlamaEngineOptions } from "./llama/index.js";
import { inspectOnnxRepo } from "./onnx/repo.js";
import { EngineRegistry, LazyEngine } from "./registry.js";

export { BUNDLED_MODELS, bundledModel } from "./bundled.js";
export { EngineRegistry, type ModelLoader } from "./registry.js";
export type * from "./contract.js";

/**
 * The engine set, and why each exists:
 * - llama: GGUF text generation and embeddings (llama.cpp) — the LLMs.
 * - onnx: Hugging Face ONNX repos through transformers.js (every task of the Workers AI catalog that
 *   has an ONNX export) and Silero VAD on onnxruntime directly.
 * - tfjs: TF.js models (Universal Sentence Encoder, CenterNet, operators' TF.js classifiers) on the
 *   Wasm backend — the form those npm-shipped weights come in; tfjs-node does not install offline.
 * - fasttext: language identification (lid.176), a fastText model no other runtime reads.
 * - tesseract: OCR; Tesseract's LSTM models are their own format.
 */
export async function createEngines(options: LlamaEngineOptions & { llama?: Engine }): Promise<EngineRegistry> {
  const llama = options.llama ?? (await createLlamaEngine(options));
  return new EngineRegistry([
    llama,
    new LazyEngine("onnx", async () => (await import("./onnx/index.js")).createOnnxEngine()),
    new LazyEngine("tfjs", async () => (await import("./tfjs/index.js")).createTfjsEngine()),
    new LazyEngine("fasttext", async () => (await import("./fasttext/index.js")).createFasttextEngine()),
    new LazyEngine("tesseract", async () => (await import("./tesseract/index.js")).createTesseractEngine()),
  ]);
}

/**
 * What an operator's file or folder in the models dir is: a GGUF file (llama), a Hugging Face repo
 * folder with `config.json` (onnx), or a TF.js model folder with `model.json` (tfjs, an image classifier).
 */
export async function inspectModel(p: string): Promise<{ task: Task; engine: EngineName }> {
  const st = await fs.stat(p);
  if (st.isFile()) return inspectGguf(p);
  const has = async (f: string) => (await fs.stat(path.join(p, f)).catch(() => null))?.isFile() ?? false;
  if (await has("config.json")) return { task: (await inspectOnnxRepo(p)).task, engine: "onnx" };
  if (await has("model.json")) return { task: "image-classification", engine: "tfjs" };
  throw new Error(`${path.basename(p)} is neither a GGUF file, a Hugging Face repo folder nor a TF.js model folder`);
}
