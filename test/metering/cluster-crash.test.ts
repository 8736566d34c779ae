/**
 * The proof of "never lose, never double count" with real processes: nats-server (JetStream, file
 * store), PostgreSQL, one `borde ledger` and one `borde dev` PoP node shipping usage through its
 * outbox. Under steady load each of the three is SIGKILLed in turn and started again (the node with
 * the same data folder, nats-server on the same port and store). At the end the PostgreSQL ledger
 * must hold exactly the request ids that were answered 200 with a complete body.
 *
 * The CLI runs from source (test/cli/borde.ts, as the CLI tests do), so no build is needed.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import Database from "better-sqlite3";
import { spawn, type ChildProcess } from "node:child_process";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { LEDGER_CONSUMER, USAGE_STREAM } from "../../src/metering/outbox.js";
import { PgLedger } from "../../src/metering/postgres.js";
import { utcDay } from "../../src/metering/types.js";
import { needService, startNats, startPostgres, type NatsService, type PostgresService } from "../services.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const WRAPPER = path.join(ROOT, "test/cli/borde.ts");
const STORIES = path.resolve(ROOT, "../shared/models/stories260K.gguf");
const ACCOUNT = "acct_test";
const TOKEN = "test-token-0123456789";
const WORKERS = 6;
const PHASE_MS = 1_500;

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const child of children) child.kill("SIGKILL");
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Proc {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<void>;
  kill(): Promise<void>;
}

/** Starts `borde ARGS` from source and resolves once stdout matches `ready`. */
function startBorde(args: string[], env: Record<string, string>, ready: RegExp, what: string): Promise<Proc & { match: RegExpExecArray }> {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(BORDE|HF)_/.test(k)) base[k] = v;
  delete base.NODE_OPTIONS;
  const child = spawn(process.execPath, ["--import", "tsx", WRAPPER, ...args], { cwd: ROOT, env: { ...base, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let out = "";
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (err = (err + d).slice(-20_000)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => (children.delete(child), resolve())));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} not ready after 30 s:\n${out}\n${err.slice(-3000)}`)), 30_000);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${out}\n${err.slice(-3000)}`));
    });
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const match = ready.exec(out);
      if (!match) return;
      clearTimeout(timer);
      resolve({
        child,
        match,
        stdout: () => out,
        stderr: () => err,
        exited,
        async kill() {
          child.kill("SIGKILL");
          await exited;
        },
      });
    });
  });
}

