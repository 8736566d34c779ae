import fs from "node:fs/promises";
import path from "node:path";
import Tesseract from "tesseract.js";
import { BordeError } from "../../errors.js";
import type { RawImage, TaskInput, TaskOutput } from "../../tasks/types.js";
import type { Engine, LoadedModel, ModelSpec } from "../contract.js";

/**
 * OCR with tesseract.js: Tesseract's LSTM recognizer compiled to WebAssembly, run in a worker
 * thread. Everything it reads is local: the traineddata from the model path, the worker script and
 * the wasm core from node_modules (in Node the core is `require`d, whatever `corePath` says).
 */

/**
 * A guess calibrated on eng best_int (2.9 MB gzipped, ~70 MB more RSS after one page): the worker
 * thread and its WebAssembly heap cost far more than the unpacked traineddata.
 */
const WORKER_OVERHEAD_BYTES = 64 * 1024 * 1024;
/**
 * Pixels carry no resolution, and without one Tesseract warns on every page and assumes 70 dpi;
 * 300 is its documented expectation for text and reads the fixtures identically.
 */
const ASSUMED_DPI = "300";
const TRAINEDDATA = /^(.+)\.traineddata(\.gz)?$/;


export function createTesseractEngine(): Engine {
  return {
    name: "tesseract",
    slotsFor: () => 1,
    async estimateMemory(spec: ModelSpec): Promise<number> {
      const { size } = await fs.stat(spec.path);
      return size * 2 + WORKER_OVERHEAD_BYTES;
    },
    load: loadTesseract,
    // Each model owns its worker thread; the engine itself holds nothing.
    async dispose(): Promise<void> {},
  };
}

async function loadTesseract(spec: ModelSpec): Promise<LoadedModel> {
  if (spec.task !== "image-to-text") {
    throw new BordeError("ModelLoadFailed", `model ${spec.id}: the tesseract engine serves image-to-text, not ${spec.task}`);
  }
  // The model path is one `<lang>.traineddata[.gz]` file; tesseract.js wants its folder and language.
  const match = TRAINEDDATA.exec(path.basename(spec.path));
  if (!match) throw new BordeError("ModelLoadFailed", `model ${spec.id}: ${spec.path} is not a <lang>.traineddata[.gz] file`);
  let worker: Tesseract.Worker | null;
  let memoryBytes: number;
  try {
    memoryBytes = (await fs.stat(spec.path)).size * 2 + WORKER_OVERHEAD_BYTES;
    worker = await Tesseract.createWorker(match[1], Tesseract.OEM.LSTM_ONLY, {
      langPath: path.dirname(spec.path),
      gzip: match[2] !== undefined,
      // The data is read from the package on every load: no copy is written to a cache folder.
      cacheMethod: "none",
      // Without a handler tesseract.js rethrows a failed job inside its message listener, which
      // would crash the process; the job's own promise still rejects, and that is where it is handled.
      errorHandler: () => {},
    });
    await worker.setParameters({ user_defined_dpi: ASSUMED_DPI });
  } catch (cause) {
    throw new BordeError("ModelLoadFailed", `model ${spec.id} failed to load`, { cause });
  }

  return {
    id: spec.id,
    task: "image-to-text",
    memoryBytes,
    slots: 1,
    maxBatch: 1,
    async infer(inputs: TaskInput[], options: { signal: AbortSignal }): Promise<TaskOutput[]> {
      const outputs: TaskOutput<"image-to-text">[] = [];
      for (const input of inputs) {
        const image = imageOf(input);
        // A page cannot be stopped once Tesseract has it: abort is honoured between pages.
        if (options.signal.aborted) throw new BordeError("Aborted");
        if (!worker) throw new BordeError("Internal", `model ${spec.id} was disposed`);
        let text: string;
        try {
          text = (await worker.recognize(toPpm(image))).data.text;
        } catch (cause) {
          throw new BordeError("Internal", `model ${spec.id}: OCR failed`, { cause });
        }
        outputs.push({
          description: text.trim(),
          lines: text.split("\n").map((line) => line.trim()).filter((line) => line !== ""),
        });
      }
      return outputs;
    },
    async dispose(): Promise<void> {
      const w = worker;
      worker = null;
      await w?.terminate();
    },
  };
}

function imageOf(input: TaskInput): RawImage {
  if (input.task !== "image-to-text") {
    throw new BordeError("InvalidInput", `the tesseract engine serves image-to-text, not ${input.task}`);
  }
  const { image } = input;
  if (!(image.width > 0 && image.height > 0 && image.data.length === image.width * image.height * 3)) {
    throw new BordeError("InvalidInput", "image must be RGB pixels: width * height * 3 bytes");
  }
  return image;
}

/**
 * Binary PPM: a header in front of the RGB bytes as they are. Leptonica reads it natively, so no
 * image codec is needed and nothing is compressed only to be decompressed in the worker.
 */
function toPpm(image: RawImage): Uint8Array {
  const header = Buffer.from(`P6\n${image.width} ${image.height}\n255\n`, "ascii");
  return Buffer.concat([header, image.data]);
}
