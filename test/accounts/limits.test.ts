/**
 * Per-account limits on a real node over real HTTP: the free plan's daily allocation (429/3036 until
 * 00:00 UTC), requests per minute per task and text-generation tokens per minute (429/7104), the
 * concurrent-request cap, and account and token daily neuron budgets (429/7105), with per-account
 * overrides through the admin API. Every 429 carries Retry-After. The sliding-window arithmetic is
 * checked on the real Limiter with a fake clock.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Limiter, type Principal } from "../../src/accounts/index.js";
import { secondsToUtcMidnight } from "../../src/accounts/limits.js";
import { BordeError } from "../../src/errors.js";
import { TINY_BERT_PATH } from "../fixtures/make-tiny-bert.js";
import { ACCOUNT, startTestNode, TOKEN, type TestNode, answer, type Answer } from "../helpers.js";

const MODEL = "@local/stories";
/** A real embedding model (task text-embeddings), copied in as @local/bert. */
const BERT = "@local/bert";
const GEN = { prompt: "Once upon a time", max_tokens: 8 };
/** Limits that keep an account clear of every node default but the one under test. */
const NO_RPM = { "text-generation": 1_000_000, "text-embeddings": 1_000_000 };

let node: TestNode;
/** Every 429 this file saw: all must carry Retry-After. */
const refusals: Answer[] = [];

async function call(method: string, pathname: string, body?: unknown, token = TOKEN, headers: Record<string, string> = {}): Promise<Answer> {
  const a = await answer(
    await fetch(`${node.url}${pathname}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
  );
  if (a.status === 429) refusals.push(a);
  return a;
}

function run(account: string, token: string, body: unknown = GEN, headers: Record<string, string> = {}, model = MODEL): Promise<Answer> {
  return call("POST", `/client/v4/accounts/${account}/ai/run/${model}`, body, token, headers);
}

function embed(account: string, token: string, model = BERT): Promise<Answer> {
  return run(account, token, { text: "hello world" }, {}, model);
}

function assert429(a: Answer, code: number, message?: RegExp): number {
  const where = `${a.status} ${a.text.slice(0, 300)}`;
  assert.equal(a.status, 429, where);
  assert.equal(a.json?.success, false, where);
  assert.equal(a.json.errors[0].code, code, where);
  if (message) assert.match(a.json.errors[0].message, message, where);
  const retry = a.headers.get("retry-after");
  assert.ok(retry !== null, `no Retry-After: ${where}`);
  assert.match(retry, /^\d+$/, `Retry-After is not whole seconds: ${retry}`);
  const seconds = Number(retry);
  assert.ok(seconds >= 1, `Retry-After ${retry}`);
  return seconds;
}

async function createAccount(body: Record<string, unknown>): Promise<string> {
  const a = await call("POST", "/client/v4/admin/accounts", body);
  assert.equal(a.status, 200, a.text);
  return a.json.result.id as string;
}

async function createToken(body: Record<string, unknown>): Promise<{ token: string; id: string }> {
  const a = await call("POST", "/client/v4/admin/tokens", { scopes: ["ai:run"], ...body });
  assert.equal(a.status, 200, a.text);
  return { token: a.json.result.token as string, id: a.json.result.id as string };
}

async function patchAccount(id: string, body: Record<string, unknown>): Promise<void> {
  const a = await call("PATCH", `/client/v4/admin/accounts/${id}`, body);
  assert.equal(a.status, 200, a.text);
}

/** A new account and its ai:run token. */
async function principal(account: Record<string, unknown>, token: Record<string, unknown> = {}): Promise<{ account: string; token: string; tokenId: string }> {
  const id = await createAccount({ name: "limited", ...account });
  const t = await createToken({ account_id: id, ...token });
  return { account: id, token: t.token, tokenId: t.id };
}

/** Starts a stream and resolves once its first bytes arrived (the request is admitted and running). */
async function startStream(account: string, token: string, maxTokens: number): Promise<{ status: number; rest: Promise<string>; first: string; json?: any }> {
  const res = await fetch(`${node.url}/client/v4/accounts/${account}/ai/run/${MODEL}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ prompt: "Once upon a time", max_tokens: maxTokens, stream: true }),
  });
  if (res.status !== 200) {
    const a = await answer(res);
    if (a.status === 429) refusals.push(a);
    return { status: a.status, rest: Promise.resolve(a.text), first: a.text, json: a.json };
  }
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const { value } = await reader.read();
  const first = decoder.decode(value, { stream: true });
  const rest = (async () => {
    let text = first;
    for (;;) {
      const { done, value: v } = await reader.read();
      if (done) return text + decoder.decode();
      text += decoder.decode(v, { stream: true });
    }
  })();
  return { status: 200, rest, first };
}

