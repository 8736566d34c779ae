/**
 * `npm run bench:metering`: what metering costs (issue 6).
 *
 *  1. Overhead per request. Borde nodes in this process, identical except for metering: `metering:
 *     false` (the meter's writer is null: no id check, no record) and `metering: true` (SQLite ledger,
 *     WAL, synchronous=NORMAL, the default), plus, unless BENCH_HTTP_FULL=0, `ledgerSync: "full"`
 *     (an fsync per record). They share one llama engine (threads 1) and each serves stories260K as
 *     @local/stories, preloaded. A forked client process sends requests one after another over a
 *     keep-alive connection to the Workers AI endpoint: text generation `max_tokens: 1` as plain JSON
 *     and as a stream, and embeddings `{"text":"hi"}`. The nodes take turns in rounds (order rotated
 *     every round) so slow drift on a shared machine is spread over all of them. Latency = request
 *     written -> last byte of the body read. The difference of the p50s (metered - unmetered) is the
 *     overhead; the median of the per-round p50 differences is shown beside it as a check. Each node's
 *     own `Meter.claim`/`Meter.commit` calls are also timed where they run (wrapped on every node,
 *     metering off included), which says where the added time goes.
 *  2. The meter alone, in process: `Meter.claim` (the id check, a primary-key SELECT) and
 *     `Meter.commit` (build the record, price it, INSERT, counters) timed call by call.
 *  3. Ledger throughput: `SqliteLedger.write()`, one record per transaction (what a request does),
 *     with synchronous NORMAL and FULL (FULL capped by time); `writeMany`, 500 records per transaction;
 *     and `Meter.commit` as a loop. Also `write()` and `commit` against a ledger already holding
 *     BENCH_PREFILL records (default 1M), as a node has after a while.
 *
 * Environment:
 *   BENCH_QUICK=1        ~15 s smoke run: fewer rounds, requests and records, one run each; numbers are NOT meaningful
 *   BENCH_ROUNDS=N       rounds of the HTTP part (default 10)
 *   BENCH_PER_ROUND=N    requests per node, series and round (default 400)
 *   BENCH_REPEATS=N      runs of each in-process meter/ledger measurement; the median run is kept (default 3)
 *   BENCH_HTTP_FULL=0    leave out the `ledgerSync: "full"` node
 *   BENCH_PREFILL=N      records in the pre-filled ledger (default 1000000; 0 skips that part)
 *   BENCH_LOG_LEVEL=lvl  Borde's log level (default info, as in production; logs go to /dev/null)
 *   BENCH_OUT=path       JSON output (default bench/results/metering.json; with BENCH_QUICK, $TMPDIR/borde-bench-metering-quick.json)
 *
 * Markdown report on stdout, progress on stderr.
 */
import { existsSync, readFileSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { loadConfig } from "../src/config/index.js";
import type { Engine } from "../src/engines/contract.js";
import { createLlamaEngine } from "../src/engines/llama/index.js";
import { Meter, type Metered } from "../src/metering/meter.js";
import { SqliteLedger } from "../src/metering/sqlite.js";
import { utcDay, type UsageFacts, type UsageRecord } from "../src/metering/types.js";
import { startNode, type BordeNode } from "../src/node.js";
import { createLogger, type Logger } from "../src/observability/index.js";
import { openDatabase, type Db } from "../src/util/sqlite.js";
import type { MeterRunRequest, MeterRunResult } from "./metering-client.js";
import { Forked } from "./forked.js";

const ROOT = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
const QUICK = process.env.BENCH_QUICK === "1";
const num = (name: string, def: number): number => {
  const v = process.env[name];
  return v !== undefined && v !== "" && Number.isFinite(Number(v)) ? Number(v) : def;
};
const ROUNDS = Math.max(1, num("BENCH_ROUNDS", QUICK ? 3 : 10));
const PER_ROUND = Math.max(10, num("BENCH_PER_ROUND", QUICK ? 150 : 400));
const WARMUP = QUICK ? 50 : 200;
const HTTP_FULL = process.env.BENCH_HTTP_FULL !== "0";
const PREFILL = Math.max(0, num("BENCH_PREFILL", QUICK ? 100_000 : 1_000_000));
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? "info";
const OUT = process.env.BENCH_OUT
  ? path.resolve(process.env.BENCH_OUT)
  : QUICK
    ? path.join(os.tmpdir(), "borde-bench-metering-quick.json")
    : path.join(ROOT, "bench/results/metering.json");

// In-process meter and ledger sizes.
const COMMITS = QUICK ? 5_000 : 20_000;
const WRITE_ONE_N = QUICK ? 10_000 : 50_000;
const WRITE_FULL_MAX_MS = QUICK ? 1_000 : 3_000;
const REPEATS = Math.max(1, num("BENCH_REPEATS", QUICK ? 1 : 3));
const WRITE_MANY_N = QUICK ? 50_000 : 200_000;
const BATCH = 500;
/** records of the no-autocheckpoint diagnostic (its WAL grows by ~15 KB per record) */
const NO_CHECKPOINT_N = QUICK ? 5_000 : 20_000;

const THREADS = 1;
const PARALLEL = 4;
const ACCOUNT = "acct_bench";
const TOKEN = "bench-token-0123456789";
const MODEL = "@local/stories";
/** Same as test/helpers.ts RELAXED_LIMITS: the bench must not meet the per-account limits. */
const RELAXED_LIMITS = { rateLimits: { "text-generation": 1e9, "text-embeddings": 1e9 }, maxConcurrent: 1e6, tokensPerMinute: 0 } as const;

const TARGET_OVERHEAD_MS = 0.3;
const TARGET_RECORDS_PER_SEC = 20_000;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length); // nearest rank
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!;
}
const median = (xs: number[]): number => percentile(xs, 50);
const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);
const r1 = (x: number): number => Math.round(x * 10) / 10;
const r2 = (x: number): number => Math.round(x * 100) / 100;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const log = (msg: string): void => console.error(`[bench:metering ${new Date().toISOString().slice(11, 19)}] ${msg}`);
const fmtInt = (x: number): string => Math.round(x).toLocaleString("en-US");

