import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, describe, it } from "node:test";
import decode from "audio-decode";
import type { Engine, LoadedModel, ModelSpec } from "../../src/engines/contract.js";
import { createOnnxEngine, inspectOnnxRepo } from "../../src/engines/onnx/index.js";
import { resolveLanguage } from "../../src/engines/onnx/languages.js";
import { BordeError } from "../../src/errors.js";
import { decodeImage } from "../../src/tasks/media.js";
import type { InferTask, RawAudio, RawImage, Task, TaskInput, TaskOutput } from "../../src/tasks/types.js";
import { bundledModel } from "../../src/engines/bundled.js";

/**
 * The ONNX engine over tiny random-weight models of the real architectures (built by
 * scripts/make-tiny-onnx-models.py). Their answers are gibberish: these tests check what the
 * engine owns — loading each architecture offline, the shapes and types of every task's result,
 * batching, the generation limits and the decoding loop — not what the models say.
 */

const FIXTURES = path.resolve(import.meta.dirname, "../fixtures/onnx");
// CI clones the repository with shared/ beside it.
const SHARED = path.resolve(import.meta.dirname, "../../../shared/fixtures");
const signal = new AbortController().signal;

async function readWav(name: string): Promise<RawAudio> {
  const { channelData, sampleRate } = await decode(await fs.readFile(path.join(SHARED, "audio", name)));
  return { samples: channelData[0]!, sampleRate };
}

async function readImage(name: string): Promise<RawImage> {
  return decodeImage(await fs.readFile(path.join(SHARED, "images", name)), { maxPixels: 40_000_000 });
}

const spec = (name: string, task: Task): ModelSpec => ({ id: `@test/${name}`, task, engine: "onnx", path: path.join(FIXTURES, name) });

/** Loads a fixture, logging its load time; `run` times calls and logs ms per call. */
async function load(engine: Engine, name: string, task: Task): Promise<LoadedModel> {
  const t0 = performance.now();
  const model = await engine.load(spec(name, task));
  console.log(`${name}: loaded in ${(performance.now() - t0).toFixed(0)} ms`);
  return model;
}

async function timed<T>(name: string, what: string, call: () => Promise<T>, rounds = 3): Promise<T> {
  let result = await call(); // warm-up: the first run allocates onnxruntime's buffers
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) result = await call();
  console.log(`${name}: ${what} ${((performance.now() - t0) / rounds).toFixed(1)} ms per call`);
  return result;
}

async function infer<T extends InferTask>(model: LoadedModel, inputs: (TaskInput & { task: T })[]): Promise<TaskOutput<T>[]> {
  return (await model.infer!(inputs, { signal })) as TaskOutput<T>[];
}

const rejectsWith = (promise: Promise<unknown>, kind: string) =>
  assert.rejects(promise, (e: unknown) => e instanceof BordeError && e.kind === kind);

function assertClose(a: number[], b: number[], tolerance = 1e-4): void {
  assert.equal(a.length, b.length);
  a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) <= tolerance, `index ${i}: ${v} vs ${b[i]}`));
}

const TEXTS = [
  "Edge inference works offline.",
  "I love this movie",
  "This film was terrible, boring and far too long.",
  "hi",
  "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
  "",
  "Invoice #4821 total: $1,234.56",
  "Le renard brun rapide saute par-dessus le chien paresseux.",
];

