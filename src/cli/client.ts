import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { UsageError } from "./args.js";

/** Where `borde dev` leaves its URL, account and token so other commands on this machine find them. */
export const DEV_STATE_FILE = path.join(os.homedir(), ".borde", "dev.json");

interface DevState {
  url: string;
  accountId: string;
  token: string;
}

export function saveDevState(state: DevState): void {
  fs.mkdirSync(path.dirname(DEV_STATE_FILE), { recursive: true });
  // Written whole then renamed, and chmod'ed: `mode` alone applies only when a file is created.
  const tmp = `${DEV_STATE_FILE}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state, null, 2), { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, DEV_STATE_FILE);
}

function readDevState(): Partial<DevState> {
  try {
    return JSON.parse(fs.readFileSync(DEV_STATE_FILE, "utf8")) as Partial<DevState>;
  } catch {
    return {};
  }
}

export interface Client {
  url: string;
  token: string;
  accountId: string;
  fetch(pathname: string, init?: RequestInit): Promise<Response>;
}

/** Option > environment > the dev node's saved state > default. */
export function client(opts: { url?: string; token?: string }, env = process.env): Client {
  const dev = readDevState();
  const url = (opts.url ?? env.BORDE_URL ?? dev.url ?? "http://127.0.0.1:8787").replace(/\/+$/, "");
  // The saved dev token only ever goes to the dev node it belongs to, never to another --url.
  const devMatches = dev.url !== undefined && dev.url.replace(/\/+$/, "") === url;
  const token = opts.token ?? env.BORDE_TOKEN ?? env.BORDE_DEV_TOKEN ?? (devMatches ? dev.token : undefined);
  if (!token) throw new UsageError("no API token: pass --token, set BORDE_TOKEN, or start `borde dev` on this machine");
  const accountId = env.BORDE_ACCOUNT ?? env.BORDE_DEV_ACCOUNT ?? (devMatches ? dev.accountId : undefined) ?? "-";
  return {
    url,
    token,
    accountId,
    async fetch(pathname, init = {}) {
      try {
        return await fetch(`${url}${pathname}`, { ...init, headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(init.headers ?? {}) } });
      } catch (e) {
        throw new UsageError(`cannot reach ${url}: ${(e as { cause?: { code?: string } }).cause?.code ?? (e instanceof Error ? e.message : String(e))}`);
      }
    },
  };
}

/** Reads an API error envelope into one line. */
export async function apiError(res: Response): Promise<string> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as { errors?: { code: number; message: string }[] };
    const e = body.errors?.[0];
    if (e) return `${res.status}: ${e.message} (code ${e.code})`;
  } catch {
    // not JSON: fall through
  }
  return `${res.status}: ${text.slice(0, 200)}`;
}

/** The `data:` payloads of an event stream, frame by frame (comment lines such as heartbeats skipped). */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let i: number;
    while ((i = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, i);
      buffer = buffer.slice(i + 2);
      for (const line of frame.split("\n")) if (line.startsWith("data: ")) yield line.slice(6);
    }
  }
}

/** The token's account, asked of the node when not known locally. */
export async function accountOf(c: Client): Promise<string> {
  if (c.accountId !== "-") return c.accountId;
  const res = await c.fetch("/client/v4/user/tokens/verify");
  // A refused token is the same failure as on the run itself: exit 1, `borde: 401: ...`.
  if (!res.ok) throw new Error(await apiError(res));
  return ((await res.json()) as { result: { account_id: string } }).result.account_id;
}

/** One management call: the envelope's `result`, or an Error carrying the API's one-line reason. */
export async function call(c: Client, method: string, pathname: string, body?: unknown): Promise<unknown> {
  const res = await c.fetch(pathname, { method, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  if (!res.ok) throw new Error(await apiError(res));
  return ((await res.json()) as { result: unknown }).result;
}

/** A worker's path in the deployments API, under the token's account. */
export async function scriptPath(c: Client, name = ""): Promise<string> {
  return `/client/v4/accounts/${encodeURIComponent(await accountOf(c))}/workers/scripts${name ? `/${name}` : ""}`;
}

/** Columns padded to their widest cell, two spaces apart. */
export function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => (c ?? "").padEnd(widths[i]!)).join("  ").trimEnd());
}
