/**
 * Helpers for the CLI tests: run the real CLI from source as a child process (through
 * test/cli/borde.ts, so no build is needed), start `borde dev` and wait for its banner, and an
 * imitation Hugging Face hub for `borde models pull`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

export const ROOT = path.resolve(import.meta.dirname, "../..");
const WRAPPER = path.join(ROOT, "test/cli/borde.ts");
/** CI clones the repository with shared/ beside it. */
export const STORIES = path.resolve(import.meta.dirname, "../../../shared/models/stories260K.gguf");
/** What stories260K writes greedily after "Once upon a time". */
export const STORIES_REFERENCE =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.";

/** Every child this suite started and that has not exited yet; `killAll` ends them (by pid). */
const running = new Set<ChildProcess>();
const tmpDirs: string[] = [];

export async function tmpDir(prefix = "borde-cli-"): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  tmpDirs.push(dir);
  return dir;
}

/** Ends children still running (a failed test) and removes the temp folders. */
export async function cleanup(): Promise<void> {
  await Promise.all(
    [...running].map(
      (child) =>
        new Promise<void>((resolve) => {
          child.once("close", () => resolve());
          child.kill("SIGKILL");
        }),
    ),
  );
  await Promise.all(tmpDirs.splice(0).map((d) => fs.rm(d, { recursive: true, force: true })));
}

/** The parent's environment without BORDE_* / HF_*, plus HOME and what the test sets. */
export function childEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(BORDE|HF)_/.test(k)) env[k] = v;
  // A terminal's colours or a parent's node flags must not change what the CLI prints.
  delete env.NODE_OPTIONS;
  delete env.FORCE_COLOR;
  return { ...env, HOME: home, USERPROFILE: home, ...extra };
}

function spawnBorde(args: string[], home: string, env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ["--import", "tsx", WRAPPER, ...args], {
    cwd: ROOT,
    env: childEnv(home, env),
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  child.once("close", () => running.delete(child));
  return child;
}

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `borde ARGS` to completion. */
export function borde(args: string[], opts: { home: string; env?: Record<string, string> }): Promise<Result> {
  const child = spawnBorde(args, opts.home, opts.env ?? {});
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

export interface DevNode {
  pid: number;
  url: string;
  account: string;
  token: string;
  /** Whether the banner said the account / token were generated. */
  generatedAccount: boolean;
  generatedToken: boolean;
  stdout(): string;
  stderr(): string;
  /** Sends `signal` to this child (by its pid) and resolves with how it exited. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `borde dev ARGS` and resolves once its banner is on stdout (no sleeping). */
export function startDev(args: string[], opts: { home: string; env?: Record<string, string> }): Promise<DevNode> {
  const child = spawnBorde(["dev", ...args], opts.home, opts.env ?? {});
  let stdout = "";
  let stderr = "";
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("close", (code, signal) => resolve((exit = { code, signal }))),
  );
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise<DevNode>((resolve, reject) => {
    let ready = false;
    child.once("error", reject);
    void closed.then((e) => {
      if (!ready) reject(new Error(`borde dev exited (${e.code ?? e.signal}) before printing its banner:\n${stdout}\n${stderr.slice(-2000)}`));
    });
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      // The banner ends with the `try  curl ...` line; everything needed is printed by then.
      if (ready || !/^ {2}try +curl /m.test(stdout)) return;
      ready = true;
      const url = /listening on (http:\/\/\S+)/.exec(stdout)?.[1];
      const account = /^ {2}account +(\S+)(.*)$/m.exec(stdout);
      const token = /^ {2}token +(\S+)(.*)$/m.exec(stdout);
      if (!url || !account || !token) {
        reject(new Error(`unexpected borde dev banner:\n${stdout}`));
        return;
      }
      resolve({
        pid: child.pid!,
        url,
        account: account[1]!,
        token: token[1]!,
        generatedAccount: account[2]!.includes("BORDE_DEV_ACCOUNT"),
        generatedToken: token[2]!.includes("BORDE_DEV_TOKEN"),
        stdout: () => stdout,
        stderr: () => stderr,
        stop: (signal = "SIGTERM") => {
          if (exit === null) child.kill(signal);
          return closed;
        },
      });
    });
  });
}

/** A URL on which nothing listens: a port 0 server's port, after it closed. */
export async function deadUrl(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

/** How the imitation hub behaves; tests change it between pulls. */
export interface HubMode {
  /** X-Linked-Etag to send instead of the real sha256. */
  linkedEtag?: string;
  /** Destroy the socket after this many body bytes, on the next file request only. */
  cutAfter?: number;
}

export interface Hub {
  endpoint: string;
  sha256: string;
  size: number;
  mode: HubMode;
  /** Every file request: path and Range header. */
  requests: { path: string; range: string | undefined }[];
  close(): Promise<void>;
}

/**
 * An imitation Hugging Face hub: any `/<org>/<repo>/resolve/<rev>/<file>` answers `file`'s bytes,
 * with `X-Linked-Etag` (its sha256) and `X-Linked-Size` as the hub sends them, and honours
 * `Range: bytes=N-` with a 206.
 */
export async function startHub(file: string): Promise<Hub> {
  const bytes = await fs.readFile(file);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const mode: HubMode = {};
  const requests: Hub["requests"] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://hub");
    if (!/^\/[^/]+\/[^/]+\/resolve\/[^/]+\/.+$/.test(url.pathname)) {
      res.writeHead(404, { "content-type": "text/plain" }).end("Entry not found");
      return;
    }
    requests.push({ path: url.pathname, range: req.headers.range });
    const headers: http.OutgoingHttpHeaders = {
      "x-linked-etag": `"${mode.linkedEtag ?? sha256}"`,
      "x-linked-size": String(bytes.length),
      etag: '"not-a-sha-1"',
      "accept-ranges": "bytes",
    };
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    let start = 0;
    if (range) {
      start = Number(range[1]);
      if (start >= bytes.length) {
        res.writeHead(416, { ...headers, "content-range": `bytes */${bytes.length}` }).end();
        return;
      }
      res.writeHead(206, { ...headers, "content-length": bytes.length - start, "content-range": `bytes ${start}-${bytes.length - 1}/${bytes.length}` });
    } else {
      res.writeHead(200, { ...headers, "content-length": bytes.length });
    }
    const rest = bytes.subarray(start);
    if (mode.cutAfter !== undefined) {
      const n = mode.cutAfter;
      mode.cutAfter = undefined;
      res.write(rest.subarray(0, n), () => res.socket?.destroy());
      return;
    }
    res.end(rest);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    sha256,
    size: bytes.length,
    mode,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}
