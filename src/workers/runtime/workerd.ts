import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import http from "node:http";
import os from "node:os";
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";
import type { Readable } from "node:stream";
import type { Logger } from "../../observability/index.js";
import { processCpuNs, processRssBytes } from "./procfs.js";
import { H } from "./sources.js";

const require = createRequire(import.meta.url);

/**
 * The workerd binary and the newest compatibility date it knows. It comes with miniflare's
 * dependency `workerd` (resolved through miniflare so a nested install is found too).
 */
export function workerdPackage(): { binary: string; compatibilityDate: string } {
  let mod: { default: string; compatibilityDate: string };
  try {
    mod = createRequire(require.resolve("miniflare"))("workerd") as typeof mod;
  } catch {
    mod = require("workerd") as typeof mod;
  }
  return { binary: process.env.MINIFLARE_WORKERD_PATH ?? mod.default, compatibilityDate: mod.compatibilityDate };
}

export interface SpawnOptions {
  binary: string;
  configPath: string;
  /** The per-isolate V8 heap limit that config sets. */
  heapMb: number;
  dir: string;
  logger: Logger;
  /** How long startup may take before the process is given up. */
  startTimeoutMs?: number;
  /** Niceness to run at (set right after spawn, so startup itself runs at that priority too). */
  nice?: number;
}

let counter = 0;

/**
 * A socket error that arrives after its request let go of the socket (a write still pending when
 * workerd closed it) would be an unhandled 'error' event, and take the whole node down: every
 * socket to workerd gets a listener of its own (the request's error path reports the rest).
 */
const guarded = new WeakSet<object>();
function guard(socket: NodeJS.EventEmitter): void {
  if (guarded.has(socket)) return;
  guarded.add(socket);
  socket.on("error", () => {});
}

/**
 * util-linux's setpriv, to start workerd with a parent-death signal: if Node dies without running
 * its exit handlers (SIGKILL, OOM killer), the kernel kills its workerd processes too. setpriv
 * execs workerd, so the pid is workerd's.
 */
const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => process.platform === "linux" && fs.existsSync(p));

/**
 * Every workerd process still running. Child processes outlive a Node process that exits without
 * closing its runtime (a crash, a test that forgets): they are killed on the way out.
 */
const live = new Set<WorkerdProcess>();
let exitHook = false;
function watchExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.once("exit", () => {
    for (const p of live) p.kill();
  });
}

/**
 * One workerd process: the host worker on a unix socket only Node uses. Spawned with an empty
 * environment (only its key and TZ), so nothing of Borde's environment reaches it.
 */
