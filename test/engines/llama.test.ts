import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Engine, LoadedModel } from "../../src/engines/contract.js";
import { createLlamaEngine, inspectGguf } from "../../src/engines/llama/index.js";
import { STORIES, STORIES_REFERENCE } from "../helpers.js";

describe("llama.cpp engine on stories260K", () => {
  let engine: Engine;
  let model: LoadedModel;
  const signal = new AbortController().signal;

  before(async () => {
    engine = await createLlamaEngine({ threads: 1, parallel: 2, contextSize: 512 });
    model = await engine.load({ id: "@local/stories", task: "text-generation", engine: "llama", path: STORIES });
  });
  after(async () => {
    await model?.dispose();
    await engine?.dispose();
  });

  it("reads the task from GGUF metadata", async () => {
    assert.deepEqual(await inspectGguf(STORIES), { task: "text-generation", engine: "llama" });
  });

  it("greedy generation from BOS alone reproduces the reference llama2.c text", async () => {
    const r = await model.generate!({ prompt: "", maxTokens: 80, temperature: 0 }, { signal });
    assert.ok(r.text.startsWith(STORIES_REFERENCE), r.text);
    assert.equal(r.usage.prompt_tokens, 1, "BOS only");
  });

  it("a prompt continues the same greedy path", async () => {
    const r = await model.generate!({ prompt: "Once upon a time", maxTokens: 40, temperature: 0 }, { signal });
    assert.ok(STORIES_REFERENCE.startsWith("Once upon a time" + r.text.trimEnd()), r.text);
    assert.equal(r.finishReason, "length");
    assert.equal(r.usage.completion_tokens, 40);
  });

  it("same seed and input give the same output; another seed differs", async () => {
    const req = { prompt: "Tom had a dog", maxTokens: 40, temperature: 1, seed: 42 };
    const a = await model.generate!(req, { signal });
    const b = await model.generate!(req, { signal });
    const c = await model.generate!({ ...req, seed: 7 }, { signal });
    assert.equal(a.text, b.text);
    assert.notEqual(a.text, c.text);
  });

  it("stop strings end generation before the stop text", async () => {
    const r = await model.generate!({ prompt: "Once upon a time", maxTokens: 100, temperature: 0, stop: ["Lily"] }, { signal });
    assert.equal(r.text, ", there was a little girl named");
    assert.equal(r.finishReason, "stop");
  });

  it("a JSON schema grammar yields schema-valid JSON", async () => {
    const schema = {
      type: "object",
      properties: { name: { type: "string" }, age: { type: "integer" }, happy: { type: "boolean" }, color: { enum: ["red", "blue"] } },
      required: ["name", "age", "happy", "color"],
    };
    for (const seed of [1, 2, 3]) {
      const r = await model.generate!({ prompt: "Lily is", maxTokens: 16, temperature: 0.8, seed, responseFormat: { type: "json_schema", schema } }, { signal });
      const v = JSON.parse(r.text) as Record<string, unknown>;
      assert.equal(typeof v.name, "string");
      assert.ok(Number.isInteger(v.age));
      assert.equal(typeof v.happy, "boolean");
      assert.ok(v.color === "red" || v.color === "blue");
    }
  });

  it("aborting stops generation at once", async () => {
    const ac = new AbortController();
    let chunks = 0;
    const r = await model.generate!(
      { prompt: "Once upon a time", maxTokens: 2000, temperature: 0.8, seed: 1 },
      {
        signal: ac.signal,
        onText: () => {
          if (++chunks === 3) ac.abort();
        },
      },
    );
    assert.equal(r.finishReason, "abort");
    assert.ok(r.usage.completion_tokens < 10, `generated ${r.usage.completion_tokens} tokens after abort`);
  });

  it("embeds text into normalised vectors of the model's width", async () => {
    const r = await model.embed!(["Lily likes the park", "Lily likes the park", "A red ball"], { signal });
    assert.equal(r.vectors.length, 3);
    assert.equal(r.vectors[0]!.length, 64);
    const norm = Math.hypot(...r.vectors[0]!);
    assert.ok(Math.abs(norm - 1) < 1e-6);
    assert.deepEqual(r.vectors[0], r.vectors[1]);
    assert.notDeepEqual(r.vectors[0], r.vectors[2]);
  });
});