/** The mount that holds `dir` (longest prefix in /proc/mounts): fsync cost depends on it. */
function filesystemOf(dir: string): string {
  try {
    const mounts = readFileSync("/proc/mounts", "utf8")
      .split("\n")
      .map((l) => l.split(" "))
      .filter((f) => f.length >= 3 && (dir === f[1] || dir.startsWith(f[1] === "/" ? "/" : `${f[1]}/`)));
    mounts.sort((a, b) => b[1]!.length - a[1]!.length);
    const m = mounts[0];
    return m ? `${m[2]} on ${m[0]} (mounted at ${m[1]})` : "unknown";
  } catch {
    return "unknown";
  }
}

function machine() {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? cpu;
  } catch {
    // not Linux
  }
  const pkg = (p: string): string => {
    try {
      return (JSON.parse(readFileSync(path.join(ROOT, "node_modules", p, "package.json"), "utf8")) as { version: string }).version;
    } catch {
      return "unknown";
    }
  };
  let sqlite = "unknown";
  try {
    const db = openDatabase(":memory:");
    sqlite = (db.prepare("SELECT sqlite_version() AS v").get() as { v: string }).v;
    db.close();
  } catch {
    // reported as unknown
  }
  return {
    cpu,
    cores: os.availableParallelism(),
    ramGiB: r1(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    betterSqlite3: pkg("better-sqlite3"),
    sqlite,
    nodeLlamaCpp: pkg("node-llama-cpp"),
    tmpFilesystem: filesystemOf(os.tmpdir()),
    loadAvgAtStart: os.loadavg().map(r2),
  };
}

function silentLogger(): Logger {
  return createLogger(LOG_LEVEL, pino.destination({ dest: "/dev/null", sync: true }) as unknown as NodeJS.WritableStream);
}

const FACTS: UsageFacts = { model: MODEL, task: "text-generation", unit: "tokens", inputUnits: 5, outputUnits: 1, cpuMs: 1.234, wallMs: 1.5 };

function record(i: number, prefix = "req"): UsageRecord {
  const ts = Date.now();
  return {
    requestId: `${prefix}-${i.toString(36).padStart(8, "0")}-7f3a9c1e-4b2d-4e8f-9a6b`,
    ts,
    day: utcDay(ts),
    accountId: ACCOUNT,
    tokenId: "tok_bench",
    model: MODEL,
    task: "text-generation",
    pop: "local",
    served: "edge",
    unit: "tokens",
    inputUnits: 5,
    outputUnits: 1,
    neurons: 0.00037,
    cpuMs: 1.234,
    wallMs: 1.5,
    bytesIn: 60,
    bytesOut: 420,
  };
}

async function tempDb(sync: "normal" | "full"): Promise<{ db: Db; dir: string; done: () => Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-bench-ledger-"));
  const db = openDatabase(path.join(dir, "borde.db"), sync);
  return { db, dir, done: async () => (db.close(), await fs.rm(dir, { recursive: true, force: true })) };
}

/**
 * Fills a ledger with `n` records of yesterday (so the daily counters a Meter loads at start stay
 * as small as a real node's), then checkpoints and empties the WAL so the measurement starts clean.
 */
function prefillLedger(db: Db, ledger: SqliteLedger, n: number): void {
  if (n <= 0) return;
  const ts = Date.now() - 86_400_000;
  for (let i = 0; i < n; i += 10_000) {
    const batch: UsageRecord[] = [];
    for (let j = i; j < Math.min(n, i + 10_000); j++) batch.push({ ...record(j, "old"), ts, day: utcDay(ts) });
    ledger.writeMany(batch);
  }
  db.pragma("wal_checkpoint(TRUNCATE)");
}

// ---------------------------------------------------------------------------------------------
// part 2: the meter alone
// ---------------------------------------------------------------------------------------------

interface MeterTiming {
  sync: "normal" | "full";
  existingRows: number;
  calls: number;
  claimUs: { p50: number; p90: number; p99: number };
  commitUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  /** commits that took over 1 ms (WAL checkpoints run inside the commit that crosses the threshold) */
  commitsOver1ms: number;
  /** claim + commit + release together, per call */
  totalUsP50: number;
  /** calls / (sum of claim+commit+release time) */
  commitsPerSec: number;
}