export class WorkerdProcess {
  readonly id = ++counter;
  /** Only Node and this process know it; the host worker refuses requests without it. */
  readonly key = randomBytes(24).toString("base64url");
  readonly socket: string;
  readonly pid: number;
  /** RSS right after start, before any user code: the memory limit is counted above it. */
  baselineRss = 0;
  readonly heapMb: number;
  exited = false;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Who the process belongs to, for its log lines. */
  label = "pool";
  /** workerd's last lines on stderr: the cause, when it dies unexpectedly. */
  readonly stderrTail: string[] = [];
  private readonly child: ChildProcess;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, keepAliveMsecs: 10_000 });

  private constructor(opts: SpawnOptions) {
    this.socket = path.join(opts.dir, `w${this.id}.sock`);
    this.heapMb = opts.heapMb;
    const args = ["serve", "--experimental", "--control-fd=3", `--socket-addr=entry=unix:${this.socket}`, opts.configPath];
    this.child = spawn(SETPRIV ?? opts.binary, SETPRIV ? ["--pdeathsig", "KILL", "--", opts.binary, ...args] : args, {
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      env: { BORDE_KEY: this.key, TZ: "UTC" },
      cwd: opts.dir,
    });
    if (this.child.pid === undefined) throw new Error("workerd did not start");
    this.pid = this.child.pid;
    if (opts.nice) {
      try {
        os.setPriority(this.pid, opts.nice);
      } catch {
        // not permitted: it runs at Node's priority
      }
    }
    live.add(this);
    watchExit();
    this.exit = new Promise((resolve) => {
      // "close", not "exit": by then its last stderr lines (the cause of a crash) have been read.
      this.child.once("close", (code, signal) => {
        this.exited = true;
        live.delete(this);
        this.agent.destroy();
        resolve({ code, signal });
      });
    });
    this.child.once("error", (e) => opts.logger.error({ err: e, pid: this.pid }, "workerd process error"));
    // workerd's own output (its errors, console output outside any request): logged at debug —
    // a tenant can make workerd print (a failed fetch logs a stack), so not louder — never shown
    // to a tenant; the last stderr lines go with the warning if the process dies unexpectedly.
    for (const [stream, isErr] of [
      [this.child.stdout, false],
      [this.child.stderr, true],
    ] as const) {
      if (!stream) continue;
      readline.createInterface(stream).on("line", (line) => {
        if (isErr) {
          this.stderrTail.push(line.length > 2000 ? line.slice(0, 2000) : line);
          if (this.stderrTail.length > 20) this.stderrTail.shift();
        }
        opts.logger.debug({ pid: this.pid, worker_process: this.label }, `workerd: ${line}`);
      });
    }
  }

  static async start(opts: SpawnOptions): Promise<WorkerdProcess> {
    const p = new WorkerdProcess(opts);
    const control = p.child.stdio[3] as Readable | null;
    if (!control) throw new Error("workerd control pipe missing");
    const lines = readline.createInterface(control);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        lines.on("line", (line) => {
          try {
            const msg = JSON.parse(line) as { event?: string; socket?: string };
            if (msg.event === "listen" && msg.socket === "entry") resolve();
          } catch {
            // not ours
          }
        });
        void p.exit.then(({ code, signal }) => reject(new Error(`workerd exited during startup (code ${code}, signal ${signal})`)));
        timer = setTimeout(() => reject(new Error("workerd did not start in time")), opts.startTimeoutMs ?? 15_000);
      });
      // One round trip so the host isolate and the socket are really serving before we measure.
      const res = await p.request({ method: "GET", url: "http://borde.internal/", headers: { [H.key]: p.key, [H.op]: "ping" } });
      res.resume();
      if (res.statusCode !== 200) throw new Error(`workerd host answered ${res.statusCode}`);
      p.baselineRss = p.rssBytes() ?? 0;
    } catch (e) {
      p.kill();
      throw e;
    } finally {
      clearTimeout(timer);
      lines.close();
    }
    return p;
  }

  /** Sends a request to the host worker; the absolute URL goes on the request line (proxy style). */
  request(opts: { method: string; url: string; headers: http.OutgoingHttpHeaders; body?: Readable | Buffer | null; onRequest?: (req: http.ClientRequest) => void }): Promise<http.IncomingMessage> {
    // workerd sometimes closes a kept-alive connection (e.g. after a request body the worker left
    // unread) and Node's agent may hand that socket out again before it sees the close. A request
    // whose body is in memory is simply sent again on a stale socket; a streamed body cannot be
    // sent twice, so it gets a connection of its own (a unix socket connect is cheap).
    const streamed = opts.body && !Buffer.isBuffer(opts.body) ? opts.body : null;
    const headers = streamed ? { ...opts.headers, connection: "close" } : opts.headers;
    const attempt = (retry: boolean): Promise<http.IncomingMessage> =>
      new Promise((resolve, reject) => {
        const req = http.request({ socketPath: this.socket, method: opts.method, path: opts.url, headers, agent: streamed ? false : this.agent }, resolve);
        req.on("socket", guard);
        req.on("error", (e: NodeJS.ErrnoException) => {
          if (retry && !streamed && req.reusedSocket && (e.code === "ECONNRESET" || e.code === "EPIPE") && !this.exited) resolve(attempt(false));
          else reject(e);
        });
        opts.onRequest?.(req);
        if (streamed) streamed.pipe(req);
        else req.end(opts.body ?? undefined);
      });
    return attempt(true);
  }

  cpuNs(): number | null {
    return this.exited ? null : processCpuNs(this.pid);
  }

  rssBytes(): number | null {
    return this.exited ? null : processRssBytes(this.pid);
  }

  /** SIGKILL: a worker in an infinite loop answers nothing else. */
  kill(): void {
    if (this.exited) return;
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
    this.agent.destroy();
  }
}
