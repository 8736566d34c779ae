import * as tfc from "@tensorflow/tfjs-converter";
import * as tf from "@tensorflow/tfjs-core";
import * as tfl from "@tensorflow/tfjs-layers";
import fs from "node:fs/promises";
import path from "node:path";
import type { InferTask, LabelScore, RawImage, TaskInput, TaskOutput } from "../../tasks/types.js";
import type { ModelSpec } from "../contract.js";
import { fromArtifacts, modelFormat, modelJsonPath, readArtifacts } from "./backend.js";
import { imageInput, TfjsModel, throwIfAborted } from "./model.js";

/** Label files looked for beside `model.json` when the spec names none (ml5's darknet ships `labels1k.txt`). */
const LABEL_FILES = ["labels.txt", "labels1k.txt"];

/**
 * An image classifier in either TF.js format: NHWC float input, one score per class out. Pixels are
 * scaled to `options.inputRange` ([0, 1] unless told: what ml5's darknet models expect) and resized
 * bilinearly with aligned corners, as ml5 does.
 */
export async function loadClassifier(spec: ModelSpec, json: tf.io.ModelJSON, memoryBytes: number): Promise<ClassifierModel> {
  const artifacts = await readArtifacts(spec.path, json);
  const model = modelFormat(json) === "graph-model" ? await tfc.loadGraphModel(fromArtifacts(artifacts)) : await tfl.loadLayersModel(fromArtifacts(artifacts));
  try {
    const shape = model.inputs[0]?.shape;
    const [height, width, channels] = [shape?.[1], shape?.[2], shape?.[3]];
    if (!height || !width || height < 0 || width < 0 || channels !== 3)
      throw new Error(`expected an input of shape [batch, height, width, 3], got [${shape?.join(", ") ?? ""}]`);
    const labels = await readLabels(spec);
    const classes = model.outputs[0]?.shape?.at(-1);
    if (typeof classes === "number" && classes > 0 && classes !== labels.length) throw new Error(`the model has ${classes} classes but ${labels.length} labels`);
    return new ClassifierModel(spec.id, memoryBytes, model, forwardPass(model, [1, height, width, 3]), labels, [height, width], inputRange(spec));
  } catch (e) {
    model.dispose();
    throw e;
  }
}

/**
 * The model's forward pass. A graph with dynamic ops runs only on the async executor, which warns on
 * every call of a graph without any: one trial pass at load tells which (and warms the kernels).
 */
function forwardPass(model: tfl.LayersModel | tfc.GraphModel, shape: number[]): (batch: tf.Tensor4D) => Promise<tf.Tensor> {
  if (model instanceof tfl.LayersModel) return async (batch) => model.predict(batch) as tf.Tensor;
  const first = (out: tf.Tensor | tf.Tensor[]): tf.Tensor => {
    if (!Array.isArray(out)) return out;
    tf.dispose(out.slice(1));
    return out[0]!;
  };
  try {
    tf.tidy(() => {
      model.execute(tf.zeros(shape));
    });
    return async (batch) => first(model.execute(batch));
  } catch {
    return async (batch) => first(await model.executeAsync(batch));
  }
}

async function readLabels(spec: ModelSpec): Promise<string[]> {
  const dir = path.dirname(modelJsonPath(spec.path));
  const named = spec.options?.labels;
  const candidates = typeof named === "string" ? [path.resolve(dir, named)] : LABEL_FILES.map((f) => path.join(dir, f));
  for (const file of candidates) {
    const text = await fs.readFile(file, "utf8").catch(() => null);
    if (text !== null) return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  }
  throw new Error(`no labels: looked for ${candidates.join(", ")}`);
}

function inputRange(spec: ModelSpec): [number, number] {
  const r = spec.options?.inputRange;
  if (r === undefined) return [0, 1];
  if (Array.isArray(r) && r.length === 2 && r.every((x) => typeof x === "number" && Number.isFinite(x))) return [r[0] as number, r[1] as number];
  throw new Error("options.inputRange must be [low, high]");
}

export class ClassifierModel extends TfjsModel {
  /**
   * Every image is resized to the same input, so a batch is one stacked tensor and one pass. Kept
   * small: on one thread a convolution net costs the same per image batched or not (measured on
   * darknet-tiny), while each image in a batch holds ~23 MB of activations at 224×224.
   */
  readonly maxBatch = 8;

  constructor(
    id: string,
    memoryBytes: number,
    private readonly model: tfl.LayersModel | tfc.GraphModel,
    private readonly forward: (batch: tf.Tensor4D) => Promise<tf.Tensor>,
    private readonly labels: readonly string[],
    private readonly size: [height: number, width: number],
    private readonly range: [low: number, high: number],
  ) {
    super(id, "image-classification", memoryBytes);
  }

  override async infer<T extends InferTask>(inputs: TaskInput<T>[], options: { signal: AbortSignal }): Promise<TaskOutput<T>[]> {
    const checked = inputs.map((i) => imageInput(this.id, i, "image-classification"));
    const results: LabelScore[][] = [];
    for (let i = 0; i < checked.length; i += this.maxBatch) {
      throwIfAborted(options.signal);
      results.push(...(await this.pass(checked.slice(i, i + this.maxBatch))));
    }
    return results as TaskOutput<T>[];
  }

  private async pass(inputs: TaskInput<"image-classification">[]): Promise<LabelScore[][]> {
    const batch = tf.tidy(() => tf.stack(inputs.map((i) => this.preprocess(i.image))) as tf.Tensor4D);
    let out: tf.Tensor;
    try {
      out = await this.forward(batch);
    } finally {
      batch.dispose();
    }
    let scores: Float32Array;
    try {
      scores = (await out.data()) as Float32Array;
    } finally {
      out.dispose();
    }
    const classes = scores.length / inputs.length;
    return inputs.map((input, i) => topK(probabilities(scores.subarray(i * classes, (i + 1) * classes)), this.labels, input.topK));
  }

  private preprocess(image: RawImage): tf.Tensor3D {
    const [low, high] = this.range;
    const pixels = tf.tensor3d(image.data, [image.height, image.width, 3], "int32");
    const scaled = tf.add(tf.mul(tf.cast(pixels, "float32"), (high - low) / 255), low) as tf.Tensor3D;
    return tf.image.resizeBilinear(scaled, this.size, true);
  }

  protected release(): void {
    this.model.dispose();
  }
}

/**
 * Softmax unless the row already is a distribution: models differ on whether their last layer
 * applies it (ml5's darknet does not), and logits that happen to be non-negative and sum to 1 do
 * not occur in practice.
 */
function probabilities(row: Float32Array): Float32Array {
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of row) {
    sum += v;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  if (min >= 0 && Math.abs(sum - 1) < 1e-3) return row;
  const exp = row.map((v) => Math.exp(v - max));
  const total = exp.reduce((a, b) => a + b, 0);
  return exp.map((v) => v / total);
}

function topK(probs: Float32Array, labels: readonly string[], k: number): LabelScore[] {
  const order = Array.from(probs.keys()).sort((a, b) => probs[b]! - probs[a]!);
  return order.slice(0, Math.max(1, Math.min(Math.floor(k) || 1, order.length))).map((i) => ({ label: labels[i] ?? String(i), score: probs[i]! }));
}
