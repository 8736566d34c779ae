/**
 * `npm run bench`: Borde's streaming HTTP path vs node-llama-cpp called directly, same model, same
 * threads, same context/sequence setup, at 1, 4 and 16 concurrent streams; plus the decode speed of a
 * realistic-size (synthetic 0.8B Q8_0) model against the single-thread memory-bandwidth bound.
 *
 * Topology (one machine, 2 cores assumed):
 *   - this process hosts both the direct engine and the Borde node (started in-process with
 *     startNode), so both use the same node-llama-cpp binary, the same Node flags and the same code
 *     (src/, not a possibly stale dist/). They never run at the same time: each cell runs direct,
 *     then HTTP (order alternating between repeats so slow drift on a shared machine is not charged to
 *     one side).
 *   - the HTTP client is a forked child process (bench/http-client.ts). With threads=1 the engine's
 *     compute thread and the server's JS thread mostly take turns on one core, and the client runs on
 *     the other, as a remote client would. An in-process client would put its socket reads and SSE
 *     parsing on the very event loop that drives the token loop, charging client cost to Borde.
 *
 * Environment:
 *   BENCH_QUICK=1          one repeat, few requests, short outputs (checks the bench works; ~1 min)
 *   BENCH_REPEATS=N        repeats per cell (default 3)
 *   BENCH_MODELS=a,b       subset of: stories, synth (default both)
 *   BENCH_SYNTH_TOKENS=N   tokens per stream for the 0.8B model (default 32)
 *   BENCH_LOG_LEVEL=lvl    Borde's log level during the bench (default info, as in production; logs go to /dev/null)
 *   BENCH_OUT=path         JSON output (default bench/results/latest.json; with BENCH_QUICK, $TMPDIR/borde-bench-quick.json)
 */
import { readFileSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { getLlama, LlamaCompletion, LlamaLogLevel, readGgufFileInfo, type Llama, type LlamaContext, type LlamaModel, type Token } from "node-llama-cpp";
import pino from "pino";
import { loadConfig } from "../src/config/index.js";
import { startNode, type BordeNode } from "../src/node.js";
import { createLogger } from "../src/observability/index.js";
import type { HttpRunRequest, HttpRunResult, StreamSample } from "./http-client.js";
import { measureReadBandwidth } from "./membw.js";
import { benchDecode, planTensors, resolveDims, tensorBytes, writeSyntheticLlama, type SyntheticWeightType } from "./synthetic-gguf.js";
import { Forked } from "./forked.js";

const ROOT = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
const QUICK = process.env.BENCH_QUICK === "1";
const REPEATS = Math.max(1, Number(process.env.BENCH_REPEATS ?? (QUICK ? 1 : 3)));
const MODELS = (process.env.BENCH_MODELS ?? "stories,synth").split(",").map((s) => s.trim());
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? "info";
const OUT = process.env.BENCH_OUT
  ? path.resolve(process.env.BENCH_OUT)
  : QUICK
    ? path.join(os.tmpdir(), "borde-bench-quick.json")
    : path.join(ROOT, "bench/results/latest.json");

const THREADS = 1;
const PARALLEL = 16;
const CONTEXT_SIZE = 2048; // Borde's default BORDE_CONTEXT_SIZE
const CONCURRENCY = [1, 4, 16] as const;
const ACCOUNT = "acct_bench";
const TOKEN = "bench-token-0123456789";

const SYNTH = { targetParams: 0.8e9, type: "Q8_0" as SyntheticWeightType, seed: 1 };
const SYNTH_PATH = path.join(ROOT, "bench/models/synth-0.8b-q8_0.gguf");

interface ModelPlan {
  key: "stories" | "synth";
  label: string;
  file: string;
  prompt: string;
  /** tokens per stream, by concurrency */
  maxTokens: Record<number, number>;
  /** requests each stream issues back to back, by concurrency */
  perStream: Record<number, number>;
}

// "Once upon a time" with greedy decoding runs stories260K to the 128-token limit without EOS.
const STORIES_PROMPT = "Once upon a time";
const SYNTH_PROMPT = "The edge server answered the request with a short story about a river, a boat and";

// ---------------------------------------------------------------------------------------------
// small stats helpers
// ---------------------------------------------------------------------------------------------

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length); // nearest rank
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!;
}
const median = (xs: number[]): number => percentile(xs, 50);
const r1 = (x: number): number => Math.round(x * 10) / 10;
const r2 = (x: number): number => Math.round(x * 100) / 100;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const log = (msg: string): void => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

