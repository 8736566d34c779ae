/**
 * HTTP client for bench/metering.ts, run as a forked child process (as bench/http-client.ts is for
 * bench/run.ts) so that its socket and parsing work does not share the server's event loop. It
 * sends `n` requests one after another over one keep-alive connection (node:http, not fetch) and
 * reports each request's latency: request written -> last byte of the response body read. A plain
 * JSON answer must be 200 with `"success":true`; a stream must end with `data: [DONE]`.
 *
 * Protocol (IPC): parent sends `MeterRunRequest`, child answers `MeterRunResult`; `{type:"exit"}` ends.
 */
import http from "node:http";
import { serveJobs } from "./forked.js";

export interface MeterRunRequest {
  type: "run";
  id: number;
  url: string;
  path: string;
  token: string;
  body: Record<string, unknown>;
  /** requests, sent back to back */
  n: number;
}

export interface MeterRunResult {
  type: "result";
  id: number;
  wallMs: number;
  /** CPU time of this client process during the run (user + system), ms */
  cpuMs: number;
  /** latency of every request that succeeded, ms, in order */
  latenciesMs: number[];
  errors: string[];
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function oneRequest(url: URL, payload: Buffer, token: string, stream: boolean): Promise<{ ms: number; error?: string }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let settled = false;
    const settle = (error?: string): void => {
      if (settled) return;
      settled = true;
      resolve({ ms: performance.now() - t0, ...(error ? { error } : {}) });
    };
    const r = http.request(
      url,
      { method: "POST", agent, headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "content-length": payload.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () => {
          const ms = performance.now() - t0;
          if (settled) return;
          settled = true;
          const text = Buffer.concat(chunks).toString("utf8");
          let error: string | undefined;
          if (res.statusCode !== 200) error = `HTTP ${res.statusCode}: ${text.slice(0, 300)}`;
          else if (stream ? !text.endsWith("data: [DONE]\n\n") : !text.includes('"success":true')) error = `unexpected body: ${text.slice(-300)}`;
          resolve({ ms, ...(error ? { error } : {}) });
        });
        res.on("error", (e) => settle(String(e)));
      },
    );
    r.on("error", (e) => settle(String(e)));
    r.end(payload);
  });
}

async function run(req: MeterRunRequest): Promise<MeterRunResult> {
  const url = new URL(req.path, req.url);
  const payload = Buffer.from(JSON.stringify(req.body));
  const stream = req.body.stream === true;
  const latenciesMs: number[] = [];
  const errors: string[] = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < req.n; i++) {
    const r = await oneRequest(url, payload, req.token, stream);
    if (r.error) errors.push(r.error);
    else latenciesMs.push(r.ms);
  }
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { type: "result", id: req.id, wallMs, cpuMs: (cpu.user + cpu.system) / 1000, latenciesMs, errors };
}

serveJobs<MeterRunRequest, MeterRunResult>(
  run,
  (job, e) => ({ type: "result", id: job.id, wallMs: 0, cpuMs: 0, latenciesMs: [], errors: [String(e)] }),
  () => agent.destroy(),
);
