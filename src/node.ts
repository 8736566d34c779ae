import { getRequestListener } from "@hono/node-server";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { AccountStore, devCredentials, Limiter, type Authenticator, type DevCredentials } from "./accounts/index.js";
import { CpuClock } from "./metering/cpu.js";
import { Meter } from "./metering/meter.js";
import { createOutboxWriter } from "./metering/outbox.js";
import { PgLedger } from "./metering/postgres.js";
import { SqliteLedger } from "./metering/sqlite.js";
import type { UsageReader, UsageWriter } from "./metering/types.js";
import { openDatabase } from "./util/sqlite.js";
import { createAiBridge } from "./workers/ai-binding.js";
import { createWorkers } from "./workers/deploy/index.js";
import { createWorkerRuntime } from "./workers/runtime/index.js";
import { createApp } from "./api/app.js";
import { ModelStore } from "./catalog/store.js";
import type { Config } from "./config/index.js";
import { BordeError } from "./errors.js";
import { BUNDLED_MODELS, createEngines, inspectModel, type Engine } from "./engines/index.js";
import { Batcher } from "./scheduler/batcher.js";
import { InferenceService } from "./inference/index.js";
import { createLogger, createMetrics, type Logger } from "./observability/index.js";
import { Scheduler } from "./scheduler/index.js";
import { chooseThreads } from "./util/threads.js";
import { connect as connectNats, type NatsConnection } from "@nats-io/transport-node";
import { natsOptions } from "./metering/outbox.js";
import { ClusterRouter } from "./network/cluster.js";
import { ConfigReplication } from "./network/replication.js";
import type { Pop, Topology } from "./network/topology.js";

export interface NodeOptions {
  logger?: Logger;
  /** Injected text engine (tests, benchmarks); by default llama.cpp with threads from free cores. */
  engine?: Engine;
  auth?: Authenticator;
  /** Cluster mode: this node is a PoP of `topology` (`borde node --config --pop`). Needs config.natsUrl. */
  cluster?: { topology: Topology; pop: Pop };
}

export interface BordeNode {
  url: string;
  port: number;
  credentials: DevCredentials;
  threads: number;
  store: ModelStore;
  scheduler: Scheduler;
  accounts: AccountStore;
  meter: Meter;
  /** The ledger this node reads for reports, if any. */
  usage: UsageReader | null;
  close(): Promise<void>;
}