// ---------------------------------------------------------------------------------------------
// machine
// ---------------------------------------------------------------------------------------------

function machine() {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  let flags: string[] = [];
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? cpu;
    const f = /^flags\s*:\s*(.+)$/m.exec(info)?.[1]?.split(/\s+/) ?? [];
    flags = f.filter((x) => /^(avx|avx2|avx512f|avx512_vnni|avx_vnni|fma|f16c|neon|asimd)$/.test(x));
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
  let llamaCpp = "unknown";
  try {
    llamaCpp = (JSON.parse(readFileSync(path.join(ROOT, "node_modules/node-llama-cpp/llama/llama.cpp.info.json"), "utf8")) as { tag: string }).tag;
  } catch {
    // older layout
  }
  return {
    cpu,
    cpuFlags: flags,
    cores: os.availableParallelism(),
    ramGiB: r1(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    nodeLlamaCpp: pkg("node-llama-cpp"),
    llamaCpp,
    hono: pkg("hono"),
    honoNodeServer: pkg("@hono/node-server"),
    loadAvgAtStart: os.loadavg().map(r2),
  };
}

// ---------------------------------------------------------------------------------------------
// synthetic model: reuse when the file on disk is exactly what the generator would write
// ---------------------------------------------------------------------------------------------

interface SynthInfo {
  path: string;
  params: number;
  bytes: number;
  bytesPerToken: number;
  dims: ReturnType<typeof resolveDims>;
  reused: boolean;
}

async function ensureSynth(): Promise<SynthInfo> {
  const dims = resolveDims({ targetParams: SYNTH.targetParams });
  const plans = planTensors(dims, SYNTH.type);
  const last = plans[plans.length - 1]!;
  const dataBytes = last.offset + last.nBytes;
  const bytesPerToken = plans.reduce((s, p) => s + (p.perToken ? p.nBytes : 0), 0) + tensorBytes(SYNTH.type, dims.dim);
  const params = plans.reduce((s, p) => s + p.nElems, 0);
  const st = await fs.stat(SYNTH_PATH).catch(() => null);
  if (st) {
    try {
      const info = await readGgufFileInfo(SYNTH_PATH, { logWarnings: false });
      const md = info.metadata as unknown as { llama?: Record<string, unknown> };
      const header = info.totalMetadataSize + (info.totalTensorInfoSize ?? 0);
      const same =
        md.llama?.block_count === dims.nLayers &&
        md.llama?.embedding_length === dims.dim &&
        md.llama?.feed_forward_length === dims.ffnDim &&
        md.llama?.vocab_size === dims.vocabSize &&
        (info.fullTensorInfo?.length ?? info.tensorInfo?.length) === plans.length &&
        // header (rounded to the alignment) + tensor data is exactly the file
        st.size >= dataBytes &&
        st.size - dataBytes - header >= 0 &&
        st.size - dataBytes - header < 64;
      if (same) return { path: SYNTH_PATH, params, bytes: st.size, bytesPerToken, dims, reused: true };
      log(`existing ${path.relative(ROOT, SYNTH_PATH)} does not match the generator's 0.8B Q8_0 output; regenerating`);
    } catch (e) {
      log(`existing ${path.relative(ROOT, SYNTH_PATH)} unreadable (${String(e)}); regenerating`);
    }
  }
  log(`writing synthetic 0.8B Q8_0 llama to ${path.relative(ROOT, SYNTH_PATH)} ...`);
  const res = await writeSyntheticLlama({ path: SYNTH_PATH, targetParams: SYNTH.targetParams, type: SYNTH.type, seed: SYNTH.seed });
  return { path: res.path, params: res.params, bytes: res.bytes, bytesPerToken: res.bytesPerToken, dims, reused: false };
}

// ---------------------------------------------------------------------------------------------
// direct engine: what Borde's llama engine does per request, minus HTTP/scheduler/inference layers
// ---------------------------------------------------------------------------------------------

interface Direct {
  llama: Llama;
  model: LlamaModel;
  context: LlamaContext;
  contextSize: number;
}

async function contextSizeFor(file: string): Promise<number> {
  // Same rule as src/engines/llama: min(BORDE_CONTEXT_SIZE, training context), at least 64.
  const info = await readGgufFileInfo(file, { readTensorInfo: false, logWarnings: false });
  const md = info.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
  const arch = String(md.general?.architecture ?? "");
  const v = md[arch]?.context_length;
  const train = typeof v === "number" && v > 0 ? v : CONTEXT_SIZE;
  return Math.max(64, Math.min(CONTEXT_SIZE, train));
}

async function openDirect(file: string): Promise<Direct> {
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: THREADS, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const contextSize = await contextSizeFor(file);
  const context = await model.createContext({ contextSize, sequences: PARALLEL, threads: THREADS });
  return { llama, model, context, contextSize };
}

async function closeDirect(d: Direct): Promise<void> {
  await d.context.dispose();
  await d.model.dispose();
  await d.llama.dispose();
}

async function directRequest(d: Direct, prompt: string, maxTokens: number): Promise<StreamSample> {
  const t0 = performance.now();
  const sequence = d.context.getSequence();
  try {
    const bos = d.model.tokens.bos;
    const tokens = d.model.tokenize(prompt, false);
    const input: Token[] = bos !== null && d.model.tokens.shouldPrependBosToken ? [bos, ...tokens] : tokens;
    const completion = new LlamaCompletion({ contextSequence: sequence });
    const ac = new AbortController();
    let n = 0;
    let tFirst = -1;
    let textEvents = 0;
    await completion.generateCompletionWithMeta(input, {
      signal: ac.signal,
      stopOnAbortSignal: true,
      maxTokens: Math.min(maxTokens, d.contextSize - input.length),
      temperature: 0,
      repeatPenalty: false,
      onToken: (t) => {
        n += t.length;
      },
      onTextChunk: () => {
        if (tFirst < 0) tFirst = performance.now();
        textEvents++;
      },
    });
    const t1 = performance.now();
    return { ttftMs: tFirst >= 0 ? tFirst - t0 : -1, totalMs: t1 - t0, tokens: n, textEvents };
  } catch (e) {
    return { ttftMs: -1, totalMs: performance.now() - t0, tokens: -1, textEvents: 0, error: String(e) };
  } finally {
    // Awaited: the sequence id returns to the context asynchronously (under the context lock), and a
    // stream that starts its next request before that would get "No sequences left".
    await sequence.dispose();
  }
}

async function directRun(d: Direct, prompt: string, maxTokens: number, concurrency: number, perStream: number): Promise<{ wallMs: number; samples: StreamSample[] }> {
  const samples: StreamSample[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = 0; i < perStream; i++) samples.push(await directRequest(d, prompt, maxTokens));
    }),
  );
  return { wallMs: performance.now() - t0, samples };
}

