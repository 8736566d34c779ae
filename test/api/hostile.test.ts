/**
 * Hostile input: a generated corpus of malformed, mistyped, out-of-range, oversized and path-tricking
 * requests against every JSON route, plus a thousand clients that connect and cancel at once. Every
 * refusal must be a clear 4xx in the Workers AI envelope; the server never answers 5xx for bad input,
 * never shows a client a stack trace, never logs bad input as a server failure, and stays up.
 */
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { ACCOUNT, sseEvents, startTestNode, TOKEN, type TestNode } from "../helpers.js";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Small enough to exceed cheaply, big enough for a 100k-deep bracket body (200 KB) to get past it. */
const LIMIT = 256 * 1024;
const MODEL = "@local/stories";
const RUN = `/client/v4/accounts/${ACCOUNT}/ai/run/${MODEL}`;
const RUN_BASE = `/client/v4/accounts/${ACCOUNT}/ai/run/`;
const CF_V1 = `/client/v4/accounts/${ACCOUNT}/ai/v1`;

// ---------------------------------------------------------------------------------------------
// Raw HTTP: node:http sends the request-target and body bytes exactly as given (fetch would
// normalise `..` and re-encode), so the server sees what a hostile client really sends.
// ---------------------------------------------------------------------------------------------

interface RawRequest {
  method?: string;
  path: string;
  /** Raw body bytes; omitted = no body. */
  body?: string | Buffer;
  /** Send the body in these pieces with Transfer-Encoding: chunked instead of Content-Length. */
  chunks?: Buffer[];
  /** Overrides of the default headers (bearer token + JSON content type); null removes one. */
  headers?: Record<string, string | null>;
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function send(port: number, r: RawRequest): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries({ authorization: `Bearer ${TOKEN}`, "content-type": "application/json", ...r.headers })) if (v !== null) headers[k] = v;
    const body = r.body === undefined ? undefined : Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body, "utf8");
    if (r.chunks) headers["transfer-encoding"] = "chunked";
    else headers["content-length"] = String(body?.length ?? 0);
    let answered = false;
    const req = http.request({ host: "127.0.0.1", port, method: r.method ?? "POST", path: r.path, headers, agent }, (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts).toString("utf8") }));
      res.on("error", reject);
    });
    // A server that answers 413 early and closes may make our remaining writes fail: that is fine once answered.
    req.on("error", (e) => {
      if (!answered) reject(e);
    });
    if (r.chunks) {
      void (async () => {
        for (const c of r.chunks!) {
          if (answered || req.destroyed) break;
          if (!req.write(c)) await new Promise<void>((ok) => req.once("drain", ok).once("close", ok));
        }
        if (!req.destroyed) req.end();
      })();
    } else req.end(body);
  });
}

/** Sends bytes on a bare socket (for request lines node:http refuses to send) and returns what came back. */
function sendBytes(port: number, data: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => s.end(data));
    let out = "";
    s.setEncoding("latin1");
    s.on("data", (c: string) => (out += c));
    s.on("close", () => resolve(out));
    s.on("error", () => undefined);
  });
}

// ---------------------------------------------------------------------------------------------
// What every refusal must look like.
// ---------------------------------------------------------------------------------------------

interface Case extends RawRequest {
  name: string;
  /** Exact status (or one of) when the class has one; otherwise any 4xx. */
  status?: number | readonly number[];
  code?: number | readonly number[];
}

