/**
 * The chat path (LlamaChat + the model's own chat template) on a model that has one: a synthetic
 * `llama` GGUF with Qwen2.5's ChatML template, committed as test/fixtures/tiny-chatml.gguf and served
 * by a real node as @local/chat. Its weights are random, so the text is gibberish: only properties
 * that must hold whatever the model says are asserted.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { getLlama, JinjaTemplateChatWrapper, LlamaLogLevel, readGgufFileInfo, resolveChatWrapper } from "node-llama-cpp";
import OpenAI from "openai";
import { writeSyntheticLlama } from "../../bench/synthetic-gguf.js";
import { inspectGguf } from "../../src/engines/llama/index.js";
import { TINY_CHATML_OPTIONS, TINY_CHATML_PATH } from "../fixtures/make-tiny-chatml.js";
import { ACCOUNT, sseEvents, startTestNode, TOKEN, type TestNode } from "../helpers.js";

type Envelope<T = Record<string, unknown>> = { result: T; success: boolean; errors: { code: number; message: string }[]; messages: unknown[] };
type Usage = { prompt_tokens: number; completion_tokens: number; total_tokens: number };
type TextResult = { response: string; tool_calls?: { name: string; arguments: unknown }[]; usage: Usage };
type Schema = Record<string, unknown>;

const MODEL = "@local/chat";
const SYSTEM = "You are a terse assistant.";
const MESSAGES = [
  { role: "system", content: SYSTEM },
  { role: "user", content: "hello" },
];

// No number-typed arguments here: see the `todo` tests at the end for integers.
const WEATHER: Schema = {
  type: "object",
  properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] }, hourly: { type: "boolean" } },
  required: ["city", "unit"],
};
const NOTE: Schema = { type: "object", properties: { title: { type: "string" }, tags: { type: "array", items: { type: "string" } } }, required: ["title"] };
const ALARM: Schema = { type: "object", properties: { hour: { type: "integer" }, label: { type: "string" } }, required: ["hour"] };
const tool = (name: string, description: string, parameters: Schema) => ({ type: "function" as const, function: { name, description, parameters } });
const TOOLS = [tool("get_weather", "Weather forecast for a city", WEATHER), tool("add_note", "Save a note", NOTE)];
const SCHEMAS: Record<string, Schema> = { get_weather: WEATHER, add_note: NOTE, set_alarm: ALARM };

/**
 * Validates `value` against the JSON-schema subset used here (object/string/integer/number/boolean/
 * array, enum, required, properties; objects may hold only their listed properties, as the grammars
 * node-llama-cpp builds allow no others). Returns the problems found, empty when valid.
 */
function schemaErrors(value: unknown, schema: Schema, at = "$"): string[] {
  if (Array.isArray(schema.enum)) return schema.enum.some((e) => e === value) ? [] : [`${at}: ${JSON.stringify(value)} not in enum`];
  switch (schema.type) {
    case "object": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) return [`${at}: not an object`];
      const props = (schema.properties ?? {}) as Record<string, Schema>;
      const out: string[] = [];
      for (const r of (schema.required ?? []) as string[]) if (!(r in value)) out.push(`${at}.${r}: required`);
      for (const [k, v] of Object.entries(value)) {
        const p = props[k];
        if (!p) out.push(`${at}.${k}: not in the schema`);
        else out.push(...schemaErrors(v, p, `${at}.${k}`));
      }
      return out;
    }
    case "array": {
      if (!Array.isArray(value)) return [`${at}: not an array`];
      const items = schema.items as Schema | undefined;
      return items ? value.flatMap((v, i) => schemaErrors(v, items, `${at}[${i}]`)) : [];
    }
    case "string":
      return typeof value === "string" ? [] : [`${at}: not a string`];
    case "integer":
      return Number.isInteger(value) ? [] : [`${at}: not an integer`];
    case "number":
      return typeof value === "number" && Number.isFinite(value) ? [] : [`${at}: not a number`];
    case "boolean":
      return typeof value === "boolean" ? [] : [`${at}: not a boolean`];
    default:
      return [];
  }
}

