import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Engine, LoadedModel, ModelSpec } from "../../src/engines/contract.js";
import { createFasttextEngine } from "../../src/engines/fasttext/index.js";
import { BordeError } from "../../src/errors.js";
import type { LabelScore, TaskInput } from "../../src/tasks/types.js";
import { bundledModel } from "../../src/engines/bundled.js";
import { LANGUAGE_SENTENCES } from "../fixtures/labelled.js";

describe("fastText engine on lid.176", () => {
  const bundled = bundledModel("@borde/fasttext-lid-176");
  const spec: ModelSpec = { id: bundled.id, task: bundled.task, engine: bundled.engine, path: bundled.path };
  const signal = new AbortController().signal;
  let engine: Engine;
  let model: LoadedModel;

  before(async () => {
    engine = createFasttextEngine();
    const t0 = performance.now();
    model = await engine.load(spec);
    console.log(`fastText load: ${(performance.now() - t0).toFixed(0)} ms`);
  });
  after(async () => {
    await model?.dispose();
    await engine?.dispose();
  });

  const classify = (text: string) => model.infer!([{ task: "text-classification", text }], { signal }).then((r) => r[0] as LabelScore[]);

  it("names the language of sentences in five languages", async () => {
        for (const [lang, text] of LANGUAGE_SENTENCES) {
      const labels = await classify(text);
      assert.equal(labels[0]?.label, lang, `${text} -> ${JSON.stringify(labels)}`);
      assert.ok(labels[0]!.score > 0.5, `${lang}: ${labels[0]!.score}`);
    }
  });

  it("answers the top five labels without fastText's prefix, best first", async () => {
    const labels = await classify("Bonjour tout le monde");
    assert.equal(labels.length, 5);
    for (const { label, score } of labels) {
      assert.match(label, /^[a-z]{2,3}$/);
      assert.ok(score >= 0 && score <= 1);
    }
    for (let i = 1; i < labels.length; i++) assert.ok(labels[i - 1]!.score >= labels[i]!.score);
  });

  it("reads a text across its newlines, not only its first line", async () => {
    // First line alone is too short to call; the German lines after it decide.
    const labels = await classify("OK\nDas ist ein Text auf Deutsch.\nEr hat mehrere Zeilen und ist eindeutig deutsch.");
    assert.equal(labels[0]?.label, "de", JSON.stringify(labels));
  });

  it("classifies a batch in one call, in order, and measures the cost per text", async () => {
    const texts = ["Hello, how are you?", "Hallo, wie geht es dir?", "Hola, ¿cómo estás?", "Привет, как дела?"];
    const inputs: TaskInput<"text-classification">[] = texts.map((text) => ({ task: "text-classification", text }));
    assert.ok((model.maxBatch ?? 1) > 1);
    const rounds = 50;
    const t0 = performance.now();
    let out = await model.infer!(inputs, { signal });
    for (let i = 1; i < rounds; i++) out = await model.infer!(inputs, { signal });
    console.log(`fastText: ${((performance.now() - t0) / (rounds * texts.length)).toFixed(3)} ms per text`);
    assert.deepEqual((out as LabelScore[][]).map((r) => r[0]?.label), ["en", "de", "es", "ru"]);
  });

  it("rejects an empty text, or an input of another task, as InvalidInput", async () => {
    for (const text of ["", "  \n "]) {
      await assert.rejects(classify(text), (e: unknown) => e instanceof BordeError && e.kind === "InvalidInput");
    }
    const wrong = { task: "translation", text: "hi", sourceLang: "en", targetLang: "de" } as TaskInput;
    await assert.rejects(model.infer!([wrong], { signal }), (e: unknown) => e instanceof BordeError && e.kind === "InvalidInput");
  });

  it("estimates memory from the file without loading it, and serves one slot", async () => {
    const bytes = await engine.estimateMemory(spec);
    assert.ok(bytes > 938_013 * 2 && bytes < 64 * 1024 * 1024, String(bytes));
    assert.equal(engine.slotsFor(spec), 1);
    assert.equal(model.slots, 1);
  });

  it("refuses to load for another task", async () => {
    await assert.rejects(engine.load({ ...spec, task: "translation" }), (e: unknown) => e instanceof BordeError && e.kind === "ModelLoadFailed");
  });
});
