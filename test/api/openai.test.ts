import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { ACCOUNT, startTestNode, STORIES_REFERENCE, TOKEN, type TestNode } from "../helpers.js";

describe("OpenAI-compatible API through the openai SDK", () => {
  let node: TestNode;
  let client: OpenAI;

  before(async () => {
    node = await startTestNode();
    client = new OpenAI({ apiKey: TOKEN, baseURL: `${node.url}/client/v4/accounts/${ACCOUNT}/ai/v1`, maxRetries: 0 });
  });
  after(async () => {
    await node?.close();
  });

  it("chat completions", async () => {
    const r = await client.chat.completions.create({ model: "@local/stories", messages: [{ role: "user", content: "Once upon a time" }], temperature: 0, max_tokens: 20 });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices[0]!.message.role, "assistant");
    assert.ok(STORIES_REFERENCE.startsWith(`Once upon a time${r.choices[0]!.message.content}`), r.choices[0]!.message.content ?? "");
    assert.equal(r.choices[0]!.finish_reason, "length");
    assert.equal(r.usage?.completion_tokens, 20);
  });

  it("streaming chat with include_usage gives the same text as non-streaming", async () => {
    const params = { model: "@local/stories", messages: [{ role: "user" as const, content: "The cat" }], temperature: 0.8, seed: 99, max_tokens: 30 };
    const plain = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let usage: unknown = null;
    let finish: string | null = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (c?.delta.content) text += c.delta.content;
      if (c?.finish_reason) finish = c.finish_reason;
    }
    assert.ok(chunks > 3);
    assert.equal(text, plain.choices[0]!.message.content);
    assert.equal(finish, "length");
    assert.deepEqual(usage, plain.usage);
  });

  it("the /v1 alias serves the same API", async () => {
    const alias = new OpenAI({ apiKey: TOKEN, baseURL: `${node.url}/v1`, maxRetries: 0 });
    const r = await alias.completions.create({ model: "@local/stories", prompt: "Once upon a time", temperature: 0, max_tokens: 10 });
    assert.equal(r.object, "text_completion");
    assert.ok(STORIES_REFERENCE.startsWith(`Once upon a time${r.choices[0]!.text}`));
    const s = await alias.completions.create({ model: "@local/stories", prompt: "Once upon a time", temperature: 0, max_tokens: 10, stream: true });
    let text = "";
    for await (const chunk of s) text += chunk.choices[0]?.text ?? "";
    assert.equal(text, r.choices[0]!.text);
  });

  it("embeddings (the SDK asks for base64 and decodes it)", async () => {
    const r = await client.embeddings.create({ model: "@local/stories", input: ["Lily", "Lily", "a big red ball"] });
    assert.equal(r.data.length, 3);
    assert.equal(r.data[0]!.embedding.length, 64);
    assert.deepEqual(r.data[0]!.embedding, r.data[1]!.embedding);
    assert.notDeepEqual(r.data[0]!.embedding, r.data[2]!.embedding);
    assert.ok(Math.abs(Math.hypot(...r.data[0]!.embedding) - 1) < 1e-5);
    const f = await client.embeddings.create({ model: "@local/stories", input: "Lily", encoding_format: "float" });
    for (let i = 0; i < 64; i++) assert.ok(Math.abs(f.data[0]!.embedding[i]! - r.data[0]!.embedding[i]!) < 1e-6);
  });

  it("lists installed models", async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes("@local/stories"));
    assert.ok(ids.includes("@borde/stories260k"));
    assert.ok(!ids.includes("@cf/meta/llama-3.2-1b-instruct"), "not installed");
  });

  it("JSON schema response_format", async () => {
    const r = await client.chat.completions.create({
      model: "@local/stories",
      messages: [{ role: "user", content: "Describe Tom" }],
      seed: 4,
      max_tokens: 20,
      response_format: { type: "json_schema", json_schema: { name: "person", schema: { type: "object", properties: { name: { type: "string" }, age: { type: "integer" } }, required: ["name", "age"] } } },
    });
    const v = JSON.parse(r.choices[0]!.message.content!) as { name: unknown; age: unknown };
    assert.equal(typeof v.name, "string");
    assert.ok(Number.isInteger(v.age));
  });

  it("tool calls, plain and streamed in OpenAI's delta format", async () => {
    const tools = [
      { type: "function" as const, function: { name: "get_weather", description: "Weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } },
    ];
    const params = { model: "@local/stories", messages: [{ role: "user" as const, content: "Weather in Oslo?" }], tools, tool_choice: "required" as const, seed: 3, max_tokens: 20 };
    const r = await client.chat.completions.create(params);
    assert.equal(r.choices[0]!.finish_reason, "tool_calls");
    const call = r.choices[0]!.message.tool_calls![0]! as { id: string; type: string; function: { name: string; arguments: string } };
    assert.equal(call.type, "function");
    assert.equal(call.function.name, "get_weather");
    assert.equal(typeof (JSON.parse(call.function.arguments) as { city: unknown }).city, "string");

    const stream = await client.chat.completions.create({ ...params, stream: true });
    const calls: { id?: string; name?: string; args: string }[] = [];
    let finish = null;
    for await (const chunk of stream) {
      for (const d of chunk.choices[0]?.delta.tool_calls ?? []) {
        calls[d.index] ??= { args: "" };
        if (d.id) calls[d.index]!.id = d.id;
        if (d.function?.name) calls[d.index]!.name = d.function.name;
        calls[d.index]!.args += d.function?.arguments ?? "";
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(finish, "tool_calls");
    assert.equal(calls.length, 1);
    assert.equal(calls[0]!.name, "get_weather");
    assert.match(calls[0]!.id ?? "", /^call_/);
    assert.deepEqual(JSON.parse(calls[0]!.args), JSON.parse(call.function.arguments), "same seed, same call");
  });

  it("errors reach the SDK as typed API errors with the message", async () => {
    await assert.rejects(client.chat.completions.create({ model: "@cf/nobody/nothing", messages: [{ role: "user", content: "x" }] }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.match(e.message, /No such model/);
      return true;
    });
    const bad = new OpenAI({ apiKey: "wrong-token", baseURL: `${node.url}/v1`, maxRetries: 0 });
    await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
  });
});