function assertValidCall(c: { name: string; arguments: unknown }): void {
  const schema = SCHEMAS[c.name];
  assert.ok(schema, `call names a listed tool (got ${JSON.stringify(c.name)})`);
  assert.deepEqual(schemaErrors(c.arguments, schema), [], `arguments ${JSON.stringify(c.arguments)} valid for ${c.name}`);
}

describe("ChatML fixture", () => {
  it("is reproducible byte for byte from test/fixtures/make-tiny-chatml.ts", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-chatml-"));
    try {
      const res = await writeSyntheticLlama({ ...TINY_CHATML_OPTIONS, path: path.join(dir, "chat.gguf") });
      const [fresh, committed] = await Promise.all([fs.readFile(res.path), fs.readFile(TINY_CHATML_PATH)]);
      assert.equal(res.bytes, committed.length);
      assert.ok(committed.length < 1024 * 1024, `fixture stays small (${committed.length} bytes)`);
      assert.ok(fresh.equals(committed), "regenerate with: node --import tsx test/fixtures/make-tiny-chatml.ts");
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("has a chat template, ChatML control tokens and <|im_end|> as EOS; node-llama-cpp renders it with the Jinja wrapper", async () => {
    const info = await readGgufFileInfo(TINY_CHATML_PATH, { logWarnings: false });
    const tok = info.metadata.tokenizer;
    assert.equal(tok.chat_template, TINY_CHATML_OPTIONS.chatTemplate);
    assert.equal(tok.ggml.tokens.length, TINY_CHATML_OPTIONS.vocabSize);
    const id = (t: string) => tok.ggml.tokens.indexOf(t);
    assert.equal(tok.ggml.token_type?.[id("<|im_start|>")], 3);
    assert.equal(tok.ggml.token_type?.[id("<|im_end|>")], 3);
    assert.equal(tok.ggml.token_type?.[id("<tool_call>")], 4);
    assert.equal(tok.ggml.eos_token_id, id("<|im_end|>"));
    assert.deepEqual(await inspectGguf(TINY_CHATML_PATH), { task: "text-generation", engine: "llama" });

    const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: TINY_CHATML_PATH, gpuLayers: 0 });
    try {
      assert.equal(model.tokens.eos, id("<|im_end|>"));
      assert.equal(model.tokenize("<|im_start|>", true).length, 1, "control token is one token");
      // A `llama` architecture rules out QwenChatWrapper (qwen2/qwen3 only), and the template's tool
      // section differs from ChatMLChatWrapper's, so the template itself renders chats.
      const wrapper = resolveChatWrapper(model);
      assert.ok(wrapper instanceof JinjaTemplateChatWrapper, `resolved ${wrapper.wrapperName}`);
      const { contextText } = wrapper.generateContextState({
        chatHistory: [{ type: "system", text: SYSTEM }, { type: "user", text: "hello" }, { type: "model", response: [] }],
      });
      assert.equal(contextText.toString(), `<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n`);
    } finally {
      await model.dispose();
      await llama.dispose();
    }
  });
});

