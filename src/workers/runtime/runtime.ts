/**
 * The workers runtime: user JavaScript/Wasm in workerd, supervised from Node.
 *
 * Process model. One workerd process per account, never two accounts in one process (an infinite
 * loop stalls a whole workerd process, and a process is the unit that can be killed). workerd is
 * spawned directly, not through Miniflare: Miniflare restarts workerd on every setOptions (so a
 * pool of Miniflare instances is not warm), spends ~20 ms of Node's own CPU per start and passes
 * Node's whole environment to workerd; a direct spawn starts in ~15 ms for ~2 ms of Node CPU,
 * with an empty environment, and a request costs ~0.2 ms instead of ~1.3 ms. Each process runs
 * one fixed host worker (sources.ts) that loads the account's workers on demand through workerd's
 * Worker Loader, each in its own isolate, so activating a version restarts nothing and any
 * started process can serve any account: that is the warm pool.
 *
 * Limits, per request: CPU time (sampled from /proc, see `sample` for how it is attributed),
 * memory (V8's heap limit per isolate, and RSS over the idle baseline, see `sample`), wall time
 * (a timer), subrequests (counted where fetch and env.AI land: the gateway), response size.
 * CPU and memory violations kill the process (every request in it gets 503/1102: it is stalled
 * or bloated); wall time, subrequests and size stop the one request and retire the process
 * gently (new requests go to a new one, the old finishes what it has). Repeat offenders back off
 * and run at the lowest CPU priority, so they cannot slow other tenants.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import { BlockList, isIP } from "node:net";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { ZodError } from "zod";
import { formatZod } from "../../api/errors.js";
import { BordeError } from "../../errors.js";
import type { Logger } from "../../observability/index.js";
import { DEFAULT_WORKER_LIMITS, type AiBridge, type LogEvent, type WorkerLimits, type WorkerRuntime, type WorkerVersion } from "../types.js";
import { envelope, limitExceededResponse, workerThrewResponse } from "./responses.js";
import { H, HOST_WORKER_JS, PRELUDE_JS, mainModuleJs, workerdConfig } from "./sources.js";
import { procfsAvailable } from "./procfs.js";
import { WorkerdProcess, workerdPackage } from "./workerd.js";

export interface WorkerRuntimeOptions {
  ai: AiBridge;
  logger: Logger;
  /** Idle workerd processes kept started, so an account's first request or a recycle needs no spawn (default 1). */
  warmPool?: number;
  /** How often a process with requests in flight has its CPU and memory read (default 10 ms). */
  sampleMs?: number;
  /** A process with no request for this long is stopped; the account's next request takes a pooled one (default 5 min). */
  idleTimeoutMs?: number;
  /** Bytes one response body may have (default 100 MiB). */
  maxResponseBytes?: number;

  /** CPU a worker may use to start (evaluate its modules) on a process (default 1000 ms, Cloudflare's startup limit). */
  startupCpuMs?: number;
  /** How long after its response a request may still make AI calls, fetches and log lines (waitUntil; default 30 s). */
  waitUntilMs?: number;
  /** The workerd binary (default: the one miniflare depends on). */
  workerdPath?: string;
  /**
   * Back off (100 ms doubling, at most 5 s) before giving a new process to an account whose
   * processes were killed for limits twice or more in a minute (default true). Off, every
   * violation is recycled at once (tests that measure isolation under a sustained attack).
   */
  recycleBackoff?: boolean;
}

/** fetch() on a worker that is not active (never activated, or removed). The caller maps it (404). */
export class WorkerNotActiveError extends Error {
  constructor(
    readonly accountId: string,
    readonly worker: string,
  ) {
    super(`worker ${worker} is not active`);
    this.name = "WorkerNotActiveError";
  }
}

/** activate() refused a version: its modules threw, or went over the startup limits, while loading. */
export class WorkerStartupError extends Error {
  constructor(
    message: string,
    readonly limitExceeded: boolean,
    /** The limit was another request's, in the same process (the version itself may be fine). */
    readonly collateral = false,
  ) {
    super(message);
    this.name = "WorkerStartupError";
  }
}

type Violation = "cpu" | "memory" | "wall" | "subrequests" | "response" | "crash";

interface Flight {
  /** Internal id the isolate sends back with AI calls, fetches and log lines. */
  readonly id: string;
  readonly requestId: string;
  readonly version: WorkerVersion;
  readonly limits: WorkerLimits;
  readonly startup: boolean;
  readonly proc: Proc;
  /** active: response not finished; lingering: finished, waitUntil may still run; gone. */
  state: "active" | "lingering" | "gone";
  cpuNs: number;
  subrequests: number;
  aiCalls: number;
  /** AI calls under way: the request is waiting on the node, not running. */
  aiPending: number;
  readonly startedAt: number;
  /** When its response ended (performance.now()). */
  endedAt?: number;
  /** Aborted when the flight is gone: AI calls it started are cancelled. */
  readonly gone: AbortController;
  wallTimer?: NodeJS.Timeout;
  /** Set until the response head is given to the caller. */
  respond?: (r: Response) => void;
  req?: http.ClientRequest;
  res?: http.IncomingMessage;
  body?: ReadableStreamDefaultController<Uint8Array>;
  /** Why it was answered 503/1102; culprit: its own usage, not a neighbour's in the same process. */
  violation?: { detail: string; culprit: boolean };
}

interface Proc {
  readonly wd: WorkerdProcess;
  readonly account: Account;
  state: "serving" | "draining" | "dead";
  readonly active: Map<string, Flight>;
  /** Active and lingering flights, for the gateway's look-ups. */
  readonly flights: Map<string, Flight>;
  /** Versions started (or starting) in this process, by loader id: their memory counts in its budget. */
  readonly versions: Map<string, WorkerVersion>;
  readonly loading: Map<string, Promise<void>>;
  readonly loaded: Set<string>;
  lastCpu: number;
  lastSampleAt: number;
  /** Flights that ended since the last sample: they still get their part of its CPU. */
  recent: Flight[];
  /** CPU used in a row with no request in flight. */
  bgNs: number;
  lastActiveAt: number;
  seq: number;
  /** Draining: the grace after its last response, and the deadline for what never ends. */
  drainTimer?: NodeJS.Timeout;
  drainDeadline?: NodeJS.Timeout;
}