// ---------------------------------------------------------------------------------------------
// Borde over HTTP: in-process node, client in a child process
// ---------------------------------------------------------------------------------------------

/** The forked HTTP client (bench/http-client.ts). */
type HttpClient = Forked<HttpRunRequest, HttpRunResult>;

async function openBorde(file: string, modelsDir: string): Promise<{ node: BordeNode; modelId: string }> {
  const stem = path.basename(file, ".gguf").replace(/[^A-Za-z0-9._-]/g, "-");
  await fs.symlink(file, path.join(modelsDir, `${stem}.gguf`));
  const modelId = `@local/${stem}`;
  const config = loadConfig(
    {
      host: "127.0.0.1",
      port: 0,
      modelsDir,
      devAccount: ACCOUNT,
      devToken: TOKEN,
      threads: THREADS,
      parallel: PARALLEL,
      contextSize: CONTEXT_SIZE,
      logLevel: LOG_LEVEL as "info",
      preload: [modelId],
      // The comparison is Borde's serving path, metering included, against the bare engine; the
      // per-account limits would refuse a benchmark's request rate, so they are lifted here.
      dataDir: path.join(modelsDir, "data"),
      devPlan: "paid",
      rateLimits: { "text-generation": 1e9, "text-embeddings": 1e9 },
      maxConcurrent: 1e6,
      tokensPerMinute: 0,
    },
    {},
  );
  // Logs are written as in production (pino, synchronous fd writes) but to /dev/null.
  const logger = createLogger(LOG_LEVEL, pino.destination({ dest: "/dev/null", sync: true }) as unknown as NodeJS.WritableStream);
  const node = await startNode(config, { logger });
  return { node, modelId };
}