const STACK_MARKERS: [string, RegExp][] = [
  ["stack frame", / {4}at /],
  ["stack frame", /\n\s*at \S/],
  ["node_modules path", /node_modules/],
  ["source position", /\.[cm]?[jt]sx?:\d/],
  ["JS error prefix", /\b(?:Type|Range|Syntax|Reference|Eval|URI|Aggregate)?Error: /],
  ["node internal", /\(node:|node:internal/],
];

const oneOf = (want: number | readonly number[], got: unknown) => (typeof want === "number" ? got === want : want.includes(got as number));

/** Problems with one refusal (empty when it is a proper 4xx envelope). */
function problems(c: Pick<Case, "status" | "code" | "path">, res: RawResponse): string[] {
  const out: string[] = [];
  if (res.status < 400 || res.status > 499) out.push(`status ${res.status} is not 4xx`);
  if (c.status !== undefined && !oneOf(c.status, res.status)) out.push(`status ${res.status}, expected ${String(c.status)}`);
  if (!/^application\/json\b/.test(String(res.headers["content-type"]))) out.push(`content-type ${String(res.headers["content-type"])}`);
  for (const [what, re] of STACK_MARKERS) if (re.test(res.body)) out.push(`body shows a ${what}`);
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(res.body) as Record<string, unknown>;
  } catch {
    return [...out, `body is not JSON: ${res.body.slice(0, 120)}`];
  }
  if (body.success !== false) out.push("success is not false");
  if (body.result !== null) out.push("result is not null");
  if (!Array.isArray(body.messages) || body.messages.length !== 0) out.push("messages is not []");
  const errors = body.errors as { code?: unknown; message?: unknown }[] | undefined;
  const first = Array.isArray(errors) ? errors[0] : undefined;
  if (!first) out.push("errors is empty");
  else {
    if (typeof first.code !== "number") out.push("errors[0].code is not a number");
    if (typeof first.message !== "string" || first.message.trim() === "") out.push("errors[0].message is empty");
    if (c.code !== undefined && !oneOf(c.code, first.code)) out.push(`code ${String(first.code)}, expected ${String(c.code)}`);
  }
  // OpenAI routes add OpenAI's own `error` object next to the envelope.
  if (c.path.startsWith("/v1/") || c.path.startsWith(`${CF_V1}/`)) {
    const e = body.error as { message?: unknown } | undefined;
    if (typeof e?.message !== "string" || e.message === "") out.push("OpenAI `error.message` missing");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The corpus.
// ---------------------------------------------------------------------------------------------

const E = {
  invalid: { status: 400, code: 5006 },
  missing: { status: 400, code: 3003 },
  noSuchModel: { status: 400, code: 5007 },
  badModelId: { status: 404, code: 3042 },
  tooLarge: { status: 413, code: 3006 },
  unauthorized: { status: 401, code: 10000 },
  forbidden: { status: 403, code: 10001 },
  /** URL normalisation took `..` out of the route, or the id was refused: either way no file is touched. */
  pathEscaped: { status: 404, code: [3042, 7000] },
} as const;

const deepArray = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
const deepSchema = (depth: number): Json => {
  let s: Json = { type: "string" };
  for (let i = 0; i < depth; i++) s = { type: "array", items: s };
  return s;
};
const deepObject = (depth: number): Json => {
  let o: Json = { type: "object" };
  for (let i = 0; i < depth; i++) o = { type: "object", properties: { a: o } };
  return o;
};

// Wrong-type pools. Workers AI fields are never nullable; OpenAI's mostly are (null = default), so
// null joins a pool only where the schema refuses it.
const NOT_NUMBER: Json[] = ["1", "", "NaN", "Infinity", "-1", "1e3", "0x10", true, false, [], [1], {}, { value: 1 }];
const NOT_BOOL: Json[] = ["true", "false", 1, 0, "", "yes", [], [true], {}];
const BAD_STOP: Json[] = [5, true, {}, "", [""], [5], [null], [["x"]], Array<Json>(17).fill("x"), "x".repeat(257), ["x".repeat(257)]];
const BAD_RESPONSE_FORMAT: Json[] = [
  "json",
  5,
  true,
  [],
  {},
  { type: "xml" },
  { type: 5 },
  { type: null },
  { type: "JSON_OBJECT" },
  { type: "json_schema" },
  { type: "json_schema", json_schema: "x" },
  { type: "json_schema", json_schema: 5 },
  { type: "json_schema", json_schema: [] },
  { type: "json_schema", json_schema: null },
  { type: "json_schema", json_schema: deepSchema(200) },
  { type: "json_schema", json_schema: { name: "deep", strict: true, schema: deepObject(100) } },
];
const fn = (f: Record<string, Json>): Json => ({ type: "function", function: f });
const BAD_TOOLS: Json[] = [
  "x",
  5,
  true,
  {},
  [5],
  ["f"],
  [null],
  [{}],
  [{ type: "function" }],
  [fn({})],
  [fn({ name: "" })],
  [fn({ name: 5 })],
  [fn({ name: "bad name" })],
  [fn({ name: "../../etc/passwd" })],
  [fn({ name: "a\u0000b" })],
  [fn({ name: "a".repeat(65) })],
  [fn({ name: "f();drop" })],
  [fn({ name: "f", parameters: "x" })],
  [fn({ name: "f", parameters: [] })],
  [fn({ name: "f", parameters: 5 })],
  [fn({ name: "f", parameters: null })],
  [fn({ name: "f", description: 5 })],
  [fn({ name: "f", description: "x".repeat(4097) })],
  [fn({ name: "f", parameters: deepObject(100) })],
  [{ name: "f", parameters: null }],
  [{ name: "f g" }],
  Array<Json>(129).fill({ name: "f" }),
];
const BAD_MESSAGES: Json[] = [
  "hi",
  5,
  true,
  {},
  [],
  [null],
  ["hi"],
  [5],
  [[]],
  [{}],
  [{ role: "user" }],
  [{ role: "user", content: null }],
  [{ content: "x" }],
  [{ role: "wizard", content: "x" }],
  [{ role: "", content: "x" }],
  [{ role: 5, content: "x" }],
  [{ role: null, content: "x" }],
  [{ role: "USER", content: "x" }],
  [{ role: "user", content: 5 }],
  [{ role: "user", content: true }],
  [{ role: "user", content: {} }],
  [{ role: "user", content: { text: "x" } }],
  [{ role: "user", content: ["x"] }],
  [{ role: "user", content: [{ type: "image_url", image_url: { url: "file:///etc/passwd" } }] }],
  [{ role: "user", content: [{ type: "text" }] }],
  [{ role: "user", content: [{ type: "text", text: 5 }] }],
  [{ role: "user", content: [] }],
  [{ role: "user", content: "" }],
  [{ role: "user", content: "   \n\t" }],
  [{ role: "system", content: "" }, { role: "user", content: " " }],
  [{ role: "user", content: "x", name: 5 }],
  [{ role: "user", content: "x", tool_calls: "x" }],
  [{ role: "user", content: "x", tool_call_id: 5 }],
  [{ role: "assistant", content: "x", tool_calls: [{ function: { name: "", arguments: "{}" } }] }, { role: "user", content: "x" }],
  [{ role: "assistant", content: "x", tool_calls: [{ function: { name: "f", arguments: 5 } }] }, { role: "user", content: "x" }],
  [{ role: "assistant", content: "x", tool_calls: [{ function: { name: "f", arguments: deepObject(100) } }] }, { role: "user", content: "x" }],
  Array<Json>(1025).fill({ role: "user", content: "x" }),
];
const EMPTY_PROMPTS: Json[] = ["", " ", "\n\t  ", "\u00a0\u3000"];

/** Model ids that must be refused as ids (never looked up): traversal, absolute paths, NUL, separators, junk. */
const BAD_MODEL_IDS = [
  "",
  "gpt-4",
  "stories",
  "/etc/passwd",
  "../../etc/passwd",
  "@local/../../etc/passwd",
  "@local/..",
  "@local/.",
  "@local/.stories",
  "@local/stories\u0000",
  "@local/\u0000",
  "@local/stories\u0000.gguf",
  "@local//etc/passwd",
  "@local/%2e%2e%2fetc%2fpasswd",
  "@local\\..\\..\\x",
  "@local/..\\..\\windows\\win.ini",
  "C:\\Windows\\system32\\config",
  "\\\\server\\share\\model",
  "file:///etc/passwd",
  "@evil/x",
  "@",
  "@local",
  "@local/",
  "@local/stories/",
  "@LOCAL/stories",
  "@local/ stories",
  "@local/stories\n",
  "@local/~root",
  "@local/$(id)",
  "@local/é",
  `@local/${"a".repeat(300)}`,
  "@cf/../x",
];
/** Well-formed ids of models this node does not have. */
const UNKNOWN_MODEL_IDS = ["@cf/does/not-exist", "@cf/meta/llama-999b", "@local/does-not-exist", "@local/a/b", "@hf/x/y", "@borde/nope", "@local/stories.gguf"];

interface Route {
  name: string;
  path: string;
  base: Record<string, Json>;
  openai: boolean;
}

const WAI_PROMPT: Route = { name: "wai/prompt", path: RUN, base: { prompt: "Once upon a time", max_tokens: 8 }, openai: false };
const WAI_MESSAGES: Route = { name: "wai/messages", path: RUN, base: { messages: [{ role: "user", content: "Hello" }], max_tokens: 8 }, openai: false };
const WAI_EMBED: Route = { name: "wai/text", path: RUN, base: { text: "hello" }, openai: false };
const CHAT: Route = { name: "openai/chat", path: "/v1/chat/completions", base: { model: MODEL, messages: [{ role: "user", content: "Hello" }], max_tokens: 8 }, openai: true };
const CHAT_CF: Route = { ...CHAT, name: "openai/chat(cf)", path: `${CF_V1}/chat/completions` };
const COMPLETIONS: Route = { name: "openai/completions", path: "/v1/completions", base: { model: MODEL, prompt: "Once upon a time", max_tokens: 8 }, openai: true };
const EMBEDDINGS: Route = { name: "openai/embeddings", path: "/v1/embeddings", base: { model: MODEL, input: "hello" }, openai: true };

const DROP = Symbol("drop");
const withField = (base: Record<string, Json>, field: string, value: Json | typeof DROP) => {
  const out = { ...base };
  if (value === DROP) delete out[field];
  else out[field] = value;
  return out;
};
const show = (v: unknown) => {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
};

function buildCorpus(): Case[] {
  const cases: Case[] = [];
  const add = (route: Route, name: string, body: string | Buffer, expect: { status?: number | readonly number[]; code?: number | readonly number[] } = E.invalid, extra: Partial<RawRequest> = {}) =>
    cases.push({ name: `${route.name}: ${name}`, path: route.path, body, ...expect, ...extra });
  const field = (route: Route, f: string, values: Json[], expect: { status?: number; code?: number | readonly number[] } = E.invalid) => {
    for (const v of values) add(route, `${f}=${show(v)}`, JSON.stringify(withField(route.base, f, v)), expect);
  };

  // --- Field by field: wrong types and out-of-range values. --------------------------------------
  for (const r of [WAI_PROMPT, WAI_MESSAGES]) {
    const nn = [...NOT_NUMBER, null];
    field(r, "max_tokens", [...nn, 0, -1, -5, 0.5, 1.5, 4097, 1e9, 1e308, -1e308, 2 ** 53 + 2]);
    field(r, "temperature", [...nn, -1, -0.001, 5.001, 100, 1e308, -1e308]);
    field(r, "top_p", [...nn, -0.1, -1, 2.01, 100]);
    field(r, "top_k", [...nn, 0, -1, 1001, 1.5, 1e9]);
    field(r, "seed", [...nn, -5, -1, 1.5, 1e11, 1e308]);
    field(r, "repetition_penalty", [...nn, -1, -0.01, 2.01, 100]);
    field(r, "frequency_penalty", [...nn, -2.01, 2.01, 100, -100]);
    field(r, "presence_penalty", [...nn, -2.01, 2.01, 100]);
    field(r, "stream", [...NOT_BOOL, null]);
    field(r, "raw", [...NOT_BOOL, null]);
    field(r, "stop", [...BAD_STOP, null]);
    field(r, "response_format", [...BAD_RESPONSE_FORMAT, null]);
    field(r, "tools", [...BAD_TOOLS, null]);
    field(r, "lora", ["my-adapter", 5, null]);
  }
  field(WAI_PROMPT, "prompt", [null, 5, true, [], ["x"], {}, ...EMPTY_PROMPTS]);
  field(WAI_PROMPT, "messages", [[{ role: "user", content: "x" }]]); // both prompt and messages
  field(WAI_MESSAGES, "messages", [null, ...BAD_MESSAGES]);
  add(WAI_PROMPT, "neither prompt nor messages", JSON.stringify({ max_tokens: 8 }));
  add(WAI_PROMPT, "empty object", "{}");
  add(WAI_PROMPT, "prompt with stream, unknown model", JSON.stringify({ prompt: "x", stream: true }), E.noSuchModel, { path: `${RUN_BASE}@cf/does/not-exist` });
  field(WAI_EMBED, "text", [null, 5, true, {}, "", [], [""], [5], ["a", 5], [["a"]], Array<Json>(257).fill("a")]);

  for (const r of [CHAT, CHAT_CF, COMPLETIONS]) {
    field(r, "max_tokens", [...NOT_NUMBER, 0, -1, 0.5, 1.5, 4097, 1e9, 1e308, -1e308]);
    field(r, "temperature", [...NOT_NUMBER, -1, 2.01, 100, 1e308]);
    field(r, "top_p", [...NOT_NUMBER, -0.1, 1.01, 100]);
    field(r, "top_k", [...NOT_NUMBER, 0, -1, 1001, 1.5]);
    field(r, "n", [2, 0, -1, "1", 1.5, true]);
    field(r, "stream", NOT_BOOL);
    field(r, "stream_options", ["x", 5, true, [], { include_usage: "yes" }, { include_usage: 1 }]);
    field(r, "stop", BAD_STOP);
    field(r, "seed", [...NOT_NUMBER, 1.5, 2 ** 55, -(2 ** 55), 1e308]);
    field(r, "frequency_penalty", [...NOT_NUMBER, -2.01, 2.01, 100]);
    field(r, "presence_penalty", [...NOT_NUMBER, -2.01, 2.01]);
    field(r, "repetition_penalty", [...NOT_NUMBER, -1, 2.01]);
    field(r, "user", [5, true, [], {}, null, "x".repeat(257)]);
    field(r, "model", [DROP as never, null, 5, true, [], {}]);
    field(r, "model", BAD_MODEL_IDS, E.badModelId);
    field(r, "model", UNKNOWN_MODEL_IDS, E.noSuchModel);
    add(r, "stream with an unknown model", JSON.stringify({ ...r.base, model: "@cf/does/not-exist", stream: true }), E.noSuchModel);
  }
  for (const r of [CHAT, CHAT_CF]) {
    field(r, "messages", [DROP as never, null, ...BAD_MESSAGES]);
    field(r, "max_completion_tokens", [...NOT_NUMBER, 0, -1, 1.5, 4097, 1e9]);
    field(r, "response_format", BAD_RESPONSE_FORMAT);
    field(r, "tools", BAD_TOOLS);
    field(r, "tool_choice", ["sometimes", 5, true, [], {}, { type: "function" }, { type: "function", function: { name: "missing" } }, { type: "other", function: { name: "f" } }]);
    field(r, "logprobs", [true, "x", 1]);
  }
  field(COMPLETIONS, "prompt", [DROP as never, null, 5, true, [], [5], ["a", "b"], {}, [""], ["  "], ...EMPTY_PROMPTS]);
  field(COMPLETIONS, "echo", [true, "x"]);
  field(COMPLETIONS, "logprobs", [1, true, "x"]);
  field(COMPLETIONS, "suffix", ["x", 5]);
  field(COMPLETIONS, "best_of", [2, 0, "1"]);
  field(EMBEDDINGS, "input", [DROP as never, null, 5, true, {}, "", [], [""], [5], ["a", 5], [["a"]], Array<Json>(257).fill("a")]);
  field(EMBEDDINGS, "encoding_format", ["hex", "FLOAT", 5, true, []]);
  field(EMBEDDINGS, "dimensions", [5, 1, 0, -1, 1.5, "5", true]);
  field(EMBEDDINGS, "user", [5, null, "x".repeat(257)]);
  field(EMBEDDINGS, "model", [DROP as never, null, 5, true]);
  field(EMBEDDINGS, "model", BAD_MODEL_IDS, E.badModelId);
  field(EMBEDDINGS, "model", UNKNOWN_MODEL_IDS, E.noSuchModel);

  // --- Whole bodies: malformed, truncated, non-objects, deep, bad bytes, on every route. ----------
  const MALFORMED = [
    "{",
    "}",
    "[",
    "{{}}",
    '{"prompt":',
    "{prompt:'x'}",
    '{"prompt":"x",}',
    '{"prompt" "x"}',
    '{"a":1 "b":2}',
    "[1,2",
    "nul",
    "tru",
    "undefined",
    "NaN",
    "'x'",
    '{"max_tokens":NaN}',
    '{"max_tokens":Infinity}',
    '{"max_tokens":-Infinity}',
    '{"max_tokens":01}',
    '{"max_tokens":1.}',
    '{"max_tokens":.5}',
    '{"max_tokens":0x10}',
    '{"prompt":"\\x"}',
    '{"prompt":"\\u12"}',
    '{"prompt":"a\u0001b"}',
    '{"prompt":"line\nbreak"}',
    "\u0000",
    " ",
    "\n\r\t",
    "// comment\n{}",
    "/* c */ {}",
    "prompt=hello&max_tokens=8",
    "<xml/>",
    "\uFEFF{",
    "\uFEFF\uFEFF{}",
  ];
  const NON_OBJECTS = ["[]", "[{}]", '["prompt"]', '"prompt"', '""', "42", "-1", "1e400", "null", "true", "false"];
  const DEEP = [
    deepArray(100_000),
    `{"prompt":${deepArray(100_000)}}`,
    "[".repeat(200_000),
    `${'{"a":'.repeat(30_000)}1${"}".repeat(30_000)}`,
    `{"messages":[{"role":"user","content":${deepArray(50_000)}}]}`,
  ];
  const INVALID_UTF8 = [
    Buffer.from([0xff]),
    Buffer.from([0xfe, 0xff, 0x00, 0x7b, 0x00, 0x7d]), // UTF-16 BE with BOM
    Buffer.from('{"}', "utf16le"),
    Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]), // bad continuation
    Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]), // overlong "/"
    Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]), // UTF-8-encoded surrogate
    Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80]), Buffer.from('"}')]), // 5-byte form
    Buffer.concat([Buffer.from('{"prompt":"caf'), Buffer.from([0xe9]), Buffer.from('"}')]), // Latin-1
    Buffer.concat([Buffer.from('{"prompt":"x"}'), Buffer.from([0xe2, 0x82])]), // truncated sequence at the end
    Buffer.concat([Buffer.from([0xef, 0xbb]), Buffer.from('{"prompt":"x"}')]), // half a BOM
  ];
  for (const r of [WAI_PROMPT, CHAT, CHAT_CF, COMPLETIONS, EMBEDDINGS]) {
    const valid = JSON.stringify(r.base);
    add(r, "empty body", "", E.missing);
    MALFORMED.forEach((b, i) => add(r, `malformed #${i} ${show(b)}`, b));
    NON_OBJECTS.forEach((b) => add(r, `non-object ${b}`, b));
    for (let n = 1; n < valid.length; n++) add(r, `truncated at ${n}`, valid.slice(0, n));
    for (const tail of ["x", "}", "]", ",", "{}", " {}", "\u0000", "\n[", ' "x"']) add(r, `trailing ${show(tail)}`, valid + tail);
    add(r, "BOM + trailing garbage", `\uFEFF${valid}}`);
    DEEP.forEach((b, i) => add(r, `deep nesting #${i} (${b.length} bytes)`, b));
    INVALID_UTF8.forEach((b, i) => add(r, `invalid UTF-8 #${i}`, b));
    add(r, "malformed as text/plain", "{oops", E.invalid, { headers: { "content-type": "text/plain" } });
    add(r, "malformed without content-type", "{oops", E.invalid, { headers: { "content-type": null } });
    add(r, "malformed as form data", "prompt=hi", E.invalid, { headers: { "content-type": "application/x-www-form-urlencoded" } });

    // --- Too large: with Content-Length, chunked, and a Content-Length lie. ------------------------
    const big = JSON.stringify({ ...r.base, pad: "x".repeat(LIMIT) });
    add(r, "over the limit (Content-Length)", big, E.tooLarge);
    add(r, "just over the limit (Content-Length)", JSON.stringify({ ...r.base, pad: "x".repeat(LIMIT - valid.length) }), E.tooLarge);
    cases.push({ name: `${r.name}: over the limit (chunked)`, path: r.path, chunks: Array.from({ length: 20 }, () => Buffer.alloc(16 * 1024, 0x20)), ...E.tooLarge });

    // --- Authentication and account. -------------------------------------------------------------
    const auths: [string, Record<string, string | null>][] = [
      ["no Authorization", { authorization: null }],
      ["wrong token", { authorization: "Bearer wrong-token-0123456789" }],
      ["empty bearer", { authorization: "Bearer " }],
      ["bare Bearer", { authorization: "Bearer" }],
      ["Basic auth", { authorization: `Basic ${Buffer.from(`user:${TOKEN}`).toString("base64")}` }],
      ["token without scheme", { authorization: TOKEN }],
      ["token with a suffix", { authorization: `Bearer ${TOKEN}x` }],
      ["token prefix", { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
      ["two tokens", { authorization: `Bearer ${TOKEN} ${TOKEN}` }],
      ["huge token", { authorization: `Bearer ${"t".repeat(4000)}` }],
    ];
    for (const [name, headers] of auths) add(r, name, valid, E.unauthorized, { headers });
    add(r, "no Authorization and malformed body", "{oops", E.unauthorized, { headers: { authorization: null } });
  }

  // --- Another account in the URL. --------------------------------------------------------------
  for (const account of ["someone-else", "ACCT_TEST", "acct_test%00", "acct_test%2F..", `${ACCOUNT}x`]) {
    cases.push({ name: `account ${account}: run`, path: `/client/v4/accounts/${account}/ai/run/${MODEL}`, body: JSON.stringify(WAI_PROMPT.base), ...E.forbidden });
    cases.push({ name: `account ${account}: openai`, path: `/client/v4/accounts/${account}/ai/v1/chat/completions`, body: JSON.stringify(CHAT.base), ...E.forbidden });
  }
  cases.push({ name: "account via ../ in the path", path: `/client/v4/accounts/${ACCOUNT}/../someone-else/ai/run/${MODEL}`, body: JSON.stringify(WAI_PROMPT.base), ...E.forbidden });

  // --- Model ids with path tricks, raw in the request-target. ------------------------------------
  const ids: [string, { status?: number | readonly number[]; code?: number | readonly number[] }][] = [
    ["@local/../../etc/passwd", E.pathEscaped],
    ["@local/../../../../../../etc/passwd", E.pathEscaped],
    ["@local/%2e%2e/%2e%2e/etc/passwd", E.pathEscaped],
    ["@local/..", E.pathEscaped],
    ["@hf/../../x", E.pathEscaped],
    ["@local/%2e%2e%2f%2e%2e%2fetc%2fpasswd", E.badModelId],
    ["@local/..%2f..%2fetc%2fpasswd", E.badModelId],
    ["..%2f..%2f", E.badModelId],
    ["@local/%00", E.badModelId],
    ["@local/stories%00", E.badModelId],
    ["@local/stories%00.gguf", E.badModelId],
    ["@local/%2Fetc%2Fpasswd", E.badModelId],
    ["%2Fetc%2Fpasswd", E.badModelId],
    ["/etc/passwd", E.badModelId],
    ["@local/..%5c..%5cwindows%5cwin.ini", E.badModelId],
    ["C:%5CWindows%5Csystem32", E.badModelId],
    ["file:%2F%2F%2Fetc%2Fpasswd", E.badModelId],
    ["@local/%C0%AE%C0%AE", E.badModelId],
    ["@local/%ff", E.badModelId],
    ["@local/%E0%A4%A", E.badModelId],
    ["@local/a%ZZ", E.badModelId],
    ["@local/%20stories", E.badModelId],
    ["@local/stories%0a", E.pathEscaped], // the route's `.+` stops at the newline: no route
    ["@local/.stories", E.badModelId],
    ["@local/~root", E.badModelId],
    [`@local/${"a".repeat(5000)}`, E.badModelId],
    [`@cf/${"a/".repeat(500)}b`, E.badModelId],
    ["@evil/x", E.badModelId],
    ["@", E.badModelId],
    ["@local", E.badModelId],
    ["stories", E.badModelId],
    ["@LOCAL/stories", E.badModelId],
    ...UNKNOWN_MODEL_IDS.map((id): [string, typeof E.noSuchModel] => [id, E.noSuchModel]),
  ];
  for (const [id, expect] of ids) cases.push({ name: `run path ${show(id)}`, path: RUN_BASE + id, body: JSON.stringify(WAI_PROMPT.base), ...expect });
  for (const id of ["..%2f..%2fetc%2fpasswd", "@local/%00", "@local/%2Fetc%2Fpasswd", "@evil/x"])
    cases.push({ name: `GET /v1/models/${id}`, method: "GET", path: `/v1/models/${id}`, ...E.badModelId });

  // --- Wrong methods and unknown routes. ---------------------------------------------------------
  for (const method of ["GET", "PUT", "DELETE", "PATCH"]) {
    cases.push({ name: `${method} run`, method, path: RUN, body: method === "GET" ? undefined : JSON.stringify(WAI_PROMPT.base), status: [404, 405], code: [7000, 7001] });
    cases.push({ name: `${method} chat`, method, path: "/v1/chat/completions", body: method === "GET" ? undefined : JSON.stringify(CHAT.base), status: [404, 405], code: [7000, 7001] });
  }
  for (const p of ["/v1/chat/completion", "/v1/chat/completions/x", `/client/v4/accounts/${ACCOUNT}/ai/runx/${MODEL}`, `/client/v4/accounts/${ACCOUNT}/ai/run`, `/client/v4/accounts/${ACCOUNT}/ai/run/`])
    cases.push({ name: `unknown route ${p}`, path: p, body: "{}", status: 404, code: 7000 });
  return cases;
}

/** Runs tasks with at most `limit` in flight. */
async function pool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sum of a gauge over all its series (every model). */
function gaugeSum(metrics: string, name: string): number {
  let sum = 0;
  for (const line of metrics.split("\n")) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  return sum;
}

const serverErrors = (logs: string[]) => logs.filter((l) => /"level":(?:50|60)\b/.test(l) || l.includes('"msg":"request failed"'));

describe("hostile input", () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode({ maxBodyBytes: LIMIT });
  });
  after(async () => {
    agent.destroy();
    await node?.close();
  });

  async function assertAlive(): Promise<void> {
    const r = await node.post(RUN, { prompt: "Once upon a time", max_tokens: 4 });
    assert.equal(r.status, 200, await r.clone().text());
    const body = (await r.json()) as { success: boolean; result: { response: string } };
    assert.equal(body.success, true);
    assert.equal(typeof body.result.response, "string");
  }

  test("a generated corpus of bad requests gets clear 4xx envelopes, never a 5xx or a stack trace", async (t) => {
    const corpus = buildCorpus();
    t.diagnostic(`${corpus.length} cases`);
    assert.ok(corpus.length > 1000, `corpus has ${corpus.length} cases`);
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const timersBefore = timers();
    const failures: string[] = [];
    await pool(corpus, 8, async (c) => {
      let res: RawResponse;
      try {
        res = await send(node.port, c);
      } catch (e) {
        failures.push(`${c.name}: request failed (${(e as Error).message})`);
        return;
      }
      const p = problems(c, res);
      if (p.length) failures.push(`${c.name}: ${p.join("; ")} — ${res.body.slice(0, 200)}`);
    });
    assert.deepEqual(failures.slice(0, 40), [], `${failures.length} of ${corpus.length} cases failed`);
    // A refusal must not leave its request's deadline timer behind (the node shares this process).
    assert.ok(timers() - timersBefore < 100, `${timers() - timersBefore} timers left behind by ${corpus.length} refused requests`);
    await assertAlive();
  });

  test("fetch: over the limit with a streamed (chunked) body, then the connection is not reused mid-upload", async () => {
    for (const total of [LIMIT + 1, 4 * LIMIT, 64 * 2 ** 20]) {
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent >= total) return c.close();
          const n = Math.min(64 * 1024, total - sent);
          sent += n;
          c.enqueue(new Uint8Array(n).fill(0x20));
        },
      });
      const r = await fetch(`${node.url}${RUN}`, { method: "POST", headers: node.headers, body, duplex: "half" } as RequestInit);
      const text = await r.text();
      assert.deepEqual(problems({ ...E.tooLarge, path: RUN }, { status: r.status, headers: { "content-type": r.headers.get("content-type") ?? "" }, body: text }), [], text);
      if (total > 16 * LIMIT) assert.ok(sent < total, "the server stopped reading long before the end");
      // The next requests (one of them streamed too) must not land on a half-used connection.
      const small = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode(JSON.stringify({ prompt: "Once", max_tokens: 2 })));
          c.close();
        },
      });
      assert.equal((await fetch(`${node.url}${RUN}`, { method: "POST", headers: node.headers, body: small, duplex: "half" } as RequestInit)).status, 200);
      await assertAlive();
    }
  });

  test("fetch normalises `..` in the URL: still a 404 envelope, never a file", async () => {
    for (const id of ["@local/../../etc/passwd", "@local/%2e%2e/%2e%2e/etc/passwd", "@local/./../../../etc/passwd"]) {
      const r = await node.post(`${RUN_BASE}${id}`, WAI_PROMPT.base);
      const text = await r.text();
      assert.deepEqual(problems({ ...E.pathEscaped, path: RUN }, { status: r.status, headers: { "content-type": r.headers.get("content-type") ?? "" }, body: text }), [], `${id}: ${text}`);
    }
  });

  test("a byte-order mark before a valid body is accepted (RFC 8259 allows ignoring it)", async () => {
    const r = await send(node.port, { path: RUN, body: `\uFEFF${JSON.stringify({ prompt: "Once upon a time", max_tokens: 2 })}` });
    assert.equal(r.status, 200, r.body);
  });

  test("a client that hangs up mid-upload is not a server failure", async () => {
    const before = serverErrors(node.logs).length;
    const aborted = () => node.logs.filter((l) => l.includes('"code":3008')).length;
    const abortedBefore = aborted();
    for (const framing of ["Content-Length: 1000\r\n", "Transfer-Encoding: chunked\r\n"]) {
      await new Promise<void>((resolve) => {
        const s = net.connect(node.port, "127.0.0.1", () => {
          const head = `POST ${RUN} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\n${framing}\r\n`;
          s.write(head + (framing.startsWith("Transfer") ? 'a\r\n{"prompt":\r\n' : '{"prompt":"x'), () => s.destroy());
        });
        s.on("close", () => resolve());
        s.on("error", () => undefined);
      });
    }
    // The server notices the hang-up asynchronously; it logs the refusal (3008, aborted) once it has.
    await waitFor("the aborted uploads to be logged", async () => (aborted() - abortedBefore >= 2 ? true : undefined));
    assert.deepEqual(serverErrors(node.logs).slice(before), []);
    await assertAlive();
  });

  test("request lines the HTTP parser refuses get a 400, and the server stays up", async () => {
    const head = (target: string, extra = "Content-Length: 2\r\n") =>
      `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nConnection: close\r\n${extra}\r\n{}`;
    const inputs = [
      head(`${RUN_BASE}@local/\u0000x`),
      head(`${RUN_BASE}@local\\..\\..\\x`),
      head(`${RUN_BASE}@local/a b`),
      head(RUN, "Content-Length: abc\r\n"),
      head(RUN, "Content-Length: 2\r\nContent-Length: 3\r\n"),
      "GARBAGE\r\n\r\n",
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00]), // a TLS ClientHello on the plain port
    ];
    for (const input of inputs) {
      const out = await sendBytes(node.port, input);
      assert.match(out, /^HTTP\/1\.1 400 /, JSON.stringify(out.slice(0, 200)));
    }
    await assertAlive();
  });

  test(
    "request lines the HTTP parser refuses get the JSON envelope too",
    async () => {
      const out = await sendBytes(node.port, `POST ${RUN_BASE}@local\\..\\x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}`);
      const body = out.slice(out.indexOf("\r\n\r\n") + 4);
      assert.match(out, /content-type: application\/json/i);
      assert.equal((JSON.parse(body) as { success: boolean }).success, false);
    },
  );

  test("a thousand clients that connect and cancel at once leave no request behind", async (t) => {
    const N = 1000;
    const payload = JSON.stringify({ prompt: "Once upon a time", max_tokens: 200, stream: true });
    const statuses: number[] = [];
    const bad: string[] = [];

    /** Anything but a 200 stream must be the queue-full refusal: 429/3040 in the envelope. */
    const checkRefusal = (status: number, contentType: string, text: string) => {
      const p = problems({ status: 429, code: 3040, path: RUN }, { status, headers: { "content-type": contentType }, body: text });
      if (p.length) bad.push(`${p.join("; ")} — ${text.slice(0, 160)}`);
    };

    /** node:http: hang up when the request is written, when the head arrives, or after the first bytes. */
    const viaHttp = (when: "written" | "head" | "first-bytes") =>
      new Promise<void>((resolve) => {
        let done = false;
        const finish = () => {
          if (!done) {
            done = true;
            resolve();
          }
        };
        const req = http.request(
          { host: "127.0.0.1", port: node.port, method: "POST", path: RUN, agent: false, headers: { ...node.headers, "content-length": String(Buffer.byteLength(payload)) } },
          (res) => {
            const status = res.statusCode ?? 0;
            statuses.push(status);
            if (status !== 200) {
              let text = "";
              res.setEncoding("utf8");
              res.on("data", (c: string) => (text += c));
              res.on("end", () => {
                checkRefusal(status, String(res.headers["content-type"]), text);
                req.destroy();
                finish();
              });
              return;
            }
            if (res.headers["content-type"] !== "text/event-stream") bad.push(`200 with content-type ${String(res.headers["content-type"])}`);
            if (when === "head") {
              req.destroy();
              return finish();
            }
            res.once("data", () => {
              req.destroy();
              finish();
            });
            res.once("end", finish);
          },
        );
        req.on("error", () => finish()); // our own hang-up
        req.on("close", finish);
        req.end(payload, () => {
          if (when === "written") req.destroy();
        });
      });

    /** fetch with an AbortController, aborted after the first chunk. */
    const viaFetch = async () => {
      const ac = new AbortController();
      try {
        const r = await fetch(`${node.url}${RUN}`, { method: "POST", headers: node.headers, body: payload, signal: ac.signal });
        statuses.push(r.status);
        if (r.status !== 200) return checkRefusal(r.status, r.headers.get("content-type") ?? "", await r.text());
        await r.body?.getReader().read();
        ac.abort();
      } catch {
        // aborted by us
      }
    };

    const modes = [() => viaHttp("written"), () => viaHttp("head"), () => viaHttp("first-bytes"), viaFetch];
    await Promise.all(Array.from({ length: N }, (_, i) => modes[i % modes.length]!()));
    const count = (s: number) => statuses.filter((x) => x === s).length;
    t.diagnostic(`answers before hang-up: ${count(200)} streams, ${count(429)} refusals, ${statuses.length - count(200) - count(429)} other, ${N - statuses.length} none`);

    const settled = await waitFor("active requests and queues to drain", async () => {
      const m = await (await fetch(`${node.url}/metrics`)).text();
      return gaugeSum(m, "borde_active_requests") === 0 && gaugeSum(m, "borde_queue_depth") === 0 ? m : undefined;
    });
    assert.doesNotMatch(settled, /borde_http_requests_total\{[^}]*status="5\d\d"/, "no request was answered 5xx");
    assert.deepEqual(node.scheduler.snapshot().models.map((m) => [m.id, m.active, m.queued]).filter(([, a, q]) => a !== 0 || q !== 0), []);

    // A normal request, plain and streamed to the end, still completes.
    await assertAlive();
    const s = await node.post(RUN, { prompt: "Once upon a time", max_tokens: 8, stream: true });
    assert.equal(s.status, 200);
    const events = sseEvents(await s.text());
    assert.equal(events.at(-1), "[DONE]");

    // Judged last, so a failure here still shows whether the node drained and stayed up.
    assert.deepEqual(bad.slice(0, 20), [], `${bad.length} bad answers`);
    assert.ok(statuses.length > 0, "some clients got an answer before hanging up");
    const unexpected = statuses.filter((s) => s !== 200 && s !== 429);
    assert.deepEqual(unexpected, [], `statuses other than 200/429: ${unexpected.join(",")}`);

  });

  test("nothing above was logged as a server failure", async () => {
    assert.deepEqual(serverErrors(node.logs).map((l) => l.slice(0, 300)), []);
    const m = await (await fetch(`${node.url}/metrics`)).text();
    assert.doesNotMatch(m, /borde_http_requests_total\{[^}]*status="5\d\d"/);
  });
});
