/**
 * The embeddings path on a real embedding *architecture*: a synthetic `bert` GGUF (random weights,
 * WordPiece vocab) committed as test/fixtures/tiny-bert.gguf, served by a real node as @local/bert.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { writeSyntheticBert } from "../../bench/synthetic-gguf.js";
import { inspectGguf } from "../../src/engines/llama/index.js";
import { TINY_BERT_DIM, TINY_BERT_OPTIONS, TINY_BERT_PATH } from "../fixtures/make-tiny-bert.js";
import { ACCOUNT, startTestNode, TOKEN, type TestNode } from "../helpers.js";
import { cosine } from "../fixtures/labelled.js";

type Envelope<T = Record<string, unknown>> = { result: T; success: boolean; errors: { code: number; message: string }[]; messages: unknown[] };
type Embeddings = { shape: number[]; data: number[][]; pooling?: string };

const DIM = TINY_BERT_DIM;


function assertUnit(v: readonly number[], what: string): void {
  assert.equal(v.length, DIM, `${what}: ${DIM} dimensions`);
  assert.ok(v.every(Number.isFinite), `${what}: finite`);
  assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5, `${what}: unit norm (got ${Math.hypot(...v)})`);
}

describe("synthetic BERT fixture", () => {
  it("is reproducible byte for byte from test/fixtures/make-tiny-bert.ts", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-bert-"));
    try {
      const res = await writeSyntheticBert({ ...TINY_BERT_OPTIONS, path: path.join(dir, "bert.gguf") });
      const [fresh, committed] = await Promise.all([fs.readFile(res.path), fs.readFile(TINY_BERT_PATH)]);
      assert.equal(res.bytes, committed.length);
      assert.ok(committed.length < 512 * 1024, `fixture stays small (${committed.length} bytes)`);
      assert.ok(fresh.equals(committed), "regenerate with: node --import tsx test/fixtures/make-tiny-bert.ts");
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("inspectGguf reads it as a text-embeddings model", async () => {
    assert.deepEqual(await inspectGguf(TINY_BERT_PATH), { task: "text-embeddings", engine: "llama" });
  });
});

describe("embedding model served by a node as @local/bert", () => {
  let node: TestNode;
  let client: OpenAI;
  const run = (body: unknown) => node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/@local/bert`, body);
  const embed = async (text: string | string[]): Promise<Embeddings> => {
    const r = await run({ text });
    assert.equal(r.status, 200, await r.clone().text());
    const body = (await r.json()) as Envelope<Embeddings>;
    assert.equal(body.success, true);
    return body.result;
  };

  before(async () => {
    node = await startTestNode();
    await fs.copyFile(TINY_BERT_PATH, path.join(node.modelsDir, "bert.gguf"));
    client = new OpenAI({ apiKey: TOKEN, baseURL: `${node.url}/v1`, maxRetries: 0 });
  });
  after(async () => {
    await node?.close();
  });

  it("Workers AI run: one unit vector per text, identical texts identical", async () => {
    const res = await embed(["hello world", "hello world", "green tea"]);
    assert.deepEqual(res.shape, [3, DIM]);
    assert.equal(res.data.length, 3);
    res.data.forEach((v, i) => assertUnit(v, `vector ${i}`));
    assert.deepEqual(res.data[0], res.data[1]);
    assert.notDeepEqual(res.data[0], res.data[2]);
    assert.equal(res.pooling, "mean");

    // A single string is a batch of one, with the same vector.
    const one = await embed("hello world");
    assert.deepEqual(one.shape, [1, DIM]);
    one.data[0]!.forEach((x, i) => assert.ok(Math.abs(x - res.data[0]![i]!) < 1e-6));
  });

  it("vectors follow the text: the WordPiece tokenizer lowercases, and shared words mean closer vectors", async () => {
    const [hw, upper, ht, gt, gw, bc] = (await embed(["hello world", "Hello WORLD", "hello tea", "green tea", "green world", "black coffee"])).data as [
      number[],
      number[],
      number[],
      number[],
      number[],
      number[],
    ];
    // BERT's normalizer lowercases, so these are the same tokens.
    upper.forEach((x, i) => assert.ok(Math.abs(x - hw[i]!) < 1e-6, "Hello WORLD embeds like hello world"));
    // Sharing a word beats sharing none, from every side (measured on this fixture: ~0.5-0.7 vs ~0-0.3).
    const margin = 0.2;
    const shared: [string, number[], number[], number[]][] = [
      ["hello world ~ hello tea vs green tea", hw, ht, gt],
      ["hello world ~ green world vs black coffee", hw, gw, bc],
      ["green tea ~ hello tea vs hello world", gt, ht, hw],
      ["green tea ~ green world vs black coffee", gt, gw, bc],
      ["hello tea ~ hello world vs black coffee", ht, hw, bc],
    ];
    for (const [what, a, near, far] of shared) {
      const [n, f] = [cosine(a, near), cosine(a, far)];
      assert.ok(n > f + margin, `${what}: ${n.toFixed(3)} should exceed ${f.toFixed(3)} by ${margin}`);
    }
  });

  it("OpenAI /v1/embeddings through the openai SDK gives the same vectors", async () => {
    const wai = await embed(["hello world", "hello world", "green tea"]);
    const r = await client.embeddings.create({ model: "@local/bert", input: ["hello world", "hello world", "green tea"] });
    assert.equal(r.object, "list");
    assert.equal(r.model, "@local/bert");
    assert.equal(r.data.length, 3);
    r.data.forEach((d, i) => {
      assert.equal(d.index, i);
      assertUnit(d.embedding, `openai vector ${i}`);
      // The SDK asks for base64 (float32) by default: equal to the Workers AI numbers to float32 precision.
      d.embedding.forEach((x, j) => assert.ok(Math.abs(x - wai.data[i]![j]!) < 1e-6));
    });
    assert.deepEqual(r.data[0]!.embedding, r.data[1]!.embedding);
    assert.notDeepEqual(r.data[0]!.embedding, r.data[2]!.embedding);
    // Whole-word WordPiece tokens: two per text (the [CLS]/[SEP] the engine adds are not counted).
    assert.equal(r.usage.prompt_tokens, 6);

    const f = await client.embeddings.create({ model: "@local/bert", input: "green tea", encoding_format: "float" });
    f.data[0]!.embedding.forEach((x, j) => assert.ok(Math.abs(x - r.data[2]!.embedding[j]!) < 1e-6));
  });

  it("asking an embedding model for text generation is 400 / 5007", async () => {
    const r = await run({ prompt: "hi" });
    const body = (await r.json()) as Envelope;
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(body.success, false);
    assert.equal(body.errors[0]?.code, 5007, JSON.stringify(body.errors));

    await assert.rejects(client.chat.completions.create({ model: "@local/bert", messages: [{ role: "user", content: "hi" }] }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.code, 5007 as unknown as string);
      return true;
    });
    await assert.rejects(client.completions.create({ model: "@local/bert", prompt: "hi" }), OpenAI.BadRequestError);
  });

  it("the models search lists @local/bert as a Text Embeddings model", async () => {
    const r = await fetch(`${node.ai}/models/search`, { headers: node.headers });
    assert.equal(r.status, 200);
    const body = (await r.json()) as Envelope<{ name: string; task: { name: string }; source: string; size: number; installed: boolean }[]>;
    const bert = body.result.find((m) => m.name === "@local/bert");
    assert.ok(bert, "listed");
    assert.equal(bert.task.name, "Text Embeddings");
    assert.equal(bert.source, "local");
    assert.equal(bert.installed, true);
    assert.equal(bert.size, (await fs.stat(TINY_BERT_PATH)).size);

    const filtered = (await (await fetch(`${node.ai}/models/search?task=text-embeddings`, { headers: node.headers })).json()) as Envelope<{ name: string }[]>;
    assert.ok(filtered.result.some((m) => m.name === "@local/bert"));
    assert.ok(!filtered.result.some((m) => m.name === "@local/stories"));
  });
});