before(async () => {
  node = await startTestNode({
    rateLimits: { "text-generation": 3 },
    maxConcurrent: 1,
    tokensPerMinute: 20,
    freeNeurons: 0.001,
    // Every request costs whole neurons, so one request uses up the tiny allocations below.
    computeNeuronsPerCpuSecond: 1000,
  });
  await fs.copyFile(TINY_BERT_PATH, path.join(node.modelsDir, "bert.gguf"));
  // The dev account (paid) stays clear of the node's tight defaults unless a test says otherwise.
  await patchAccount(ACCOUNT, { limits: { rate_limits: NO_RPM, tokens_per_minute: 0, max_concurrent: 100 } });
});
after(async () => {
  await node?.close();
});

describe("daily free allocation (free plan)", { timeout: 30_000 }, () => {
  test("first request 200, then 429/3036 until 00:00 UTC on every API; paid accounts are not limited by it", async () => {
    const free = await principal({ plan: "free", limits: { rate_limits: NO_RPM, tokens_per_minute: 0, max_concurrent: 100 } });
    const first = await run(free.account, free.token);
    assert.equal(first.status, 200, first.text);
    for (let i = 0; i < 3; i++) {
      const before = secondsToUtcMidnight(Date.now());
      const a = await run(free.account, free.token);
      const afterwards = secondsToUtcMidnight(Date.now());
      const retry = assert429(a, 3036, /daily free allocation of 0\.001 neurons.*00:00 UTC/);
      assert.ok(retry >= afterwards - 1 && retry <= before + 1, `Retry-After ${retry}, expected ${afterwards}..${before} (seconds to 00:00 UTC)`);
    }
    assert429(await embed(free.account, free.token), 3036);
    const chat = await call("POST", "/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 4 }, free.token);
    assert429(chat, 3036);
    assert.equal(chat.json.error.type, "rate_limit_error");
    assert429(await call("POST", "/v1/embeddings", { model: MODEL, input: "hi" }, free.token), 3036);

    // The dev account is paid: far past the allocation, never refused for it.
    for (let i = 0; i < 5; i++) assert.equal((await run(ACCOUNT, TOKEN)).status, 200);
    // Upgrading lifts the limit at once; going back to free brings it back.
    await patchAccount(free.account, { plan: "paid" });
    assert.equal((await run(free.account, free.token)).status, 200);
    await patchAccount(free.account, { plan: "free" });
    assert429(await run(free.account, free.token), 3036);
  });
});

describe("requests per minute", { timeout: 30_000 }, () => {
  test("the node's 3 text-generation requests a minute: the 4th is 429/7104 with Retry-After; embeddings and other accounts count apart", async () => {
    const a = await principal({ plan: "paid", limits: { tokens_per_minute: 0, max_concurrent: 100 } });
    for (let i = 0; i < 3; i++) assert.equal((await run(a.account, a.token)).status, 200, `request ${i + 1}`);
    const refused = await run(a.account, a.token, GEN, { "x-request-id": "rpm-refused-1" });
    const retry = assert429(refused, 7104, /more than 3 text-generation requests per minute/);
    assert.ok(retry <= 121, `Retry-After ${retry}`);
    // The same limit whichever API asks.
    const chat = await call("POST", `/client/v4/accounts/${a.account}/ai/v1/chat/completions`, { model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 4 }, a.token);
    assert429(chat, 7104);
    assert.equal(chat.json.error.type, "rate_limit_error");
    // Embeddings are another task, another account another window.
    const e = await embed(a.account, a.token);
    assert.equal(e.status, 200, e.text);
    const b = await principal({ plan: "paid", limits: { tokens_per_minute: 0, max_concurrent: 100 } });
    for (let i = 0; i < 3; i++) assert.equal((await run(b.account, b.token)).status, 200);

    // A per-account override lifts it at once; the refused request id was not used up.
    await patchAccount(a.account, { limits: { rate_limits: { "text-generation": 100 }, tokens_per_minute: 0, max_concurrent: 100 } });
    const retried = await run(a.account, a.token, GEN, { "x-request-id": "rpm-refused-1" });
    assert.equal(retried.status, 200, retried.text);
  });

  test("per-account overrides below the node's default, and 0 (no requests of that task)", async () => {
    const one = await principal({ plan: "paid", limits: { rate_limits: { "text-generation": 1 }, tokens_per_minute: 0, max_concurrent: 100 } });
    assert.equal((await run(one.account, one.token)).status, 200);
    assert429(await run(one.account, one.token), 7104, /more than 1 text-generation/);
    const none = await principal({ plan: "paid", limits: { rate_limits: { "text-embeddings": 0 }, tokens_per_minute: 0, max_concurrent: 100 } });
    assert429(await embed(none.account, none.token), 7104, /more than 0 text-embeddings/);
    assert.equal((await run(none.account, none.token)).status, 200);
  });

  // BUG (src/inference/index.ts, InferenceService.embed → metered): an embeddings request to a
  // text-generation GGUF (`{text}` on @local/stories, or /v1/embeddings with it) is admitted on
  // `info.task`, i.e. against the text-generation requests-per-minute and tokens-per-minute limits,
  // instead of text-embeddings'.
  test("embeddings on a text-generation model are limited as text-embeddings, not text-generation", async () => {
    const a = await principal({ plan: "paid", limits: { rate_limits: { "text-generation": 1 }, tokens_per_minute: 0, max_concurrent: 100 } });
    assert.equal((await run(a.account, a.token)).status, 200);
    assert429(await run(a.account, a.token), 7104);
    const e = await embed(a.account, a.token, MODEL);
    assert.equal(e.status, 200, `an embeddings request was refused on the text-generation limit: ${e.text}`);
    const b = await principal({ plan: "paid", limits: { rate_limits: { "text-embeddings": 0 }, tokens_per_minute: 0, max_concurrent: 100 } });
    const refused = await embed(b.account, b.token, MODEL);
    assert.equal(refused.status, 429, `an embeddings request ignored the text-embeddings limit of 0: ${refused.text.slice(0, 200)}`);
  });
});

describe("concurrent requests", { timeout: 30_000 }, () => {
  test("maxConcurrent 1: of two concurrent streams one is 429/7104; the other completes; other accounts run meanwhile", async () => {
    const k = await principal({ plan: "paid", limits: { rate_limits: NO_RPM, tokens_per_minute: 0 } });
    const [s1, s2] = await Promise.all([startStream(k.account, k.token, 400), startStream(k.account, k.token, 400)]);
    const ok = [s1, s2].filter((s) => s.status === 200);
    const refused = [s1, s2].filter((s) => s.status !== 200);
    assert.equal(ok.length, 1, `statuses ${s1.status} ${s2.status}: ${refused.map((r) => r.first).join(" | ")}`);
    assert.equal(refused[0]!.status, 429);
    assert.equal(refused[0]!.json.errors[0].code, 7104);
    assert.match(refused[0]!.json.errors[0].message, /already has 1 requests running/);

    // While it runs: a plain request of the same account is refused too, another account's is not.
    const plain = await run(k.account, k.token);
    const other = await run(ACCOUNT, TOKEN);
    const body = await ok[0]!.rest;
    assert.ok(body.endsWith("data: [DONE]\n\n"), body.slice(-200));
    assert.equal(other.status, 200, other.text);
    // `plain` may have raced the stream's end; if it was refused, it was for concurrency.
    if (plain.status !== 200) assert429(plain, 7104, /requests running/);

    // The slot is back once the stream is over.
    assert.equal((await run(k.account, k.token)).status, 200);

    // A per-account override of 2 lets two run at once.
    await patchAccount(k.account, { limits: { rate_limits: NO_RPM, tokens_per_minute: 0, max_concurrent: 2 } });
    const both = await Promise.all([startStream(k.account, k.token, 200), startStream(k.account, k.token, 200)]);
    assert.deepEqual(
      both.map((s) => s.status),
      [200, 200],
    );
    for (const s of both) assert.ok((await s.rest).endsWith("data: [DONE]\n\n"));
  });
});

describe("text-generation tokens per minute", { timeout: 30_000 }, () => {
  test("tokensPerMinute 20: two 13-token requests pass, the third is 429/7104; embeddings are not counted; an override lifts it", async () => {
    const t = await principal({ plan: "paid", limits: { rate_limits: NO_RPM, max_concurrent: 100 } });
    const r1 = await run(t.account, t.token);
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.json.result.usage.total_tokens, 13);
    assert.equal((await run(t.account, t.token)).status, 200);
    const refused = await run(t.account, t.token);
    const retry = assert429(refused, 7104, /more than 20 text-generation tokens per minute/);
    assert.ok(retry <= 121, `Retry-After ${retry}`);
    const e = await embed(t.account, t.token);
    assert.equal(e.status, 200, e.text);
    await patchAccount(t.account, { limits: { rate_limits: NO_RPM, max_concurrent: 100, tokens_per_minute: 1000 } });
    assert.equal((await run(t.account, t.token)).status, 200);
  });
});