interface Account {
  readonly id: string;
  readonly workers: Map<string, WorkerVersion>;
  proc: Proc | null;
  pending: Promise<Proc> | null;
  /** Times its processes were killed for a limit, last minute. */
  strikes: number[];
  penaltyUntil: number;
  readyAt: number;
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host"]);
const LOG_LEVELS = new Set<LogEvent["level"]>(["debug", "log", "info", "warn", "error", "exception"]);
const DEFAULT_COMPATIBILITY_DATE = "2025-09-01";
const BACKGROUND_SAMPLE_MS = 100;
const DRAIN_GRACE_MS = 2_000;
const STRIKE_WINDOW_MS = 60_000;
const MAX_STALE_VERSIONS = 3;
const MAX_GATEWAY_BODY = 32 * 1024 * 1024;
const PENALTY_NICE = 19;
const RSS_FACTOR = 2;
/** Past RSS_FACTOR × limits a process is drained; past RSS_HARD_FACTOR times that it is killed (a bomb). */
const RSS_HARD_FACTOR = 2;
/** Well below the kernel's default unix socket send buffer (208 KiB). */
const SMALL_BODY = 64 * 1024;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const FOLDER_PREFIX = "borde-workerd-";

/** Runtimes' private folders, removed on the way out if a runtime was never closed. */
const folders = new Set<string>();

/** Folders left by Node processes that died without their exit handlers (SIGKILL, SIGTERM). */
function removeStaleFolders(): void {
  let names: string[];
  try {
    names = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith(FOLDER_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = path.join(os.tmpdir(), name);
    try {
      const owner = Number(fs.readFileSync(path.join(dir, "owner.pid"), "utf8"));
      if (!(owner > 0)) continue;
      try {
        process.kill(owner, 0);
        continue; // still running (or not ours to judge)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ESRCH") continue;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // not one of ours, or someone else's: left alone
    }
  }
}
process.once("exit", () => {
  for (const dir of folders) {
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 20 });
    } catch {
      // nothing more can be done while exiting; the next start sweeps it
    }
  }
});

/**
 * Runs workers in workerd, one process per account (never two accounts in one process), each
 * supervised from here for CPU time, memory, wall time, subrequests and response size.
 */
export class WorkerdRuntime implements WorkerRuntime {
  private readonly log: Logger;
  private readonly ai: AiBridge;
  private readonly warmPool: number;
  private readonly sampleMs: number;
  private readonly idleTimeoutMs: number;
  private readonly maxResponseBytes: number;
  private readonly startupCpuMs: number;
  private readonly waitUntilMs: number;
  private readonly recycleBackoff: boolean;
  private readonly binary: string;
  private readonly maxCompatibilityDate: string;
  private readonly dir: string;
  /** One config per V8 heap limit in use. */
  private readonly configs = new Map<number, string>();
  private readonly gatewayPath: string;
  private readonly gateway: http.Server;
  private readonly accounts = new Map<string, Account>();
  private readonly procs = new Set<Proc>();
  private readonly procsByKey = new Map<string, Proc>();
  private readonly pool: WorkerdProcess[] = [];
  private spawning = 0;
  private readonly subscribers = new Map<string, Set<(e: LogEvent) => void>>();
  /** Ended flights in order of their end, from `lingerHead` on: forgotten `waitUntilMs` after it. */
  private lingering: Flight[] = [];
  private lingerHead = 0;
  private readonly hashes = new WeakMap<WorkerVersion, string>();
  private timer: NodeJS.Timeout | undefined;
  private timerFast = false;
  private sweepTimer: NodeJS.Timeout;
  private closed = false;
  private readonly started: Promise<void>;