/** Starts a single node: engine, model store, scheduler, API, listening on config.host:config.port. */
export async function startNode(config: Config, options: NodeOptions = {}): Promise<BordeNode> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const metrics = createMetrics();
  const threads = chooseThreads(config.threads);
  const engines = await createEngines({ threads, parallel: config.parallel, contextSize: config.contextSize, llama: options.engine });
  const store = new ModelStore({ dir: config.modelsDir, inspect: inspectModel, bundled: BUNDLED_MODELS });
  const scheduler = new Scheduler({
    engine: engines,
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
  // State: accounts, tokens, audit log, and the ledger (one node) or the outbox (cluster PoP).
  const db = openDatabase(path.join(config.dataDir, "borde.db"), config.ledgerSync);
  const accounts = new AccountStore(db);
  const credentials = devCredentials(config.devAccount, config.devToken);
  accounts.ensureDev(credentials.accountId, credentials.token, config.devPlan);
  const ledger = config.natsUrl ? null : new SqliteLedger(db);
  const writer: UsageWriter | null = !config.metering ? null : config.natsUrl ? await createOutboxWriter(db, { servers: config.natsUrl, pop: config.pop, logger, token: config.natsToken }) : ledger;
  let usage: UsageReader | null = ledger;
  let pg: PgLedger | null = null;
  if (config.postgresUrl) usage = pg = new PgLedger(config.postgresUrl, logger);
  const meter = new Meter({ writer, pop: config.pop, pricing: { computeNeuronsPerCpuSecond: config.computeNeuronsPerCpuSecond }, logger });
  const limiter = new Limiter({
    rateLimits: config.rateLimits,
    tokensPerMinute: config.tokensPerMinute,
    maxConcurrent: config.maxConcurrent,
    freeNeurons: config.freeNeurons,
    accountNeuronsToday: (id) => meter.accountNeuronsToday(id),
    tokenNeuronsToday: (id) => meter.tokenNeuronsToday(id),
  });
  const pulling = new Map<string, Promise<void>>();
  const cpu = new CpuClock();
  let nc: NatsConnection | null = null;
  let router: ClusterRouter | undefined;
  if (options.cluster) {
    if (!config.natsUrl) throw new BordeError("Internal", "Cluster mode needs a NATS URL (BORDE_NATS_URL)");
    // Waits for NATS: a PoP without its NATS server can take no part in the network.
    nc = await connectNats({ ...natsOptions(config.natsUrl, `borde-${config.pop}`, config.natsToken), waitOnFirstConnect: true });
    router = new ClusterRouter({ ...options.cluster, nc, store, cpu, logger: logger.child({ component: "cluster" }) });
  }
  const inference = new InferenceService({
    store,
    scheduler,
    metrics,
    logger,
    meter,
    limiter,
    cpu,
    router,
    batcher: new Batcher(scheduler, { maxWaitMs: config.batchWaitMs, maxPending: config.maxQueue, maxBatch: config.maxBatch }),
    autoPull: config.autoPull
      ? (id) => {
          // One download per model however many requests ask for it at once.
          let p = pulling.get(id);
          if (!p) {
            p = store.pull(id, { endpoint: config.hfEndpoint, token: config.hfToken }).then(
              () => undefined,
              (cause) => {
                logger.warn({ model: id, err: cause }, "auto-pull failed");
                throw new BordeError("ModelPullFailed", `Model ${id} could not be pulled: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
              },
            );
            pulling.set(id, p);
            p.finally(() => pulling.delete(id)).catch(() => undefined);
          }
          return p;
        }
      : undefined,
  });
  await router?.start(inference);
  const auth = options.auth ?? { authenticate: async (token: string) => accounts.authenticate(token) };
  // Workers: one workerd process per account, env.AI through the same inference service and meter.
  const runtime = createWorkerRuntime({ ai: createAiBridge({ inference, accounts, meter, maxTokensLimit: config.maxTokensLimit, decodeLimits: { maxPixels: config.maxImagePixels, maxAudioSeconds: config.maxAudioSeconds } }), logger });
  const workers = createWorkers({ db, dataDir: config.dataDir, runtime, logger, accounts, secretKey: config.secretKey });
  // Cluster: accounts, tokens and workers follow the JetStream bucket (after the router: a PoP's
  // heartbeats need not wait for the replay).
  const replication = nc && router ? new ConfigReplication(nc, accounts, workers, logger.child({ component: "replication" }), router.nodeId) : null;
  let ready = false;
  const app = createApp({ config, auth, accounts, meter, usage, workers, inference, store, scheduler, metrics, logger, isReady: () => ready });

  const listener = getRequestListener(app.fetch, {
    hostname: config.host,
    // Called when the adapter cannot even build a Request (e.g. a path Node accepted but WHATWG URL
    // refuses), or when the app throws past Hono: the client still gets the envelope, never a stack.
    errorHandler: (e) => {
      const malformed = (e as Error)?.name === "RequestError";
      if (!malformed) logger.error({ err: e }, "unhandled request error");
      return new Response(
        JSON.stringify({ result: null, success: false, errors: [malformed ? { code: 5006, message: "Malformed HTTP request" } : { code: 3043, message: "Internal server error" }], messages: [] }),
        { status: malformed ? 400 : 500, headers: { "content-type": "application/json" } },
      );
    },
  });
  const server = http.createServer(listener);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  // After listening, an accept error (e.g. EMFILE under a connection flood) must be logged, not thrown:
  // an 'error' event without a listener would end the process.
  server.on("error", (err) => logger.error({ err }, "server error"));
  // Requests Node's HTTP parser rejects (NUL or spaces in the path, bad Content-Length…) never reach
  // the app; answer them in the same envelope instead of Node's bare 400.
  server.on("clientError", (err: NodeJS.ErrnoException, socket: import("node:stream").Duplex) => {
    if (err.code === "ECONNRESET" || !socket.writable) return void socket.destroy();
    const tooLarge = err.code === "HPE_HEADER_OVERFLOW";
    const body = JSON.stringify({
      result: null,
      success: false,
      errors: [{ code: tooLarge ? 3006 : 5006, message: tooLarge ? "Request headers are too large" : "Malformed HTTP request" }],
      messages: [],
    });
    socket.end(`HTTP/1.1 ${tooLarge ? "431 Request Header Fields Too Large" : "400 Bad Request"}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  logger.info({ url, threads, modelsDir: config.modelsDir, memoryBudgetMb: config.memoryBudgetMb, parallel: config.parallel }, "borde node listening");

  const shutdown = async () => {
    ready = false;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Streams in flight would keep close() waiting forever; their generations are aborted by the socket close.
      server.closeAllConnections();
    });
    router?.stop();
    await replication?.stop();
    await workers.close();
    await scheduler.close();
    await nc?.drain().catch(() => undefined);
    await engines.dispose(options.engine);
    await writer?.close();
    await pg?.close();
    db.close();
  };

  try {
    // Deployed workers come back with the node (a failing one is logged and answers 500).
    await workers.start();
    // Then what other PoPs changed (replayed from the bucket) on top of what this node had.
    replication?.start();
    for (const id of config.preload) {
      const info = await store.resolve(id);
      await scheduler.preload(info);
    }
  } catch (e) {
    // A node that cannot preload what it was told to must not linger half-started.
    await shutdown();
    throw e;
  }
  ready = true;

  return {
    url,
    port,
    credentials,
    threads,
    store,
    scheduler,
    accounts,
    meter,
    usage,
    close: shutdown,
  };
}
