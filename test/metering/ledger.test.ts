/**
 * The single-node usage ledger, end to end over real HTTP: every answered request on every API is
 * exactly one record with the right who/what/how-much (checked against the response's own usage and
 * byte counts, through GET /ai/usage and in the SQLite file itself); refused, aborted and repeated
 * requests are not; reports group and price it; `metering: false` writes nothing; and the daily
 * counters survive a restart on the same data folder.
 */
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { BordeError } from "../../src/errors.js";
import { Meter } from "../../src/metering/meter.js";
import { neuronsFor, PRICES } from "../../src/metering/prices.js";
import { SqliteLedger } from "../../src/metering/sqlite.js";
import { utcDay, type UsageFacts } from "../../src/metering/types.js";
import { createLogger } from "../../src/observability/index.js";
import { openDatabase } from "../../src/util/sqlite.js";
import { TINY_BERT_PATH } from "../fixtures/make-tiny-bert.js";
import { ACCOUNT, sseEvents, startTestNode, TOKEN, type TestNode } from "../helpers.js";

const STORIES = "@local/stories";
const BERT = "@local/bert";
const DEV_TOKEN_ID = `dev-${ACCOUNT}`;
const PRICE = 10;
const RATE = 100;

interface Row {
  request_id: string;
  ts: number;
  day: string;
  account_id: string;
  token_id: string;
  model: string;
  task: string;
  pop: string;
  served: string;
  unit: string;
  input_units: number;
  output_units: number;
  neurons: number;
  cpu_ms: number;
  wall_ms: number;
  bytes_in: number;
  bytes_out: number;
}

interface Sent {
  id: string;
  status: number;
  headers: Headers;
  /** Exact body bytes as received. */
  bytes: Buffer;
  text: string;
  bytesIn: number;
}

let seq = 0;
function newId(prefix: string): string {
  return `${prefix}-${process.pid}-${++seq}`;
}