describe("ONNX engine: repo folders", () => {
  it("tells each fixture's task from config.json", async () => {
    const expected: Record<string, Task> = {
      "bert-embeddings": "text-embeddings",
      "distilbert-sst2": "text-classification",
      resnet: "image-classification",
      detr: "object-detection",
      "vit-gpt2-captioning": "image-to-text",
      whisper: "automatic-speech-recognition",
      "m2m100-translation": "translation",
      "bart-summarization": "summarization",
    };
    for (const [name, task] of Object.entries(expected)) assert.equal((await inspectOnnxRepo(path.join(FIXTURES, name))).task, task, name);
    await rejectsWith(inspectOnnxRepo(path.join(SHARED, "images")), "ModelLoadFailed");
  });

  it("estimates memory from the chosen files, and prefers full precision when both are there", async () => {
    const engine = createOnnxEngine();
    const onnx = path.join(FIXTURES, "distilbert-sst2", "onnx");
    const fp32 = (await fs.stat(path.join(onnx, "model.onnx"))).size;
    const q8 = (await fs.stat(path.join(onnx, "model_quantized.onnx"))).size;
    assert.equal(await engine.estimateMemory(spec("distilbert-sst2", "text-classification")), Math.ceil(fp32 * 1.5));
    const pinned = { ...spec("distilbert-sst2", "text-classification"), options: { dtype: "q8" } };
    assert.equal(await engine.estimateMemory(pinned), Math.ceil(q8 * 1.5));
    assert.equal(engine.slotsFor(pinned), 1);
  });

  it("refuses a folder that is no model, and a task it does not serve", async () => {
    const engine = createOnnxEngine();
    await rejectsWith(engine.load({ ...spec("nope", "translation"), path: path.join(SHARED, "images") }), "ModelLoadFailed");
    await rejectsWith(engine.load(spec("bert-embeddings", "text-generation")), "ModelLoadFailed");
  });

  it("hands Silero VAD (options.kind) to its own loader", async () => {
    const bundled = bundledModel("@borde/silero-vad");
    const vad: ModelSpec = { id: bundled.id, task: bundled.task, engine: "onnx", path: bundled.path, options: bundled.options };
    const engine = createOnnxEngine();
    assert.ok((await engine.estimateMemory(vad)) > 0);
    const model = await engine.load(vad);
    try {
      const [out] = await infer(model, [{ task: "voice-activity-detection", audio: await readWav("sil.wav"), threshold: 0.5 }]);
      assert.deepEqual(out!.segments, []);
    } finally {
      await model.dispose();
    }
  });

  it("maps language names and codes to each family's codes", () => {
    const m2m = ["en", "fr", "de", "zh"];
    assert.equal(resolveLanguage("fr", m2m), "fr");
    assert.equal(resolveLanguage("French", m2m), "fr");
    assert.equal(resolveLanguage("english", m2m), "en");
    assert.equal(resolveLanguage("fra", m2m), "fr");
    assert.equal(resolveLanguage("en-US", m2m), "en");
    assert.equal(resolveLanguage("klingon", m2m), undefined);
    const nllb = ["eng_Latn", "fra_Latn", "zho_Hans", "zho_Hant"];
    assert.equal(resolveLanguage("fr", nllb), "fra_Latn");
    assert.equal(resolveLanguage("german", nllb), undefined);
    assert.equal(resolveLanguage("zh-Hant", nllb), "zho_Hant");
    assert.equal(resolveLanguage("chinese", nllb), "zho_Hans");
    assert.equal(resolveLanguage("en_XX", ["en_XX", "fr_XX"]), "en_XX");
  });
});

