/**
 * Helpers for the deployment suites: a Borde HTTP server with the real app, accounts and Workers
 * facade on a real SQLite file, running workers on the real runtime (src/workers/runtime: workerd per
 * account) with a stub AI bridge. `BORDE_TEST_WORKERS_RUNTIME=miniflare` swaps in a minimal test
 * double instead, one Miniflare per worker: no limits, no AI binding, no outbound policy — only
 * modules, vars and secrets as bindings, and console output, which is what deployments need.
 */
import { getRequestListener } from "@hono/node-server";
import { Miniflare } from "miniflare";
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { AccountStore, type Scope } from "../../src/accounts/index.js";
import { createApp } from "../../src/api/app.js";
import { loadConfig } from "../../src/config/index.js";
import { createLogger, createMetrics, type Logger } from "../../src/observability/index.js";
import { openDatabase, type Db } from "../../src/util/sqlite.js";
import { createWorkers, type Workers } from "../../src/workers/deploy/index.js";
import { createWorkerRuntime } from "../../src/workers/runtime/index.js";
import type { AiBridge, LogEvent, WorkerModule, WorkerRuntime, WorkerVersion } from "../../src/workers/types.js";

export const PROJECTS = path.resolve(import.meta.dirname, "../fixtures/workers/projects");
export const ACCOUNT = "acct_workers";
export const TOKEN = "workers-test-token-0123456789";

const TYPES: Record<WorkerModule["type"], "ESModule" | "CompiledWasm" | "Text" | "Data"> = { esm: "ESModule", wasm: "CompiledWasm", text: "Text", data: "Data" };
const NULL_BODY = new Set([101, 204, 205, 304]);

/** Runs each active version in its own Miniflare (one workerd process per worker). */
export class MiniflareRuntime implements WorkerRuntime {
  private readonly live = new Map<string, { accountId: string; version: number; mf: Miniflare }>();
  private readonly subscribers = new Map<string, Set<(e: LogEvent) => void>>();
  async activate(v: WorkerVersion): Promise<void> {
    const root = `/borde-worker/${v.name}`;
    const mf = new Miniflare({
      modulesRoot: root,
      modules: v.modules.map((m) => ({ type: TYPES[m.type], path: `${root}/${m.name}`, contents: m.content })),
      compatibilityDate: v.compatibilityDate ?? "2025-01-01",
      compatibilityFlags: v.compatibilityFlags,
      bindings: { ...v.vars, ...v.secrets },
      structuredWorkerdLogs: true,
      handleStructuredLogs: ({ timestamp, level, message }: { timestamp: number; level: string; message: string }) => this.emit(v.name, { ts: timestamp, worker: v.name, level: toLevel(level), message }),
      handleRuntimeStdio: (stdout: NodeJS.ReadableStream, stderr: NodeJS.ReadableStream) => {
        stdout.resume();
        stderr.resume();
      },
    });
    try {
      await mf.ready;
    } catch (e) {
      await mf.dispose().catch(() => undefined);
      throw e;
    }
    const old = this.live.get(v.name);
    this.live.set(v.name, { accountId: v.accountId, version: v.version, mf });
    await old?.mf.dispose();
  }

  async remove(_accountId: string, name: string): Promise<void> {
    const w = this.live.get(name);
    this.live.delete(name);
    await w?.mf.dispose();
  }

  async fetch(accountId: string, name: string, request: Request, requestId: string): Promise<Response> {
    const w = this.live.get(name);
    if (!w || w.accountId !== accountId) throw new Error(`worker ${name} is not active`);
    const body = request.method === "GET" || request.method === "HEAD" ? undefined : new Uint8Array(await request.arrayBuffer());
    const res = await w.mf.dispatchFetch(request.url, { method: request.method, headers: [...request.headers, ["x-borde-request-id", requestId]], body, redirect: "manual" });
    return new Response(NULL_BODY.has(res.status) ? null : (res.body as unknown as ReadableStream<Uint8Array>), { status: res.status, headers: [...res.headers] });
  }

  subscribe(_accountId: string, name: string, onEvent: (e: LogEvent) => void): () => void {
    let set = this.subscribers.get(name);
    if (!set) this.subscribers.set(name, (set = new Set()));
    set.add(onEvent);
    return () => set.delete(onEvent);
  }

  async close(): Promise<void> {
    const all = [...this.live.values()];
    this.live.clear();
    await Promise.all(all.map((w) => w.mf.dispose()));
  }

  private emit(name: string, e: LogEvent): void {
    for (const fn of this.subscribers.get(name) ?? []) fn(e);
  }
}

/** The runtime the suites run workers on, recording what it was asked to activate. */
export class RecordingRuntime implements WorkerRuntime {
  /** Every version activated successfully, in order. */
  readonly activations: WorkerVersion[] = [];
  /** Every AI call workers made. The stub answers embeddings for `text`, an SSE stream for `stream: true`, else `{response: "stub: <prompt>"}`. */
  readonly aiCalls: { accountId: string; worker: string; model: string; inputs: unknown }[] = [];
  readonly inner: WorkerRuntime;
  readonly kind: "workerd" | "miniflare";

