/**
 * HTTP client for bench/workers.ts, run as a forked child process so that its socket and parsing
 * work does not share the server's event loop (as bench/metering-client.ts does for
 * bench/metering.ts). node:http with keep-alive agents, never fetch.
 *
 * Jobs (IPC: parent sends a job, child answers `{type:"result", id, ...}`; `{type:"exit"}` ends):
 *  - steps: requests one after another on one keep-alive connection, each timed (deploy then first
 *    request; a limit-breaking request then the next one). A step may be retried until it answers as
 *    expected (`retryUntilMs`); the time then runs from its first attempt.
 *  - seq:   `n` identical requests one after another on one keep-alive connection; every latency.
 *  - load:  closed loop: `concurrency` keep-alive connections, each sending its next request as soon
 *           as the previous answer is read, for `warmupMs` (not counted) then `durationMs`.
 * Latency = request written -> last byte of the response body read.
 */
import http from "node:http";
import { serveJobs } from "./forked.js";

export interface Req {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
  expectStatus: number;
  /** the body must contain this (checked on every answer) */
  expectIncludes?: string;
}

export interface StepsJob {
  type: "steps";
  id: number;
  url: string;
  steps: (Req & { retryUntilMs?: number })[];
}
export interface StepResult {
  ms: number;
  status: number;
  attempts: number;
  bodyHead: string;
  ok: boolean;
}

export interface SeqJob {
  type: "seq";
  id: number;
  url: string;
  req: Req;
  n: number;
}
export interface SeqResult {
  latenciesMs: number[];
  errors: string[];
  wallMs: number;
  cpuMs: number;
}

export interface LoadJob {
  type: "load";
  id: number;
  url: string;
  req: Req;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}
export interface LoadResult {
  /** answers that completed inside the measured window */
  requests: number;
  errors: number;
  errorSamples: string[];
  wallMs: number;
  /** this client's CPU over the measured window, ms */
  cpuMs: number;
  latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  /** sockets the agent opened in total (16 means no connection was ever re-opened) */
  socketsOpened: number;
}

export type Job = StepsJob | SeqJob | LoadJob;
export type JobResult =
  | ({ type: "result"; id: number; kind: "steps"; steps: StepResult[]; error?: string })
  | ({ type: "result"; id: number; kind: "seq" } & SeqResult)
  | ({ type: "result"; id: number; kind: "load" } & LoadResult)
  | { type: "result"; id: number; kind: "error"; error: string };

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

interface Answer {
  ms: number;
  status: number;
  body: string;
  error?: string;
}

function send(agent: http.Agent, base: URL, req: Req): Promise<Answer> {
  const url = new URL(req.path, base);
  const payload = req.body === undefined ? null : Buffer.from(req.body);
  const headers: Record<string, string | number> = { ...(req.headers ?? {}) };
  if (payload) headers["content-length"] = payload.length;
  return new Promise((resolve) => {
    const t0 = performance.now();
    let settled = false;
    const fail = (e: unknown) => {
      if (settled) return;
      settled = true;
      resolve({ ms: performance.now() - t0, status: 0, body: "", error: String(e) });
    };
    const r = http.request(url, { method: req.method, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => {
        const ms = performance.now() - t0;
        if (settled) return;
        settled = true;
        const body = Buffer.concat(chunks).toString("utf8");
        const status = res.statusCode ?? 0;
        let error: string | undefined;
        if (status !== req.expectStatus) error = `HTTP ${status} (expected ${req.expectStatus}): ${body.slice(0, 300)}`;
        else if (req.expectIncludes !== undefined && !body.includes(req.expectIncludes)) error = `body lacks ${JSON.stringify(req.expectIncludes)}: ${body.slice(0, 300)}`;
        resolve({ ms, status, body, ...(error ? { error } : {}) });
      });
      res.on("error", fail);
    });
    r.on("error", fail);
    r.end(payload ?? undefined);
  });
}

const seqAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });

async function steps(job: StepsJob): Promise<JobResult> {
  const base = new URL(job.url);
  const out: StepResult[] = [];
  for (const step of job.steps) {
    const t0 = performance.now();
    let attempts = 0;
    let a: Answer;
    for (;;) {
      attempts++;
      a = await send(seqAgent, base, step);
      if (!a.error || performance.now() - t0 >= (step.retryUntilMs ?? 0)) break;
    }
    const res = { ms: performance.now() - t0, status: a.status, attempts, bodyHead: a.body.slice(0, 200), ok: !a.error };
    out.push(res);
    if (a.error) return { type: "result", id: job.id, kind: "steps", steps: out, error: a.error };
  }
  return { type: "result", id: job.id, kind: "steps", steps: out };
}

async function seq(job: SeqJob): Promise<JobResult> {
  const base = new URL(job.url);
  const latenciesMs: number[] = [];
  const errors: string[] = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < job.n; i++) {
    const a = await send(seqAgent, base, job.req);
    if (a.error) errors.push(a.error);
    else latenciesMs.push(a.ms);
  }
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { type: "result", id: job.id, kind: "seq", latenciesMs, errors, wallMs, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function load(job: LoadJob): Promise<JobResult> {
  const base = new URL(job.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.concurrency, maxFreeSockets: job.concurrency });
  let socketsOpened = 0;
  const createConnection = agent.createConnection.bind(agent) as (...a: unknown[]) => unknown;
  (agent as unknown as { createConnection: (...a: unknown[]) => unknown }).createConnection = (...a: unknown[]) => {
    socketsOpened++;
    return createConnection(...a);
  };
  const latencies: number[] = [];
  const errorSamples = new Set<string>();
  let errors = 0;
  let measuring = false;
  let stop = false;
  let cpu0 = process.cpuUsage();
  let tStart = 0;
  let tEnd = 0;
  const loop = async () => {
    while (!stop) {
      const a = await send(agent, base, job.req);
      // Counted if it completed inside the window (its start may be in the warm-up).
      if (!measuring) continue;
      if (a.error) {
        errors++;
        if (errorSamples.size < 3) errorSamples.add(a.error);
      } else latencies.push(a.ms);
    }
  };
  const loops = Array.from({ length: job.concurrency }, () => loop());
  await new Promise((r) => setTimeout(r, job.warmupMs));
  measuring = true;
  cpu0 = process.cpuUsage();
  tStart = performance.now();
  await new Promise((r) => setTimeout(r, job.durationMs));
  measuring = false;
  tEnd = performance.now();
  const cpu = process.cpuUsage(cpu0);
  stop = true;
  await Promise.all(loops);
  agent.destroy();
  const sorted = latencies.sort((a, b) => a - b);
  const mean = sorted.reduce((s, x) => s + x, 0) / Math.max(1, sorted.length);
  return {
    type: "result",
    id: job.id,
    kind: "load",
    requests: sorted.length,
    errors,
    errorSamples: [...errorSamples],
    wallMs: tEnd - tStart,
    cpuMs: (cpu.user + cpu.system) / 1000,
    latencyMs: { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), p999: percentile(sorted, 99.9), max: sorted.at(-1) ?? NaN, mean },
    socketsOpened,
  };
}

serveJobs<Job, JobResult>(
  (job) => (job.type === "steps" ? steps(job) : job.type === "seq" ? seq(job) : load(job)),
  (job, e) => ({ type: "result", id: job.id, kind: "error", error: String(e) }),
  () => seqAgent.destroy(),
);
