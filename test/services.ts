/**
 * Real external services for network tests: a throw-away nats-server (optionally with JetStream and a
 * store folder that survives restarts) and a throw-away PostgreSQL cluster. Each binds a random free
 * port on 127.0.0.1 and lives in its own temp folder. Nothing is mocked: these are the binaries the
 * cluster runs on.
 *
 * A test that needs a service the machine lacks calls `needService(t, "nats")`: it skips normally but
 * fails under CI=true, so a CI image that lost a package cannot pass by skipping everything.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { TestContext } from "node:test";
import pg from "pg";

const NATS_BIN = process.env.BORDE_TEST_NATS_SERVER ?? "nats-server";
const PG_BIN_DIRS = ["", "/usr/local/bin/", "/usr/lib/postgresql/15/bin/"];

function which(bin: string): string | null {
  try {
    return execFileSync("sh", ["-c", `command -v ${bin}`], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

function pgBin(name: string): string | null {
  for (const dir of PG_BIN_DIRS) {
    const found = dir ? which(dir + name) : which(name);
    if (found) return found;
  }
  return null;
}

/** Which services this machine can start. */
export function servicesAvailable(): { nats: boolean; postgres: boolean } {
  return { nats: which(NATS_BIN) !== null, postgres: pgBin("initdb") !== null && pgBin("pg_ctl") !== null };
}

/**
 * Skips the test when a service is missing, except under CI=true where that fails it. Returns
 * whether the test may go on.
 */
export function needService(t: TestContext, ...names: ("nats" | "postgres")[]): boolean {
  const have = servicesAvailable();
  const missing = names.filter((n) => !have[n]);
  if (missing.length === 0) return true;
  const why = `needs ${missing.join(" and ")} (nats-server / PostgreSQL binaries not found)`;
  if (process.env.CI === "true") throw new Error(`${why}; CI=true requires every service`);
  t.skip(why);
  return false;
}

/** A port nothing listens on right now (the OS picks it; a tiny race is acceptable in tests). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once `pattern` appears in the child's stderr; rejects if it exits first or the time runs out. */
function waitForOutput(child: ChildProcess, pattern: RegExp, what: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => done(new Error(`${what} not ready after ${timeoutMs} ms:\n${seen.slice(-2000)}`)), timeoutMs);
    const onData = (d: Buffer) => {
      seen += d.toString("utf8");
      if (pattern.test(seen)) done();
    };
    const onExit = (code: number | null, signal: string | null) => done(new Error(`${what} exited (${code ?? signal}) before it was ready:\n${seen.slice(-2000)}`));
    function done(err?: Error) {
      clearTimeout(timer);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
      if (err) reject(err);
      else resolve();
    }
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

export interface NatsService {
  url: string;
  port: number;
  /** The current nats-server process (changes on restart). */
  readonly pid: number;
  storeDir: string;
  /** Graceful stop (SIGTERM) and removal of the store folder. */
  stop(): Promise<void>;
  /** SIGKILL: no flush, no goodbye; the store folder stays for `restart()`. */
  kill(): Promise<void>;
  /** Starts nats-server again on the same port with the same store (after `kill()` or on its own). */
  restart(): Promise<void>;
}

/** Starts nats-server on a free port; with `jetstream` (default true) its store survives `kill()`/`restart()`. */
export async function startNats(opts: { jetstream?: boolean } = {}): Promise<NatsService> {
  const jetstream = opts.jetstream ?? true;
  const port = await freePort();
  const storeDir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-nats-"));
  let child: ChildProcess;

  async function launch(): Promise<void> {
    const args = ["-a", "127.0.0.1", "-p", String(port), ...(jetstream ? ["-js", "-sd", storeDir] : [])];
    child = spawn(NATS_BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
    // JetStream recovers its store before it says it is ready, so clients never see a half-loaded stream.
    await waitForOutput(child, /Server is ready/, "nats-server");
    // Keep draining stderr so a chatty server never blocks on a full pipe.
    child.stderr?.resume();
  }

  await launch();
  const service: NatsService = {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    get pid() {
      return child.pid!;
    },
    async stop() {
      child.kill("SIGTERM");
      await exited(child);
      await fs.rm(storeDir, { recursive: true, force: true });
    },
    async kill() {
      child.kill("SIGKILL");
      await exited(child);
    },
    async restart() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await exited(child);
      }
      await launch();
    },
  };
  return service;
}

export interface PostgresService {
  /** URL of an empty database `borde`. */
  url: string;
  port: number;
  /** Stops the server at once (`-m immediate`, like a crash) keeping its data, for `up()`. */
  down(): Promise<void>;
  /** Starts the server again on the same port and data. */
  up(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A throw-away PostgreSQL cluster: initdb (trust auth, no fsync), a unix socket and TCP on
 * 127.0.0.1 at a free port, one database `borde`. PostgreSQL refuses to run as root, so under root
 * the server runs as the `postgres` user.
 */
export async function startPostgres(): Promise<PostgresService> {
  const initdb = pgBin("initdb");
  const pgCtl = pgBin("pg_ctl");
  if (!initdb || !pgCtl) throw new Error("PostgreSQL binaries (initdb, pg_ctl) not found");
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-pg-"));
  const dataDir = path.join(dir, "data");
  const port = await freePort();
  let ids: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    ids = {
      uid: Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" })),
      gid: Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" })),
    };
    await fs.chown(dir, ids.uid, ids.gid);
  }
  const run = (bin: string, args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], cwd: dir, ...(ids ?? {}) });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      child.once("error", reject);
      child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(bin)} ${args.join(" ")} exited ${code}:\n${out.slice(-2000)}`))));
    });
  await run(initdb, ["-D", dataDir, "--auth=trust", "--no-sync", "-U", "postgres", "-E", "UTF8", "--no-locale"]);
  const serverOptions = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const up = () => run(pgCtl, ["-D", dataDir, "-l", path.join(dir, "log"), "-o", serverOptions, "-w", "-t", "30", "start"]);
  const down = () => run(pgCtl, ["-D", dataDir, "-m", "immediate", "-w", "stop"]);
  await up();

  const admin = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database: "postgres" });
  await admin.connect();
  await admin.query("CREATE DATABASE borde");
  await admin.end();

  return {
    url: `postgres://postgres@127.0.0.1:${port}/borde`,
    port,
    down,
    up,
    async stop() {
      await down().catch(() => {});
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