// ---------------------------------------------------------------------------------------------
// cells
// ---------------------------------------------------------------------------------------------

interface RepResult {
  wallMs: number;
  tokens: number;
  aggTokPerSec: number;
  requests: number;
  /** CPU of this process (engine threads + JS main thread, i.e. the server side) per generated token, µs */
  procCpuUsPerToken: number;
  /** busy time of this process's JS main thread (event-loop utilization x wall) per generated token, µs */
  mainThreadUsPerToken: number;
  /** CPU of the HTTP client child per generated token, µs (HTTP runs only) */
  clientCpuUsPerToken?: number;
  errors: string[];
}

interface Usage {
  cpuMs: number;
  mainBusyMs: number;
}

/** Runs fn and reports this process's CPU time and main-thread busy time during it. */
async function metered<T>(fn: () => Promise<T>): Promise<{ value: T; usage: Usage }> {
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  const value = await fn();
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.cpuUsage(cpu0);
  return { value, usage: { cpuMs: (cpu.user + cpu.system) / 1000, mainBusyMs: elu.active } };
}

interface CellResult {
  model: string;
  mode: "direct" | "http";
  concurrency: number;
  maxTokens: number;
  perStream: number;
  reps: RepResult[];
  /** median over repeats of (completion tokens / wall time) */
  aggTokPerSec: number;
  /** median over requests of completion tokens / request time (TTFT included) */
  perStreamTokPerSec: number;
  /** median over requests of (tokens - 1) / (total - ttft): decode rate after the first token */
  perStreamDecodeTokPerSec: number;
  ttftP50Ms: number;
  ttftP99Ms: number;
  ttftSamples: number;
  /** medians over repeats, µs per generated token */
  procCpuUsPerToken: number;
  mainThreadUsPerToken: number;
  clientCpuUsPerToken: number | null;
  tokensMin: number;
  tokensMax: number;
  errors: number;
}

function summarize(model: string, mode: "direct" | "http", concurrency: number, maxTokens: number, perStream: number, reps: RepResult[], samples: StreamSample[]): CellResult {
  const ok = samples.filter((s) => !s.error && s.tokens > 0);
  const ttft = ok.map((s) => s.ttftMs).filter((x) => x >= 0);
  const tokens = ok.map((s) => s.tokens);
  return {
    model,
    mode,
    concurrency,
    maxTokens,
    perStream,
    reps,
    aggTokPerSec: r1(median(reps.map((r) => r.aggTokPerSec))),
    perStreamTokPerSec: r1(median(ok.map((s) => (s.tokens * 1000) / s.totalMs))),
    perStreamDecodeTokPerSec: r1(median(ok.filter((s) => s.tokens > 1 && s.ttftMs >= 0).map((s) => ((s.tokens - 1) * 1000) / (s.totalMs - s.ttftMs)))),
    ttftP50Ms: r2(percentile(ttft, 50)),
    ttftP99Ms: r2(percentile(ttft, 99)),
    ttftSamples: ttft.length,
    procCpuUsPerToken: r1(median(reps.map((r) => r.procCpuUsPerToken))),
    mainThreadUsPerToken: r1(median(reps.map((r) => r.mainThreadUsPerToken))),
    clientCpuUsPerToken: mode === "http" ? r1(median(reps.map((r) => r.clientCpuUsPerToken ?? NaN))) : null,
    tokensMin: tokens.length ? Math.min(...tokens) : 0,
    tokensMax: tokens.length ? Math.max(...tokens) : 0,
    errors: samples.length - ok.length,
  };
}

