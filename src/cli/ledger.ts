import { delay } from "../metering/outbox.js";
import { LedgerConsumer, PgLedger } from "../metering/postgres.js";
import { createLogger } from "../observability/index.js";
import { intOption, parse, UsageError } from "./args.js";

const HELP = `Usage: borde ledger [options]

The core's ledger writer: takes usage records from the JetStream stream BORDE_USAGE (durable
consumer "ledger") and writes them into the PostgreSQL table "usage", each record exactly once.
Creates the table, the stream and the consumer when they are missing. Run one or more; they share
the consumer. Stops on SIGINT / SIGTERM.

Options:
  --nats URLS        NATS server(s), comma-separated (env BORDE_NATS_URL)
  --postgres URL     PostgreSQL connection URL (env BORDE_POSTGRES_URL)
  --ack-wait SECONDS how long a record taken by a writer that died waits before another writer gets it (default 30)
  -h, --help

Environment:
  BORDE_LOG_LEVEL    pino log level for the JSON logs on stderr (default info)`;

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export async function ledgerCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { nats: { type: "string" }, postgres: { type: "string" }, "ack-wait": { type: "string" } }, false);
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const nats = values.nats ?? process.env.BORDE_NATS_URL;
  const postgres = values.postgres ?? process.env.BORDE_POSTGRES_URL;
  if (!nats) throw new UsageError("ledger needs --nats URL (or BORDE_NATS_URL)");
  if (!postgres) throw new UsageError("ledger needs --postgres URL (or BORDE_POSTGRES_URL)");
  const ackWaitS = intOption(values["ack-wait"], "ack-wait", 1) ?? 30;
  const level = process.env.BORDE_LOG_LEVEL ?? "info";
  if (!LEVELS.includes(level)) throw new UsageError(`BORDE_LOG_LEVEL must be one of ${LEVELS.join("|")}, got ${JSON.stringify(level)}`);
  const logger = createLogger(level);

  let stopRequested = false;
  const stopSignal = new AbortController();
  const stopped = new Promise<void>((resolve) => stopSignal.signal.addEventListener("abort", () => resolve(), { once: true }));
  const onSignal = () => {
    stopRequested = true;
    stopSignal.abort();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const ledger = new PgLedger(postgres, logger);
  // PostgreSQL may come up after us (a supervisor starts everything at once): wait for it.
  for (let backoff = 100, warned = false; !stopRequested; backoff = Math.min(backoff * 2, 2_000)) {
    try {
      await ledger.migrate();
      break;
    } catch (e) {
      if (!warned) logger.warn({ err: e instanceof Error ? e.message : String(e) }, "cannot reach PostgreSQL yet; retrying");
      warned = true;
      await delay(backoff, stopSignal.signal);
    }
  }
  const consumer = new LedgerConsumer(ledger, { servers: nats, token: process.env.BORDE_NATS_TOKEN || undefined, logger, ackWaitMs: ackWaitS * 1_000 });
  if (!stopRequested) {
    const starting = consumer.start();
    await Promise.race([starting, stopped]);
    if (!stopRequested) {
      // stdout is for scripts and supervisors: one line once records flow; logs are JSON on stderr.
      console.log("ledger writer ready");
      await stopped;
    }
  }
  await consumer.stop();
  await ledger.close();
  logger.info({ written: consumer.written }, "ledger writer stopped");
  return 0;
}