async function timeMeter(sync: "normal" | "full", calls: number, maxMs: number, prefill = 0): Promise<MeterTiming> {
  const t = await tempDb(sync);
  try {
    const ledger = new SqliteLedger(t.db);
    prefillLedger(t.db, ledger, prefill);
    const meter = new Meter({ writer: ledger, pop: "local", pricing: { computeNeuronsPerCpuSecond: 0.3 }, logger: silentLogger() });
    const claim: number[] = [];
    const commit: number[] = [];
    const total: number[] = [];
    const principal = { accountId: ACCOUNT, tokenId: "tok_bench" };
    const delivery = { bytesIn: 60, bytesOut: 420 };
    const started = performance.now();
    for (let i = 0; i < calls; i++) {
      if (performance.now() - started > maxMs) break;
      const requestId = `${i.toString(36).padStart(8, "0")}-7f3a9c1e-4b2d-4e8f-9a6b`;
      const t0 = performance.now();
      const release = meter.claim(ACCOUNT, requestId);
      const t1 = performance.now();
      const call: Metered = { requestId, principal, usage: FACTS };
      const rec = meter.commit(call, delivery);
      const t2 = performance.now();
      release();
      const t3 = performance.now();
      if (!rec) throw new Error("Meter.commit wrote nothing");
      claim.push((t1 - t0) * 1000);
      commit.push((t2 - t1) * 1000);
      total.push((t3 - t0) * 1000);
    }
    const sumMs = total.reduce((s, x) => s + x, 0) / 1000;
    return {
      sync,
      existingRows: prefill,
      calls: total.length,
      claimUs: { p50: r2(median(claim)), p90: r2(percentile(claim, 90)), p99: r2(percentile(claim, 99)) },
      commitUs: {
        p50: r2(median(commit)),
        p90: r2(percentile(commit, 90)),
        p99: r2(percentile(commit, 99)),
        p999: r2(percentile(commit, 99.9)),
        max: r2(Math.max(...commit)),
        mean: r2(mean(commit)),
      },
      commitsOver1ms: commit.filter((x) => x > 1000).length,
      totalUsP50: r2(median(total)),
      commitsPerSec: Math.round((total.length * 1000) / sumMs),
    };
  } finally {
    await t.done();
  }
}

// ---------------------------------------------------------------------------------------------
// part 3: ledger throughput
// ---------------------------------------------------------------------------------------------

interface Throughput {
  method: "write" | "writeMany";
  /** false: `wal_autocheckpoint = 0` for the run (diagnostic; not how Borde opens its database) */
  autoCheckpoint: boolean;
  sync: "normal" | "full";
  perTransaction: number;
  existingRows: number;
  records: number;
  ms: number;
  recordsPerSec: number;
  cappedByTime: boolean;
  /** bytes this process handed to write(2) per record during the run (WAL frames + checkpoints), Linux only */
  bytesWrittenPerRecord: number | null;
  /** bytes of page cache this process dirtied per record (`write_bytes`: what storage will receive), Linux only */
  storageBytesPerRecord: number | null;
}

/** `wchar` (bytes passed to write(2)) and `write_bytes` (page cache dirtied for storage) of this process; null off Linux. */
function ioCounters(): { wchar: number; storage: number } | null {
  try {
    const io = readFileSync("/proc/self/io", "utf8");
    const wchar = /^wchar:\s*(\d+)$/m.exec(io);
    const storage = /^write_bytes:\s*(\d+)$/m.exec(io);
    return wchar && storage ? { wchar: Number(wchar[1]), storage: Number(storage[1]) } : null;
  } catch {
    return null;
  }
}

async function throughput(method: "write" | "writeMany", sync: "normal" | "full", n: number, maxMs: number, prefill = 0, autoCheckpoint = true): Promise<Throughput> {
  const t = await tempDb(sync);
  try {
    const ledger = new SqliteLedger(t.db);
    prefillLedger(t.db, ledger, prefill);
    // Diagnostic only: no checkpoint inside write() (the WAL grows for the whole run), which shows
    // what the checkpoints that SQLite runs inside every ~280th commit cost.
    if (!autoCheckpoint) t.db.pragma("wal_autocheckpoint = 0");
    // Records are built before the clock starts: this is the ledger's rate (Meter.commit's loop
    // rate, which builds them, is measured in part 2).
    const records = Array.from({ length: n }, (_, i) => record(i));
    let written = 0;
    let capped = false;
    const w0 = ioCounters();
    const t0 = performance.now();
    if (method === "write") {
      for (const r of records) {
        if (!ledger.write(r)) throw new Error("duplicate record");
        written++;
        // Checking the clock every record is ~50 ns: negligible next to an INSERT.
        if (performance.now() - t0 > maxMs) {
          capped = written < n;
          break;
        }
      }
    } else {
      for (let i = 0; i < n; i += BATCH) {
        written += ledger.writeMany(records.slice(i, i + BATCH));
        if (performance.now() - t0 > maxMs) {
          capped = written < n;
          break;
        }
      }
    }
    const ms = performance.now() - t0;
    // Dirty pages are accounted when dirtied; a checkpoint makes the rest reach the file now.
    const w1 = ioCounters();
    const rows = (t.db.prepare("SELECT COUNT(*) AS n FROM usage").get() as { n: number }).n;
    if (rows !== written + prefill) throw new Error(`ledger holds ${rows} rows, expected ${written + prefill}`);
    return {
      method,
      autoCheckpoint,
      sync,
      perTransaction: method === "write" ? 1 : BATCH,
      existingRows: prefill,
      records: written,
      ms: r1(ms),
      recordsPerSec: Math.round((written * 1000) / ms),
      cappedByTime: capped,
      bytesWrittenPerRecord: w0 && w1 ? Math.round((w1.wchar - w0.wchar) / Math.max(1, written)) : null,
      storageBytesPerRecord: w0 && w1 ? Math.round((w1.storage - w0.storage) / Math.max(1, written)) : null,
    };
  } finally {
    await t.done();
  }
}

