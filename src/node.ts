import { serve, type ServerType } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { createDevAuthenticator, devCredentials, type Authenticator, type DevCredentials } from "./accounts/index.js";
import { createApp } from "./api/app.js";
import { ModelStore } from "./catalog/store.js";
import type { Config } from "./config/index.js";
import type { Engine } from "./engines/contract.js";
import { createLlamaEngine } from "./engines/llama/index.js";
import { InferenceService, type UsageSink } from "./inference/index.js";
import { createLogger, createMetrics, type Logger } from "./observability/index.js";
import { Scheduler } from "./scheduler/index.js";
import { chooseThreads } from "./util/threads.js";

export interface NodeOptions {
  logger?: Logger;
  /** Injected engine (tests, benchmarks); by default llama.cpp with threads from free cores. */
  engine?: Engine;
  auth?: Authenticator;
  usage?: UsageSink;
}

export interface BordeNode {
  url: string;
  port: number;
  credentials: DevCredentials;
  threads: number;
  store: ModelStore;
  scheduler: Scheduler;
  close(): Promise<void>;
}

/** Starts a single node: engine, model store, scheduler, API, listening on config.host:config.port. */
export async function startNode(config: Config, options: NodeOptions = {}): Promise<BordeNode> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const metrics = createMetrics();
  const threads = chooseThreads(config.threads);
  const engine = options.engine ?? (await createLlamaEngine({ threads, parallel: config.parallel, contextSize: config.contextSize }));
  const store = new ModelStore({ dir: config.modelsDir, inspect: (file) => engine.inspect(file) });
  const scheduler = new Scheduler({
    engine,
    memoryBudgetBytes: config.memoryBudgetMb * 2 ** 20,
    maxQueue: config.maxQueue,
    log: logger,
    onChange: (s) => {
      metrics.modelsLoaded.set(s.models.filter((m) => m.state === "ready").length);
      metrics.queueDepth.reset();
      metrics.activeRequests.reset();
      metrics.modelMemory.reset();
      for (const m of s.models) {
        metrics.queueDepth.set({ model: m.id }, m.queued);
        metrics.activeRequests.set({ model: m.id }, m.active);
        metrics.modelMemory.set({ model: m.id }, m.memoryBytes);
      }
    },
  });
  const pulling = new Map<string, Promise<void>>();
  const inference = new InferenceService({
    store,
    scheduler,
    metrics,
    logger,
    usage: options.usage,
    autoPull: config.autoPull
      ? (id) => {
          // One download per model however many requests ask for it at once.
          let p = pulling.get(id);
          if (!p) {
            p = store.pull(id, { endpoint: config.hfEndpoint, token: config.hfToken }).then(() => undefined);
            pulling.set(id, p);
            p.finally(() => pulling.delete(id)).catch(() => undefined);
          }
          return p;
        }
      : undefined,
  });
  const credentials = devCredentials(config.devAccount, config.devToken);
  const auth = options.auth ?? createDevAuthenticator(credentials);
  let ready = false;
  const app = createApp({ config, auth, inference, store, scheduler, metrics, logger, isReady: () => ready });

  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, () => resolve(s));
    s.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  logger.info({ url, threads, modelsDir: config.modelsDir, memoryBudgetMb: config.memoryBudgetMb, parallel: config.parallel }, "borde node listening");

  for (const id of config.preload) {
    const info = await store.resolve(id);
    await scheduler.preload(info);
  }
  ready = true;

  return {
    url,
    port,
    credentials,
    threads,
    store,
    scheduler,
    async close() {
      ready = false;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Streams in flight would keep close() waiting forever; their generations are aborted by the socket close.
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
      await scheduler.close();
      if (!options.engine) await engine.dispose();
    },
  };
}
