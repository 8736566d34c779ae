import fs from "node:fs/promises";
import path from "node:path";
import { BordeError } from "../../errors.js";
import type { Task } from "../../tasks/types.js";
import type { EmbeddingResult } from "../contract.js";

/**
 * What Borde reads from a Hugging Face repo folder (config.json, the onnx/ folder, the
 * sentence-transformers files) without loading it: its task, which ONNX files to load, its size.
 */

/** The parts of config.json Borde reads. */
export interface RepoConfig {
  architectures?: string[];
  model_type?: string;
  id2label?: Record<string, string>;
  max_position_embeddings?: number;
  max_target_positions?: number;
  n_positions?: number;
  task_specific_params?: Record<string, unknown>;
  decoder?: RepoConfig;
}

export async function readJson<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text) as T;
  } catch (cause) {
    throw new BordeError("ModelLoadFailed", `${file} is not valid JSON`, { cause });
  }
}

export async function readConfig(dir: string): Promise<RepoConfig> {
  const config = await readJson<RepoConfig>(path.join(dir, "config.json"));
  if (!config) throw new BordeError("ModelLoadFailed", `${dir} has no config.json: not a Hugging Face repo folder`);
  return config;
}

const TRANSLATION_TYPES = new Set(["m2m_100", "marian", "mbart", "nllb", "mt5"]);
const SUMMARIZATION_TYPES = new Set(["bart", "pegasus", "led", "t5", "longt5", "blenderbot", "blenderbot-small"]);
const SPEECH_TYPES = new Set(["whisper", "lite-whisper", "moonshine"]);
/** Text encoders whose bare `*Model` export is an embedding model. */
const TEXT_ENCODER_TYPES = new Set([
  "bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "nomic_bert", "electra", "deberta", "deberta-v2",
  "albert", "modernbert", "camembert", "e5", "gte", "new", "jina_bert", "eurobert", "neobert",
]);

/**
 * The task of a repo folder, from `config.json`'s architecture (the head says the task) and, for a
 * bare encoder, the sentence-transformers files beside it.
 */
export async function inspectOnnxRepo(dir: string): Promise<{ task: Task }> {
  const config = await readConfig(dir);
  const task = taskOf(config, await isSentenceTransformer(dir));
  if (!task) {
    const arch = config.architectures?.join(", ") ?? config.model_type ?? "no architecture";
    throw new BordeError("ModelLoadFailed", `${path.basename(dir)}: no Borde task for ${arch}`);
  }
  return { task };
}

function taskOf(config: RepoConfig, sentenceTransformer: boolean): Task | undefined {
  const arch = config.architectures?.[0] ?? "";
  const type = config.model_type ?? "";
  if (arch === "VisionEncoderDecoderModel" || type === "vision-encoder-decoder") return "image-to-text";
  if (arch.endsWith("ForConditionalGeneration") || arch.endsWith("ForSpeechSeq2Seq") || arch.endsWith("MTModel")) {
    if (SPEECH_TYPES.has(type)) return "automatic-speech-recognition";
    if (TRANSLATION_TYPES.has(type)) return "translation";
    // T5-style models list what they were tuned for; a translation-only one says so.
    const params = Object.keys(config.task_specific_params ?? {});
    if (params.length > 0 && params.every((p) => p.startsWith("translation"))) return "translation";
    if (SUMMARIZATION_TYPES.has(type)) return "summarization";
    return undefined;
  }
  if (arch.endsWith("ForCTC")) return "automatic-speech-recognition";
  if (arch.endsWith("ForSequenceClassification")) return "text-classification";
  if (arch.endsWith("ForImageClassification") || arch.endsWith("ForImageClassificationWithTeacher")) return "image-classification";
  if (arch.endsWith("ForObjectDetection")) return "object-detection";
  if (sentenceTransformer || (TEXT_ENCODER_TYPES.has(type) && (arch === "" || arch.endsWith("Model")))) return "text-embeddings";
  return undefined;
}