  constructor(logger: Logger) {
    this.kind = process.env.BORDE_TEST_WORKERS_RUNTIME === "miniflare" ? "miniflare" : "workerd";
    const ai: AiBridge = {
      run: async ({ accountId, worker, model, inputs }) => {
        this.aiCalls.push({ accountId, worker, model, inputs });
        const i = inputs as { prompt?: string; stream?: boolean; text?: string[] };
        if (i.text) return { shape: [i.text.length, 2], data: i.text.map(() => [0.6, 0.8]), pooling: "mean" };
        if (i.stream) {
          const enc = new TextEncoder();
          return new ReadableStream<Uint8Array>({
            start(c) {
              for (const t of ["stub", " stream"]) c.enqueue(enc.encode(`data: ${JSON.stringify({ response: t })}\n\n`));
              c.enqueue(enc.encode("data: [DONE]\n\n"));
              c.close();
            },
          });
        }
        return { response: `stub: ${i.prompt ?? ""}` };
      },
    };
    this.inner = this.kind === "miniflare" ? new MiniflareRuntime() : createWorkerRuntime({ ai, logger, warmPool: 1 });
  }

  async activate(v: WorkerVersion): Promise<void> {
    await this.inner.activate(v);
    this.activations.push(v);
  }
  remove(accountId: string, name: string): Promise<void> {
    return this.inner.remove(accountId, name);
  }
  fetch(accountId: string, name: string, request: Request, requestId: string): Promise<Response> {
    return this.inner.fetch(accountId, name, request, requestId);
  }
  subscribe(accountId: string, name: string, onEvent: (e: LogEvent) => void): () => void {
    return this.inner.subscribe(accountId, name, onEvent);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

function toLevel(level: string): LogEvent["level"] {
  return (["debug", "log", "info", "warn", "error"] as const).find((l) => l === level) ?? "log";
}

export interface WorkersServer {
  url: string;
  port: number;
  dataDir: string;
  db: Db;
  accounts: AccountStore;
  workers: Workers;
  runtime: RecordingRuntime;
  logs: string[];
  /** Base of the deployments API for ACCOUNT. */
  scripts: string;
  /** Creates a token of ACCOUNT with these scopes. */
  token(scopes: Scope[]): string;
  /** Creates another account and a token of it with these scopes. */
  otherAccount(scopes: Scope[]): { accountId: string; token: string };
  api(method: string, pathname: string, body?: unknown, token?: string): Promise<{ status: number; json: any }>;
  /** Stops the server and the runtime and closes the database (the data folder stays). */
  close(): Promise<void>;
}

/** A node's HTTP surface with workers: the real app, accounts and Workers facade on a real SQLite file. */
export async function startWorkersServer(opts: { dataDir?: string } = {}): Promise<WorkersServer> {
  const dataDir = opts.dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), "borde-workers-")));
  const logs: string[] = [];
  const logger = createLogger(
    "info",
    new Writable({
      write(chunk, _enc, cb) {
        logs.push(String(chunk));
        cb();
      },
    }),
  );
  const config = loadConfig({ port: 0, host: "127.0.0.1", dataDir, devAccount: ACCOUNT, devToken: TOKEN, devPlan: "paid" }, {});
  const db = openDatabase(path.join(dataDir, "borde.db"));
  const accounts = new AccountStore(db);
  accounts.ensureDev(ACCOUNT, TOKEN, "paid");
  const runtime = new RecordingRuntime(logger);
  const workers = createWorkers({ db, dataDir, runtime, logger, accounts });
  await workers.start();
  const unused = new Proxy({}, { get: () => { throw new Error("not part of the workers test server"); } }) as never;
  const app = createApp({
    config,
    auth: { authenticate: async (t) => accounts.authenticate(t) },
    accounts,
    meter: unused,
    usage: null,
    inference: unused,
    store: unused,
    scheduler: unused,
    metrics: createMetrics(),
    logger,
    isReady: () => true,
    workers,
  });
  const server = http.createServer(getRequestListener(app.fetch));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  const admin = { accountId: ACCOUNT, tokenId: `dev-${ACCOUNT}`, ip: null, userAgent: null, requestId: "test" };
  return {
    url,
    port,
    dataDir,
    db,
    accounts,
    workers,
    runtime,
    logs,
    scripts: `/client/v4/accounts/${ACCOUNT}/workers/scripts`,
    token(scopes) {
      return accounts.createToken({ accountId: ACCOUNT, scopes }, admin).token;
    },
    otherAccount(scopes) {
      const { id } = accounts.createAccount({ name: "other", plan: "paid" }, admin);
      return { accountId: id, token: accounts.createToken({ accountId: id, scopes }, admin).token };
    },
    async api(method, pathname, body, token = TOKEN) {
      const res = await fetch(`${url}${pathname}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
      });
      const text = await res.text();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = text;
      }
      return { status: res.status, json };
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await workers.close();
      db.close();
    },
  };
}