async function send(baseUrl: string, pathname: string, body: unknown, opts: { token?: string; id?: string; headers?: Record<string, string> } = {}): Promise<Sent> {
  const id = opts.id ?? newId("req");
  const raw = typeof body === "string" ? body : JSON.stringify(body);
  const res = await fetch(`${baseUrl}${pathname}`, {
    method: "POST",
    headers: { authorization: `Bearer ${opts.token ?? TOKEN}`, "content-type": "application/json", "x-request-id": id, ...(opts.headers ?? {}) },
    body: raw,
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { id, status: res.status, headers: res.headers, bytes, text: bytes.toString("utf8"), bytesIn: Buffer.byteLength(raw) };
}

async function get(baseUrl: string, pathname: string, token = TOKEN): Promise<any> {
  const res = await fetch(`${baseUrl}${pathname}`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return (JSON.parse(text) as { result: unknown }).result;
}

/** An admin POST with the dev token; the API's `result`. */
async function adminPost(baseUrl: string, pathname: string, body: unknown): Promise<any> {
  const res = await fetch(`${baseUrl}/client/v4/admin/${pathname}`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, body: JSON.stringify(body) });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return (JSON.parse(text) as { result: unknown }).result;
}

function readDb<T>(dataDir: string, f: (db: Database.Database) => T): T {
  const db = new Database(path.join(dataDir, "borde.db"), { readonly: true, fileMustExist: true });
  try {
    return f(db);
  } finally {
    db.close();
  }
}

function rowsFor(dataDir: string, ids: string[]): Row[] {
  return readDb(dataDir, (db) => {
    const q = db.prepare("SELECT * FROM usage WHERE request_id = ?");
    return ids.flatMap((id) => q.all(id) as Row[]);
  });
}

function countRows(dataDir: string): number {
  return readDb(dataDir, (db) => (db.prepare("SELECT COUNT(*) AS n FROM usage").get() as { n: number }).n);
}

let node: TestNode;
/** Every request this file's main node answered with 200 (and so must have recorded). */
const answered = new Set<string>();

function ok(s: Sent): Sent {
  assert.equal(s.status, 200, s.text.slice(0, 300));
  answered.add(s.id);
  return s;
}

before(async () => {
  node = await startTestNode({ pricePer1000Neurons: PRICE, computeNeuronsPerCpuSecond: RATE });
  await fs.copyFile(TINY_BERT_PATH, path.join(node.modelsDir, "bert.gguf"));
});
after(async () => {
  await node?.close();
});

/** Streams: the body ends with `data: [DONE]`; returns the parsed events before it. */
function streamEvents(s: Sent): any[] {
  const events = sseEvents(s.text);
  assert.equal(events.at(-1), "[DONE]", s.text.slice(-200));
  return events.slice(0, -1).map((e) => JSON.parse(e));
}

describe("one record per answered request", { timeout: 30_000 }, () => {
  test("Workers AI and OpenAI, plain and streamed, generation and embeddings: who, what, units, bytes, neurons", async () => {
    const started = Date.now();
    const ai = `/client/v4/accounts/${ACCOUNT}/ai`;
    const chat = { model: STORIES, messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 6 };
    type Expect = { s: Sent; model: string; task: string; input: number; output: number };
    const cases: Expect[] = [];

    const waPlain = ok(await send(node.url, `${ai}/run/${STORIES}`, { prompt: "Once upon a time", max_tokens: 7 }));
    const u1 = JSON.parse(waPlain.text).result.usage;
    cases.push({ s: waPlain, model: STORIES, task: "text-generation", input: u1.prompt_tokens, output: u1.completion_tokens });

    const waStream = ok(await send(node.url, `${ai}/run/${STORIES}`, { prompt: "Once upon a time", max_tokens: 9, stream: true }));
    const u2 = streamEvents(waStream).at(-1).usage;
    cases.push({ s: waStream, model: STORIES, task: "text-generation", input: u2.prompt_tokens, output: u2.completion_tokens });

    const chatPlain = ok(await send(node.url, "/v1/chat/completions", chat));
    const u3 = JSON.parse(chatPlain.text).usage;
    cases.push({ s: chatPlain, model: STORIES, task: "text-generation", input: u3.prompt_tokens, output: u3.completion_tokens });

    const chatStream = ok(await send(node.url, "/v1/chat/completions", { ...chat, stream: true, stream_options: { include_usage: true } }));
    const u4 = streamEvents(chatStream).at(-1).usage;
    cases.push({ s: chatStream, model: STORIES, task: "text-generation", input: u4.prompt_tokens, output: u4.completion_tokens });

    const cfChat = ok(await send(node.url, `${ai}/v1/chat/completions`, { ...chat, max_tokens: 3 }));
    const u5 = JSON.parse(cfChat.text).usage;
    cases.push({ s: cfChat, model: STORIES, task: "text-generation", input: u5.prompt_tokens, output: u5.completion_tokens });

    const completion = ok(await send(node.url, "/v1/completions", { model: STORIES, prompt: "Once upon a time", max_tokens: 5 }));
    const u6 = JSON.parse(completion.text).usage;
    cases.push({ s: completion, model: STORIES, task: "text-generation", input: u6.prompt_tokens, output: u6.completion_tokens });

    // Embeddings: OpenAI's answer says its prompt tokens; Workers AI's does not, so the same text
    // through OpenAI gives the count to expect.
    for (const model of [BERT, STORIES]) {
      const oa = ok(await send(node.url, "/v1/embeddings", { model, input: ["hello world", "green tea"] }));
      const tokens = JSON.parse(oa.text).usage.prompt_tokens as number;
      assert.ok(tokens > 0);
      const wa = ok(await send(node.url, `${ai}/run/${model}`, { text: ["hello world", "green tea"] }));
      assert.equal(JSON.parse(wa.text).result.shape[0], 2);
      const task = model === BERT ? "text-embeddings" : "*";
      cases.push({ s: oa, model, task, input: tokens, output: 0 }, { s: wa, model, task, input: tokens, output: 0 });
    }

    const rows = rowsFor(node.dataDir, cases.map((c) => c.s.id));
    assert.equal(rows.length, cases.length, "not exactly one record per answered request");
    for (const c of cases) {
      const r = rows.find((x) => x.request_id === c.s.id)!;
      const where = `${c.s.id} ${c.model}: ${JSON.stringify(r)}`;
      assert.ok(r, `no record for ${c.s.id}`);
      assert.equal(c.s.headers.get("x-request-id"), c.s.id);
      assert.equal(r.account_id, ACCOUNT, where);
      assert.equal(r.token_id, DEV_TOKEN_ID, where);
      assert.equal(r.model, c.model, where);
      if (c.task !== "*") assert.equal(r.task, c.task, where);
      assert.equal(r.unit, "tokens", where);
      assert.equal(r.input_units, c.input, where);
      assert.equal(r.output_units, c.output, where);
      assert.ok(r.neurons > 0, where);
      assert.ok(r.cpu_ms >= 0, where);
      assert.ok(r.wall_ms > 0, where);
      // Unpriced models: engine CPU time × the configured rate (wall time only when no CPU was seen).
      const expected = ((r.cpu_ms > 0 ? r.cpu_ms : r.wall_ms) / 1000) * RATE;
      assert.ok(Math.abs(r.neurons - expected) <= 1e-3 * RATE, `${where}: neurons ${r.neurons}, expected ≈ ${expected}`);
      assert.equal(r.bytes_in, c.s.bytesIn, where);
      assert.equal(r.bytes_out, c.s.bytes.length, where);
      assert.equal(r.pop, "local", where);
      assert.equal(r.served, "edge", where);
      assert.ok(r.ts >= started && r.ts <= Date.now(), where);
      assert.equal(r.day, utcDay(r.ts), where);
    }
    assert.equal(countRows(node.dataDir), answered.size, "records for requests that were not answered");

    // The same numbers through the API.
    const report = await get(node.url, `${ai}/usage?group_by=model`);
    assert.equal(report.totals.requests, answered.size);
    for (const model of [STORIES, BERT]) {
      const mine = rows.filter((r) => r.model === model);
      const row = report.rows.find((x: { model: string }) => x.model === model);
      const all = readDb(node.dataDir, (db) => db.prepare("SELECT COUNT(*) AS n, SUM(input_units) AS i, SUM(output_units) AS o, SUM(bytes_in) AS bi, SUM(bytes_out) AS bo FROM usage WHERE model = ?").get(model)) as {
        n: number;
        i: number;
        o: number;
        bi: number;
        bo: number;
      };
      assert.ok(mine.length > 0);
      assert.deepEqual([row.requests, row.input_units, row.output_units, row.bytes_in, row.bytes_out], [all.n, all.i, all.o, all.bi, all.bo]);
      assert.equal(row.edge_requests, all.n);
      assert.equal(row.forwarded_requests, 0);
    }
  });

  // BUG (src/inference/index.ts, InferenceService.embed → metered): an embeddings request to a
  // text-generation GGUF is recorded with the model's task, "text-generation", not the request's.
  test("an embeddings request to a text-generation model is recorded as text-embeddings", async () => {
    const wa = ok(await send(node.url, `/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, { text: "hello" }));
    const oa = ok(await send(node.url, "/v1/embeddings", { model: STORIES, input: "hello" }));
    const tasks = rowsFor(node.dataDir, [wa.id, oa.id]).map((r) => r.task);
    assert.deepEqual(tasks, ["text-embeddings", "text-embeddings"]);
  });

  test("a malformed x-request-id is replaced; the record is under the id the answer carries", async () => {
    for (const bad of ["has space", "x".repeat(129), "semi;colon", "a/b", "<script>"]) {
      const s = await send(node.url, `/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, { prompt: "Once", max_tokens: 2 }, { id: bad });
      assert.equal(s.status, 200, s.text);
      const given = s.headers.get("x-request-id")!;
      assert.notEqual(given, s.id);
      answered.add(given);
      assert.equal(rowsFor(node.dataDir, [given]).length, 1);
      assert.equal(rowsFor(node.dataDir, [s.id]).length, 0);
    }
  });
});

describe("requests that are not answered are not recorded", { timeout: 30_000 }, () => {
  test("400, 401, 403, 404 and 429 leave no record", async () => {
    const before = countRows(node.dataDir);
    const ai = `/client/v4/accounts/${ACCOUNT}/ai`;
    const created = await adminPost(node.url, "accounts", { name: "nolimit", plan: "paid", limits: { rate_limits: { "text-generation": 0 } } });
    const limited = created.id as string;
    const tok = await adminPost(node.url, "tokens", { account_id: limited, scopes: ["ai:run"] });
    const restricted = await adminPost(node.url, "tokens", { account_id: ACCOUNT, scopes: ["ai:run"], models: [BERT] });

    const refused: [number, Sent][] = [
      [400, await send(node.url, `${ai}/run/${STORIES}`, { prompt: "x", max_tokens: -1 })],
      [400, await send(node.url, `${ai}/run/${STORIES}`, "{not json")],
      [400, await send(node.url, `${ai}/run/${STORIES}`, { prompt: 42 })],
      [400, await send(node.url, `${ai}/run/@local/no-such-model`, { prompt: "x" })],
      [400, await send(node.url, `${ai}/run/${BERT}`, { prompt: "an embedding model cannot generate" })],
      [400, await send(node.url, "/v1/chat/completions", { model: STORIES, messages: "nope" })],
      [400, await send(node.url, "/v1/embeddings", { model: BERT, input: "x", dimensions: 3 })],
      [401, await send(node.url, `${ai}/run/${STORIES}`, { prompt: "x" }, { token: "wrong-token-123456" })],
      [403, await send(node.url, `/client/v4/accounts/someone-else/ai/run/${STORIES}`, { prompt: "x" })],
      [403, await send(node.url, `${ai}/run/${STORIES}`, { prompt: "x" }, { token: restricted.token })],
      [404, await send(node.url, `${ai}/run/@nope/model`, { prompt: "x" })],
      [404, await send(node.url, `${ai}/nothing-here`, { prompt: "x" })],
      [429, await send(node.url, `/client/v4/accounts/${limited}/ai/run/${STORIES}`, { prompt: "x" }, { token: tok.token })],
      [429, await send(node.url, `/client/v4/accounts/${limited}/ai/run/${STORIES}`, { prompt: "x", stream: true }, { token: tok.token })],
    ];
    for (const [status, s] of refused) {
      assert.equal(s.status, status, `${s.id}: ${s.text.slice(0, 200)}`);
      assert.equal(JSON.parse(s.text).success, false);
    }
    assert.deepEqual(rowsFor(node.dataDir, refused.map(([, s]) => s.id)), []);
    assert.equal(countRows(node.dataDir), before);
  });

  test("a stream the client aborts mid-way is not recorded, and its id can be used again (once)", async () => {
    const id = newId("aborted");
    const controller = new AbortController();
    const res = await fetch(`${node.url}/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, {
      method: "POST",
      headers: { ...node.headers, "x-request-id": id },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 500, stream: true }),
      signal: controller.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    assert.ok(!first.includes("[DONE]"), "the whole stream arrived before the abort");
    controller.abort();
    await reader.cancel().catch(() => undefined);

    // The id stays reserved (409) only until the server has noticed; then it is free: never billed.
    const deadline = Date.now() + 15_000;
    let retry: Sent;
    for (;;) {
      assert.deepEqual(rowsFor(node.dataDir, [id]), [], "the aborted stream was recorded");
      retry = await send(node.url, `/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, { prompt: "Once upon a time", max_tokens: 4 }, { id });
      if (retry.status !== 409 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    ok(retry);
    const rows = rowsFor(node.dataDir, [id]);
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.output_units, 4);
    assert.equal(rows[0]!.bytes_out, retry.bytes.length);
    const snapshot = node.scheduler.snapshot();
    for (const m of snapshot.models) assert.equal(m.active, 0, JSON.stringify(snapshot));
  });

  test("reusing an x-request-id is 409/7106 on any API, and records nothing more; other accounts may use it", async () => {
    const id = newId("dup");
    const first = ok(await send(node.url, `/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, { prompt: "Once", max_tokens: 3 }, { id }));
    const row = rowsFor(node.dataDir, [id]);
    for (const [pathname, body] of [
      [`/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, { prompt: "Once", max_tokens: 3 }],
      [`/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, { prompt: "Once", max_tokens: 3, stream: true }],
      [`/client/v4/accounts/${ACCOUNT}/ai/run/${BERT}`, { text: "hi" }],
      ["/v1/chat/completions", { model: STORIES, messages: [{ role: "user", content: "hi" }] }],
      ["/v1/embeddings", { model: BERT, input: "hi" }],
    ] as [string, unknown][]) {
      const again = await send(node.url, pathname, body, { id });
      assert.equal(again.status, 409, again.text);
      const err = JSON.parse(again.text);
      assert.equal(err.success, false);
      assert.equal(err.errors[0].code, 7106);
      assert.ok(!again.text.includes("there was"), "a refused duplicate carried an answer");
    }
    assert.deepEqual(rowsFor(node.dataDir, [id]), row, "the record changed");
    assert.ok(first);

    // Two at once with one id: one answer, one 409, one record.
    const twin = newId("twin");
    const both = await Promise.all(
      [0, 1].map(() => send(node.url, `/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, { prompt: "Once upon a time", max_tokens: 100 }, { id: twin })),
    );
    assert.deepEqual(both.map((s) => s.status).sort(), [200, 409], both.map((s) => s.text.slice(0, 100)).join(" | "));
    answered.add(twin);
    assert.equal(rowsFor(node.dataDir, [twin]).length, 1);

    // The key is (account, request id): another account's request with the same id is its own.
    const acct = await adminPost(node.url, "accounts", { name: "other", plan: "paid" });
    const tok = await adminPost(node.url, "tokens", { account_id: acct.id, scopes: ["ai:run"] });
    const other = await send(node.url, `/client/v4/accounts/${acct.id}/ai/run/${STORIES}`, { prompt: "Once", max_tokens: 3 }, { id, token: tok.token });
    assert.equal(other.status, 200, other.text);
    answered.add(`${acct.id}/${id}`);
    const rows = rowsFor(node.dataDir, [id]);
    assert.deepEqual(rows.map((r) => r.account_id).sort(), [ACCOUNT, acct.id].sort());
    assert.equal(countRows(node.dataDir), answered.size);
  });
});

describe("deadlines and chunked uploads", { timeout: 30_000 }, () => {
  test("a request past its deadline is not recorded: 408 before the first byte, an error event and no [DONE] mid-stream", async (t) => {
    const slow = await startTestNode({ requestTimeoutMs: 150, preload: [STORIES] });
    try {
      const ai = `/client/v4/accounts/${ACCOUNT}/ai`;
      const plain = await send(slow.url, `${ai}/run/${STORIES}`, { prompt: "Once upon a time", max_tokens: 500 });
      assert.equal(plain.status, 408, plain.text.slice(0, 200));
      assert.equal(JSON.parse(plain.text).errors[0].code, 3007);
      const stream = await send(slow.url, `${ai}/run/${STORIES}`, { prompt: "Once upon a time", max_tokens: 500, stream: true });
      t.diagnostic(`stream past its deadline: ${stream.status}, ${stream.bytes.length} bytes`);
      if (stream.status === 200) {
        assert.ok(!stream.text.includes("data: [DONE]"), stream.text.slice(-300));
        assert.match(stream.text, /"code":3007/);
      } else assert.equal(stream.status, 408);
      const fast = await send(slow.url, `${ai}/run/${STORIES}`, { prompt: "Once", max_tokens: 2 });
      assert.equal(fast.status, 200, fast.text);
      assert.deepEqual(rowsFor(slow.dataDir, [plain.id, stream.id]), []);
      assert.equal(countRows(slow.dataDir), 1);
    } finally {
      await slow.close();
    }
  });

  test("bytes_in counts a chunked request body (no Content-Length) too", async () => {
    const id = newId("chunked");
    const body = JSON.stringify({ prompt: "Once upon a time", max_tokens: 3, pad: "x".repeat(5000) });
    const bytes = Buffer.from(body);
    const parts = [bytes.subarray(0, 7), bytes.subarray(7, 3000), bytes.subarray(3000)];
    const res = await fetch(`${node.url}/client/v4/accounts/${ACCOUNT}/ai/run/${STORIES}`, {
      method: "POST",
      headers: { ...node.headers, "x-request-id": id },
      body: new ReadableStream({
        pull(c) {
          const p = parts.shift();
          if (p) c.enqueue(new Uint8Array(p));
          else c.close();
        },
      }),
      duplex: "half",
    } as RequestInit);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    answered.add(id);
    const [row] = rowsFor(node.dataDir, [id]);
    assert.equal(row?.bytes_in, bytes.length);
    assert.equal(row?.bytes_out, Buffer.byteLength(text));
  });
});

describe("usage reports", { timeout: 30_000 }, () => {
  test("group by day, model and account; cost = neurons / 1000 × price; an account sees only its own", async () => {
    const acct = await adminPost(node.url, "accounts", { name: "reported", plan: "paid" });
    const b = acct.id as string;
    const tok = await adminPost(node.url, "tokens", { account_id: b, scopes: ["ai:run", "usage:read"] });
    const bToken = tok.token as string;
    ok(await send(node.url, `/client/v4/accounts/${b}/ai/run/${STORIES}`, { prompt: "Once", max_tokens: 3 }, { token: bToken }));
    ok(await send(node.url, `/client/v4/accounts/${b}/ai/run/${BERT}`, { text: "tea" }, { token: bToken }));
    ok(await send(node.url, `/client/v4/accounts/${b}/ai/run/${BERT}`, { text: "coffee" }, { token: bToken }));

    const db = readDb(node.dataDir, (d) => d.prepare("SELECT day, model, account_id, neurons, input_units, output_units FROM usage").all() as Row[]);
    const sum = (rows: Row[]) => ({ requests: rows.length, neurons: rows.reduce((t, r) => t + r.neurons, 0) });
    const cost = (neurons: number) => (neurons / 1000) * PRICE;
    const checkRow = (row: any, rows: Row[], what: string) => {
      const s = sum(rows);
      assert.equal(row.requests, s.requests, what);
      assert.ok(Math.abs(row.neurons - s.neurons) <= 1e-4, `${what}: neurons ${row.neurons} vs ${s.neurons}`);
      assert.ok(Math.abs(row.cost_usd - cost(s.neurons)) <= 1e-6, `${what}: cost ${row.cost_usd} vs ${cost(s.neurons)}`);
      assert.ok(row.cost_usd > 0, what);
    };

    const byAccount = await get(node.url, "/client/v4/admin/usage?group_by=account");
    assert.equal(byAccount.price_per_1000_neurons, PRICE);
    assert.deepEqual(byAccount.group_by, ["account"]);
    const accounts = [...new Set(db.map((r) => r.account_id))].sort();
    assert.deepEqual(byAccount.rows.map((r: any) => r.account_id).sort(), accounts);
    for (const r of byAccount.rows) checkRow(r, db.filter((x) => x.account_id === r.account_id), `account ${r.account_id}`);
    checkRow(byAccount.totals, db, "totals");

    const byModel = await get(node.url, "/client/v4/admin/usage?group_by=model");
    assert.deepEqual(byModel.rows.map((r: any) => r.model), [BERT, STORIES]);
    for (const r of byModel.rows) checkRow(r, db.filter((x) => x.model === r.model), `model ${r.model}`);

    const byDay = await get(node.url, "/client/v4/admin/usage?group_by=day");
    assert.deepEqual(byDay.rows.map((r: any) => r.day), [...new Set(db.map((r) => r.day))].sort());
    for (const r of byDay.rows) checkRow(r, db.filter((x) => x.day === r.day), `day ${r.day}`);

    const all3 = await get(node.url, "/client/v4/admin/usage?group_by=day,model,account");
    const keys = new Set(db.map((r) => `${r.day}|${r.model}|${r.account_id}`));
    assert.equal(all3.rows.length, keys.size);
    for (const r of all3.rows) checkRow(r, db.filter((x) => x.day === r.day && x.model === r.model && x.account_id === r.account_id), JSON.stringify(r));
    // Admin filter to one account; the account's own report through its own token; the default grouping.
    const onlyB = await get(node.url, `/client/v4/admin/usage?account_id=${b}&group_by=model`);
    checkRow(onlyB.totals, db.filter((x) => x.account_id === b), "admin, account B");
    const own = await get(node.url, `/client/v4/accounts/${b}/ai/usage?group_by=account`, bToken);
    assert.deepEqual(own.rows.map((r: any) => r.account_id), [b]);
    checkRow(own.totals, db.filter((x) => x.account_id === b), "B's own report");
    const dflt = await get(node.url, `/client/v4/accounts/${b}/ai/usage`, bToken);
    assert.deepEqual(dflt.group_by, ["day", "model"]);
    assert.equal(dflt.rows.length, 2);

    // Days: a range that ends yesterday is empty; since > until is 400.
    const today = utcDay(Date.now());
    const yesterday = utcDay(Date.now() - 86_400_000);
    const empty = await get(node.url, `/client/v4/accounts/${ACCOUNT}/ai/usage?until=${yesterday}`);
    assert.deepEqual([empty.rows, empty.totals.requests, empty.totals.cost_usd], [[], 0, 0]);
    const onlyToday = await get(node.url, `/client/v4/accounts/${ACCOUNT}/ai/usage?since=${today}&until=${today}&group_by=day`);
    checkRow(onlyToday.totals, db.filter((x) => x.account_id === ACCOUNT && x.day === today), "today");
    const bad = await fetch(`${node.ai}/usage?since=${today}&until=${yesterday}`, { headers: node.headers });
    assert.equal(bad.status, 400);
  });
});

describe("unit: prices and the meter", () => {
  test("neuronsFor: Workers AI's price for @cf/meta/llama-3.2-1b-instruct (2457 in / 18252 out per M), CPU time for the rest", () => {
    const pricing = { computeNeuronsPerCpuSecond: 0.3 };
    const m = "@cf/meta/llama-3.2-1b-instruct";
    assert.deepEqual(PRICES[m], { input: 2457 / 1e6, output: 18252 / 1e6 });
    assert.ok(Math.abs(neuronsFor(m, 1e6, 0, 0, 0, pricing) - 2457) < 1e-9);
    assert.ok(Math.abs(neuronsFor(m, 0, 1e6, 0, 0, pricing) - 18252) < 1e-9);
    assert.ok(Math.abs(neuronsFor(m, 1000, 500, 0, 0, pricing) - (2.457 + 9.126)) < 1e-9);
    // Listed models cost their tokens whatever CPU they took.
    assert.equal(neuronsFor(m, 1000, 500, 123_456, 999, pricing), neuronsFor(m, 1000, 500, 0, 0, pricing));
    assert.equal(neuronsFor(m, 0, 0, 5000, 5000, pricing), 0);
    // Unlisted: CPU seconds × rate; wall time when no CPU was measured; never zero.
    assert.ok(Math.abs(neuronsFor("@local/x", 10, 10, 2000, 9000, pricing) - 0.6) < 1e-12);
    assert.ok(Math.abs(neuronsFor("@local/x", 10, 10, 0, 5000, pricing) - 1.5) < 1e-12);
    assert.ok(neuronsFor("@local/x", 0, 0, 0, 0, pricing) > 0);
    assert.ok(neuronsFor("@borde/stories260k", 0, 0, 0, -1, pricing) > 0);
  });

  test("Meter: a priced record, committed once, its id refused while running and once billed", () => {
    const db = openDatabase(":memory:");
    const ledger = new SqliteLedger(db);
    let now = Date.UTC(2026, 2, 3, 12);
    const logger = createLogger("silent", new Writable({ write: (_c, _e, cb) => cb() }));
    const meter = new Meter({ writer: ledger, pop: "madrid", pricing: { computeNeuronsPerCpuSecond: 0.3 }, logger, now: () => now });
    const usage: UsageFacts = { model: "@cf/meta/llama-3.2-1b-instruct", task: "text-generation", unit: "tokens", inputUnits: 1000, outputUnits: 500, cpuMs: 12.34567, wallMs: 20 };
    const release = meter.claim("acct", "r1");
    assert.throws(() => meter.claim("acct", "r1"), (e: unknown) => e instanceof BordeError && e.code === 7106);
    assert.ok(meter.claim("other", "r1"));
    const call = { requestId: "r1", principal: { accountId: "acct", tokenId: "tok" }, usage };
    const rec = meter.commit(call, { bytesIn: 10, bytesOut: 20 })!;
    release();
    assert.ok(Math.abs(rec.neurons - 11.583) < 1e-9);
    assert.equal(rec.cpuMs, 12.346);
    assert.deepEqual([rec.pop, rec.served, rec.day, rec.bytesIn, rec.bytesOut], ["madrid", "edge", "2026-03-03", 10, 20]);
    assert.equal(meter.commit(call, { bytesIn: 10, bytesOut: 20 }), null, "committed twice");
    assert.throws(() => meter.claim("acct", "r1"), (e: unknown) => e instanceof BordeError && e.code === 7106);
    assert.ok(Math.abs(meter.accountNeuronsToday("acct") - 11.583) < 1e-9);
    assert.ok(Math.abs(meter.tokenNeuronsToday("tok") - 11.583) < 1e-9);
    // No usage facts (the model never answered): nothing to record.
    assert.equal(meter.commit({ requestId: "r2", principal: { accountId: "acct", tokenId: "tok" } }, { bytesIn: 1, bytesOut: 1 }), null);
    // At 00:00 UTC the daily counters start again; the ledger keeps yesterday.
    now = Date.UTC(2026, 2, 4, 0, 0, 1);
    assert.equal(meter.accountNeuronsToday("acct"), 0);
    assert.equal((db.prepare("SELECT COUNT(*) AS n FROM usage").get() as { n: number }).n, 1);
    db.close();
  });
});

describe("metering off, and restarts", { timeout: 60_000 }, () => {
  test("metering: false answers everything and writes nothing", async () => {
    const off = await startTestNode({ metering: false });
    try {
      const ai = `/client/v4/accounts/${ACCOUNT}/ai`;
      const id = newId("off");
      for (const [pathname, body] of [
        [`${ai}/run/${STORIES}`, { prompt: "Once", max_tokens: 3 }],
        [`${ai}/run/${STORIES}`, { prompt: "Once", max_tokens: 3, stream: true }],
        [`${ai}/run/${STORIES}`, { text: "hello" }],
        ["/v1/chat/completions", { model: STORIES, messages: [{ role: "user", content: "hi" }], max_tokens: 3 }],
      ] as [string, unknown][])
        assert.equal((await send(off.url, pathname, body, { id })).status, 200);
      assert.equal(countRows(off.dataDir), 0);
      const report = await get(off.url, `${ai}/usage`);
      assert.equal(report.totals.requests, 0);
    } finally {
      await off.close();
    }
  });

  test("a restart on the same data folder keeps the ledger, the free allocation used, budgets used and the ids billed", async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-ledger-restart-"));
    const config = { dataDir, freeNeurons: 0.001, computeNeuronsPerCpuSecond: 1000 };
    try {
      const first = await startTestNode(config);
      let free: { account: string; token: string };
      let budget: string;
      const id = newId("kept");
      try {
        const acct = await adminPost(first.url, "accounts", { name: "free one" });
        const tok = await adminPost(first.url, "tokens", { account_id: acct.id, scopes: ["ai:run"] });
        free = { account: acct.id, token: tok.token };
        const bt = await adminPost(first.url, "tokens", { account_id: ACCOUNT, scopes: ["ai:run"], daily_neuron_budget: 0.000001 });
        budget = bt.token;
        const run = (base: string, account: string, token: string, rid?: string) =>
          send(base, `/client/v4/accounts/${account}/ai/run/${STORIES}`, { prompt: "Once", max_tokens: 3 }, { token, ...(rid ? { id: rid } : {}) });
        assert.equal((await run(first.url, free.account, free.token)).status, 200);
        assert.equal(JSON.parse((await run(first.url, free.account, free.token)).text).errors[0].code, 3036);
        assert.equal((await run(first.url, ACCOUNT, budget)).status, 200);
        assert.equal(JSON.parse((await run(first.url, ACCOUNT, budget)).text).errors[0].code, 7105);
        assert.equal((await run(first.url, ACCOUNT, TOKEN, id)).status, 200);
      } finally {
        await first.close();
      }
      const rowsBefore = countRows(dataDir);
      assert.equal(rowsBefore, 3);

      const second = await startTestNode(config);
      try {
        const run = (account: string, token: string, rid?: string) =>
          send(second.url, `/client/v4/accounts/${account}/ai/run/${STORIES}`, { prompt: "Once", max_tokens: 3 }, { token, ...(rid ? { id: rid } : {}) });
        const f = await run(free.account, free.token);
        assert.equal(f.status, 429, f.text);
        assert.equal(JSON.parse(f.text).errors[0].code, 3036);
        const bq = await run(ACCOUNT, budget);
        assert.equal(bq.status, 429, bq.text);
        assert.equal(JSON.parse(bq.text).errors[0].code, 7105);
        const dup = await run(ACCOUNT, TOKEN, id);
        assert.equal(dup.status, 409, dup.text);
        assert.equal((await run(ACCOUNT, TOKEN)).status, 200);
        const report = await get(second.url, "/client/v4/admin/usage?group_by=account");
        assert.equal(report.totals.requests, 4);
      } finally {
        await second.close();
      }
      assert.equal(countRows(dataDir), 4);
    } finally {
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  });
});
