/**
 * The load generator of `borde sim`: simulated clients in cities send a cycle of inference
 * requests through their delay proxies and every response is recorded as one LoadSample.
 *
 * Requests go through Node's fetch and its global dispatcher, which keeps connections alive per
 * origin; every client × mode has its own proxy (its own origin), so each client reuses its own
 * connections and pays no connection set-up after its first requests. A sample's time covers the
 * whole exchange: from the fetch call to the last byte of the body.
 *
 * HTTP errors and network failures are recorded (ok false; status 0 when no response came), never
 * thrown. After a network failure the client waits FAILURE_PAUSE_MS before its next request, so
 * a dead target yields a trickle of failed samples, not a hot loop of refused connections.
 * Requests already running when `durationMs` ends are finished and recorded; `signal` aborts them
 * instead, and requests cut short that way are not recorded.
 */
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { BordeError } from "../../errors.js";

const FAILURE_PAUSE_MS = 50;

export interface LoadClient {
  city: string;
  lat: number;
  lon: number;
  /**
   * Mode name → base URL to send to (already behind this client's delay proxy), or several, best
   * first: when one refuses the connection the next is tried, as anycast routes around a dead PoP.
   */
  targets: Record<string, string | readonly string[]>;
}

export interface LoadRequest {
  /** Label for the report (e.g. "text-classification"). */
  task: string;
  /** Appended to the target's base URL, e.g. /client/v4/accounts/ACC/ai/run/@borde/x */
  path: string;
  /** Sent as is when a string or bytes, else as JSON. */
  body: unknown;
  headers?: Record<string, string>;
}

export interface LoadSample {
  city: string;
  mode: string;
  task: string;
  /** HTTP 2xx. */
  ok: boolean;
  /** 0 when no response came (connection refused or reset, timeout). */
  status: number;
  /** From the fetch call to the end of the response body. */
  ms: number;
  /** Response body bytes. */
  bytesIn: number;
  /** Request body bytes. */
  bytesOut: number;
  /** Response header borde-served-by: the PoP or upstream that ran the model. */
  servedBy: string | null;
  /** Response header borde-pop: the PoP that took the request. */
  entryPop: string | null;
  /** ms since runLoad started. */
  startedAt: number;
}

export interface LoadOptions {
  clients: LoadClient[];
  /** Each client cycles through these, starting at a different place per client. */
  requests: LoadRequest[];
  /** Sent as `Authorization: Bearer <token>`. */
  token: string;
  /** Which of each client's targets to use. */
  mode: string;
  /** Requests each client keeps in flight. */
  concurrencyPerClient: number;
  /** No request starts after this. */
  durationMs: number;
  /**
   * Pause after each answer before the next request (a user reading it). 0 = closed loop, which on
   * one machine running every PoP measures CPU contention between simulated PoPs more than the
   * network.
   */
  thinkMs?: number;
  /** A request running longer than this is aborted and recorded as failed (status 0). Default 60 s. */
  requestTimeoutMs?: number;
  signal?: AbortSignal;
}

interface Prepared {
  task: string;
  path: string;
  body: string | Uint8Array;
  headers: Record<string, string>;
}

function prepare(r: LoadRequest, token: string): Prepared {
  const raw = typeof r.body === "string" || r.body instanceof Uint8Array;
  const body = raw ? (r.body as string | Uint8Array) : JSON.stringify(r.body);
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (!raw) headers["content-type"] = "application/json";
  else if (r.body instanceof Uint8Array) headers["content-type"] = "application/octet-stream";
  return { task: r.task, path: r.path, body, headers: { ...headers, ...r.headers } };
}

/** Runs the load and resolves with every sample, in completion order. */
export async function runLoad(o: LoadOptions): Promise<LoadSample[]> {
  if (o.requests.length === 0) throw new BordeError("InvalidInput", "runLoad: no requests to send");
  if (!(Number.isInteger(o.concurrencyPerClient) && o.concurrencyPerClient >= 1)) throw new BordeError("InvalidInput", `runLoad: concurrencyPerClient must be an integer >= 1, got ${o.concurrencyPerClient}`);
  if (!(o.durationMs >= 0)) throw new BordeError("InvalidInput", `runLoad: durationMs must be >= 0, got ${o.durationMs}`);
  for (const c of o.clients) {
    if (c.targets[o.mode] === undefined) throw new BordeError("InvalidInput", `runLoad: client ${JSON.stringify(c.city)} has no target for mode ${JSON.stringify(o.mode)}`);
  }
  const timeoutMs = o.requestTimeoutMs ?? 60_000;
  const requests = o.requests.map((r) => prepare(r, o.token));
  const samples: LoadSample[] = [];
  const t0 = performance.now();
  const endAt = t0 + o.durationMs;

  /** Sends one request and records it; false when no response came. */
  async function one(client: LoadClient, req: Prepared): Promise<boolean> {
    const target = client.targets[o.mode]!;
    const bases = typeof target === "string" ? [target] : target;
    const startedAt = performance.now();
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = o.signal ? AbortSignal.any([o.signal, timeout]) : timeout;
    const bytesOut = typeof req.body === "string" ? Buffer.byteLength(req.body) : req.body.byteLength;
    let status = 0;
    let bytesIn = 0;
    let servedBy: string | null = null;
    let entryPop: string | null = null;
    for (const base of bases) {
      let res: Response;
      try {
        res = await fetch(base.replace(/\/+$/, "") + req.path, { method: "POST", headers: req.headers, body: req.body, signal });
      } catch {
        if (o.signal?.aborted) return false;
        if (signal.aborted) break;
        continue; // no answer from that PoP at all: the next one (the time spent still counts)
      }
      try {
        status = res.status;
        servedBy = res.headers.get("borde-served-by");
        entryPop = res.headers.get("borde-pop");
        bytesIn = (await res.arrayBuffer()).byteLength;
      } catch {
        // Cut mid-answer: the PoP took the request and died with it; not retried.
        if (o.signal?.aborted) return false;
        status = 0;
      }
      break;
    }
    samples.push({
      city: client.city,
      mode: o.mode,
      task: req.task,
      ok: status >= 200 && status < 300,
      status,
      ms: performance.now() - startedAt,
      bytesIn,
      bytesOut,
      servedBy,
      entryPop,
      startedAt: startedAt - t0,
    });
    return status !== 0;
  }

  const loops: Promise<void>[] = [];
  o.clients.forEach((client, ci) => {
    // Clients start at different places in the cycle so tasks are mixed at any moment.
    let next = ci;
    for (let k = 0; k < o.concurrencyPerClient; k++) {
      loops.push(
        (async () => {
          while (performance.now() < endAt && !o.signal?.aborted) {
            const answered = await one(client, requests[next++ % requests.length]!);
            const pause = Math.min(answered ? (o.thinkMs ?? 0) : Math.max(o.thinkMs ?? 0, FAILURE_PAUSE_MS), endAt - performance.now());
            if (pause > 0) await sleep(pause, undefined, o.signal ? { signal: o.signal } : {}).catch(() => {});
          }
        })(),
      );
    }
  });
  await Promise.all(loops);
  return samples;
}