// ---------------------------------------------------------------------------------------------
// part 1: HTTP overhead
// ---------------------------------------------------------------------------------------------


interface Mode {
  key: "off" | "on" | "full";
  label: string;
  metering: boolean;
  ledgerSync: "normal" | "full";
}

const SERIES = [
  { key: "json", label: "text generation, JSON, max_tokens 1", body: { prompt: "Once upon a time", max_tokens: 1, temperature: 0 } },
  { key: "stream", label: "text generation, stream, max_tokens 1", body: { prompt: "Once upon a time", max_tokens: 1, temperature: 0, stream: true } },
  { key: "embed", label: 'embeddings, {"text":"hi"}', body: { text: "hi" } },
] as const;
type SeriesKey = (typeof SERIES)[number]["key"];

interface RoundSample {
  round: number;
  latenciesMs: number[];
  /** this process's CPU (server: JS thread + engine threads) per request, µs */
  serverCpuUs: number;
  /** this process's main-thread busy time per request, µs */
  serverMainUs: number;
  clientCpuUs: number;
  /** the node's own Meter.claim / Meter.commit calls, µs */
  claimUs: number[];
  commitUs: number[];
  errors: string[];
}

interface HttpCell {
  series: SeriesKey;
  mode: Mode["key"];
  requests: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  meanMs: number;
  roundP50sMs: number[];
  serverCpuUsPerRequest: number;
  serverMainThreadUsPerRequest: number;
  clientCpuUsPerRequest: number;
  /** Meter.claim and Meter.commit timed inside the node, µs (no-ops when metering is off) */
  inNode: { calls: number; claimP50Us: number; commitP50Us: number; commitP99Us: number; commitMaxUs: number; commitsOver1ms: number };
  errors: number;
  errorSamples: string[];
}

interface Overhead {
  series: SeriesKey;
  mode: "on" | "full";
  /** p50 (pooled over rounds) metered - unmetered, ms */
  p50AddedMs: number;
  /** median over rounds of (round p50 metered - round p50 unmetered), ms */
  roundP50AddedMedianMs: number;
  roundP50AddedMs: number[];
  p90AddedMs: number;
  p99AddedMs: number;
  p50Ratio: number;
  serverCpuAddedUs: number;
}

/** Times the node's own `Meter.claim` and `Meter.commit` calls where they happen (every node, so the ~0.1 µs of timing is on all sides). */
interface Probe {
  claimUs: number[];
  commitUs: number[];
}

function probeMeter(meter: Meter): Probe {
  const probe: Probe = { claimUs: [], commitUs: [] };
  const claim = meter.claim.bind(meter);
  const commit = meter.commit.bind(meter);
  meter.claim = (accountId, requestId) => {
    const t0 = performance.now();
    try {
      return claim(accountId, requestId);
    } finally {
      probe.claimUs.push((performance.now() - t0) * 1000);
    }
  };
  meter.commit = (call, delivery) => {
    const t0 = performance.now();
    try {
      return commit(call, delivery);
    } finally {
      probe.commitUs.push((performance.now() - t0) * 1000);
    }
  };
  return probe;
}

async function openNode(mode: Mode, engine: Engine): Promise<{ node: BordeNode; modelsDir: string; dataDir: string; probe: Probe }> {
  const modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), `borde-bench-metering-models-${mode.key}-`));
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), `borde-bench-metering-data-${mode.key}-`));
  await fs.copyFile(storiesFile(), path.join(modelsDir, "stories.gguf"));
  const config = loadConfig(
    {
      host: "127.0.0.1",
      port: 0,
      modelsDir,
      dataDir,
      devAccount: ACCOUNT,
      devToken: TOKEN,
      devPlan: "paid",
      threads: THREADS,
      parallel: PARALLEL,
      logLevel: LOG_LEVEL as "info",
      preload: [MODEL],
      metering: mode.metering,
      ledgerSync: mode.ledgerSync,
      ...RELAXED_LIMITS,
    },
    {},
  );
  const node = await startNode(config, { logger: silentLogger(), engine });
  return { node, modelsDir, dataDir, probe: probeMeter(node.meter) };
}

function storiesFile(): string {
  const shared = path.resolve(ROOT, "../shared/models/stories260K.gguf");
  return existsSync(shared) ? shared : path.join(ROOT, "models/stories260K.gguf");
}

async function ledgerRows(node: BordeNode): Promise<number | null> {
  if (!node.usage) return null;
  const now = Date.now();
  const rows = await node.usage.query({ since: utcDay(now - 86_400_000), until: utcDay(now + 86_400_000), groupBy: [] });
  return rows.reduce((s, r) => s + r.requests, 0);
}