  constructor(opts: WorkerRuntimeOptions) {
    this.log = opts.logger.child({ component: "workers-runtime" });
    this.ai = opts.ai;
    this.warmPool = opts.warmPool ?? 1;
    this.sampleMs = opts.sampleMs ?? 10;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 300_000;
    this.maxResponseBytes = opts.maxResponseBytes ?? 100 * 1024 * 1024;
    this.startupCpuMs = opts.startupCpuMs ?? 1000;
    this.waitUntilMs = opts.waitUntilMs ?? 30_000;
    this.recycleBackoff = opts.recycleBackoff ?? true;
    const pkg = workerdPackage();
    this.binary = opts.workerdPath ?? pkg.binary;
    this.maxCompatibilityDate = pkg.compatibilityDate;
    // One private folder: the config, the host worker and the unix sockets (no TCP port for anyone to find).
    removeStaleFolders();
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), FOLDER_PREFIX));
    fs.chmodSync(this.dir, 0o700);
    fs.writeFileSync(path.join(this.dir, "owner.pid"), String(process.pid));
    folders.add(this.dir);
    this.gatewayPath = path.join(this.dir, "gateway.sock");
    fs.writeFileSync(path.join(this.dir, "host.js"), HOST_WORKER_JS);
    this.gateway = http.createServer((req, res) => {
      this.onGateway(req, res).catch((e: unknown) => {
        this.log.error({ err: e }, "workers gateway failed");
        if (!res.headersSent) sendEnvelope(res, 500, 3043, "Internal server error");
        else res.destroy();
      });
    });
    // AI streams can be long; the processes on the other end are ours.
    this.gateway.requestTimeout = 0;
    this.gateway.keepAliveTimeout = 60_000;
    this.started = new Promise<void>((resolve, reject) => {
      this.gateway.once("error", reject);
      this.gateway.listen(this.gatewayPath, () => resolve());
    }).then(() => this.refill());
    this.started.catch(() => {});
    this.sweepTimer = setInterval(() => this.sweep(), 1000);
    this.sweepTimer.unref();
    if (!procfsAvailable()) this.log.warn("no /proc on this system: worker CPU and memory limits cannot be enforced");
  }

  // ─── the WorkerRuntime contract ────────────────────────────────────────────

  async activate(version: WorkerVersion): Promise<void> {
    await this.started;
    this.checkOpen();
    validateModules(version);
    const acct = this.account(version.accountId);
    // Started (and so checked) on the account's process before it goes live: a version that
    // throws or loops while loading is refused and the previous one keeps serving.
    for (let attempt = 0; ; attempt++) {
      const proc = await this.procFor(acct, version);
      try {
        await this.ensureLoaded(proc, version);
        break;
      } catch (e) {
        // The process died under the load for another request's limit: try once more on a new one.
        if (proc.state === "dead" && attempt === 0 && e instanceof WorkerStartupError && e.collateral) continue;
        if (acct.workers.size === 0 && acct.proc) this.retire(acct.proc);
        throw e;
      }
    }
    acct.workers.set(version.name, version);
    const proc = acct.proc;
    if (proc && proc.versions.size - acct.workers.size > MAX_STALE_VERSIONS) {
      // Superseded versions' isolates stay loaded in workerd for a while; a fresh process sheds them.
      this.retire(proc);
    }
  }

  async remove(accountId: string, name: string): Promise<void> {
    const acct = this.accounts.get(accountId);
    if (!acct) return;
    acct.workers.delete(name);
    if (acct.workers.size === 0 && acct.proc) this.retire(acct.proc);
  }

  async fetch(accountId: string, name: string, request: Request, requestId: string): Promise<Response> {
    this.checkOpen();
    for (let attempt = 0; ; attempt++) {
      const acct = this.accounts.get(accountId);
      const version = acct?.workers.get(name);
      if (!acct || !version) throw new WorkerNotActiveError(accountId, name);
      const proc = await this.procFor(acct);
      try {
        await this.ensureLoaded(proc, version);
      } catch (e) {
        if (proc.state === "dead" && attempt === 0) continue;
        if (e instanceof WorkerStartupError && e.limitExceeded) return limitExceededResponse();
        this.log.warn({ account: accountId, worker: name, err: e }, "worker failed to start");
        return workerThrewResponse();
      }
      if (proc.state === "dead") {
        if (attempt === 0) continue;
        return limitExceededResponse();
      }
      return this.run(proc, version, request, requestId, false);
    }
  }

  subscribe(accountId: string, name: string, onEvent: (e: LogEvent) => void): () => void {
    const key = `${accountId}\n${name}`;
    let set = this.subscribers.get(key);
    if (!set) this.subscribers.set(key, (set = new Set()));
    set.add(onEvent);
    return () => {
      set.delete(onEvent);
      if (set.size === 0 && this.subscribers.get(key) === set) this.subscribers.delete(key);
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    clearInterval(this.sweepTimer);
    for (const proc of [...this.procs]) this.kill(proc);
    for (const wd of this.pool.splice(0)) wd.kill();
    const closed = new Promise<void>((resolve) => this.gateway.close(() => resolve()));
    this.gateway.closeAllConnections();
    await closed;
    // A workerd killed a moment ago may still be writing its files: rmdir then sees ENOTEMPTY.
    // Retry for a while; if it still fails, the exit hook tries again — a leftover temp folder must
    // not turn a clean shutdown into a failure.
    try {
      fs.rmSync(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
      folders.delete(this.dir);
    } catch {
      // left to the exit hook (and to the next start's sweep of dead owners' folders)
    }
  }

  // ─── observability for operators and tests ─────────────────────────────────

  /** The workerd process serving an account now (pid, baseline memory), or null. */
  processOf(accountId: string): { pid: number; baselineRss: number; rss: number | null; inFlight: number } | null {
    const proc = this.accounts.get(accountId)?.proc;
    if (!proc || proc.state !== "serving") return null;
    return { pid: proc.wd.pid, baselineRss: proc.wd.baselineRss, rss: proc.wd.rssBytes(), inFlight: proc.active.size };
  }

  /** Started processes waiting in the pool. */
  get pooled(): number {
    return this.pool.filter((p) => !p.exited).length;
  }

  /** Resolves once the pool holds `warmPool` started processes (tests, benchmarks). */
  async poolReady(timeoutMs = 10_000): Promise<void> {
    await this.started;
    const until = Date.now() + timeoutMs;
    while (this.pooled < this.warmPool && Date.now() < until) await sleep(5);
  }

  // ─── processes ─────────────────────────────────────────────────────────────

  private checkOpen(): void {
    if (this.closed) throw new Error("the worker runtime is closed");
  }

  private account(id: string): Account {
    let acct = this.accounts.get(id);
    if (!acct) this.accounts.set(id, (acct = { id, workers: new Map(), proc: null, pending: null, strikes: [], penaltyUntil: 0, readyAt: 0 }));
    return acct;
  }

  private spawn(heapMb: number, nice = 0): Promise<WorkerdProcess> {
    let configPath = this.configs.get(heapMb);
    if (!configPath) {
      configPath = path.join(this.dir, `config-${heapMb}.capnp`);
      fs.writeFileSync(configPath, workerdConfig(this.gatewayPath, heapMb));
      this.configs.set(heapMb, configPath);
    }
    return WorkerdProcess.start({ binary: this.binary, configPath, heapMb, dir: this.dir, logger: this.log, nice });
  }

  /** The V8 heap limit an account's process needs: the largest memory limit among its workers. */
  private heapFor(acct: Account, extra?: WorkerVersion): number {
    let mb = extra?.limits.memoryMb ?? 0;
    for (const v of acct.workers.values()) mb = Math.max(mb, v.limits.memoryMb);
    return mb > 0 ? mb : DEFAULT_WORKER_LIMITS.memoryMb;
  }

  /** Keeps `warmPool` started processes ready; one spawn at a time (a spawn is ~15 ms, ~2 ms of Node CPU). */
  private refill(): void {
    if (this.closed || this.spawning > 0 || this.pooled >= this.warmPool) return;
    this.spawning++;
    this.spawn(DEFAULT_WORKER_LIMITS.memoryMb).then(
      (wd) => {
        this.spawning--;
        if (this.closed) return wd.kill();
        this.pool.push(wd);
        this.refill();
      },
      (e: unknown) => {
        this.spawning--;
        this.log.error({ err: e }, "could not start a pooled workerd process");
        setTimeout(() => this.refill(), 1000).unref();
      },
    );
  }

  /** A pooled process (pooled ones have the default heap limit), or a new one. */
  private async takeProcess(heapMb: number): Promise<WorkerdProcess> {
    if (heapMb !== DEFAULT_WORKER_LIMITS.memoryMb) return this.spawn(heapMb);
    let wd = this.pool.shift();
    while (wd && wd.exited) wd = this.pool.shift();
    this.refill();
    return wd ?? (await this.spawn(heapMb));
  }

  /**
   * The account's serving process: its own, a pooled one, or a new one (after any penalty wait).
   * A process whose heap limit is below what the account's workers (and `adding`) need is retired.
   */
  private procFor(acct: Account, adding?: WorkerVersion): Promise<Proc> {
    const heapMb = this.heapFor(acct, adding);
    if (acct.proc && acct.proc.state === "serving" && acct.proc.wd.heapMb < heapMb) this.retire(acct.proc);
    if (acct.proc && acct.proc.state === "serving") return Promise.resolve(acct.proc);
    acct.pending ??= (async () => {
      const wait = acct.readyAt - Date.now();
      if (wait > 0) await sleep(wait);
      this.checkOpen();
      // An account in the penalty box runs at the lowest CPU priority, so its loops lose to every
      // other tenant, and gets no pooled process: it waits for a spawn of its own, made at that
      // priority too (a pooled process's priority could not be raised again without privileges,
      // and the pool is for tenants in good standing).
      const penalized = Date.now() < acct.penaltyUntil;
      const wd = penalized ? await this.spawn(heapMb, PENALTY_NICE) : await this.takeProcess(heapMb);
      if (this.closed) {
        wd.kill();
        this.checkOpen();
      }
      return this.adopt(wd, acct);
    })().finally(() => {
      acct.pending = null;
    });
    return acct.pending;
  }

  private adopt(wd: WorkerdProcess, acct: Account): Proc {
    wd.label = acct.id;
    const now = performance.now();
    const proc: Proc = {
      wd,
      account: acct,
      state: "serving",
      active: new Map(),
      flights: new Map(),
      versions: new Map(),
      loading: new Map(),
      loaded: new Set(),
      lastCpu: wd.cpuNs() ?? 0,
      lastSampleAt: now,
      recent: [],
      bgNs: 0,
      lastActiveAt: now,
      seq: 0,
    };
    acct.proc = proc;
    this.procs.add(proc);
    this.procsByKey.set(wd.key, proc);
    void wd.exit.then(({ code, signal }) => {
      if (proc.state === "dead") return;
      // A V8 isolate over its heap limit aborts workerd: that is the memory limit at work.
      if (wd.stderrTail.some((l) => l.includes("Reached heap limit") || l.includes("heap out of memory"))) {
        this.killForLimit(proc, "memory", `memory limit exceeded: a JavaScript heap reached ${wd.heapMb} MB`);
      } else this.killForLimit(proc, "crash", `the worker process exited unexpectedly (code ${code}, signal ${signal})`);
    });
    this.schedule();
    return proc;
  }

  /** Stops a process quietly: no limit was broken (idle, drained, removed, shutdown). */
  private kill(proc: Proc): void {
    if (proc.state === "dead") return;
    proc.state = "dead";
    clearTimeout(proc.drainTimer);
    clearTimeout(proc.drainDeadline);
    proc.wd.kill();
    for (const f of [...proc.active.values()]) {
      // Only after the longest wall time (a drain that never ended) or at shutdown.
      f.respond?.(envelope(503, 3043, "The worker runtime stopped this request"));
      f.respond = undefined;
      try {
        f.body?.error(new Error("The worker runtime stopped this request"));
      } catch {
        // already closed
      }
    }
    if (proc.account.proc === proc) proc.account.proc = null;
    this.procs.delete(proc);
    this.procsByKey.delete(proc.wd.key);
    for (const f of proc.flights.values()) this.forget(f);
  }

  /**
   * Recycles gently: new requests go to a new process, the old one finishes what it has in flight.
   * Used where the process is healthy (wall time, subrequests, response size, idle, stale versions).
   */
  private retire(proc: Proc): void {
    if (proc.state !== "serving") return;
    proc.state = "draining";
    if (proc.account.proc === proc) proc.account.proc = null;
    // Whatever still runs after the longest wall time is not going to finish.
    proc.drainDeadline = setTimeout(() => this.kill(proc), Math.max(30_000, ...[...proc.versions.values()].map((v) => v.limits.wallMs)) + DRAIN_GRACE_MS);
    proc.drainDeadline.unref();
    this.checkDrained(proc);
  }

  private checkDrained(proc: Proc): void {
    if (proc.state !== "draining" || proc.active.size > 0) return;
    clearTimeout(proc.drainTimer);
    // A moment for waitUntil work of the last responses.
    proc.drainTimer = setTimeout(() => {
      if (proc.active.size === 0) this.kill(proc);
      else this.checkDrained(proc);
    }, DRAIN_GRACE_MS);
    proc.drainTimer.unref();
  }

  /**
   * Kills a process for a CPU or memory limit (or a crash): it is stalled or bloated, so every
   * request in it gets 503/1102 now, and the account's next request takes a pooled process.
   */
  private killForLimit(proc: Proc, kind: Violation, detail: string, culprit?: Flight): void {
    if (proc.state === "dead") return;
    clearTimeout(proc.drainTimer);
    clearTimeout(proc.drainDeadline);
    const acct = proc.account;
    const now = Date.now();
    acct.strikes = acct.strikes.filter((t) => now - t < STRIKE_WINDOW_MS);
    acct.strikes.push(now);
    // The first strike is recycled at once from the pool (the next request just works). A second
    // one within a minute puts the account in the penalty box: low CPU priority, no pooled
    // processes, and a growing wait before each new process, so a tenant hammering a hostile
    // worker can neither slow its neighbours nor make the node spawn processes in a loop.
    const n = acct.strikes.length;
    if (n >= 2) acct.penaltyUntil = now + STRIKE_WINDOW_MS;
    acct.readyAt = n >= 2 && this.recycleBackoff ? now + Math.min(100 * 2 ** (n - 2), 5_000) : now;
    const victims = [...proc.active.values()];
    this.log.warn(
      {
        account: acct.id,
        pid: proc.wd.pid,
        limit: kind,
        in_flight: victims.length,
        strikes: n,
        backoff_ms: acct.readyAt - now,
        ...(kind === "crash" ? { workerd_stderr: proc.wd.stderrTail.join("\n") } : {}),
      },
      `worker process recycled: ${detail}`,
    );
    proc.state = "dead";
    proc.wd.kill();
    if (acct.proc === proc) acct.proc = null;
    this.procs.delete(proc);
    this.procsByKey.delete(proc.wd.key);
    if (victims.length === 0) {
      // Nothing in flight (work after the response, or a crash between requests): tell the tails of every worker it ran.
      const names = new Set([...proc.versions.values()].map((v) => v.name));
      for (const name of names) this.emit(acct.id, { ts: now, worker: name, level: "limit", message: detail });
    }
    for (const f of victims) {
      if (f === culprit || !culprit) this.fail(f, detail, true);
      else this.fail(f, `${detail} — in another request of this account; its process was recycled`, false);
    }
    for (const f of proc.flights.values()) this.forget(f);
  }

  // ─── limits ────────────────────────────────────────────────────────────────

  private violate(f: Flight, kind: Violation, detail: string): void {
    if (f.state === "gone") return;
    if (f.state === "lingering") {
      // After its response (waitUntil): nothing to answer; the call that broke the limit is refused.
      this.emit(f.proc.account.id, { ts: Date.now(), worker: f.version.name, level: "limit", message: detail, requestId: f.requestId });
      return;
    }
    if (kind === "cpu" || kind === "memory" || kind === "crash") return this.killForLimit(f.proc, kind, detail, f);
    this.log.warn({ account: f.proc.account.id, worker: f.version.name, request_id: f.requestId, limit: kind }, `worker request stopped: ${detail}`);
    this.fail(f, detail, true);
    this.retire(f.proc);
  }

  /** Answers a flight 503/1102 (or breaks its body if the head is already out) and logs a limit event. */
  private fail(f: Flight, detail: string, culprit: boolean): void {
    if (f.state !== "active") return;
    f.violation = { detail, culprit };
    this.emit(f.proc.account.id, { ts: Date.now(), worker: f.version.name, level: "limit", message: detail, requestId: f.requestId });
    if (f.respond) {
      f.respond(limitExceededResponse());
      f.respond = undefined;
    } else if (f.body) {
      try {
        f.body.error(new Error("Worker exceeded resource limits"));
      } catch {
        // already closed
      }
    }
    f.req?.destroy();
    f.res?.destroy();
    this.finish(f);
    this.forget(f);
  }

  /** The samples: CPU and memory of every process with requests in flight, background ones slower. */
  private schedule(): void {
    if (this.closed) return;
    let busy = false;
    for (const p of this.procs) if (p.active.size > 0 || p.recent.length > 0) busy = true;
    if (this.timer && this.timerFast === busy) return;
    clearTimeout(this.timer);
    this.timerFast = busy;
    this.timer = setTimeout(() => this.tick(), busy ? this.sampleMs : BACKGROUND_SAMPLE_MS);
    this.timer.unref();
  }

  private tick(): void {
    this.timer = undefined;
    const now = performance.now();
    for (const proc of [...this.procs]) {
      if (proc.state === "dead") continue;
      if (proc.active.size === 0 && proc.recent.length === 0 && now - proc.lastSampleAt < BACKGROUND_SAMPLE_MS - 1) continue;
      this.sample(proc, now);
    }
    this.schedule();
  }

  /**
   * CPU attribution. workerd runs an account's isolates on one thread, so which request ran when is
   * not visible from outside; the rule is a time-weighted fair share. A process's CPU growth over a
   * sample interval is attributed to the requests in flight during it, each weighted by how long it
   * was in flight within the interval (so requests that came and went between two samples carry
   * their part, and a request that began just before a sample does not inherit the interval's CPU).
   * The part of the interval no request covered goes to the background account (waitUntil work).
   * A request waiting on an AI call is known not to run and is left out while others are in flight.
   * One request alone is measured exactly; k requests running together are each charged an equal
   * share, so a runaway among them trips after at most k × its limit, and takes the others with it.
   */
  private sample(proc: Proc, now: number): void {
    const cpu = proc.wd.cpuNs();
    if (cpu === null) return; // gone: its exit handler acts
    const delta = Math.max(0, cpu - proc.lastCpu);
    const from = proc.lastSampleAt;
    const elapsed = Math.max(now - from, 1e-3);
    proc.lastCpu = cpu;
    proc.lastSampleAt = now;
    const participants = [...proc.active.values(), ...proc.recent];
    proc.recent = [];
    const span = (f: Flight) => Math.max(0, Math.min(now, f.endedAt ?? now) - Math.max(from, f.startedAt));
    const running = participants.some((f) => f.aiPending === 0 && span(f) > 0);
    const overlap = running ? (f: Flight) => (f.aiPending === 0 ? span(f) : 0) : span;
    let total = 0;
    let covering = 0;
    for (const f of participants) {
      total += overlap(f);
      covering += span(f);
    }
    const covered = Math.min(covering, elapsed);
    const attributed = delta * (covered / elapsed);
    const background = delta - attributed;
    if (total > 0) {
      for (const f of participants) {
        f.cpuNs += (attributed * overlap(f)) / total;
        if (f.state !== "active" || f.cpuNs <= f.limits.cpuMs * 1e6) continue;
        const what = f.startup ? "startup CPU time limit exceeded" : "CPU time limit exceeded";
        this.violate(f, "cpu", `${what}: ${(f.cpuNs / 1e6).toFixed(0)} ms > ${f.limits.cpuMs} ms`);
        if (proc.state === "dead") return;
      }
    }
    // CPU with nothing in flight (waitUntil, timers that outlive their request): a stretch busier
    // than half the uncovered time, for longer than the largest CPU limit, is a runaway.
    const idleNs = (elapsed - covered) * 1e6;
    if (proc.active.size > 0) proc.bgNs = 0;
    else proc.bgNs = idleNs > 0 && background > idleNs / 2 ? proc.bgNs + background : 0;
    let limitMs = 0;
    for (const v of proc.versions.values()) limitMs = Math.max(limitMs, v.limits.cpuMs);
    if (limitMs > 0 && proc.bgNs > limitMs * 1e6) {
      return this.killForLimit(proc, "cpu", `CPU time limit exceeded after the response (${(proc.bgNs / 1e6).toFixed(0)} ms of background work > ${limitMs} ms)`);
    }
    if (proc.state === "serving" && proc.active.size === 0 && now - proc.lastActiveAt > this.idleTimeoutMs) return this.retire(proc);
    // Memory, two ways. Each isolate's JavaScript heap is capped by V8 itself (workerdConfig's
    // heap limit: exact, like Cloudflare's 128 MB). Memory outside the heap (ArrayBuffers, Wasm
    // memories, buffers) only shows in the process's RSS, which also keeps garbage V8 has not
    // collected yet and memory the allocator keeps after a free (measured: a worker reading
    // 4 MiB bodies in a loop levels off near +180 MB and no GC brings it down). So RSS above the
    // idle baseline may reach RSS_FACTOR × the workers' limits before it counts as a violation.
    const rss = proc.wd.rssBytes();
    if (rss !== null) {
      let limitMb = 0;
      for (const v of proc.versions.values()) limitMb += v.limits.memoryMb;
      const allowedMb = limitMb * RSS_FACTOR;
      const usedMb = (rss - proc.wd.baselineRss) / 1024 / 1024;
      if (limitMb > 0 && usedMb > allowedMb * RSS_HARD_FACTOR) {
        this.killForLimit(proc, "memory", `memory limit exceeded: ${usedMb.toFixed(0)} MB of process memory > ${allowedMb * RSS_HARD_FACTOR} MB allowed for ${limitMb} MB of workers`);
      } else if (limitMb > 0 && usedMb > allowedMb && proc.state === "serving") {
        // A busy but well-behaved worker gets here too: workerd keeps memory it has freed (a
        // hello-world worker under sustained load settles at ~250 MB RSS). Above the soft ceiling
        // the process is drained and replaced — no request fails, no strike — and only the hard
        // ceiling (memory still growing while it drains) counts as a violation.
        this.log.info({ account: proc.account.id, rssMb: Math.round(usedMb) }, "workerd process memory above its soft ceiling: draining it into a fresh process");
        this.retire(proc);
      }
    }
  }

  /** Once a second: flights past their waitUntil time are forgotten. */
  private sweep(): void {
    const now = performance.now();
    while (this.lingerHead < this.lingering.length) {
      const f = this.lingering[this.lingerHead]!;
      if (f.state === "lingering" && now - (f.endedAt ?? f.startedAt) < this.waitUntilMs) break;
      this.lingerHead++;
      this.forget(f);
    }
    if (this.lingerHead > 1024 && this.lingerHead * 2 > this.lingering.length) {
      this.lingering = this.lingering.slice(this.lingerHead);
      this.lingerHead = 0;
    }
  }

  // ─── requests ──────────────────────────────────────────────────────────────

  private versionId(v: WorkerVersion): string {
    let hash = this.hashes.get(v);
    if (!hash) {
      // The loader caches isolates by id: the content hash keeps a re-used version number from
      // ever running old code.
      const h = createHash("sha256");
      h.update(JSON.stringify([v.compatibilityDate, v.compatibilityFlags, v.aiBinding, v.vars, v.secrets]));
      for (const m of v.modules) h.update(`\0${m.name}\0${m.type}\0`).update(m.content);
      hash = h.digest("hex").slice(0, 16);
      this.hashes.set(v, hash);
    }
    return `${v.version}-${hash}`;
  }

  private ensureLoaded(proc: Proc, version: WorkerVersion): Promise<void> {
    const id = `${version.name}@${this.versionId(version)}`;
    if (proc.loaded.has(id)) return Promise.resolve();
    let p = proc.loading.get(id);
    if (!p) {
      proc.versions.set(id, version);
      p = this.load(proc, version)
        .then(() => {
          proc.loaded.add(id);
        })
        .finally(() => proc.loading.delete(id));
      proc.loading.set(id, p);
      p.catch(() => {
        if (!proc.loaded.has(id)) proc.versions.delete(id);
      });
    }
    return p;
  }

  /** Starts a version's isolate on a process, under the startup limits, outside any user request. */
  private async load(proc: Proc, version: WorkerVersion): Promise<void> {
    const flight: { f?: Flight } = {};
    const res = await this.run(proc, version, null, `startup:${version.name}@${version.version}`, true, flight);
    if (res.status === 204) return;
    const text = await res.text().catch(() => "");
    const violation = flight.f?.violation;
    if (violation) throw new WorkerStartupError(`worker ${version.name} could not start: ${violation.detail}`, true, !violation.culprit);
    throw new WorkerStartupError(`worker ${version.name} failed to start: ${text.split("\n").slice(0, 8).join("\n") || res.status}`, false);
  }

  private run(proc: Proc, version: WorkerVersion, request: Request | null, requestId: string, startup: boolean, out?: { f?: Flight }): Promise<Response> {
    const limits: WorkerLimits = startup ? { ...version.limits, cpuMs: Math.max(this.startupCpuMs, version.limits.cpuMs), subrequests: 0 } : version.limits;
    const f: Flight = {
      id: `${proc.wd.id}.${++proc.seq}`,
      requestId,
      version,
      limits,
      startup,
      proc,
      state: "active",
      cpuNs: 0,
      subrequests: 0,
      aiCalls: 0,
      aiPending: 0,
      startedAt: performance.now(),
      gone: new AbortController(),
    };
    if (out) out.f = f;
    proc.active.set(f.id, f);
    proc.flights.set(f.id, f);
    proc.lastActiveAt = f.startedAt;
    this.schedule();
    f.wallTimer = setTimeout(() => this.violate(f, "wall", `wall time limit exceeded: ${limits.wallMs} ms`), limits.wallMs);
    const response = new Promise<Response>((resolve) => {
      f.respond = resolve;
    });
    const method = request?.method ?? "GET";
    const headers: http.OutgoingHttpHeaders = {};
    if (request) {
      request.headers.forEach((value, name) => {
        if (!name.startsWith("x-borde-") && !HOP_BY_HOP.has(name) && name !== "set-cookie") headers[name] = value;
      });
      const cookies = request.headers.getSetCookie();
      if (cookies.length > 0) headers["set-cookie"] = cookies;
    }
    const url = request?.url ?? "http://borde.internal/";
    Object.assign(headers, {
      host: new URL(url).host,
      [H.key]: proc.wd.key,
      [H.worker]: version.name,
      [H.version]: this.versionId(version),
      [H.flight]: f.id,
      [H.op]: startup ? "load" : "fetch",
    });
    if (this.subscribers.has(`${proc.account.id}\n${version.name}`)) headers[H.tail] = "1";
    void this.dispatch(f, proc, method, url, headers, method !== "GET" && method !== "HEAD" ? (request?.body ?? null) : null);
    return response;
  }

  private async dispatch(f: Flight, proc: Proc, method: string, url: string, headers: http.OutgoingHttpHeaders, source: ReadableStream<Uint8Array> | null): Promise<void> {
    let body: Readable | Buffer | null = null;
    delete headers["content-length"];
    if (source) {
      // workerd answers a worker that ignores its body at once and closes the connection; a body
      // still being written then costs the answer (EPIPE; workerd sends no 100 Continue to wait
      // for). So a small body is read first and sent whole with its length (it fits in the
      // socket's buffer before workerd can answer), and a larger one streams with a flag that has
      // the host worker read it to its end before the response completes.
      let prefix: { head: Buffer; rest: ReadableStreamDefaultReader<Uint8Array> | null };
      try {
        prefix = await readPrefix(source, SMALL_BODY);
      } catch {
        f.respond?.(envelope(408, 3008, "Request was aborted"));
        f.respond = undefined;
        return this.finish(f);
      }
      if (!f.respond) return; // stopped meanwhile
      if (prefix.rest === null) body = prefix.head;
      else {
        headers[H.drain] = "1";
        const { head, rest } = prefix;
        body = Readable.from(
          (async function* () {
            yield head;
            for (;;) {
              const { done, value } = await rest.read();
              if (done) return;
              yield value;
            }
          })(),
        );
        body.on("error", () => f.req?.destroy());
      }
    }
    if (Buffer.isBuffer(body)) headers["content-length"] = String(body.length);
    else if (!body && method !== "GET" && method !== "HEAD") headers["content-length"] = "0";
    proc.wd
      .request({
        method,
        url,
        headers,
        body,
        onRequest: (req) => {
          f.req = req;
        },
      })
      .then(
        (res) => this.onResponse(f, res, method),
        (e: unknown) => this.onDispatchError(f, e),
      );
  }

  private onResponse(f: Flight, res: http.IncomingMessage, method: string): void {
    if (!f.respond) {
      res.destroy();
      return;
    }
    f.res = res;
    const length = Number(res.headers["content-length"] ?? NaN);
    if (length > this.maxResponseBytes) {
      return this.violate(f, "response", `response body of ${length} bytes is over the ${this.maxResponseBytes} byte limit`);
    }
    const headers = new Headers();
    for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
      const name = res.rawHeaders[i]!;
      if (HOP_BY_HOP.has(name.toLowerCase())) continue;
      try {
        headers.append(name, res.rawHeaders[i + 1]!);
      } catch {
        // a value Node's Headers refuses: dropped
      }
    }
    let status = res.statusCode ?? 502;
    if (status < 200 || status > 599) status = 502;
    const respond = f.respond;
    f.respond = undefined;
    const init = { status, statusText: res.statusMessage, headers };
    // Node's Response refuses reason phrases workerd lets through (non-ASCII): drop those.
    if (!/^[\t\x20-\x7e]*$/.test(init.statusText ?? "")) init.statusText = "";
    if (method === "HEAD" || status === 204 || status === 205 || status === 304) {
      res.resume();
      res.once("end", () => this.finish(f));
      res.once("close", () => this.finish(f));
      respond(new Response(null, init));
      return;
    }
    let bytes = 0;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        f.body = controller;
        res.on("data", (chunk: Buffer) => {
          if (f.state !== "active") return;
          bytes += chunk.length;
          if (bytes > this.maxResponseBytes) {
            this.violate(f, "response", `response body over the ${this.maxResponseBytes} byte limit`);
            return;
          }
          controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
          if ((controller.desiredSize ?? 1) <= 0) res.pause();
        });
        res.once("end", () => {
          if (f.state !== "active") return;
          try {
            controller.close();
          } catch {
            // cancelled meanwhile
          }
          this.finish(f);
        });
        res.once("close", () => {
          if (f.state !== "active") return;
          // Closed before its end: the process died or the connection broke.
          if (!res.complete) {
            try {
              controller.error(new Error("the worker's response was cut off"));
            } catch {
              // already errored
            }
          }
          this.finish(f);
        });
      },
      pull: () => {
        res.resume();
      },
      cancel: () => {
        // The client went away: workerd sees the connection close and cancels the request.
        res.destroy();
        f.req?.destroy();
        this.finish(f);
      },
    });
    respond(new Response(body, init));
  }

  private async onDispatchError(f: Flight, e: unknown): Promise<void> {
    if (!f.respond) return; // answered already (a limit)
    // A connection error usually means the process died: its exit handler answers 503/1102.
    await Promise.race([f.proc.wd.exit, sleep(500)]);
    if (!f.respond) return;
    if (f.proc.wd.exited) {
      this.killForLimit(f.proc, "crash", "the worker process exited unexpectedly");
      if (!f.respond) return;
    }
    this.log.error({ err: e, account: f.proc.account.id, worker: f.version.name }, "dispatch to workerd failed");
    f.respond(envelope(502, 3043, "Internal server error"));
    f.respond = undefined;
    this.finish(f);
  }

  /** The response is complete (or abandoned): the flight stops counting CPU, lingers for waitUntil. */
  private finish(f: Flight): void {
    if (f.state !== "active") return;
    clearTimeout(f.wallTimer);
    f.state = "lingering";
    f.endedAt = performance.now();
    f.proc.active.delete(f.id);
    f.proc.recent.push(f);
    f.proc.lastActiveAt = f.endedAt;
    this.lingering.push(f);
    this.checkDrained(f.proc);
    this.schedule();
  }

  private forget(f: Flight): void {
    if (f.state === "active") {
      clearTimeout(f.wallTimer);
      f.proc.active.delete(f.id);
    }
    f.state = "gone";
    f.proc.flights.delete(f.id);
    f.gone.abort();
  }

  // ─── the gateway: calls from host workers ──────────────────────────────────

  private async onGateway(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const proc = this.procsByKey.get(header(req, H.key));
    if (!proc || proc.state === "dead") return sendEnvelope(res, 403, 10001, "Forbidden");
    const worker = header(req, H.worker);
    switch (req.url) {
      case "/code":
      case "/module": {
        const version = proc.versions.get(`${worker}@${header(req, H.version)}`);
        if (!version) return sendText(res, 404, "no such worker version");
        if (req.url === "/code") return sendJson(res, 200, this.codeSpec(version));
        const m = version.modules[Number(header(req, H.module))];
        if (!m) return sendText(res, 404, "no such module");
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": m.content.byteLength });
        res.end(m.content);
        return;
      }
      case "/sub":
        return this.onSubrequest(proc, worker, req, res);
      case "/ai":
        return this.onAi(proc, worker, req, res);
      case "/log":
        return this.onLog(proc, worker, req, res);
      default:
        return sendText(res, 404, "no such route");
    }
  }

  private flightOf(proc: Proc, worker: string, req: http.IncomingMessage): Flight | undefined {
    const f = proc.flights.get(header(req, H.flight));
    // The flight id comes from the user's isolate: it must be one of this process's flights for this worker.
    return f && f.version.name === worker && f.state !== "gone" ? f : undefined;
  }

  private countSubrequest(f: Flight): boolean {
    f.subrequests++;
    if (f.subrequests <= f.limits.subrequests) return true;
    this.violate(f, "subrequests", `subrequest limit exceeded: more than ${f.limits.subrequests} fetch and AI calls in one request`);
    return false;
  }

  private onSubrequest(proc: Proc, worker: string, req: http.IncomingMessage, res: http.ServerResponse): void {
    req.resume();
    const f = this.flightOf(proc, worker, req);
    if (!f) return sendText(res, 403, "fetch() is only available while handling a request");
    if (!this.countSubrequest(f)) return sendText(res, 429, "Too many subrequests");
    let url: URL;
    try {
      url = new URL(header(req, H.url));
    } catch {
      return sendText(res, 403, "Outbound request refused: invalid URL");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") return sendText(res, 403, `Outbound request refused: ${url.protocol} is not supported`);
    const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, "");
    if (isLocalHost(host)) return sendText(res, 403, `Outbound network access to ${host} is denied (local addresses are never reachable from a worker)`);
    if (!hostAllowed(f.version.allowOutbound, host)) return sendText(res, 403, `Outbound network access to ${host} is denied: not in this worker's allowOutbound list`);
    res.writeHead(204).end();
  }

  private async onAi(proc: Proc, worker: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const raw = await readBody(req, MAX_GATEWAY_BODY).catch(() => null);
    const f = this.flightOf(proc, worker, req);
    if (!f) return sendEnvelope(res, 403, 10001, "env.AI.run() is only available while handling a request");
    if (!this.countSubrequest(f)) return sendEnvelope(res, 429, 1102, "Too many subrequests");
    let call: { model?: unknown; inputs?: unknown };
    try {
      call = JSON.parse(raw ?? "") as typeof call;
    } catch {
      return sendEnvelope(res, 400, 5006, "Invalid input");
    }
    if (typeof call.model !== "string" || call.model.length === 0) return sendEnvelope(res, 400, 5007, "No such model or task");
    const n = ++f.aiCalls;
    f.aiPending++;
    res.once("close", () => f.aiPending--);
    const aborter = new AbortController();
    const abort = () => aborter.abort();
    f.gone.signal.addEventListener("abort", abort, { once: true });
    // The isolate dropped the call (its request was cancelled): stop the generation at once.
    res.once("close", () => {
      if (!res.writableFinished) aborter.abort();
    });
    try {
      const out = await this.ai.run({
        accountId: proc.account.id,
        worker,
        requestId: `${f.requestId}:ai:${n}`,
        model: call.model,
        inputs: call.inputs ?? {},
        signal: aborter.signal,
      });
      if (out instanceof ReadableStream) {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
        const stream = Readable.fromWeb(out as NodeReadableStream<Uint8Array>);
        stream.on("error", () => res.destroy());
        res.once("close", () => stream.destroy());
        stream.pipe(res);
        return;
      }
      sendJson(res, 200, { result: out ?? null, success: true, errors: [], messages: [] });
    } catch (e) {
      const known = aiError(e);
      if (known) return sendEnvelope(res, known.status, known.code, known.message);
      if (aborter.signal.aborted) return sendEnvelope(res, 408, 3008, "Request was aborted");
      this.log.error({ err: e, account: proc.account.id, worker, request_id: f.requestId }, "env.AI.run failed");
      sendEnvelope(res, 500, 3043, "Internal server error");
    } finally {
      f.gone.signal.removeEventListener("abort", abort);
    }
  }

  private async onLog(proc: Proc, worker: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const raw = await readBody(req, MAX_GATEWAY_BODY).catch(() => null);
    res.writeHead(204).end();
    const f = this.flightOf(proc, worker, req);
    if (!f || raw === null) return;
    let events: unknown;
    try {
      events = JSON.parse(raw);
    } catch {
      return;
    }
    if (!Array.isArray(events)) return;
    for (const e of events.slice(0, 1000) as Array<{ ts?: unknown; level?: unknown; message?: unknown }>) {
      const level = typeof e.level === "string" && LOG_LEVELS.has(e.level as LogEvent["level"]) ? (e.level as LogEvent["level"]) : "log";
      this.emit(proc.account.id, {
        ts: typeof e.ts === "number" ? e.ts : Date.now(),
        worker,
        level,
        message: typeof e.message === "string" ? e.message : String(e.message),
        requestId: f.requestId,
      });
    }
  }

  private codeSpec(v: WorkerVersion) {
    const entry = v.modules[0]!;
    const flags = [...new Set(v.compatibilityFlags)];
    // The prelude needs AsyncLocalStorage; nodejs_compat includes it.
    if (!flags.includes("nodejs_compat") && !flags.includes("nodejs_compat_v2") && !flags.includes("nodejs_als")) flags.push("nodejs_als");
    let date = v.compatibilityDate ?? DEFAULT_COMPATIBILITY_DATE;
    if (date > this.maxCompatibilityDate) date = this.maxCompatibilityDate;
    const decoder = new TextDecoder();
    return {
      compatibilityDate: date,
      compatibilityFlags: flags,
      prelude: PRELUDE_JS,
      main: mainModuleJs(entry.name, v.aiBinding),
      modules: v.modules.map((m) => ({ name: m.name, type: m.type, text: m.type === "esm" || m.type === "text" ? decoder.decode(m.content) : undefined })),
      bindings: { ...v.vars, ...v.secrets },
    };
  }

  private emit(accountId: string, e: LogEvent): void {
    const fields = { account: accountId, worker: e.worker, request_id: e.requestId, level_worker: e.level };
    if (e.level === "limit") this.log.warn(fields, `worker limit: ${e.message}`);
    else if (e.level === "exception") this.log.info(fields, `worker exception: ${e.message}`);
    else this.log.debug(fields, `worker console: ${e.message}`);
    const subs = this.subscribers.get(`${accountId}\n${e.worker}`);
    if (!subs) return;
    for (const cb of subs) {
      try {
        cb(e);
      } catch (err) {
        this.log.error({ err }, "a tail subscriber threw");
      }
    }
  }
}

