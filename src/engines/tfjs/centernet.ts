/**
 * CenterNet (MobileNetV3 backbone) object detection, on the model @vladmandic/human ships.
 *
 * Pre- and post-processing are ported from @vladmandic/human's src/object/centernet.ts and its COCO
 * labels from src/object/labels.ts (Copyright Vladimir Mandic, MIT licence); the model itself comes
 * from https://github.com/610265158/mobilenetv3_centernet. One change: NMS runs per class, where
 * human's is class-agnostic, so a rider does not suppress the horse under it.
 */
import * as tfc from "@tensorflow/tfjs-converter";
import * as tf from "@tensorflow/tfjs-core";
import type { BoundingBox, Detection, InferTask, RawImage, TaskInput, TaskOutput } from "../../tasks/types.js";
import type { ModelSpec } from "../contract.js";
import { fromArtifacts, readArtifacts } from "./backend.js";
import { imageInput, TfjsModel, throwIfAborted } from "./model.js";

/** The graph's decoded output: up to 100 rows of [x1, y1, x2, y2, score, class] in input pixels. */
const DETECTIONS = "tower_0/detections";
/** Overlap above which the weaker of two same-class boxes is dropped (human's default). */
const IOU_THRESHOLD = 0.4;

// prettier-ignore
const COCO_LABELS = [
  "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
  "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
  "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
  "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
  "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
  "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
  "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
  "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
];

export async function loadCenterNet(spec: ModelSpec, memoryBytes: number): Promise<CenterNetModel> {
  const model = await tfc.loadGraphModel(fromArtifacts(await readArtifacts(spec.path)));
  // The input is square ([1, size, size, 3]); human reads its size the same way.
  const size = model.inputs[0]?.shape?.[1];
  if (!size || size < 0 || !model.outputNodes.includes(DETECTIONS)) {
    model.dispose();
    throw new Error(`not a CenterNet graph: expected an input [1, size, size, 3] and a ${DETECTIONS} output`);
  }
  return new CenterNetModel(spec.id, memoryBytes, model, size);
}

export class CenterNetModel extends TfjsModel {
  /** The graph's batch dimension is fixed at 1. */
  readonly maxBatch = 1;

  constructor(
    id: string,
    memoryBytes: number,
    private readonly model: tfc.GraphModel,
    private readonly size: number,
  ) {
    super(id, "object-detection", memoryBytes);
  }

  override async infer<T extends InferTask>(inputs: TaskInput<T>[], options: { signal: AbortSignal }): Promise<TaskOutput<T>[]> {
    const checked = inputs.map((i) => imageInput(this.id, i, "object-detection"));
    const results: Detection[][] = [];
    for (const { image, threshold } of checked) {
      throwIfAborted(options.signal);
      results.push(await this.detect(image, threshold));
    }
    return results as TaskOutput<T>[];
  }

  private async detect(image: RawImage, threshold: number): Promise<Detection[]> {
    // Pixels stay in [0, 255] and the image is stretched to the square input, as human feeds it.
    const out = tf.tidy(() => {
      const pixels = tf.cast(tf.tensor4d(image.data, [1, image.height, image.width, 3], "int32"), "float32") as tf.Tensor4D;
      return this.model.execute(tf.image.resizeBilinear(pixels, [this.size, this.size]), DETECTIONS) as tf.Tensor;
    });
    let rows: Float32Array;
    try {
      rows = (await out.data()) as Float32Array;
    } finally {
      out.dispose();
    }
    const sx = image.width / this.size;
    const sy = image.height / this.size;
    const found: Detection[] = [];
    for (let r = 0; r + 6 <= rows.length; r += 6) {
      const score = rows[r + 4]!;
      const label = COCO_LABELS[Math.round(rows[r + 5]!)];
      if (!(score >= threshold) || label === undefined) continue;
      const box: BoundingBox = {
        xmin: clamp(rows[r]! * sx, image.width),
        ymin: clamp(rows[r + 1]! * sy, image.height),
        xmax: clamp(rows[r + 2]! * sx, image.width),
        ymax: clamp(rows[r + 3]! * sy, image.height),
      };
      if (box.xmax > box.xmin && box.ymax > box.ymin) found.push({ label, score, box });
    }
    return nonMaxSuppression(found);
  }

  protected release(): void {
    this.model.dispose();
  }
}

function clamp(v: number, max: number): number {
  return Math.min(Math.max(v, 0), max);
}

/** Greedy NMS per label, strongest first (at most 100 boxes: plain loops beat a tensor round trip). */
function nonMaxSuppression(detections: Detection[]): Detection[] {
  const kept: Detection[] = [];
  for (const d of [...detections].sort((a, b) => b.score - a.score)) {
    if (!kept.some((k) => k.label === d.label && iou(k.box, d.box) > IOU_THRESHOLD)) kept.push(d);
  }
  return kept;
}

function iou(a: BoundingBox, b: BoundingBox): number {
  const w = Math.min(a.xmax, b.xmax) - Math.max(a.xmin, b.xmin);
  const h = Math.min(a.ymax, b.ymax) - Math.max(a.ymin, b.ymin);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  const area = (x: BoundingBox) => (x.xmax - x.xmin) * (x.ymax - x.ymin);
  return inter / (area(a) + area(b) - inter);
}