async function httpOverhead(modes: Mode[]): Promise<{ cells: HttpCell[]; overheads: Overhead[]; ledgerCheck: Record<string, { sent: number; rows: number | null }> }> {
  log(`loading engine (threads=${THREADS}) and ${modes.length} nodes (${modes.map((m) => m.key).join(", ")}) ...`);
  const engine = await createLlamaEngine({ threads: THREADS, parallel: PARALLEL, contextSize: 2048 });
  const opened: { mode: Mode; node: BordeNode; modelsDir: string; dataDir: string; probe: Probe }[] = [];
  const client = await Forked.start<MeterRunRequest, MeterRunResult>(new URL("./metering-client.ts", import.meta.url), "metering client");
  const sent = new Map<string, number>();
  try {
    for (const mode of modes) opened.push({ mode, ...(await openNode(mode, engine)) });
    const apiPath = `/client/v4/accounts/${ACCOUNT}/ai/run/${MODEL}`;
    const runOn = async (o: (typeof opened)[number], series: (typeof SERIES)[number], n: number) => {
      sent.set(o.mode.key, (sent.get(o.mode.key) ?? 0) + n);
      o.probe.claimUs = [];
      o.probe.commitUs = [];
      const cpu0 = process.cpuUsage();
      const elu0 = performance.eventLoopUtilization();
      const res = await client.request({ type: "run", url: o.node.url, path: apiPath, token: TOKEN, body: series.body, n });
      const elu = performance.eventLoopUtilization(elu0);
      const cpu = process.cpuUsage(cpu0);
      return { res, serverCpuUs: (cpu.user + cpu.system) / n, serverMainUs: (elu.active * 1000) / n, claimUs: o.probe.claimUs, commitUs: o.probe.commitUs };
    };

    log(`warm-up: ${WARMUP} requests per node and series ...`);
    for (const series of SERIES)
      for (const o of opened) {
        const { res } = await runOn(o, series, WARMUP);
        if (res.errors.length) throw new Error(`warm-up ${series.key}/${o.mode.key} failed: ${res.errors[0]}`);
      }

    const samples = new Map<string, RoundSample[]>();
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate the order every round (and reverse it on odd rounds): no node always goes first.
      const rotated = opened.map((_, i) => opened[(i + round) % opened.length]!);
      const order = round % 2 === 1 ? rotated.reverse() : rotated;
      for (const series of SERIES) {
        const line: string[] = [];
        for (const o of order) {
          const { res, serverCpuUs, serverMainUs, claimUs, commitUs } = await runOn(o, series, PER_ROUND);
          const k = `${series.key}:${o.mode.key}`;
          const list = samples.get(k) ?? [];
          list.push({ round, latenciesMs: res.latenciesMs, serverCpuUs, serverMainUs, clientCpuUs: (res.cpuMs * 1000) / PER_ROUND, claimUs, commitUs, errors: res.errors });
          samples.set(k, list);
          line.push(`${o.mode.key} p50 ${r3(median(res.latenciesMs))} ms${res.errors.length ? ` (${res.errors.length} errors)` : ""}`);
        }
        log(`round ${round + 1}/${ROUNDS} ${series.key}: ${line.join(", ")}`);
      }
    }

    const cells: HttpCell[] = [];
    for (const series of SERIES)
      for (const mode of modes) {
        const list = samples.get(`${series.key}:${mode.key}`)!;
        const all = list.flatMap((s) => s.latenciesMs);
        const errors = list.flatMap((s) => s.errors);
        const claimUs = list.flatMap((s) => s.claimUs);
        const commitUs = list.flatMap((s) => s.commitUs);
        cells.push({
          series: series.key,
          mode: mode.key,
          requests: all.length,
          p50Ms: r3(median(all)),
          p90Ms: r3(percentile(all, 90)),
          p99Ms: r3(percentile(all, 99)),
          meanMs: r3(mean(all)),
          roundP50sMs: list.map((s) => r3(median(s.latenciesMs))),
          serverCpuUsPerRequest: r1(median(list.map((s) => s.serverCpuUs))),
          serverMainThreadUsPerRequest: r1(median(list.map((s) => s.serverMainUs))),
          clientCpuUsPerRequest: r1(median(list.map((s) => s.clientCpuUs))),
          inNode: {
            calls: commitUs.length,
            claimP50Us: r2(median(claimUs)),
            commitP50Us: r2(median(commitUs)),
            commitP99Us: r2(percentile(commitUs, 99)),
            commitMaxUs: r2(commitUs.length ? Math.max(...commitUs) : NaN),
            commitsOver1ms: commitUs.filter((x) => x > 1000).length,
          },
          errors: errors.length,
          errorSamples: [...new Set(errors)].slice(0, 3),
        });
      }

    const overheads: Overhead[] = [];
    for (const series of SERIES) {
      const off = samples.get(`${series.key}:off`)!;
      const offAll = off.flatMap((s) => s.latenciesMs);
      const offCell = cells.find((c) => c.series === series.key && c.mode === "off")!;
      for (const key of ["on", "full"] as const) {
        const on = samples.get(`${series.key}:${key}`);
        if (!on) continue;
        const onAll = on.flatMap((s) => s.latenciesMs);
        const onCell = cells.find((c) => c.series === series.key && c.mode === key)!;
        const perRound = on.map((s, i) => median(s.latenciesMs) - median(off[i]!.latenciesMs));
        overheads.push({
          series: series.key,
          mode: key,
          p50AddedMs: r3(median(onAll) - median(offAll)),
          roundP50AddedMedianMs: r3(median(perRound)),
          roundP50AddedMs: perRound.map(r3),
          p90AddedMs: r3(percentile(onAll, 90) - percentile(offAll, 90)),
          p99AddedMs: r3(percentile(onAll, 99) - percentile(offAll, 99)),
          p50Ratio: r3(median(onAll) / median(offAll)),
          serverCpuAddedUs: r1(onCell.serverCpuUsPerRequest - offCell.serverCpuUsPerRequest),
        });
      }
    }

    const ledgerCheck: Record<string, { sent: number; rows: number | null }> = {};
    for (const o of opened) ledgerCheck[o.mode.key] = { sent: sent.get(o.mode.key) ?? 0, rows: await ledgerRows(o.node) };
    return { cells, overheads, ledgerCheck };
  } finally {
    await client.close();
    for (const o of opened) {
      await o.node.close();
      await fs.rm(o.modelsDir, { recursive: true, force: true });
      await fs.rm(o.dataDir, { recursive: true, force: true });
    }
    await engine.dispose();
  }
}