/** The errors a bridge may throw that carry their own code: Borde's, input validation, or any `{code, status}` error. */
function aiError(e: unknown): { status: number; code: number; message: string } | null {
  if (e instanceof BordeError) return { status: e.status, code: e.code, message: e.message };
  if (!(e instanceof Error)) return null;
  if (e instanceof ZodError) return { status: 400, code: 5006, message: formatZod(e) };
  const { code, status } = e as Error & { code?: unknown; status?: unknown };
  if (typeof code === "number" && typeof status === "number" && status >= 400 && status < 600) return { status, code, message: e.message };
  return null;
}

function validateModules(v: WorkerVersion): void {
  if (v.modules.length === 0) throw new WorkerStartupError(`worker ${v.name} has no modules`, false);
  if (v.modules[0]!.type !== "esm") throw new WorkerStartupError(`worker ${v.name}: the first module must be an ES module`, false);
  for (const m of v.modules) {
    if (m.name.startsWith("__borde_")) throw new WorkerStartupError(`worker ${v.name}: module name ${m.name} is reserved`, false);
  }
}

/**
 * Addresses a worker never reaches, whatever its allow-list says: this node's own services live
 * there (the Borde API, NATS, PostgreSQL...). workerd's public-only network refuses them too; this
 * check gives the worker a clear error without a DNS lookup.
 */
