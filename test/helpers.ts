import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { loadConfig, type ConfigInput } from "../src/config/index.js";
import { startNode, type BordeNode, type NodeOptions } from "../src/node.js";
import { createLogger } from "../src/observability/index.js";

/** The shared test model, found beside the repository (CI clones it with shared/ next to it). */
export const SHARED = path.resolve(import.meta.dirname, "../../shared");
export const STORIES = path.join(SHARED, "models/stories260K.gguf");
export const STORIES_REFERENCE =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.";

/**
 * Suites that flood a node on purpose (hostile input, benchmarks) must not meet the per-account
 * limits first; the limits have their own suite with the real defaults.
 */
export const RELAXED_LIMITS = { rateLimits: { "text-generation": 1e9, "text-embeddings": 1e9 }, maxConcurrent: 1e6, tokensPerMinute: 0 } as const;

export const ACCOUNT = "acct_test";
export const TOKEN = "test-token-0123456789";

export interface TestNode extends BordeNode {
  modelsDir: string;
  dataDir: string;
  logs: string[];
  /** Workers AI base for this node's account. */
  ai: string;
  headers: Record<string, string>;
  post(pathname: string, body: unknown, init?: RequestInit): Promise<Response>;
}

/** A real node on port 0 with a temp models folder holding stories260K as @local/stories. */
export async function startTestNode(overrides: ConfigInput = {}, options: NodeOptions = {}): Promise<TestNode> {
  const modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-models-"));
  await fs.copyFile(STORIES, path.join(modelsDir, "stories.gguf"));
  const dataDir = overrides.dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), "borde-data-")));
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const config = loadConfig({ port: 0, host: "127.0.0.1", modelsDir, devAccount: ACCOUNT, devToken: TOKEN, devPlan: "paid", threads: 1, parallel: 4, logLevel: "info", ...RELAXED_LIMITS, ...overrides, dataDir }, {});
  const node = await startNode(config, { logger: createLogger("info", sink), ...options });
  const stop = node.close.bind(node);
  const headers = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
  return Object.assign(node, {
    modelsDir,
    dataDir,
    logs,
    ai: `${node.url}/client/v4/accounts/${ACCOUNT}/ai`,
    headers,
    post: (pathname: string, body: unknown, init: RequestInit = {}) =>
      fetch(`${node.url}${pathname}`, { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body), ...init }),
    close: async () => {
      await stop();
      await fs.rm(modelsDir, { recursive: true, force: true });
      // A data folder the test chose is the test's to keep (restart tests reopen it).
      if (!overrides.dataDir) await fs.rm(dataDir, { recursive: true, force: true });
    },
  });
}

/** Splits an SSE body into its `data:` payloads. */
export function sseEvents(body: string): string[] {
  return body
    .split("\n\n")
    .filter((e) => e.length > 0)
    .map((e) => {
      if (!e.startsWith("data: ")) throw new Error(`not an SSE data event: ${JSON.stringify(e)}`);
      return e.slice(6);
    });
}

/** A response read whole: status, headers, body text, and the body as JSON (undefined when it is not JSON). */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- tests index into envelopes freely
}

export async function answer(res: Response): Promise<Answer> {
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: left undefined, the assertions say so
  }
  return { status: res.status, headers: res.headers, text, json };
}