describe("daily neuron budgets", { timeout: 30_000 }, () => {
  test("an account's budget: first request 200, then 429/7105 until 00:00 UTC for all its tokens", async () => {
    const a = await principal({ plan: "paid", daily_neuron_budget: 0.000001, limits: { rate_limits: NO_RPM, tokens_per_minute: 0, max_concurrent: 100 } });
    const second = await createToken({ account_id: a.account });
    assert.equal((await run(a.account, a.token)).status, 200);
    for (const token of [a.token, second.token]) {
      const before = secondsToUtcMidnight(Date.now());
      const retry = assert429(await run(a.account, token), 7105, /budget of this account.*00:00 UTC/);
      assert.ok(Math.abs(retry - before) <= 2, `Retry-After ${retry}, ${before} s to 00:00 UTC`);
    }
    assert429(await embed(a.account, a.token), 7105);
    // Raising the budget lets it run again.
    await patchAccount(a.account, { daily_neuron_budget: 1e9 });
    assert.equal((await run(a.account, a.token)).status, 200);
  });

  test("a token's budget stops that token only (429/7105); the account's other tokens go on", async () => {
    const a = await principal({ plan: "paid", limits: { rate_limits: NO_RPM, tokens_per_minute: 0, max_concurrent: 100 } }, { daily_neuron_budget: 0.000001 });
    const unlimited = await createToken({ account_id: a.account });
    assert.equal((await run(a.account, a.token)).status, 200);
    const retry = assert429(await run(a.account, a.token), 7105, /budget of this token/);
    assert.ok(Math.abs(retry - secondsToUtcMidnight(Date.now())) <= 2);
    assert.equal((await run(a.account, unlimited.token)).status, 200);
    assert.equal((await run(a.account, unlimited.token)).status, 200);
    assert429(await run(a.account, a.token), 7105);
  });

  test("a full model queue (429/3040) carries Retry-After too", async () => {
    const busy = await startTestNode({ parallel: 1, maxQueue: 0 });
    try {
      const go = () =>
        fetch(`${busy.ai}/run/${MODEL}`, { method: "POST", headers: busy.headers, body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 300 }) }).then(answer);
      const all = await Promise.all([go(), go(), go()]);
      const full = all.filter((a) => a.status === 429);
      assert.ok(full.length >= 1 && all.some((a) => a.status === 200), all.map((a) => `${a.status} ${a.text.slice(0, 100)}`).join(" | "));
      for (const a of full) {
        refusals.push(a);
        assert429(a, 3040);
      }
    } finally {
      await busy.close();
    }
  });

  test("every 429 this suite saw carried Retry-After", () => {
    assert.ok(refusals.length >= 10, `only ${refusals.length} refusals seen`);
    for (const r of refusals) {
      const v = r.headers.get("retry-after");
      assert.ok(v !== null && /^\d+$/.test(v) && Number(v) >= 1, `${r.text.slice(0, 200)}: Retry-After ${v}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The Limiter itself, with a fake clock.
// ---------------------------------------------------------------------------------------------

const W = 60_000;
/** A Monday 00:00:00 UTC: the start of a rate window. */
const T0 = Date.UTC(2026, 0, 5);

function who(over: Partial<Principal> = {}): Principal {
  return { accountId: "a", tokenId: "t", scopes: ["ai:run"], plan: "paid", models: null, jurisdictions: null, accountBudget: null, tokenBudget: null, limits: null, ...over };
}

function limiter(over: Partial<ConstructorParameters<typeof Limiter>[0]> = {}) {
  const clock = { now: T0 };
  const l = new Limiter({
    rateLimits: { "text-generation": 10 },
    tokensPerMinute: 0,
    maxConcurrent: 1000,
    freeNeurons: 10_000,
    accountNeuronsToday: () => 0,
    tokenNeuronsToday: () => 0,
    now: () => clock.now,
    ...over,
  });
  return { l, clock };
}

function refusal(f: () => unknown): BordeError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof BordeError, String(e));
    return e;
  }
  assert.fail("admitted, expected a refusal");
}

/** Admits as many as it can (up to `max`) and returns how many. */
function fill(l: Limiter, p: Principal, task = "text-generation", max = 1000, tokens = 0): number {
  for (let i = 0; i < max; i++) {
    try {
      l.admit(p, task).done(tokens);
    } catch {
      return i;
    }
  }
  return max;
}

describe("Limiter (fake clock)", () => {
  test("sliding window: the previous minute counts by how much of it still overlaps the last 60 s", () => {
    const { l, clock } = limiter();
    const p = who();
    assert.equal(fill(l, p), 10);
    const e = refusal(() => l.admit(p, "text-generation"));
    assert.equal(e.kind, "RateLimited");
    assert.equal(e.code, 7104);
    // Half-way through the next minute the last one still counts half: 5 more.
    clock.now = T0 + W + W / 2;
    assert.equal(fill(l, p), 5);
    // Three quarters in: 10 × 1/4 (previous) + 5 (current) = 7.5, so 2 more (9.5 + 1 > 10 stops the 3rd).
    clock.now = T0 + W + (3 * W) / 4;
    assert.equal(fill(l, p), 2);
    // A whole idle minute later, the previous minute is gone: a full 10.
    clock.now = T0 + 3 * W + 1;
    assert.equal(fill(l, p), 10);
    // Per account and per task; tasks not listed have no limit; 0 refuses everything.
    assert.equal(fill(l, who({ accountId: "b" })), 10);
    assert.equal(fill(l, p, "text-embeddings", 500), 500);
    const { l: l0 } = limiter({ rateLimits: { "text-generation": 0 } });
    assert.equal(fill(l0, p), 0);
    // A per-account override wins over the node's default.
    assert.equal(fill(l, who({ accountId: "c", limits: { rate_limits: { "text-generation": 2 } } })), 2);
  });

  test("concurrency: a slot per running request, given back once by done()", () => {
    const { l } = limiter({ maxConcurrent: 2, rateLimits: {} });
    const p = who();
    const a = l.admit(p, "text-generation");
    const b = l.admit(p, "text-generation");
    const e = refusal(() => l.admit(p, "text-generation"));
    assert.equal(e.code, 7104);
    assert.equal(e.retryAfter, 1);
    assert.ok(l.admit(who({ accountId: "other" }), "text-generation"));
    a.done(0);
    a.done(0); // twice frees one slot, not two
    const c = l.admit(p, "text-generation");
    refusal(() => l.admit(p, "text-generation"));
    b.done(0);
    c.done(0);
    assert.ok(l.admit(p, "text-generation"));
  });

  test("tokens per minute count when done, text-generation only", () => {
    const { l, clock } = limiter({ tokensPerMinute: 100, rateLimits: {} });
    const p = who();
    l.admit(p, "text-generation").done(60);
    l.admit(p, "text-generation").done(60);
    const e = refusal(() => l.admit(p, "text-generation"));
    assert.match(e.message, /100 text-generation tokens per minute/);
    l.admit(p, "text-embeddings").done(1_000_000);
    // Next minute, half-way: 120 × 1/2 = 60 < 100.
    clock.now = T0 + W + W / 2;
    assert.ok(l.admit(p, "text-generation"));
  });

  test("free allocation and budgets: 3036 / 7105 with Retry-After = seconds to 00:00 UTC", () => {
    let used = 0;
    let tokenUsed = 0;
    const { l, clock } = limiter({ freeNeurons: 10, accountNeuronsToday: () => used, tokenNeuronsToday: () => tokenUsed, rateLimits: {} });
    const free = who({ plan: "free" });
    used = 9.99;
    assert.ok(l.admit(free, "text-generation"));
    used = 10;
    let e = refusal(() => l.admit(free, "text-generation"));
    assert.equal(e.code, 3036);
    assert.equal(e.retryAfter, 86_400);
    clock.now = T0 + 86_400_000 - 500;
    e = refusal(() => l.admit(free, "text-generation"));
    assert.equal(e.retryAfter, 1);
    clock.now = T0 + 6 * 3_600_000;
    assert.equal(refusal(() => l.admit(free, "text-generation")).retryAfter, 18 * 3600);
    // Paid accounts have no free allocation, only the budgets they set.
    assert.ok(l.admit(who(), "text-generation"));
    e = refusal(() => l.admit(who({ accountBudget: 10 }), "text-generation"));
    assert.equal(e.code, 7105);
    assert.match(e.message, /account/);
    tokenUsed = 5;
    e = refusal(() => l.admit(who({ tokenBudget: 5 }), "text-generation"));
    assert.equal(e.code, 7105);
    assert.match(e.message, /token/);
    assert.ok(l.admit(who({ tokenBudget: 5.01 }), "text-generation"));
  });

  // BUG (src/accounts/limits.ts, Window.retryAfter): the rate check refuses when
  // `estimate + 1 > limit` (RPM) / `estimate >= limit` (TPM), but retryAfter solves
  // `estimate < limit`, and when the current minute is full it answers "the rest of this minute
  // + 1 s", ignoring that the full minute then weighs as the previous one. A client that waits
  // exactly Retry-After is refused again.
  test("a client that waits exactly Retry-After is admitted", () => {
    const scenarios: { name: string; setup: (l: Limiter, p: Principal, clock: { now: number }) => void; task: string; over: Partial<ConstructorParameters<typeof Limiter>[0]> }[] = [
      {
        name: "3 rpm, all 3 used at the start of a minute",
        over: { rateLimits: { "text-generation": 3 } },
        task: "text-generation",
        setup: (l, p) => void fill(l, p),
      },
      {
        name: "10 rpm, previous minute full, 5 used half-way through this one",
        over: { rateLimits: { "text-generation": 10 } },
        task: "text-generation",
        setup: (l, p, clock) => {
          fill(l, p);
          clock.now = T0 + W + W / 2;
          fill(l, p);
        },
      },
      {
        name: "20 tokens/min, 26 used (a request may overshoot)",
        over: { rateLimits: {}, tokensPerMinute: 20 },
        task: "text-generation",
        setup: (l, p) => {
          l.admit(p, "text-generation").done(13);
          l.admit(p, "text-generation").done(13);
        },
      },
    ];
    const failures: string[] = [];
    for (const s of scenarios) {
      const { l, clock } = limiter(s.over);
      const p = who();
      s.setup(l, p, clock);
      clock.now += 1;
      const e = refusal(() => l.admit(p, s.task));
      const header = Math.max(1, Math.ceil(e.retryAfter ?? 0));
      const refusedAt = clock.now;
      clock.now = refusedAt + header * 1000;
      let admitted = true;
      try {
        l.admit(p, s.task);
      } catch {
        admitted = false;
      }
      if (!admitted) {
        // How long it really takes, to the second.
        let wait = header;
        for (; wait < 600; wait++) {
          clock.now = refusedAt + wait * 1000;
          try {
            const { l: probe, clock: c2 } = limiter(s.over);
            c2.now = T0;
            s.setup(probe, p, c2);
            c2.now = refusedAt + wait * 1000;
            probe.admit(p, s.task);
            break;
          } catch {
            // still refused
          }
        }
        failures.push(`${s.name}: Retry-After ${header} s, but admitted only after ${wait} s`);
      }
      assert.ok(header <= 2 * 60 + 1, `${s.name}: Retry-After ${header}`);
    }
    assert.deepEqual(failures, []);
  });
});