async function isSentenceTransformer(dir: string): Promise<boolean> {
  const files = ["modules.json", "config_sentence_transformers.json", path.join("1_Pooling", "config.json")];
  const found = await Promise.all(files.map((f) => fs.stat(path.join(dir, f)).then((s) => s.isFile(), () => false)));
  return found.some(Boolean);
}

/** transformers.js's dtypes by the file-name suffix that marks them, most preferred first. */
const DTYPES = [
  ["fp32", ""],
  ["q8", "_quantized"],
  ["int8", "_int8"],
  ["uint8", "_uint8"],
  ["q4", "_q4"],
  ["bnb4", "_bnb4"],
  ["fp16", "_fp16"],
  ["q4f16", "_q4f16"],
] as const;

export type Dtype = (typeof DTYPES)[number][0];

export interface OnnxFiles {
  /** Per session (`model`, `encoder_model`, `decoder_model_merged`…): the dtype whose file is loaded. */
  dtypes: Record<string, Dtype>;
  /** Bytes of the chosen files, their external data included. */
  bytes: number;
}

/**
 * Which file of each session to load, by the files present: a repo pulled from the catalog holds
 * one variant, a repo copied whole holds several, and then full precision wins (the exported
 * model as is; an operator who wants the quantized one copies only that). `preferred` (a bundled
 * model's `options.dtype`) wins where its file exists.
 */
export async function chooseOnnxFiles(dir: string, preferred?: string): Promise<OnnxFiles> {
  const onnxDir = path.join(dir, "onnx");
  const names = await fs.readdir(onnxDir).catch(() => [] as string[]);
  const variants = new Map<string, Map<Dtype, string>>();
  for (const name of names) {
    if (!name.endsWith(".onnx")) continue;
    const stem = name.slice(0, -".onnx".length);
    // The longest matching suffix decides (`_q4f16` before `_q4`; "" matches every stem, so last).
    const [dtype, suffix] = [...DTYPES].sort((a, b) => b[1].length - a[1].length).find(([, s]) => stem.endsWith(s))!;
    const session = stem.slice(0, stem.length - suffix.length);
    if (!variants.has(session)) variants.set(session, new Map());
    variants.get(session)!.set(dtype, name);
  }
  if (variants.size === 0) throw new BordeError("ModelLoadFailed", `${dir} has no onnx/*.onnx file`);

  const dtypes: Record<string, Dtype> = {};
  let bytes = 0;
  for (const [session, files] of variants) {
    const pick = DTYPES.find(([d]) => d === preferred && files.has(d)) ?? DTYPES.find(([d]) => files.has(d))!;
    dtypes[session] = pick[0];
    const file = files.get(pick[0])!;
    // External weights sit beside the graph as `<file>_data`, `<file>_data_1`…
    for (const name of names) {
      if (name === file || name.startsWith(`${file}_data`)) bytes += (await fs.stat(path.join(onnxDir, name))).size;
    }
  }
  return { dtypes, bytes };
}

export interface PoolingConfig {
  pooling: EmbeddingResult["pooling"];
  normalize: boolean;
}

/**
 * How token states become one vector, as the sentence-transformers files say (bge: CLS, then
 * normalized). Without them: mean pooling, normalized, the common default of embedding repos and
 * what similarity search expects.
 */
export async function readPooling(dir: string): Promise<PoolingConfig> {
  const modules = await readJson<{ type?: string; path?: string }[]>(path.join(dir, "modules.json"));
  const poolingDir = modules?.find((m) => m.type?.endsWith("Pooling"))?.path ?? "1_Pooling";
  const pooling = await readJson<Record<string, unknown>>(path.join(dir, poolingDir, "config.json"));
  const normalize = modules ? modules.some((m) => m.type?.endsWith("Normalize")) : true;
  if (pooling?.pooling_mode_cls_token === true) return { pooling: "cls", normalize };
  if (pooling?.pooling_mode_lasttoken === true) return { pooling: "last", normalize };
  return { pooling: "mean", normalize };
}

/** The longest sequence the model's (decoder) positions allow, when config.json says. */
export function maxPositions(config: RepoConfig): number | undefined {
  const c = config.decoder ?? config;
  return c.max_target_positions ?? c.max_position_embeddings ?? c.n_positions;
}
