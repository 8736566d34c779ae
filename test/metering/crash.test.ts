/**
 * The single-node billing proof: `borde dev` (the real CLI, a child process) is SIGKILLed at random
 * moments under load from concurrent clients and restarted on the same data folder. Afterwards the
 * ledger holds exactly the requests whose answers the clients received in full — no answered request
 * unbilled, no unanswered one billed — and a billed request id can never be billed again.
 */
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import path from "node:path";
import { after, test } from "node:test";
import { cleanup, startDev, tmpDir, type DevNode } from "../cli/helpers.js";

const ACCOUNT = "acct_crash";
const TOKEN = "crash-test-token-0123456789";
const MODEL = "@borde/stories260k";
const CLIENTS = 8;
const KILLS = 3;
/** Answers each round must see before its kill can come (so every round does real work). */
const MIN_ANSWERED_PER_ROUND = 12;

type Outcome = "answered" | "refused" | "failed";

after(cleanup);

test("SIGKILL under load: the ledger holds exactly the answered requests, and an answered id is never billed twice", { timeout: 120_000 }, async (t) => {
  const home = await tmpDir("borde-crash-home-");
  const dataDir = await tmpDir("borde-crash-data-");
  const modelsDir = await tmpDir("borde-crash-models-");
  const env = {
    BORDE_DEV_ACCOUNT: ACCOUNT,
    BORDE_DEV_TOKEN: TOKEN,
    BORDE_DEV_PLAN: "paid",
    BORDE_RATE_LIMITS: "text-generation=1000000000,text-embeddings=1000000000",
    BORDE_MAX_CONCURRENT: "1000000",
    BORDE_TOKENS_PER_MINUTE: "0",
    BORDE_THREADS: "1",
    BORDE_PARALLEL: "4",
    BORDE_LOG_LEVEL: "warn",
  };
  const start = () => startDev(["--port", "0", "--host", "127.0.0.1", "--data-dir", dataDir, "--models-dir", modelsDir], { home, env });

  const outcomes = new Map<string, { outcome: Outcome; round: number; stream: boolean; status?: number }>();
  const pending = new Set<string>();
  const inFlightAtKill: number[] = [];
  let current: { url: string; round: number } | null = null;
  let wakeUp: () => void = () => undefined;
  let up = new Promise<void>((r) => (wakeUp = r));
  let stopping = false;
  let answeredThisRound = 0;
  let onAnswer: (() => void) | null = null;

  async function one(url: string, id: string, stream: boolean, maxTokens: number): Promise<{ outcome: Outcome; status?: number }> {
    let res: Response;
    try {
      res = await fetch(`${url}/client/v4/accounts/${ACCOUNT}/ai/run/${MODEL}`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", "x-request-id": id },
        body: JSON.stringify({ prompt: "Once upon a time", max_tokens: maxTokens, ...(stream ? { stream: true } : {}) }),
      });
    } catch {
      return { outcome: "failed" };
    }
    let text: string;
    try {
      text = await res.text();
    } catch {
      return { outcome: "failed", status: res.status };
    }
    if (res.status !== 200) return { outcome: "refused", status: res.status };
    if (stream) return { outcome: text.endsWith("data: [DONE]\n\n") && !text.includes('"success":false') ? "answered" : "failed", status: 200 };
    try {
      const body = JSON.parse(text) as { success: boolean; result: { response: string } };
      return { outcome: body.success && typeof body.result.response === "string" ? "answered" : "failed", status: 200 };
    } catch {
      return { outcome: "failed", status: 200 };
    }
  }

  async function client(c: number): Promise<void> {
    let n = 0;
    while (!stopping) {
      const target = current;
      if (!target) {
        await up;
        continue;
      }
      const id = `c${c}-r${target.round}-n${n++}`;
      const stream = Math.random() < 0.5;
      const maxTokens = stream ? 20 + Math.floor(Math.random() * 100) : 1 + Math.floor(Math.random() * 40);
      pending.add(id);
      const r = await one(target.url, id, stream, maxTokens);
      pending.delete(id);
      outcomes.set(id, { ...r, round: target.round, stream });
      if (r.outcome === "answered" && current?.round === target.round) {
        answeredThisRound++;
        onAnswer?.();
      }
    }
  }

  function answeredAtLeast(n: number, timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fewer than ${n} answers in ${timeoutMs} ms: ${JSON.stringify([...outcomes.values()].slice(-5))}`)), timeoutMs);
      const check = () => {
        if (answeredThisRound >= n) {
          clearTimeout(timer);
          onAnswer = null;
          resolve();
        }
      };
      onAnswer = check;
      check();
    });
  }

  async function bringUp(round: number): Promise<DevNode> {
    const dev = await start();
    answeredThisRound = 0;
    current = { url: dev.url, round };
    wakeUp();
    return dev;
  }

  const clients = Array.from({ length: CLIENTS }, (_, c) => client(c));
  let dev: DevNode | null = null;
  try {
    for (let round = 0; round < KILLS; round++) {
      dev = await bringUp(round);
      await answeredAtLeast(MIN_ANSWERED_PER_ROUND);
      // A random moment after that: mid-stream, mid-write, between requests.
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 700)));
      up = new Promise<void>((r) => (wakeUp = r));
      current = null;
      inFlightAtKill.push(pending.size);
      const exit = await dev.stop("SIGKILL");
      assert.equal(exit.signal, "SIGKILL", `borde dev was not killed: ${JSON.stringify(exit)}\n${dev.stderr().slice(-2000)}`);
      dev = null;
    }
    // A last round that ends gracefully: the clients stop, everything in flight completes.
    dev = await bringUp(KILLS);
    await answeredAtLeast(MIN_ANSWERED_PER_ROUND);
    stopping = true;
    wakeUp();
    await Promise.all(clients);
    assert.equal(pending.size, 0);
    const exit = await dev.stop("SIGTERM");
    assert.equal(exit.code, 0, `borde dev did not stop cleanly: ${JSON.stringify(exit)}\n${dev.stderr().slice(-2000)}`);
    dev = null;
  } finally {
    stopping = true;
    wakeUp();
    if (dev) await dev.stop("SIGKILL");
  }

  const answered = new Set([...outcomes].filter(([, o]) => o.outcome === "answered").map(([id]) => id));
  const failed = [...outcomes].filter(([, o]) => o.outcome === "failed").map(([id]) => id);
  const refused = [...outcomes].filter(([, o]) => o.outcome === "refused");
  const db = new Database(path.join(dataDir, "borde.db"), { readonly: true, fileMustExist: true });
  let billed: string[];
  try {
    billed = (db.prepare("SELECT request_id FROM usage WHERE account_id = ?").all(ACCOUNT) as { request_id: string }[]).map((r) => r.request_id);
    const other = (db.prepare("SELECT COUNT(*) AS n FROM usage WHERE account_id != ?").get(ACCOUNT) as { n: number }).n;
    assert.equal(other, 0);
  } finally {
    db.close();
  }
  const billedSet = new Set(billed);
  t.diagnostic(
    `requests ${outcomes.size}: answered ${answered.size}, refused ${refused.length}, failed ${failed.length}; in flight at each kill ${inFlightAtKill.join(", ")}; billed ${billed.length}`,
  );
  assert.equal(billed.length, billedSet.size, "an id billed twice");
  const unbilled = [...answered].filter((id) => !billedSet.has(id));
  const unanswered = billed.filter((id) => !answered.has(id));
  assert.deepEqual(
    { unbilled, unanswered: unanswered.map((id) => ({ id, ...outcomes.get(id) })) },
    { unbilled: [], unanswered: [] },
    "the ledger is not exactly the set of answered requests",
  );
  assert.ok(answered.size >= (KILLS + 1) * MIN_ANSWERED_PER_ROUND);
  // Nothing refused for any reason but the kills (limits were relaxed).
  assert.deepEqual(refused.map(([id, o]) => `${id}: ${o.status}`), []);
  assert.ok(
    inFlightAtKill.some((n) => n > 0),
    `no request was in flight at any kill (${inFlightAtKill.join(", ")}): the kills proved nothing`,
  );

  // Never pays twice: after a restart an answered id is 409/7106; an id that died in flight is not
  // billed, so it can be sent again and is answered (and billed) once.
  dev = await start();
  try {
    const resend = (id: string) =>
      fetch(`${dev!.url}/client/v4/accounts/${ACCOUNT}/ai/run/${MODEL}`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", "x-request-id": id },
        body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 3 }),
      });
    const someAnswered = [...answered][Math.floor(Math.random() * answered.size)]!;
    const again = await resend(someAnswered);
    const body = (await again.json()) as { errors: { code: number }[] };
    assert.equal(again.status, 409);
    assert.equal(body.errors[0]!.code, 7106);
    const died = failed[0];
    if (died !== undefined) {
      const retried = await resend(died);
      const text = await retried.text();
      assert.equal(retried.status, 200, text);
      assert.equal((await resend(died)).status, 409);
    }
  } finally {
    await dev.stop("SIGTERM");
  }
});