test("SIGKILL of the node, the ledger writer and nats-server under load: the ledger equals the answered requests", { timeout: 120_000 }, async (t) => {
  if (!needService(t, "nats", "postgres")) return;
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "borde-crash-"));
  cleanups.push(() => fs.rm(tmp, { recursive: true, force: true }));
  const modelsDir = path.join(tmp, "models");
  const dataDir = path.join(tmp, "data");
  await fs.mkdir(modelsDir);
  await fs.copyFile(STORIES, path.join(modelsDir, "stories.gguf"));

  const [nats, pgs]: [NatsService, PostgresService] = await Promise.all([startNats({ jetstream: true }), startPostgres()]);
  cleanups.push(() => nats.stop(), () => pgs.stop());

  const startLedger = () =>
    // A short ack wait: records a killed writer had taken come back in 2 s instead of 30.
    startBorde(["ledger", "--nats", nats.url, "--postgres", pgs.url, "--ack-wait", "2"], { HOME: tmp, BORDE_LOG_LEVEL: "warn" }, /^ledger writer ready$/m, "borde ledger");
  const startNode = async () => {
    const p = await startBorde(
      ["dev", "--port", "0", "--models-dir", modelsDir],
      {
        HOME: tmp,
        BORDE_DEV_ACCOUNT: ACCOUNT,
        BORDE_DEV_TOKEN: TOKEN,
        BORDE_NATS_URL: nats.url,
        BORDE_POP: "madrid",
        BORDE_DATA_DIR: dataDir,
        BORDE_THREADS: "1",
        BORDE_LOG_LEVEL: "warn",
        // Load, not limits, is under test: no 429s from the free plan or the per-minute limits.
        BORDE_DEV_PLAN: "paid",
        BORDE_RATE_LIMITS: "text-generation=100000000",
        BORDE_TOKENS_PER_MINUTE: "0",
      },
      /borde dev listening on (http:\/\/\S+)/,
      "borde dev",
    );
    return Object.assign(p, { url: p.match[1]! });
  };

  let ledgerProc = await startLedger();
  let node = await startNode();

  // Observers: the node's outbox (read-only, beside the node), JetStream's view of the consumer, the ledger.
  const outboxDb = new Database(path.join(dataDir, "borde.db"), { readonly: true, fileMustExist: true });
  cleanups.push(async () => outboxDb.close());
  const unshipped = () => (outboxDb.prepare("SELECT COUNT(*) AS n FROM outbox WHERE shipped_at IS NULL").get() as { n: number }).n;
  const ackPending = async () => (await jsm.consumers.info(USAGE_STREAM, LEDGER_CONSUMER).catch(() => null))?.num_ack_pending ?? "?";
  const nc: NatsConnection = await connect({ servers: nats.url, maxReconnectAttempts: -1 });
  cleanups.push(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const ledger = new PgLedger(pgs.url);
  cleanups.push(() => ledger.close());
  const day = utcDay(Date.now());
  const pgIds = async () => new Set(await ledger.requestIds(utcDay(Date.now() - 86_400_000), day));

  // Load: WORKERS loops, each request with a fresh id; an id counts as answered only on a 200 whose
  // whole body arrived and parsed as a successful Workers AI envelope.
  const answered = new Set<string>();
  const inFlight = new Set<string>();
  let inFlightAtNodeKill = new Set<string>();
  const failures = new Map<string, number>();
  let seq = 0;
  let running = true;
  const worker = async (w: number) => {
    while (running) {
      const id = `crash-${w}-${seq++}`;
      const url = `${node.url}/client/v4/accounts/${ACCOUNT}/ai/run/@local/stories`;
      inFlight.add(id);
      try {
        const res = await fetch(url, {
          method: "POST",
          headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", "x-request-id": id },
          body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 8 }),
          signal: AbortSignal.timeout(15_000),
        });
        const text = await res.text();
        if (res.status === 200 && (JSON.parse(text) as { success?: boolean }).success === true) answered.add(id);
        else failures.set(`HTTP ${res.status}`, (failures.get(`HTTP ${res.status}`) ?? 0) + 1);
      } catch (e) {
        const key = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message).slice(0, 60) : String(e);
        failures.set(key, (failures.get(key) ?? 0) + 1);
        await sleep(20);
      } finally {
        inFlight.delete(id);
      }
    }
  };
  const load = Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
  const timeline: string[] = [];
  const mark = (what: string) => timeline.push(`${what}: ${answered.size} answered`);

  // Each kill waits (up to a second) for the moment its victim holds work in a crash window: rows
  // in the outbox not yet acked by JetStream, records delivered to the writer and not yet acked.
  const caught = async (cond: () => boolean | Promise<boolean>) => {
    for (const until = Date.now() + 1_000; Date.now() < until; await sleep(1)) if (await cond()) return true;
    return false;
  };

  await sleep(PHASE_MS);
  await caught(() => unshipped() > 0);
  mark(`before node kill (in flight ${inFlight.size}, outbox unshipped ${unshipped()})`);
  inFlightAtNodeKill = new Set(inFlight);
  await node.kill();
  node = await startNode();
  mark(`node restarted (outbox unshipped ${unshipped()})`);

  await sleep(PHASE_MS);
  await caught(async () => Number(await ackPending()) > 0);
  mark(`before ledger writer kill (unacked ${await ackPending()})`);
  await ledgerProc.kill();
  await sleep(500);
  ledgerProc = await startLedger();
  mark("ledger writer restarted");

  await sleep(PHASE_MS);
  await caught(async () => unshipped() > 0 || Number(await ackPending()) > 0);
  mark(`before nats-server kill (unacked ${await ackPending()}, outbox unshipped ${unshipped()})`);
  await nats.kill();
  await sleep(500);
  await nats.restart();
  mark("nats-server restarted");

  await sleep(PHASE_MS);
  running = false;
  await load;
  mark("load stopped");

  // Drained: the outbox has nothing unshipped, the consumer nothing undelivered or unacked, and
  // PostgreSQL's count has stopped moving.
  const deadline = Date.now() + 30_000;
  let last = -1;
  for (;;) {
    const ci = await jsm.consumers.info(USAGE_STREAM, LEDGER_CONSUMER).catch(() => null);
    const count = (await pgIds()).size;
    if (unshipped() === 0 && ci && ci.num_pending === 0 && ci.num_ack_pending === 0 && count === last) break;
    last = count;
    if (Date.now() > deadline) assert.fail(`not drained in 30 s: outbox unshipped ${unshipped()}, consumer ${JSON.stringify(ci && { pending: ci.num_pending, ackPending: ci.num_ack_pending })}, ledger ${count}`);
    await sleep(500);
  }

  const inPg = await pgIds();
  const missing = [...answered].filter((id) => !inPg.has(id));
  const extra = [...inPg].filter((id) => !answered.has(id));
  const extraInKillWindow = extra.filter((id) => inFlightAtNodeKill.has(id));
  const report = [
    `answered 200: ${answered.size}, in the ledger: ${inPg.size}, requests: ${seq}`,
    `failures: ${JSON.stringify(Object.fromEntries(failures))}`,
    `timeline: ${timeline.join("; ")}`,
    missing.length ? `LOST (answered, not in the ledger): ${missing.slice(0, 20).join(", ")}` : "",
    extraInKillWindow.length
      ? `in the ledger but not answered, in flight when the node was SIGKILLed — the record was committed and the kill landed before the answer reached the client (the commit-to-send window): ${extraInKillWindow.join(", ")}`
      : "",
    extra.length > extraInKillWindow.length ? `DOUBLE/UNANSWERED (in the ledger, never in flight at a kill): ${extra.filter((id) => !inFlightAtNodeKill.has(id)).join(", ")}` : "",
  ]
    .filter(Boolean)
    .join("\n");
  for (const line of report.split("\n")) t.diagnostic(line);

  // The run must have meant something: answers before and after every kill.
  assert.ok(answered.size >= 50, report);
  assert.ok(failures.size > 0, `the node kill should have failed some requests\n${report}`);
  assert.equal(missing.length, 0, report);
  assert.equal(extra.length, 0, report);
  assert.equal(inPg.size, answered.size, report);
  // Each answered id once in PostgreSQL (the primary key makes more impossible; the count confirms).
  const rows = await ledger.query({ since: utcDay(Date.now() - 86_400_000), until: day, groupBy: [], accountId: ACCOUNT });
  assert.equal(rows.reduce((n, r) => n + r.requests, 0), answered.size, report);

  ledgerProc.child.kill("SIGTERM");
  await ledgerProc.exited;
  node.child.kill("SIGTERM");
  await node.exited;
});
