import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { ACCOUNT, sseEvents, startTestNode, STORIES_REFERENCE, TOKEN, type TestNode } from "../helpers.js";

type Envelope<T = Record<string, unknown>> = { result: T; success: boolean; errors: { code: number; message: string }[]; messages: unknown[] };

describe("Workers AI REST API", () => {
  let node: TestNode;
  const run = (model: string, body: unknown, init?: RequestInit) => node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/${model}`, body, init);

  before(async () => {
    node = await startTestNode();
  });
  after(async () => {
    await node?.close();
  });

  it("answers health, readiness and a request id header", async () => {
    const h = await fetch(`${node.url}/healthz`);
    assert.equal(h.status, 200);
    assert.equal((await fetch(`${node.url}/readyz`)).status, 200);
    const r = await run("@local/stories", { prompt: "Once upon a time", max_tokens: 2 }, { headers: { ...node.headers, "x-request-id": "my-req-1" } });
    assert.equal(r.headers.get("x-request-id"), "my-req-1");
    assert.ok(node.logs.some((l) => l.includes('"reqId":"my-req-1"')), "logs carry the request id");
  });

  it("refuses a missing or wrong token with 401 in the envelope, another account with 403", async () => {
    for (const headers of [{}, { authorization: "Bearer nope-nope-nope" }, { authorization: `Basic ${TOKEN}` }] as Record<string, string>[]) {
      const r = await fetch(`${node.ai}/run/@local/stories`, { method: "POST", headers, body: JSON.stringify({ prompt: "x" }) });
      assert.equal(r.status, 401);
      const body = (await r.json()) as Envelope;
      assert.deepEqual({ ...body, errors: body.errors.map((e) => e.code) }, { result: null, success: false, errors: [10000], messages: [] });
    }
    const r = await node.post(`/client/v4/accounts/someone-else/ai/run/@local/stories`, { prompt: "x" });
    assert.equal(r.status, 403);
    assert.equal(((await r.json()) as Envelope).errors[0]!.code, 10001);
  });

  it("greedy generation continues the reference story, with usage", async () => {
    const r = await run("@local/stories", { prompt: "Once upon a time", temperature: 0, max_tokens: 30 });
    assert.equal(r.status, 200);
    const body = (await r.json()) as Envelope<{ response: string; usage: Record<string, number> }>;
    assert.equal(body.success, true);
    assert.deepEqual(body.errors, []);
    assert.ok(STORIES_REFERENCE.startsWith(`Once upon a time${body.result.response}`), body.result.response);
    assert.deepEqual(body.result.usage, { prompt_tokens: 5, completion_tokens: 30, total_tokens: 35 });
  });

  it("the bundled model answers with no models installed", async () => {
    const r = await run("@borde/stories260k", { prompt: "Once upon a time", temperature: 0, max_tokens: 8 });
    assert.equal(r.status, 200);
  });

  it("streams SSE framed exactly like Workers AI, with the same text as non-streaming for the same seed", async () => {
    const body = { prompt: "Tom and Sue", temperature: 0.9, seed: 1234, max_tokens: 40 };
    const plain = (await (await run("@local/stories", body)).json()) as Envelope<{ response: string; usage: unknown }>;
    const r = await run("@local/stories", { ...body, stream: true });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "text/event-stream");
    const raw = await r.text();
    const events = sseEvents(raw);
    assert.equal(events.at(-1), "[DONE]");
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e) as { response: string; usage?: unknown });
    const last = parsed.at(-1)!;
    assert.deepEqual(last, { response: "", usage: plain.result.usage });
    const text = parsed.slice(0, -1).map((e) => e.response).join("");
    assert.equal(text, plain.result.response);
    // Byte-exact: rebuilding the stream from its events gives back the same bytes.
    const rebuilt = parsed.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("") + "data: [DONE]\n\n";
    assert.equal(raw, rebuilt);
    for (const e of parsed.slice(0, -1)) assert.deepEqual(Object.keys(e), ["response"]);
  });

  it("a greedy stream is byte-identical to the recorded Workers AI wire fixture", async () => {
    const expected = await readFile(new URL("../fixtures/sse/workers-ai-stories-greedy-5.txt", import.meta.url), "utf8");
    const r = await run("@local/stories", { prompt: "Once upon a time", temperature: 0, max_tokens: 5, stream: true });
    assert.equal(r.headers.get("content-type"), "text/event-stream");
    assert.equal(await r.text(), expected);
  });

  it("messages on a model without a chat template complete as plain text", async () => {
    const r = await run("@local/stories", { messages: [{ role: "user", content: "Once upon a time" }], temperature: 0, max_tokens: 10 });
    assert.equal(r.status, 200);
    const body = (await r.json()) as Envelope<{ response: string }>;
    assert.ok(STORIES_REFERENCE.startsWith(`Once upon a time${body.result.response}`));
  });

  it("response_format json_schema returns schema-valid JSON", async () => {
    const schema = { type: "object", properties: { hero: { type: "string" }, friends: { type: "integer" } }, required: ["hero", "friends"] };
    for (const seed of [1, 2]) {
      const r = await run("@local/stories", { prompt: "Lily", seed, max_tokens: 24, response_format: { type: "json_schema", json_schema: schema } });
      assert.equal(r.status, 200);
      const v = JSON.parse(((await r.json()) as Envelope<{ response: string }>).result.response) as { hero: unknown; friends: unknown };
      assert.equal(typeof v.hero, "string");
      assert.ok(Number.isInteger(v.friends));
    }
    const j = await run("@local/stories", { prompt: "Lily", seed: 3, max_tokens: 24, response_format: { type: "json_object" } });
    assert.equal(j.status, 200);
    const obj = JSON.parse(((await j.json()) as Envelope<{ response: string }>).result.response) as unknown;
    assert.equal(typeof obj, "object");
  });

  it("tools: a required call comes back with arguments valid for its schema; auto gives text or valid calls", async () => {
    const tools = [
      { name: "get_weather", description: "Weather for a city", parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } }, required: ["city", "days"] } },
      { type: "function", function: { name: "set_alarm", description: "Set an alarm", parameters: { type: "object", properties: { hour: { type: "integer" } }, required: ["hour"] } } },
    ];
    const r = await run("@local/stories", { prompt: "What is the weather in Paris?", tools, tool_choice: { type: "function", function: { name: "get_weather" } }, seed: 5, max_tokens: 30 });
    assert.equal(r.status, 200);
    const body = (await r.json()) as Envelope<{ response: string; tool_calls: { name: string; arguments: { city: unknown; days: unknown } }[] }>;
    assert.equal(body.result.tool_calls.length, 1);
    assert.equal(body.result.tool_calls[0]!.name, "get_weather");
    assert.equal(typeof body.result.tool_calls[0]!.arguments.city, "string");
    assert.ok(Number.isInteger(body.result.tool_calls[0]!.arguments.days));

    const auto = await run("@local/stories", { messages: [{ role: "user", content: "Wake me at 7" }], tools, seed: 1, max_tokens: 30 });
    assert.equal(auto.status, 200);
    const a = (await auto.json()) as Envelope<{ response: string; tool_calls?: { name: string; arguments: unknown }[] }>;
    assert.equal(typeof a.result.response, "string");
    for (const c of a.result.tool_calls ?? []) assert.ok(["get_weather", "set_alarm"].includes(c.name));
  });

  it("embeds text through a GGUF model: {text} -> {shape, data}", async () => {
    const r = await run("@local/stories", { text: ["Lily", "a red ball"] });
    assert.equal(r.status, 200);
    const body = (await r.json()) as Envelope<{ shape: number[]; data: number[][]; pooling: string }>;
    assert.deepEqual(body.result.shape, [2, 64]);
    assert.equal(body.result.pooling, "last", "a causal llama has no pooling of its own: the last token's state");
    assert.equal(body.result.data.length, 2);
  });

  it("an unknown model is 400/5007; a catalog model not installed says how to pull it", async () => {
    const r = await run("@cf/nobody/nothing", { prompt: "x" });
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as Envelope).errors[0]!.code, 5007);
    const c = await run("@cf/meta/llama-3.2-1b-instruct", { prompt: "x" });
    assert.equal(c.status, 400);
    const e = ((await c.json()) as Envelope).errors[0]!;
    assert.equal(e.code, 5007);
    assert.match(e.message, /borde models pull @cf\/meta\/llama-3.2-1b-instruct/);
  });

  it("lists the catalog with task, source, size and installed", async () => {
    const r = await fetch(`${node.ai}/models/search`, { headers: node.headers });
    assert.equal(r.status, 200);
    const body = (await r.json()) as Envelope<{ name: string; task: { name: string }; source: string; size: number | null; installed: boolean }[]>;
    const byName = new Map(body.result.map((m) => [m.name, m]));
    assert.equal(byName.get("@local/stories")?.installed, true);
    assert.equal(byName.get("@local/stories")?.task.name, "Text Generation");
    assert.equal(byName.get("@local/stories")?.size, 1185376);
    assert.equal(byName.get("@borde/stories260k")?.source, "bundled");
    for (const id of ["@cf/meta/llama-3.2-1b-instruct", "@cf/meta/llama-3.2-3b-instruct", "@cf/meta/llama-3.1-8b-instruct", "@cf/baai/bge-small-en-v1.5", "@cf/baai/bge-base-en-v1.5"]) {
      assert.equal(byName.get(id)?.installed, false, id);
    }
    assert.equal(byName.get("@cf/baai/bge-small-en-v1.5")?.task.name, "Text Embeddings");
    const filtered = (await (await fetch(`${node.ai}/models/search?task=text-embeddings`, { headers: node.headers })).json()) as Envelope<{ name: string }[]>;
    assert.ok(filtered.result.every((m) => m.name.includes("bge") || m.name === "@borde/use-lite"), "only embedding models");
  });

  it("exposes Prometheus metrics: requests, latency, tokens, queue, loaded models and memory", async () => {
    const text = await (await fetch(`${node.url}/metrics`)).text();
    assert.match(text, /borde_http_requests_total\{route="\/client\/v4\/accounts\/:account\/ai\/run\/:model\{\.\+\}",model="@local\/stories",status="200"\} \d+/);
    assert.match(text, /borde_http_request_duration_seconds_bucket\{/);
    assert.match(text, /borde_tokens_total\{model="@local\/stories",direction="out"\} \d+/);
    assert.match(text, /borde_queue_depth\{model="@local\/stories"\} 0/);
    assert.match(text, /borde_models_loaded [12]/);
    assert.match(text, /borde_model_memory_bytes\{model="@local\/stories"\} [1-9]\d+/);
    assert.match(text, /borde_time_to_first_token_seconds_count\{model="@local\/stories"\} [1-9]/);
  });
});
