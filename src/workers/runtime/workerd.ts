import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import http from "node:http";
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
  dir: string;
  logger: Logger;
  /** How long startup may take before the process is given up. */
  startTimeoutMs?: number;
}

let counter = 0;

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
  exited = false;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Who the process belongs to, for its log lines. */
  label = "pool";
  private readonly child: ChildProcess;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, keepAliveMsecs: 10_000 });

  private constructor(opts: SpawnOptions) {
    this.socket = path.join(opts.dir, `w${this.id}.sock`);
    this.child = spawn(opts.binary, ["serve", "--experimental", "--control-fd=3", `--socket-addr=entry=unix:${this.socket}`, opts.configPath], {
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      env: { BORDE_KEY: this.key, TZ: "UTC" },
      cwd: opts.dir,
    });
    if (this.child.pid === undefined) throw new Error("workerd did not start");
    this.pid = this.child.pid;
    this.exit = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exited = true;
        this.agent.destroy();
        resolve({ code, signal });
      });
    });
    this.child.once("error", (e) => opts.logger.error({ err: e, pid: this.pid }, "workerd process error"));
    // workerd's own output (its errors, console output outside any request): logged, never shown to a tenant.
    for (const [stream, level] of [
      [this.child.stdout, "debug"],
      [this.child.stderr, "info"],
    ] as const) {
      if (stream) readline.createInterface(stream).on("line", (line) => opts.logger[level]({ pid: this.pid, worker_process: this.label }, `workerd: ${line}`));
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
  request(opts: { method: string; url: string; headers: http.OutgoingHttpHeaders; body?: Readable | null; onRequest?: (req: http.ClientRequest) => void }): Promise<http.IncomingMessage> {
    // workerd sometimes closes a kept-alive connection (e.g. after a request body the worker left
    // unread) and Node's agent may hand that socket out again before it sees the close. A request
    // with a body cannot be sent twice, so it gets a fresh connection (a unix socket connect is
    // cheap); a bodiless request that meets a stale socket is simply sent again.
    const headers = opts.body ? { ...opts.headers, connection: "close" } : opts.headers;
    const attempt = (retry: boolean): Promise<http.IncomingMessage> =>
      new Promise((resolve, reject) => {
        const req = http.request({ socketPath: this.socket, method: opts.method, path: opts.url, headers, agent: opts.body ? false : this.agent }, resolve);
        req.on("error", (e: NodeJS.ErrnoException) => {
          if (retry && !opts.body && req.reusedSocket && (e.code === "ECONNRESET" || e.code === "EPIPE") && !this.exited) resolve(attempt(false));
          else reject(e);
        });
        opts.onRequest?.(req);
        if (opts.body) opts.body.pipe(req);
        else req.end();
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
