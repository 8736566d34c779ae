/**
 * HTTP load client for bench/run.ts, run as a forked child process so that its own work (sockets,
 * SSE parsing, timing) does not share the server's event loop — as with a real client, which runs
 * elsewhere. It opens N concurrent streaming Workers AI requests (`stream: true`), each stream
 * issuing `perStream` requests back to back (closed loop), and reports per-request samples.
 *
 * Uses node:http with a keep-alive agent rather than fetch(): the figure should be Borde's cost, not
 * the client library's (undici's web streams cost noticeably more per chunk than a plain socket).
 *
 * Protocol (IPC): parent sends `HttpRunRequest`, child answers `HttpRunResult`; `{type:"exit"}` ends.
 */
import http from "node:http";
import { serveJobs } from "./forked.js";

export interface HttpRunRequest {
  type: "run";
  id: number;
  url: string;
  path: string;
  token: string;
  body: Record<string, unknown>;
  concurrency: number;
  perStream: number;
}

export interface StreamSample {
  /** request written -> first SSE event with non-empty `response` */
  ttftMs: number;
  /** request written -> `data: [DONE]` (or end of body) */
  totalMs: number;
  /** completion tokens from the final usage event (-1 if the stream carried none) */
  tokens: number;
  /** SSE events with text */
  textEvents: number;
  error?: string;
}

export interface HttpRunResult {
  type: "result";
  id: number;
  wallMs: number;
  /** CPU time of this client process during the run (user + system), ms */
  cpuMs: number;
  samples: StreamSample[];
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function oneRequest(req: HttpRunRequest): Promise<StreamSample> {
  return new Promise((resolve) => {
    const url = new URL(req.path, req.url);
    const payload = Buffer.from(JSON.stringify(req.body));
    const t0 = performance.now();
    let tFirst = -1;
    let tokens = -1;
    let textEvents = 0;
    let done = false;
    let tDone = -1;
    let failure: string | undefined;
    let buf = "";
    // Timing stops at [DONE]; the promise settles at the end of the body so the socket is back in the pool.
    const finish = (error?: string): void => {
      if (tDone < 0) tDone = performance.now();
      if (error && !failure) failure = error;
    };
    const settle = (error?: string): void => {
      finish(error);
      if (done) return;
      done = true;
      resolve({ ttftMs: tFirst >= 0 ? tFirst - t0 : -1, totalMs: tDone - t0, tokens, textEvents, ...(failure ? { error: failure } : {}) });
    };
    const r = http.request(
      url,
      {
        method: "POST",
        agent,
        headers: { authorization: `Bearer ${req.token}`, "content-type": "application/json", "content-length": payload.length },
      },
      (res) => {
        if (res.statusCode !== 200) {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => (text += d));
          res.on("end", () => settle(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
          return;
        }
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          buf += chunk;
          let i: number;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const ev = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (!ev.startsWith("data: ")) continue;
            const data = ev.slice(6);
            if (data === "[DONE]") {
              finish();
              continue;
            }
            // Cheap path for the common text event: only the final event carries usage.
            if (!data.includes('"usage"') && !data.includes('"errors"')) {
              if (tFirst < 0 && !data.startsWith('{"response":""')) tFirst = performance.now();
              textEvents++;
              continue;
            }
            try {
              const obj = JSON.parse(data) as { response?: string; usage?: { completion_tokens?: number }; errors?: { message?: string }[] };
              if (obj.errors) {
                finish(`stream error: ${obj.errors.map((e) => e.message).join("; ")}`);
                continue;
              }
              if (obj.response && tFirst < 0) tFirst = performance.now();
              if (obj.usage?.completion_tokens !== undefined) tokens = obj.usage.completion_tokens;
            } catch (e) {
              finish(`bad SSE event: ${data.slice(0, 200)} (${String(e)})`);
            }
          }
        });
        res.on("end", () => settle(tDone >= 0 ? undefined : "stream ended without [DONE]"));
        res.on("error", (e) => settle(String(e)));
      },
    );
    r.on("error", (e) => settle(String(e)));
    r.end(payload);
  });
}

async function run(req: HttpRunRequest): Promise<HttpRunResult> {
  const samples: StreamSample[] = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: req.concurrency }, async () => {
      for (let i = 0; i < req.perStream; i++) samples.push(await oneRequest(req));
    }),
  );
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { type: "result", id: req.id, wallMs, cpuMs: (cpu.user + cpu.system) / 1000, samples };
}

serveJobs<HttpRunRequest, HttpRunResult>(
  run,
  (job, e) => ({ type: "result", id: job.id, wallMs: 0, cpuMs: 0, samples: [{ ttftMs: -1, totalMs: 0, tokens: -1, textEvents: 0, error: String(e) }] }),
  () => agent.destroy(),
);