const LOCAL = new BlockList();
LOCAL.addSubnet("127.0.0.0", 8, "ipv4");
LOCAL.addSubnet("0.0.0.0", 8, "ipv4");
LOCAL.addSubnet("169.254.0.0", 16, "ipv4");
LOCAL.addSubnet("::1", 128, "ipv6");
LOCAL.addSubnet("::", 128, "ipv6");
LOCAL.addSubnet("fe80::", 10, "ipv6");
LOCAL.addSubnet("::ffff:0:0", 96, "ipv6"); // IPv4-mapped: never needed by a public host name

function isLocalHost(host: string): boolean {
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  const family = isIP(host);
  return family !== 0 && LOCAL.check(host, family === 6 ? "ipv6" : "ipv4");
}

/** `example.com` matches itself; `*.example.com` matches its subdomains. */
export function hostAllowed(allow: readonly string[], host: string): boolean {
  for (const a of allow) {
    const rule = a.toLowerCase();
    if (rule === host) return true;
    if (rule.startsWith("*.") && host.endsWith(rule.slice(1))) return true;
  }
  return false;
}

/** Reads a stream until it ends or `max` bytes: the bytes read, and the reader if more remain. */
async function readPrefix(stream: ReadableStream<Uint8Array>, max: number): Promise<{ head: Buffer; rest: ReadableStreamDefaultReader<Uint8Array> | null }> {
  const reader = stream.getReader();
  const chunks: Buffer[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { head: Buffer.concat(chunks), rest: null };
    chunks.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    size += value.byteLength;
    if (size > max) return { head: Buffer.concat(chunks), rest: reader };
  }
}

function header(req: http.IncomingMessage, name: string): string {
  const v = req.headers[name];
  return typeof v === "string" ? v : "";
}

function readBody(req: http.IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.destroy();
        reject(new Error("body too large"));
      } else chunks.push(c);
    });
    req.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.once("error", reject);
  });
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function sendEnvelope(res: http.ServerResponse, status: number, code: number, message: string): void {
  sendJson(res, status, { result: null, success: false, errors: [{ code, message }], messages: [] });
}

function sendText(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