describe("ONNX engine: encoders", () => {
  const engine = createOnnxEngine({ threads: 1 });
  const models: Record<string, LoadedModel> = {};
  after(async () => {
    await Promise.all(Object.values(models).map((m) => m.dispose()));
  });

  it("text-embeddings (bert, CLS pooling + normalize): a batch of 8 equals one by one", async () => {
    const model = (models.bert = await load(engine, "bert-embeddings", "text-embeddings"));
    assert.equal(model.maxBatch, 32);
    const batch = await timed("bert-embeddings", "batch of 8", () => model.embed!(TEXTS, { signal }));
    assert.equal(batch.pooling, "cls");
    assert.equal(batch.vectors.length, 8);
    for (const v of batch.vectors) {
      assert.equal(v.length, 32);
      assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5, "unit vectors");
    }
    let tokens = 0;
    for (const [i, text] of TEXTS.entries()) {
      const one = await model.embed!([text], { signal });
      assertClose(one.vectors[0]!, batch.vectors[i]!);
      tokens += one.promptTokens;
    }
    assert.equal(batch.promptTokens, tokens, "padding is not counted");
    await rejectsWith(model.embed!([42 as unknown as string], { signal }), "InvalidInput");

    // A catalog entry's options.pooling overrides the repo's: mean over the tokens, still normalized.
    const mean = await engine.load({ ...spec("bert-embeddings", "text-embeddings"), options: { pooling: "mean" } });
    try {
      const out = await mean.embed!(TEXTS.slice(0, 2), { signal });
      assert.equal(out.pooling, "mean");
      assert.notDeepEqual(out.vectors[0], batch.vectors[0]);
      assert.ok(Math.abs(Math.hypot(...out.vectors[0]!) - 1) < 1e-5);
    } finally {
      await mean.dispose();
    }
    await rejectsWith(model.embed!([], { signal }), "InvalidInput");
  });

  it("text-classification (distilbert, NEGATIVE/POSITIVE): every label, batch equals one by one", async () => {
    const model = (models.distilbert = await load(engine, "distilbert-sst2", "text-classification"));
    const inputs = TEXTS.map((text) => ({ task: "text-classification" as const, text: text || "empty" }));
    const batch = await timed("distilbert-sst2", "batch of 8", () => infer(model, inputs));
    await timed("distilbert-sst2", "one text", () => infer(model, inputs.slice(0, 1)));
    assert.equal(batch.length, 8);
    for (const [i, scores] of batch.entries()) {
      assert.deepEqual(scores.map((s) => s.label).sort(), ["NEGATIVE", "POSITIVE"]);
      assert.ok(Math.abs(scores[0]!.score + scores[1]!.score - 1) < 1e-5);
      assert.ok(scores[0]!.score >= scores[1]!.score, "best first");
      const [one] = await infer(model, [inputs[i]!]);
      assertClose(one!.map((s) => s.score), scores.map((s) => s.score));
    }
    await rejectsWith(infer(model, [{ task: "text-classification", text: "" }]), "InvalidInput");
    await rejectsWith(model.infer!([{ task: "summarization", text: "x", maxLength: 5 }], { signal }), "InvalidInput");
  });

  it("loads the quantized variant when pinned to q8", async () => {
    const model = await engine.load({ ...spec("distilbert-sst2", "text-classification"), options: { dtype: "q8" } });
    try {
      const [scores] = await infer(model, [{ task: "text-classification", text: "I love this movie" }]);
      assert.equal(scores!.length, 2);
    } finally {
      await model.dispose();
    }
  });

  it("image-classification (resnet): top_k per input, batch equals one by one", async () => {
    const model = (models.resnet = await load(engine, "resnet", "image-classification"));
    assert.equal(model.maxBatch, 8);
    const names = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "person.jpg", "scream.jpg", "dog.jpg", "eagle.jpg"];
    const images = await Promise.all(names.map(readImage));
    const inputs = images.map((image, i) => ({ task: "image-classification" as const, image, topK: (i % 5) + 1 }));
    const batch = await timed("resnet", "batch of 8", () => infer(model, inputs));
    await timed("resnet", "one image", () => infer(model, inputs.slice(0, 1)));
    for (const [i, scores] of batch.entries()) {
      assert.equal(scores.length, (i % 5) + 1);
      for (const s of scores) assert.ok(typeof s.label === "string" && s.score >= 0 && s.score <= 1);
      const [one] = await infer(model, [inputs[i]!]);
      assertClose(one!.map((s) => s.score), scores.map((s) => s.score));
    }
    const bad = { data: new Uint8Array(10), width: 4, height: 4 };
    await rejectsWith(infer(model, [{ task: "image-classification", image: bad, topK: 1 }]), "InvalidInput");
  });

  it("object-detection (detr): labelled pixel boxes within the image", async () => {
    const model = (models.detr = await load(engine, "detr", "object-detection"));
    const image = await readImage("horses.jpg");
    const [found] = await timed("detr", "one image", () => infer(model, [{ task: "object-detection", image, threshold: 0 }]));
    assert.ok(found!.length > 0);
    for (const d of found!) {
      assert.ok(["person", "dog", "horse", "giraffe", "bird", "N/A"].includes(d.label), d.label);
      assert.ok(d.box.xmin >= 0 && d.box.xmax <= image.width && d.box.ymin >= 0 && d.box.ymax <= image.height, JSON.stringify(d.box));
      assert.ok(d.box.xmax > 1 || d.box.ymax > 1, "pixels, not fractions");
    }
    const [none] = await infer(model, [{ task: "object-detection", image, threshold: 1.01 }]);
    assert.deepEqual(none, []);
  });
});

