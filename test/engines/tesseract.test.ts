import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
// sharp arrives with @huggingface/transformers; the test uses it only to turn the fixture into pixels.
import sharp from "sharp";
import type { Engine, LoadedModel, ModelSpec } from "../../src/engines/contract.js";
import { createTesseractEngine } from "../../src/engines/tesseract/index.js";
import { BordeError } from "../../src/errors.js";
import type { RawImage, TaskInput, TaskOutput } from "../../src/tasks/types.js";
import { bundledModel } from "../../src/engines/bundled.js";

// Not from ../helpers.js: that module starts whole nodes, and this suite needs only the fixture.
const SHARED = path.resolve(import.meta.dirname, "../../../shared");
const EXPECTED = ["Edge inference works offline.", "Invoice #4821 total: $1,234.56", "The quick brown fox jumps."];

async function readRgb(file: string): Promise<RawImage> {
  const { data, info } = await sharp(file).removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

const normalise = (s: string) => s.toLowerCase().replace(/\s+/g, " ").trim();

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

describe("tesseract engine, English, offline", () => {
  const bundled = bundledModel("@borde/tesseract-eng");
  const spec: ModelSpec = { id: bundled.id, task: bundled.task, engine: bundled.engine, path: bundled.path };
  const signal = new AbortController().signal;
  let engine: Engine;
  let model: LoadedModel;
  let page: RawImage;

  before(async () => {
    page = await readRgb(path.join(SHARED, "fixtures/ocr/text.png"));
    engine = createTesseractEngine();
    const t0 = performance.now();
    // Everything is local: were anything fetched, a machine without internet would hang here, not fail fast.
    model = await engine.load(spec);
    console.log(`tesseract load: ${(performance.now() - t0).toFixed(0)} ms`);
  });
  after(async () => {
    await model?.dispose();
    await engine?.dispose();
  });

  const ocr = (image: RawImage) => model.infer!([{ task: "image-to-text", image, maxTokens: 256 }], { signal }).then((r) => r[0] as TaskOutput<"image-to-text">);

  it("reads the three lines of the fixture", { timeout: 60_000 }, async () => {
    const first = performance.now();
    const out = await ocr(page);
    const firstMs = performance.now() - first;
    assert.ok(out.lines, "OCR answers its lines");
    assert.equal(out.lines.length, 3, JSON.stringify(out.lines));
    let exact = 0;
    out.lines.forEach((line, i) => {
      const distance = editDistance(normalise(line), normalise(EXPECTED[i]!));
      assert.ok(distance <= 2, `line ${i}: ${JSON.stringify(line)} is ${distance} edits from ${JSON.stringify(EXPECTED[i])}`);
      if (line === EXPECTED[i]) exact++;
    });
    assert.equal(out.description, out.lines.join("\n"));

    const rounds = 5;
    const t0 = performance.now();
    for (let i = 0; i < rounds; i++) await ocr(page);
    const ms = (performance.now() - t0) / rounds;
    console.log(`tesseract: ${exact}/3 lines exact; first page ${firstMs.toFixed(0)} ms, then ${ms.toFixed(0)} ms per ${page.width}x${page.height} page`);
  });

  it("a blank page has no text", async () => {
    const blank: RawImage = { data: new Uint8Array(200 * 100 * 3).fill(255), width: 200, height: 100 };
    assert.deepEqual(await ocr(blank), { description: "", lines: [] });
  });

  it("rejects pixels that are not width x height RGB, or an input of another task, as InvalidInput", async () => {
    const short: RawImage = { data: new Uint8Array(10), width: 200, height: 100 };
    await assert.rejects(ocr(short), (e: unknown) => e instanceof BordeError && e.kind === "InvalidInput");
    const wrong = { task: "image-classification", image: page, topK: 5 } as TaskInput;
    await assert.rejects(model.infer!([wrong], { signal }), (e: unknown) => e instanceof BordeError && e.kind === "InvalidInput");
  });

  it("estimates memory without loading, one slot, one page per call", async () => {
    const bytes = await engine.estimateMemory(spec);
    assert.ok(bytes > 64 * 1024 * 1024 && bytes < 128 * 1024 * 1024, String(bytes));
    assert.equal(engine.slotsFor(spec), 1);
    assert.equal(model.slots, 1);
    assert.equal(model.maxBatch, 1);
  });

  it("refuses a path that is not traineddata, and a disposed model's worker is gone", async () => {
    await assert.rejects(engine.load({ ...spec, path: SHARED }), (e: unknown) => e instanceof BordeError && e.kind === "ModelLoadFailed");
    const other = await engine.load(spec);
    await other.dispose();
    await assert.rejects(other.infer!([{ task: "image-to-text", image: page, maxTokens: 8 }], { signal }), BordeError);
  });
});