function repOf(wallMs: number, samples: StreamSample[], usage: Usage, clientCpuMs?: number): RepResult {
  const tokens = samples.reduce((s, x) => s + (x.error ? 0 : Math.max(0, x.tokens)), 0);
  const perTok = (ms: number) => r1((ms * 1000) / Math.max(1, tokens));
  return {
    wallMs: r1(wallMs),
    tokens,
    aggTokPerSec: r1((tokens * 1000) / wallMs),
    requests: samples.length,
    procCpuUsPerToken: perTok(usage.cpuMs),
    mainThreadUsPerToken: perTok(usage.mainBusyMs),
    ...(clientCpuMs !== undefined ? { clientCpuUsPerToken: perTok(clientCpuMs) } : {}),
    errors: [...new Set(samples.filter((s) => s.error).map((s) => s.error!))].slice(0, 3),
  };
}

async function benchModel(plan: ModelPlan, client: HttpClient): Promise<CellResult[]> {
  const modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-bench-models-"));
  log(`${plan.label}: loading direct engine and Borde node (threads=${THREADS}, parallel=${PARALLEL}) ...`);
  const direct = await openDirect(plan.file);
  const { node, modelId } = await openBorde(plan.file, modelsDir);
  const apiPath = `/client/v4/accounts/${ACCOUNT}/ai/run/${modelId}`;
  const httpRun = (c: number, perStream: number, maxTokens: number) =>
    client.request({
      type: "run",
      url: node.url,
      path: apiPath,
      token: TOKEN,
      body: { prompt: plan.prompt, stream: true, max_tokens: maxTokens, temperature: 0 },
      concurrency: c,
      perStream,
    });
  try {
    // Warm-up: first requests pay for lazy allocations, JIT and socket set-up on both sides.
    // stories260K is fast enough to warm every path with a few full-length requests.
    const warm = plan.key === "stories" ? [{ c: 1, n: 4, tokens: 128 }, { c: 16, n: 1, tokens: 128 }] : [{ c: 1, n: 1, tokens: 4 }, { c: 2, n: 1, tokens: 4 }];
    for (const { c, n, tokens } of warm) {
      const d = await directRun(direct, plan.prompt, tokens, c, n);
      const h = await httpRun(c, n, tokens);
      const errs = [...d.samples, ...h.samples].filter((s) => s.error);
      if (errs.length) throw new Error(`warm-up failed: ${errs[0]!.error}`);
    }

    const collected = new Map<string, { reps: RepResult[]; samples: StreamSample[] }>();
    const add = (mode: string, c: number, rep: RepResult, samples: StreamSample[]) => {
      const k = `${mode}:${c}`;
      const e = collected.get(k) ?? { reps: [], samples: [] };
      e.reps.push(rep);
      e.samples.push(...samples);
      collected.set(k, e);
      return rep;
    };
    for (let rep = 0; rep < REPEATS; rep++) {
      for (const c of CONCURRENCY) {
        const maxTokens = plan.maxTokens[c]!;
        const perStream = plan.perStream[c]!;
        const runDirect = async () => {
          const { value: r, usage } = await metered(() => directRun(direct, plan.prompt, maxTokens, c, perStream));
          return add("direct", c, repOf(r.wallMs, r.samples, usage), r.samples);
        };
        const runHttp = async () => {
          const { value: r, usage } = await metered(() => httpRun(c, perStream, maxTokens));
          return add("http", c, repOf(r.wallMs, r.samples, usage, r.cpuMs), r.samples);
        };
        // Alternate the order between repeats so drift on a shared machine does not favour one side.
        const [a, b] = rep % 2 === 0 ? [await runDirect(), await runHttp()] : [await runHttp(), await runDirect()].reverse();
        const [dr, hr] = [a!, b!];
        log(
          `${plan.label} rep ${rep + 1}/${REPEATS} c=${c}: direct ${dr.aggTokPerSec} tok/s, http ${hr.aggTokPerSec} tok/s` +
            (dr.errors.length || hr.errors.length ? ` ERRORS ${[...dr.errors, ...hr.errors].join(" | ")}` : ""),
        );
      }
    }
    const out: CellResult[] = [];
    for (const c of CONCURRENCY) {
      for (const mode of ["direct", "http"] as const) {
        const e = collected.get(`${mode}:${c}`)!;
        out.push(summarize(plan.key, mode, c, plan.maxTokens[c]!, plan.perStream[c]!, e.reps, e.samples));
      }
    }
    return out;
  } finally {
    await node.close();
    await closeDirect(direct);
    await fs.rm(modelsDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  const m = machine();
  log(`${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB, Node ${m.node}, node-llama-cpp ${m.nodeLlamaCpp}; load avg ${m.loadAvgAtStart.join(" ")}`);
  if (QUICK) log("BENCH_QUICK=1: reduced sizes; numbers are only a smoke test");

  const storiesShared = path.resolve(ROOT, "../shared/models/stories260K.gguf");
  const storiesFile = (await fs.stat(storiesShared).catch(() => null)) ? storiesShared : path.join(ROOT, "models/stories260K.gguf");
  const synthTokens = Number(process.env.BENCH_SYNTH_TOKENS ?? (QUICK ? 8 : 32));

  const plans: ModelPlan[] = [];
  if (MODELS.includes("stories"))
    plans.push({
      key: "stories",
      label: "stories260K",
      file: storiesFile,
      prompt: STORIES_PROMPT,
      maxTokens: { 1: QUICK ? 64 : 128, 4: QUICK ? 64 : 128, 16: QUICK ? 64 : 128 },
      perStream: QUICK ? { 1: 4, 4: 1, 16: 1 } : { 1: 16, 4: 4, 16: 2 },
    });
  let synth: SynthInfo | undefined;
  if (MODELS.includes("synth")) {
    synth = await ensureSynth();
    plans.push({
      key: "synth",
      label: `synthetic ${r2(synth.params / 1e9)}B Q8_0`,
      file: synth.path,
      prompt: SYNTH_PROMPT,
      maxTokens: { 1: synthTokens, 4: synthTokens, 16: synthTokens },
      perStream: QUICK ? { 1: 1, 4: 1, 16: 1 } : { 1: 3, 4: 1, 16: 1 },
    });
  }

  // Phase 1: bandwidth bound of the 0.8B model (nothing else running in this process).
  let bandwidth: Record<string, unknown> | undefined;
  if (synth) {
    log("measuring single-thread memory read bandwidth ...");
    const bw = await measureReadBandwidth(QUICK ? { mib: 512, passes: 3 } : { mib: 1024, passes: 5 });
    const decodeTokens = QUICK ? 16 : 64;
    log(`membw ${r2(bw.gbPerSec)} GB/s (${bw.method}); decoding ${decodeTokens} tokens of the 0.8B model on 1 thread (benchDecode) ...`);
    const dec = await benchDecode(synth.path, { tokens: decodeTokens, threads: THREADS });
    const boundTokPerSec = (bw.gbPerSec * 1e9) / synth.bytesPerToken;
    bandwidth = {
      gbPerSec: r2(bw.gbPerSec),
      method: bw.method,
      bytesPerToken: synth.bytesPerToken,
      boundTokPerSec: r2(boundTokPerSec),
      decodeTokPerSec: r2(dec.tokPerSec),
      decodeTokens: dec.tokens,
      ratio: r3(dec.tokPerSec / boundTokPerSec),
      effectiveGBps: r2((dec.tokPerSec * synth.bytesPerToken) / 1e9),
      loadMs: Math.round(dec.loadMs),
    };
    log(`decode ${r2(dec.tokPerSec)} tok/s vs bound ${r2(boundTokPerSec)} tok/s: ${(100 * (bandwidth.ratio as number)).toFixed(1)}%`);
  }

  // Phase 2: direct vs HTTP per model.
  const client: HttpClient = await Forked.start(new URL("./http-client.ts", import.meta.url), "http client");
  const cells: CellResult[] = [];
  try {
    for (const plan of plans) cells.push(...(await benchModel(plan, client)));
  } finally {
    await client.close();
  }

  const cell = (model: string, mode: "direct" | "http", c: number) => cells.find((x) => x.model === model && x.mode === mode && x.concurrency === c);
  const ratios: Record<string, Record<string, number>> = {};
  for (const plan of plans) {
    const r: Record<string, number> = {};
    for (const c of CONCURRENCY) {
      const d = cell(plan.key, "direct", c);
      const h = cell(plan.key, "http", c);
      if (!d || !h) continue;
      r[`httpOverDirectTokPerSec_c${c}`] = r3(h.aggTokPerSec / d.aggTokPerSec);
      r[`ttftP50AddedMs_c${c}`] = r2(h.ttftP50Ms - d.ttftP50Ms);
    }
    const h1 = cell(plan.key, "http", 1);
    const h16 = cell(plan.key, "http", 16);
    const d1 = cell(plan.key, "direct", 1);
    const d16 = cell(plan.key, "direct", 16);
    if (h1 && h16) r.httpAgg16OverSingle = r2(h16.aggTokPerSec / h1.aggTokPerSec);
    if (d1 && d16) r.directAgg16OverSingle = r2(d16.aggTokPerSec / d1.aggTokPerSec);
    ratios[plan.key] = r;
  }

  const targets: { name: string; value: number | null; target: string; pass: boolean | null }[] = [];
  const st = ratios.stories;
  if (st) {
    const v1 = st.httpOverDirectTokPerSec_c1 ?? NaN;
    const v2 = st.ttftP50AddedMs_c1 ?? NaN;
    const v3 = st.httpAgg16OverSingle ?? NaN;
    targets.push({ name: "stories260K single-stream HTTP tok/s vs direct", value: v1, target: ">= 0.95", pass: v1 >= 0.95 });
    targets.push({ name: "stories260K p50 TTFT added by HTTP (1 stream)", value: v2, target: "< 2 ms", pass: v2 < 2 });
    targets.push({ name: "stories260K HTTP aggregate tok/s, 16 streams vs 1", value: v3, target: ">= 2x", pass: v3 >= 2 });
  }

  const totalSeconds = r1((performance.now() - started) / 1000);
  const result = {
    generatedAt: new Date().toISOString(),
    quick: QUICK,
    machine: { ...m, loadAvgAtEnd: os.loadavg().map(r2) },
    setup: {
      threads: THREADS,
      parallel: PARALLEL,
      contextSizePerSequence: CONTEXT_SIZE,
      repeats: REPEATS,
      concurrency: CONCURRENCY,
      borde: "in-process startNode(loadConfig(...)); client: forked child process, node:http keep-alive, Workers AI streaming endpoint",
      direct: "node-llama-cpp LlamaContext with `parallel` sequences; each stream: getSequence + LlamaCompletion.generateCompletionWithMeta (as src/engines/llama)",
      borde_log_level: LOG_LEVEL,
      models: plans.map((p) => ({ key: p.key, label: p.label, file: path.relative(ROOT, p.file) || p.file, prompt: p.prompt, maxTokens: p.maxTokens, perStream: p.perStream })),
      synth: synth ? { params: synth.params, bytes: synth.bytes, bytesPerToken: synth.bytesPerToken, dims: synth.dims, reused: synth.reused } : null,
    },
    bandwidth: bandwidth ?? null,
    cells,
    ratios,
    targets,
    totalSeconds,
  };
  await fs.mkdir(path.dirname(OUT), { recursive: true });
  await fs.writeFile(OUT, JSON.stringify(result, null, 2) + "\n");

  // ---- report (stdout) ----
  const lines: string[] = [];
  lines.push(`## Borde benchmark${QUICK ? " (BENCH_QUICK — smoke test only)" : ""}`);
  lines.push("");
  lines.push(
    `Machine: ${m.cpu} (${m.cpuFlags.join(", ")}), ${m.cores} cores, ${m.ramGiB} GiB RAM, ${m.os}; Node ${m.node}; node-llama-cpp ${m.nodeLlamaCpp} (llama.cpp ${m.llamaCpp}). ` +
      `Load average at start ${m.loadAvgAtStart.join(" / ")}, at end ${result.machine.loadAvgAtEnd.join(" / ")}.`,
  );
  lines.push("");
  lines.push(
    `Setup: threads=${THREADS}, parallel=${PARALLEL} sequences x ${CONTEXT_SIZE} context tokens, temperature 0, ${REPEATS} repeat(s) per cell, medians over repeats; ` +
      `TTFT percentiles pooled over all requests of a cell. Each of the N streams issues its requests back to back.`,
  );
  lines.push("");
  lines.push("| model | streams | tokens/req (min-max) | req/stream | direct tok/s | HTTP tok/s | HTTP/direct | direct TTFT p50 / p99 ms | HTTP TTFT p50 / p99 ms | TTFT p50 added ms | errors |");
  lines.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const plan of plans) {
    for (const c of CONCURRENCY) {
      const d = cell(plan.key, "direct", c);
      const h = cell(plan.key, "http", c);
      if (!d || !h) continue;
      const toks = `${plan.maxTokens[c]} (${Math.min(d.tokensMin, h.tokensMin)}-${Math.max(d.tokensMax, h.tokensMax)})`;
      lines.push(
        `| ${plan.label} | ${c} | ${toks} | ${plan.perStream[c]} | ${d.aggTokPerSec} | ${h.aggTokPerSec} | ${(h.aggTokPerSec / d.aggTokPerSec).toFixed(3)} | ` +
          `${d.ttftP50Ms} / ${d.ttftP99Ms} | ${h.ttftP50Ms} / ${h.ttftP99Ms} | ${r2(h.ttftP50Ms - d.ttftP50Ms)} | ${d.errors + h.errors} |`,
      );
    }
  }
  lines.push("");
  lines.push("tok/s = completion tokens of all streams / wall time of the cell (aggregate; TTFT included).");
  lines.push("");
  for (const plan of plans) {
    const r = ratios[plan.key]!;
    lines.push(
      `- ${plan.label}: aggregate tok/s at 16 streams vs 1 — HTTP ${r.httpAgg16OverSingle}x, direct ${r.directAgg16OverSingle}x; ` +
        `per-stream decode tok/s (after first token) at 1 / 4 / 16 streams — direct ${CONCURRENCY.map((c) => cell(plan.key, "direct", c)?.perStreamDecodeTokPerSec).join(" / ")}, ` +
        `HTTP ${CONCURRENCY.map((c) => cell(plan.key, "http", c)?.perStreamDecodeTokPerSec).join(" / ")}`,
    );
  }
  lines.push("");
  lines.push("CPU per generated token (µs, medians over repeats): server process = engine threads + JS main thread of the process hosting the engine (direct) or the Borde node (HTTP); main thread = its event-loop busy time; client = the HTTP client child.");
  lines.push("");
  lines.push("| model | streams | direct: process / main thread | HTTP: process / main thread | HTTP client |");
  lines.push("|---|---:|---:|---:|---:|");
  for (const plan of plans) {
    for (const c of CONCURRENCY) {
      const d = cell(plan.key, "direct", c);
      const h = cell(plan.key, "http", c);
      if (!d || !h) continue;
      lines.push(`| ${plan.label} | ${c} | ${d.procCpuUsPerToken} / ${d.mainThreadUsPerToken} | ${h.procCpuUsPerToken} / ${h.mainThreadUsPerToken} | ${h.clientCpuUsPerToken} |`);
    }
  }
  lines.push("");
  const synthDirect1 = cell("synth", "direct", 1);
  if (bandwidth) {
    lines.push(
      `- Bandwidth bound (${plans.find((p) => p.key === "synth")?.label}): single-thread read bandwidth ${bandwidth.gbPerSec} GB/s (${bandwidth.method}), ` +
        `${(synth!.bytesPerToken / 1e6).toFixed(1)} MB of weights per token → bound ${bandwidth.boundTokPerSec} tok/s; ` +
        `measured decode ${bandwidth.decodeTokPerSec} tok/s (benchDecode, 1 thread, ${bandwidth.decodeTokens} tokens) = ` +
        `${(100 * (bandwidth.ratio as number)).toFixed(1)}% of the bound (${bandwidth.effectiveGBps} GB/s effective).` +
        (synthDirect1 ? ` In the direct cell (1 stream, context of ${PARALLEL} sequences) decode after the first token ran at ${synthDirect1.perStreamDecodeTokPerSec} tok/s = ${(100 * synthDirect1.perStreamDecodeTokPerSec / (bandwidth.boundTokPerSec as number)).toFixed(1)}% of the bound.` : ""),
    );
  }
  lines.push("");
  lines.push("| target | value | goal | result |");
  lines.push("|---|---:|---:|---|");
  for (const t of targets) lines.push(`| ${t.name} | ${t.value} | ${t.target} | ${t.pass ? "PASS" : "MISS"} |`);
  lines.push("");
  lines.push(`Total bench time: ${totalSeconds} s. JSON: ${path.relative(ROOT, OUT)}`);
  console.log(lines.join("\n"));
  for (const t of targets) log(`${t.pass ? "PASS" : "MISS"} ${t.name}: ${t.value} (target ${t.target})`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