describe("ONNX engine: generation", () => {
  const engine = createOnnxEngine({ threads: 1 });
  const models: Record<string, LoadedModel> = {};
  after(async () => {
    await Promise.all(Object.values(models).map((m) => m.dispose()));
  });

  it("summarization (bart): a string, and max_length bounds the tokens generated", async () => {
    const model = (models.bart = await load(engine, "bart-summarization", "summarization"));
    assert.equal(model.maxBatch, 1);
    const text = TEXTS.join(" ");
    const [short] = await timed("bart-summarization", "5 new tokens", () => infer(model, [{ task: "summarization", text, maxLength: 5 }]));
    const [long] = await timed("bart-summarization", "40 new tokens", () => infer(model, [{ task: "summarization", text, maxLength: 40 }]));
    assert.equal(typeof short!.summary, "string");
    assert.ok(short!.summary.length > 0);
    // These weights never emit EOS: the limit is what stops them, and more tokens give more text.
    assert.ok(long!.summary.length > short!.summary.length, `${JSON.stringify(short)} vs ${JSON.stringify(long)}`);
    // Greedy decoding is deterministic.
    assert.deepEqual(await infer(model, [{ task: "summarization", text, maxLength: 5 }]), [short]);
    await rejectsWith(infer(model, [{ task: "summarization", text: "   ", maxLength: 5 }]), "InvalidInput");
  });

  it("translation (m2m100): language codes or names, unknown ones refused", async () => {
    const model = (models.m2m = await load(engine, "m2m100-translation", "translation"));
    const text = "The weather today is sunny.";
    const [fr] = await timed("m2m100-translation", "up to 126 new tokens", () => infer(model, [{ task: "translation", text, sourceLang: "en", targetLang: "fr" }]));
    assert.equal(typeof fr!.translated_text, "string");
    assert.ok(fr!.translated_text.length > 0);
    const [byName] = await infer(model, [{ task: "translation", text, sourceLang: "english", targetLang: "French" }]);
    assert.deepEqual(byName, fr);
    await rejectsWith(infer(model, [{ task: "translation", text, sourceLang: "en", targetLang: "klingon" }]), "InvalidInput");
    await rejectsWith(infer(model, [{ task: "translation", text, sourceLang: "xx-invalid", targetLang: "fr" }]), "InvalidInput");
  });

  it("image-to-text (vit + gpt2): a caption, bounded by max_tokens", async () => {
    const model = (models.caption = await load(engine, "vit-gpt2-captioning", "image-to-text"));
    const image = await readImage("dog.jpg");
    const [short] = await timed("vit-gpt2-captioning", "3 new tokens", () => infer(model, [{ task: "image-to-text", image, maxTokens: 3 }]));
    const [long] = await timed("vit-gpt2-captioning", "20 new tokens", () => infer(model, [{ task: "image-to-text", image, maxTokens: 20 }]));
    assert.equal(typeof short!.description, "string");
    assert.ok(long!.description.length > short!.description.length);
  });

  it("automatic-speech-recognition (whisper): text, words with timestamps, vtt, word_count", async () => {
    const model = (models.whisper = await load(engine, "whisper", "automatic-speech-recognition"));
    const audio = await readWav("goforward.wav");
    assert.equal(audio.sampleRate, 16_000);
    const duration = audio.samples.length / 16_000;
    const [out] = await timed("whisper", `${duration.toFixed(1)} s of audio`, () => infer(model, [{ task: "automatic-speech-recognition", audio, language: "en" }]), 2);
    assert.ok(out!.text.length > 0);
    assert.equal(out!.word_count, out!.text.split(/\s+/).length);
    assert.ok(out!.words && out!.words.length > 0);
    for (const w of out!.words!) {
      assert.equal(typeof w.word, "string");
      assert.ok(w.start >= 0 && w.end >= w.start && w.end <= duration, JSON.stringify(w));
    }
    assert.match(out!.vtt!, /^WEBVTT\n\n\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n/);
    // The tiny model's decoder has 64 positions: generation stops there (60 new tokens after the prompt).
    assert.ok(out!.words!.length <= 60);

    const [named] = await infer(model, [{ task: "automatic-speech-recognition", audio, language: "english" }]);
    assert.equal(named!.text, out!.text);
    await rejectsWith(infer(model, [{ task: "automatic-speech-recognition", audio, language: "klingon" }]), "InvalidInput");
    await rejectsWith(infer(model, [{ task: "automatic-speech-recognition", audio: { samples: audio.samples, sampleRate: 8000 } }]), "InvalidInput");
    await rejectsWith(infer(model, [{ task: "automatic-speech-recognition", audio: { samples: new Float32Array(0), sampleRate: 16_000 } }]), "InvalidInput");
  });

  it("automatic-speech-recognition (whisper): audio over 30 s goes through overlapping windows", async () => {
    const model = models.whisper!;
    const audio = await readWav("goforward.wav");
    const long = new Float32Array(16_000 * 40);
    for (let at = 0; at + audio.samples.length <= long.length; at += audio.samples.length) long.set(audio.samples, at);
    const [out] = await timed("whisper", "40 s of audio", () => infer(model, [{ task: "automatic-speech-recognition", audio: { samples: long, sampleRate: 16_000 } }]), 1);
    assert.ok(out!.text.length > 0);
    assert.ok(out!.words!.every((w) => w.end <= 40));
  });

  it("an aborted request stops generating and says so", async () => {
    const controller = new AbortController();
    controller.abort();
    await rejectsWith(models.bart!.infer!([{ task: "summarization", text: "Some text to summarize.", maxLength: 100 }], { signal: controller.signal }), "Aborted");

    // Mid-generation: these weights make m2m100 decode all 126 tokens its positions allow, unless
    // the abort ends it at the next token.
    const input = { task: "translation" as const, text: "The weather today is sunny.", sourceLang: "en", targetLang: "fr" };
    let t0 = performance.now();
    await infer(models.m2m!, [input]);
    const full = performance.now() - t0;
    const mid = new AbortController();
    t0 = performance.now();
    const pending = models.m2m!.infer!([input], { signal: mid.signal });
    setTimeout(() => mid.abort(), 0);
    await rejectsWith(pending, "Aborted");
    const aborted = performance.now() - t0;
    console.log(`m2m100: aborted after ${aborted.toFixed(1)} ms, a full run ${full.toFixed(1)} ms`);
    assert.ok(aborted < full / 2, `aborted after ${aborted.toFixed(1)} ms, a full run takes ${full.toFixed(1)} ms`);
  });
});