describe("chat template path served by a node as @local/chat", () => {
  let node: TestNode;
  let client: OpenAI;
  const run = (body: unknown) => node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/${MODEL}`, body);
  const text = async (body: Record<string, unknown>): Promise<TextResult> => {
    const r = await run(body);
    const raw = await r.text();
    assert.equal(r.status, 200, raw);
    const env = JSON.parse(raw) as Envelope<TextResult>;
    assert.equal(env.success, true);
    assert.equal(typeof env.result.response, "string");
    return env.result;
  };

  /** Token counts as this model's tokenizer gives them (loaded in-process, apart from the node's). */
  let plainTokens = 0;
  let templatedTokens = 0;

  before(async () => {
    const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: TINY_CHATML_PATH, gpuLayers: 0 });
    try {
      // raw: the contents joined with a blank line, no BOS (add_bos_token is false): no markup at all.
      plainTokens = model.tokenize(`${SYSTEM}\n\nhello`, false).length;
      templatedTokens = model.tokenize(`<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n`, true).length;
    } finally {
      await model.dispose();
      await llama.dispose();
    }
    node = await startTestNode({ parallel: 2 });
    await fs.copyFile(TINY_CHATML_PATH, path.join(node.modelsDir, "chat.gguf"));
    client = new OpenAI({ apiKey: TOKEN, baseURL: `${node.url}/v1`, maxRetries: 0 });
  });
  after(async () => {
    await node?.close();
  });

  it("messages go through the template: more prompt tokens than the same messages with raw", async () => {
    const chat = await text({ messages: MESSAGES, max_tokens: 16, temperature: 0 });
    const raw = await text({ messages: MESSAGES, raw: true, max_tokens: 16, temperature: 0 });
    assert.ok(templatedTokens > plainTokens);
    assert.equal(raw.usage.prompt_tokens, plainTokens);
    assert.ok(chat.usage.prompt_tokens > raw.usage.prompt_tokens, `chat ${chat.usage.prompt_tokens} > raw ${raw.usage.prompt_tokens}`);
    assert.ok(raw.usage.completion_tokens >= 1 && raw.usage.completion_tokens <= 16);
    for (const u of [chat.usage, raw.usage]) assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  });

  it("the same seed gives the same response; streaming gives the same text", async () => {
    const body = { messages: MESSAGES, temperature: 0.8, seed: 7, max_tokens: 40 };
    const a = await text(body);
    const b = await text(body);
    assert.equal(a.response, b.response);
    assert.deepEqual(a.usage, b.usage);

    const r = await run({ ...body, stream: true });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type") ?? "", /text\/event-stream/);
    const events = sseEvents(await r.text());
    assert.equal(events.at(-1), "[DONE]");
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e) as { response: string; usage?: Usage });
    assert.equal(parsed.map((e) => e.response).join(""), a.response);
    assert.deepEqual(parsed.at(-1)?.usage, a.usage);
  });

  it("tools, tool_choice auto: a string response and only valid calls of listed tools", async () => {
    for (const seed of [1, 2, 3]) {
      const res = await text({ messages: [{ role: "user", content: "What is the weather in Paris?" }], tools: TOOLS, seed, temperature: 0.8, max_tokens: 40 });
      for (const c of res.tool_calls ?? []) assertValidCall(c);
      assert.ok(res.usage.prompt_tokens > 0);
    }
  });

  it("tools, a named tool_choice: exactly one call of that tool with valid arguments", async () => {
    for (const name of ["get_weather", "add_note"]) {
      const res = await text({ messages: MESSAGES, tools: TOOLS, tool_choice: { type: "function", function: { name } }, seed: 5, max_tokens: 30 });
      assert.equal(res.tool_calls?.length, 1, JSON.stringify(res));
      assert.equal(res.tool_calls[0]!.name, name);
      assertValidCall(res.tool_calls[0]!);
    }
  });

  it("OpenAI SDK: chat completions with tools, plain and streamed, finish with a valid finish_reason", async () => {
    const params = { model: MODEL, messages: [{ role: "user" as const, content: "Weather in Oslo?" }], tools: TOOLS, seed: 11, temperature: 0.8, max_tokens: 30 };
    const plain = await client.chat.completions.create(params);
    const choice = plain.choices[0]!;
    assert.ok(["stop", "length", "tool_calls"].includes(choice.finish_reason), choice.finish_reason);
    const calls = (choice.message.tool_calls ?? []) as { function: { name: string; arguments: string } }[];
    assert.equal(choice.finish_reason === "tool_calls", calls.length > 0);
    for (const c of calls) assertValidCall({ name: c.function.name, arguments: JSON.parse(c.function.arguments) });

    const stream = await client.chat.completions.create({ ...params, stream: true });
    let content = "";
    let finish: string | null = null;
    const streamed: { name: string; arguments: string }[] = [];
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      assert.equal(finish, null, "nothing after the finish_reason chunk");
      content += c.delta.content ?? "";
      for (const d of c.delta.tool_calls ?? []) {
        const slot = (streamed[d.index] ??= { name: "", arguments: "" });
        slot.name += d.function?.name ?? "";
        slot.arguments += d.function?.arguments ?? "";
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.equal(finish, choice.finish_reason);
    assert.equal(content, choice.message.content ?? "");
    assert.deepEqual(streamed.map((c) => c.name), calls.map((c) => c.function.name));
    for (const c of streamed) assertValidCall({ name: c.name, arguments: JSON.parse(c.arguments) });
  });

  it("OpenAI SDK: a forced tool call comes back as one valid call", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Note: buy milk" }],
      tools: TOOLS,
      tool_choice: "required",
      seed: 2,
      max_tokens: 30,
    });
    assert.equal(r.choices[0]!.finish_reason, "tool_calls");
    const calls = (r.choices[0]!.message.tool_calls ?? []) as { function: { name: string; arguments: string } }[];
    assert.equal(calls.length, 1);
    assertValidCall({ name: calls[0]!.function.name, arguments: JSON.parse(calls[0]!.function.arguments) });
  });

  it("response_format json_schema through the chat path returns schema-valid JSON", async () => {
    const schema: Schema = {
      type: "object",
      properties: { name: { type: "string" }, mood: { enum: ["happy", "sad"] }, tags: { type: "array", items: { type: "string" } }, ok: { type: "boolean" } },
      required: ["name", "mood", "tags", "ok"],
    };
    const res = await text({ messages: MESSAGES, response_format: { type: "json_schema", json_schema: schema }, seed: 3, temperature: 0.8, max_tokens: 24 });
    assert.deepEqual(schemaErrors(JSON.parse(res.response), schema), [], res.response);

    const oa = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "hello" }],
      response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } },
      seed: 4,
      max_tokens: 24,
    });
    const content = oa.choices[0]!.message.content ?? "";
    assert.deepEqual(schemaErrors(JSON.parse(content), schema), [], content);
  });
  it("a conversation holding an earlier tool call and its result renders and answers", async () => {
    const messages = [
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: "", tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","unit":"celsius"}' } }] },
      { role: "tool", tool_call_id: "call_1", content: '{"temp":20}' },
    ];
    const withTools = await text({ messages, tools: TOOLS, seed: 1, max_tokens: 16 });
    for (const c of withTools.tool_calls ?? []) assertValidCall(c);
    const without = await text({ messages, seed: 1, max_tokens: 16 });
    assert.ok(without.usage.prompt_tokens > 0);
  });

  it(
    "usage on the chat path: prompt_tokens is the rendered prompt, completion_tokens at most max_tokens",
    async () => {
      for (const max_tokens of [16, 64, 256]) {
        const r = await text({ messages: MESSAGES, max_tokens, temperature: 0.8, seed: 1 });
        assert.equal(r.usage.prompt_tokens, templatedTokens, `max_tokens ${max_tokens}: prompt_tokens`);
        assert.ok(r.usage.completion_tokens <= max_tokens, `max_tokens ${max_tokens}: completion_tokens ${r.usage.completion_tokens}`);
      }
    },
  );

  // node-llama-cpp's number grammar allows a 16-digit exponent (`7e4323707056546411`): JSON.parse makes it
  // Infinity, sent on as null. These seeds hit it on this fixture without `finiteNumbers` in the engine.
  it("integer and number values generated under a JSON schema are finite numbers of their type", async () => {
    const problems: string[] = [];
    const forced = await text({ messages: MESSAGES, tools: [tool("set_alarm", "Set an alarm", ALARM)], tool_choice: { type: "function", function: { name: "set_alarm" } }, seed: 5, max_tokens: 30 });
    assert.equal(forced.tool_calls?.length, 1);
    const args = forced.tool_calls[0]!.arguments;
    problems.push(...schemaErrors(args, ALARM).map((e) => `tool call ${JSON.stringify(args)}: ${e}`));
    const schema: Schema = { type: "object", properties: { age: { type: "integer" }, score: { type: "number" } }, required: ["age", "score"] };
    for (const seed of [5, 6, 7]) {
      const r = await text({ messages: MESSAGES, response_format: { type: "json_schema", json_schema: schema }, seed, max_tokens: 16 });
      problems.push(...schemaErrors(JSON.parse(r.response), schema).map((e) => `response_format ${r.response.replace(/\s+/g, " ")}: ${e}`));
    }
    assert.deepEqual(problems, []);
  });
});