/** Runs every plan REPEATS times, interleaved, and keeps for each the run with the median rate. */
async function repeated<T>(plans: (() => Promise<T>)[], rate: (t: T) => number): Promise<{ pick: T; rates: number[] }[]> {
  const runs: T[][] = plans.map(() => []);
  for (let rep = 0; rep < REPEATS; rep++) for (let i = 0; i < plans.length; i++) runs[i]!.push(await plans[i]!());
  return runs.map((list) => {
    const sorted = [...list].sort((a, b) => rate(a) - rate(b));
    return { pick: sorted[Math.floor((sorted.length - 1) / 2)]!, rates: list.map(rate) };
  });
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  const m = machine();
  log(`${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB, Node ${m.node}, SQLite ${m.sqlite}; tmp on ${m.tmpFilesystem}; load avg ${m.loadAvgAtStart.join(" ")}`);
  if (QUICK) log("BENCH_QUICK=1: reduced sizes; numbers are only a smoke test");

  // Part 1 first, while the machine is as quiet as it will be.
  const modes: Mode[] = [
    { key: "off", label: "metering off", metering: false, ledgerSync: "normal" },
    { key: "on", label: "metering on (synchronous=NORMAL)", metering: true, ledgerSync: "normal" },
  ];
  if (HTTP_FULL) modes.push({ key: "full", label: 'metering on, ledgerSync "full"', metering: true, ledgerSync: "full" });
  const http = await httpOverhead(modes);
  for (const o of http.overheads) log(`${o.series} ${o.mode}: p50 added ${o.p50AddedMs} ms (per-round median ${o.roundP50AddedMedianMs}), ratio ${o.p50Ratio}`);

  log(`meter alone: ${fmtInt(COMMITS)} claim+commit calls (normal), then FULL for up to ${WRITE_FULL_MAX_MS} ms ...`);
  // Each in-process measurement runs REPEATS times, interleaved; the run with the median rate is
  // reported, with the rates of all runs beside it (checkpoint fsyncs make single runs noisy).
  const meterPlans: (() => Promise<MeterTiming>)[] = [() => timeMeter("normal", COMMITS, Infinity), () => timeMeter("full", COMMITS, WRITE_FULL_MAX_MS)];
  if (PREFILL > 0) meterPlans.push(() => timeMeter("normal", COMMITS, Infinity, PREFILL));
  log(`meter alone: ${fmtInt(COMMITS)} claim+commit calls (NORMAL; FULL capped at ${WRITE_FULL_MAX_MS} ms${PREFILL > 0 ? `; NORMAL on a ledger of ${fmtInt(PREFILL)} records` : ""}), ${REPEATS} run(s) each ...`);
  const meterTimings = (await repeated(meterPlans, (t) => t.commitsPerSec)).map(({ pick, rates }) => ({ ...pick, runsCommitsPerSec: rates }));
  for (const t of meterTimings) log(`meter ${t.sync} (${fmtInt(t.existingRows)} rows before): commit p50 ${t.commitUs.p50} µs, claim p50 ${t.claimUs.p50} µs, ${fmtInt(t.commitsPerSec)} commits/s (runs: ${t.runsCommitsPerSec.map(fmtInt).join(", ")})`);

  log(`ledger throughput, ${REPEATS} run(s) each ...`);
  const tpPlans: (() => Promise<Throughput>)[] = [
    () => throughput("write", "normal", WRITE_ONE_N, Infinity),
    () => throughput("write", "full", WRITE_ONE_N, WRITE_FULL_MAX_MS),
    () => throughput("writeMany", "normal", WRITE_MANY_N, Infinity),
    () => throughput("writeMany", "full", WRITE_MANY_N, Infinity),
  ];
  if (PREFILL > 0) tpPlans.push(() => throughput("write", "normal", WRITE_ONE_N, Infinity, PREFILL));
  tpPlans.push(() => throughput("write", "normal", NO_CHECKPOINT_N, Infinity, 0, false));
  const tp = (await repeated(tpPlans, (t) => t.recordsPerSec)).map(({ pick, rates }) => ({ ...pick, runsRecordsPerSec: rates }));
  for (const t of tp)
    log(
      `${t.method}${t.autoCheckpoint ? "" : " (no autocheckpoint)"} ${t.sync} x${t.perTransaction}/txn (${fmtInt(t.existingRows)} rows before): ${fmtInt(t.recordsPerSec)} records/s (${fmtInt(t.records)} in ${t.ms} ms${t.cappedByTime ? ", capped by time" : ""}; runs: ${t.runsRecordsPerSec.map(fmtInt).join(", ")})`,
    );

  // ---- targets ----
  const ov = (series: SeriesKey, mode: "on" | "full") => http.overheads.find((o) => o.series === series && o.mode === mode);
  const targets: { name: string; value: string; target: string; pass: boolean }[] = [];
  for (const s of SERIES) {
    const o = ov(s.key, "on");
    if (o) targets.push({ name: `p50 added by metering, ${s.label}`, value: `${o.p50AddedMs} ms (per-round median ${o.roundP50AddedMedianMs})`, target: `< ${TARGET_OVERHEAD_MS} ms`, pass: o.p50AddedMs < TARGET_OVERHEAD_MS });
  }
  const range = (xs: number[]): string => (xs.length > 1 ? `; runs ${fmtInt(Math.min(...xs))}–${fmtInt(Math.max(...xs))}` : "");
  const rateTarget = (name: string, rate: number, runs: number[]) =>
    targets.push({ name, value: `${fmtInt(rate)} records/s${range(runs)}`, target: `>= ${fmtInt(TARGET_RECORDS_PER_SEC)} records/s`, pass: rate >= TARGET_RECORDS_PER_SEC });
  const meterNormal = meterTimings.find((t) => t.sync === "normal" && t.existingRows === 0)!;
  targets.push({ name: "meter alone: claim + commit p50 (in process)", value: `${r3(meterNormal.totalUsP50 / 1000)} ms`, target: `< ${TARGET_OVERHEAD_MS} ms`, pass: meterNormal.totalUsP50 / 1000 < TARGET_OVERHEAD_MS });
  const writeNormal = tp.find((t) => t.method === "write" && t.autoCheckpoint && t.sync === "normal" && t.existingRows === 0)!;
  rateTarget("ledger throughput, `write()` 1 record/txn, NORMAL (the request path)", writeNormal.recordsPerSec, writeNormal.runsRecordsPerSec);
  rateTarget("`Meter.claim` + `commit` loop (builds, prices, writes), NORMAL", meterNormal.commitsPerSec, meterNormal.runsCommitsPerSec);
  const writeBig = tp.find((t) => t.method === "write" && t.sync === "normal" && t.existingRows > 0);
  if (writeBig) rateTarget(`ledger throughput, \`write()\`, NORMAL, ledger already holding ${fmtInt(writeBig.existingRows)} records`, writeBig.recordsPerSec, writeBig.runsRecordsPerSec);
  const meterBig = meterTimings.find((t) => t.sync === "normal" && t.existingRows > 0);
  if (meterBig) rateTarget(`\`Meter.claim\` + \`commit\` loop, NORMAL, ledger already holding ${fmtInt(meterBig.existingRows)} records`, meterBig.commitsPerSec, meterBig.runsCommitsPerSec);
  const writeFull = tp.find((t) => t.method === "write" && t.sync === "full");
  if (writeFull) rateTarget("ledger throughput, `write()` 1 record/txn, FULL (`ledgerSync: \"full\"`)", writeFull.recordsPerSec, writeFull.runsRecordsPerSec);

  const totalSeconds = r1((performance.now() - started) / 1000);
  const result = {
    generatedAt: new Date().toISOString(),
    quick: QUICK,
    machine: { ...m, loadAvgAtEnd: os.loadavg().map(r2) },
    setup: {
      http: {
        rounds: ROUNDS,
        requestsPerRound: PER_ROUND,
        warmupPerNodeAndSeries: WARMUP,
        threads: THREADS,
        parallel: PARALLEL,
        model: `${MODEL} (stories260K)`,
        modes,
        series: SERIES,
        borde: "in-process startNode(loadConfig(...)) per mode, one shared llama engine; client: forked child process, node:http keep-alive, one request at a time",
        latency: "request written -> last byte of the response body",
        logLevel: LOG_LEVEL,
      },
      meter: { calls: COMMITS, fullCappedMs: WRITE_FULL_MAX_MS, prefill: PREFILL },
      ledger: { writeOne: WRITE_ONE_N, writeFullCappedMs: WRITE_FULL_MAX_MS, writeMany: WRITE_MANY_N, batch: BATCH, prefill: PREFILL },
    },
    http,
    meter: meterTimings,
    throughput: tp,
    targets,
    totalSeconds,
  };
  await fs.mkdir(path.dirname(OUT), { recursive: true });
  await fs.writeFile(OUT, JSON.stringify(result, null, 2) + "\n");

  // ---- report (stdout) ----
  const L: string[] = [];
  L.push(`## Metering benchmark${QUICK ? " (BENCH_QUICK — smoke test only)" : ""}`);
  L.push("");
  L.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, ${m.os}; Node ${m.node}; better-sqlite3 ${m.betterSqlite3} (SQLite ${m.sqlite}); ` +
      `ledger files in ${os.tmpdir()} (${m.tmpFilesystem}). Load average at start ${m.loadAvgAtStart.join(" / ")}, at end ${result.machine.loadAvgAtEnd.join(" / ")}.`,
  );
  L.push("");
  L.push(`### Overhead per request (HTTP, ${ROUNDS} rounds x ${PER_ROUND} requests per node and series, one at a time, after ${WARMUP} warm-up)`);
  L.push("");
  L.push("| series | node | requests | p50 ms | p90 ms | p99 ms | server CPU µs/req | main thread µs/req | in node: claim p50 µs | in node: commit p50 / p99 / max µs (> 1 ms) | errors |");
  L.push("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const s of SERIES)
    for (const mode of modes) {
      const c = http.cells.find((x) => x.series === s.key && x.mode === mode.key)!;
      L.push(`| ${s.label} | ${mode.label} | ${c.requests} | ${c.p50Ms} | ${c.p90Ms} | ${c.p99Ms} | ${c.serverCpuUsPerRequest} | ${c.serverMainThreadUsPerRequest} | ${c.inNode.claimP50Us} | ${c.inNode.commitP50Us} / ${c.inNode.commitP99Us} / ${c.inNode.commitMaxUs} (${c.inNode.commitsOver1ms}) | ${c.errors} |`);
    }
  L.push("");
  L.push("| series | node vs metering off | p50 added ms | per-round p50 added (median; each round) | p90 / p99 added ms | p50 ratio | server CPU added µs/req |");
  L.push("|---|---|---:|---|---:|---:|---:|");
  for (const o of http.overheads)
    L.push(
      `| ${SERIES.find((s) => s.key === o.series)!.label} | ${modes.find((x) => x.key === o.mode)!.label} | ${o.p50AddedMs} | ${o.roundP50AddedMedianMs} (${o.roundP50AddedMs.join(", ")}) | ${o.p90AddedMs} / ${o.p99AddedMs} | ${o.p50Ratio} | ${o.serverCpuAddedUs} |`,
    );
  L.push("");
  L.push(`Ledger check (rows in each node's ledger / requests sent to it, warm-up included): ${Object.entries(http.ledgerCheck).map(([k, v]) => `${k} ${v.rows ?? "n/a"} / ${v.sent}`).join(", ")}.`);
  L.push("");
  L.push("### The meter alone (in process, µs per call)");
  L.push("");
  L.push("| synchronous | rows already in ledger | calls | claim p50 / p99 | commit p50 / p90 / p99 / p99.9 / max (mean) | commits > 1 ms | claim+commit+release p50 | commits/s (loop; all runs) |");
  L.push("|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const t of meterTimings)
    L.push(`| ${t.sync.toUpperCase()} | ${fmtInt(t.existingRows)} | ${fmtInt(t.calls)} | ${t.claimUs.p50} / ${t.claimUs.p99} | ${t.commitUs.p50} / ${t.commitUs.p90} / ${t.commitUs.p99} / ${t.commitUs.p999} / ${t.commitUs.max} (${t.commitUs.mean}) | ${t.commitsOver1ms} | ${t.totalUsP50} | ${fmtInt(t.commitsPerSec)} (${t.runsCommitsPerSec.map(fmtInt).join(", ")}) |`);
  L.push("");
  L.push("### Ledger throughput (SqliteLedger, one process, one connection)");
  L.push("");
  L.push("| method | synchronous | records/txn | rows already in ledger | records | ms | records/s (all runs) | bytes to write(2) per record | page-cache bytes dirtied per record |");
  L.push("|---|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const t of tp)
    L.push(`| \`${t.method}\`${t.autoCheckpoint ? "" : " (diagnostic: `wal_autocheckpoint = 0`)"} | ${t.sync.toUpperCase()} | ${t.perTransaction} | ${fmtInt(t.existingRows)} | ${fmtInt(t.records)}${t.cappedByTime ? " (time cap)" : ""} | ${t.ms} | ${fmtInt(t.recordsPerSec)} (${t.runsRecordsPerSec.map(fmtInt).join(", ")}) | ${t.bytesWrittenPerRecord === null ? "n/a" : fmtInt(t.bytesWrittenPerRecord)} | ${t.storageBytesPerRecord === null ? "n/a" : fmtInt(t.storageBytesPerRecord)} |`);
  L.push("");
  L.push("### Targets");
  L.push("");
  L.push("| target | value | goal | result |");
  L.push("|---|---:|---:|---|");
  for (const t of targets) L.push(`| ${t.name} | ${t.value} | ${t.target} | ${t.pass ? "PASS" : "MISS"} |`);
  L.push("");
  L.push(`Total bench time: ${totalSeconds} s. JSON: ${path.relative(ROOT, OUT) || OUT}`);
  console.log(L.join("\n"));
  for (const t of targets) log(`${t.pass ? "PASS" : "MISS"} ${t.name}: ${t.value} (target ${t.target})`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
