/**
 * The JavaScript that runs inside workerd, and the workerd config, as strings (tsc copies no .js
 * assets to dist/, so they live here).
 *
 * Layout of one account's workerd process:
 *   socket "entry" (a unix socket, HTTP proxy style, so the request line carries the full URL the
 *   worker must see) → the HOST worker → `env.LOADER.get("name@version-hash", …)` → the user's
 *   worker in its own isolate, started from code the host fetches from Node.
 * The user's isolate gets exactly: its vars and secrets as strings, `__BORDE_GATE` (an RPC stub to
 * the host's Gate entrypoint, props = its worker name) and, as `globalOutbound`, the host's Outbound
 * entrypoint. Nothing else: no filesystem, no process environment, no network of its own.
 */

/** Headers Node puts on a dispatch to the host. Node strips every client-sent `x-borde-*` header. */
export const H = {
  key: "x-borde-key",
  worker: "x-borde-worker",
  version: "x-borde-version",
  flight: "x-borde-flight",
  op: "x-borde-op",
  tail: "x-borde-tail",
  url: "x-borde-url",
  module: "x-borde-module",
  drain: "x-borde-drain",
} as const;

/**
 * The host worker: one per process, account-agnostic (a pooled process is handed to any account
 * without touching workerd). It trusts only requests carrying the process key, which only Node knows.
 */
export const HOST_WORKER_JS = /* js */ `
import { WorkerEntrypoint } from "cloudflare:workers";

const H = ${JSON.stringify(H)};

function envelope(status, code, message) {
  return new Response(JSON.stringify({ result: null, success: false, errors: [{ code, message }], messages: [] }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function callNode(env, path, headers, body) {
  return env.NODE.fetch("http://borde" + path, { method: "POST", headers: { ...headers, [H.key]: env.KEY }, body });
}

async function loadCode(env, ctx, worker, version) {
  const res = await callNode(env, "/code", { [H.worker]: worker, [H.version]: version });
  if (!res.ok) throw new Error("worker code unavailable (" + res.status + "): " + (await res.text()));
  const spec = await res.json();
  const modules = { "__borde_prelude.js": { js: spec.prelude }, "__borde_main.js": { js: spec.main } };
  for (let i = 0; i < spec.modules.length; i++) {
    const m = spec.modules[i];
    if (m.type === "esm") modules[m.name] = { js: m.text };
    else if (m.type === "text") modules[m.name] = { text: m.text };
    else {
      // Binary modules travel as raw bytes, one call each: no base64 of megabytes inside the isolate.
      const r = await callNode(env, "/module", { [H.worker]: worker, [H.version]: version, [H.module]: String(i) });
      if (!r.ok) throw new Error("module " + m.name + " unavailable (" + r.status + ")");
      const buf = await r.arrayBuffer();
      modules[m.name] = m.type === "wasm" ? { wasm: buf } : { data: buf };
    }
  }
  return {
    compatibilityDate: spec.compatibilityDate,
    compatibilityFlags: spec.compatibilityFlags,
    mainModule: "__borde_main.js",
    modules,
    env: { ...spec.bindings, __BORDE_GATE: ctx.exports.Gate({ props: { worker } }) },
    globalOutbound: ctx.exports.Outbound({ props: { worker } }),
  };
}

/** What a user's isolate may ask of the platform: AI calls and tail lines, each checked by Node. */
export class Gate extends WorkerEntrypoint {
  async ai(flight, model, inputs, options) {
    const res = await callNode(
      this.env,
      "/ai",
      { [H.worker]: this.ctx.props.worker, [H.flight]: String(flight), "content-type": "application/json" },
      // Bytes (an image, audio) go as arrays of numbers, the REST API's form.
      JSON.stringify({ model, inputs: inputs ?? {}, options: options ?? {} }, (k, v) =>
        ArrayBuffer.isView(v) ? Array.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) : v instanceof ArrayBuffer ? Array.from(new Uint8Array(v)) : v,
      ),
    );
    const type = res.headers.get("content-type") ?? "";
    if (res.ok && type.startsWith("text/event-stream")) return res.body;
    const body = await res.json().catch(() => null);
    if (res.ok && body) return body.result;
    const err = body && body.errors && body.errors[0];
    throw new Error(err ? err.code + ": " + err.message : "AI call failed (" + res.status + ")");
  }
  async log(flight, events) {
    await callNode(
      this.env,
      "/log",
      { [H.worker]: this.ctx.props.worker, [H.flight]: String(flight), "content-type": "application/json" },
      JSON.stringify(events),
    );
  }
}

/** Every fetch() of a user's isolate lands here: Node checks the allow-list and counts it. */
export class Outbound extends WorkerEntrypoint {
  async fetch(request) {
    const flight = request.headers.get(H.flight) ?? "";
    const verdict = await callNode(this.env, "/sub", { [H.worker]: this.ctx.props.worker, [H.flight]: flight, [H.url]: request.url });
    if (verdict.status !== 204) throw new Error(await verdict.text());
    const headers = new Headers(request.headers);
    headers.delete(H.flight);
    // NET is a workerd network service that reaches public addresses only: an allowed hostname
    // that resolves to loopback or a private network is still refused (no SSRF into the node).
    return this.env.NET.fetch(new Request(request, { headers }));
  }
}

export default {
  async fetch(request, env, ctx) {
    if (!env.KEY || request.headers.get(H.key) !== env.KEY) return envelope(403, 10001, "Forbidden");
    const op = request.headers.get(H.op) ?? "fetch";
    if (op === "ping") return new Response("ok");
    const worker = request.headers.get(H.worker);
    const version = request.headers.get(H.version);
    const stub = env.LOADER.get(worker + "@" + version, () => loadCode(env, ctx, worker, version));
    const headers = new Headers(request.headers);
    headers.delete(H.key);
    headers.delete(H.worker);
    headers.delete(H.version);
    headers.delete(H.drain);
    const init = { headers };
    // A streamed body is read to its end before the response completes, whether the worker read
    // it or not: workerd closes a connection whose request body is left unread, while Node may
    // still be writing it, and the response would be lost with it.
    let drain = null;
    if (request.body && request.headers.get(H.drain) === "1") {
      // BYOB reads of up to 64 KiB: workerd would otherwise hand the body over in 4 KiB pieces,
      // each a trip through this JavaScript (the request's CPU time).
      const reader = request.body.getReader({ mode: "byob" });
      let done = false;
      const read = async (size) => {
        const r = await reader.read(new Uint8Array(size));
        if (r.done) done = true;
        return r.done ? null : r.value;
      };
      init.body = new ReadableStream({
        async pull(controller) {
          const chunk = await read(65536);
          if (chunk === null) controller.close();
          else controller.enqueue(chunk);
        },
      });
      drain = async () => {
        while (!done) await read(1 << 20);
      };
    }
    try {
      const response = await stub.getEntrypoint().fetch(new Request(request, init));
      if (!drain || response.status === 101) return response;
      if (response.body === null) {
        await drain();
        return response;
      }
      const { readable, writable } = new TransformStream({ flush: () => drain().catch(() => {}) });
      response.body.pipeTo(writable).catch(() => {});
      return new Response(readable, response);
    } catch (e) {
      if (op === "load") return new Response(String((e && e.stack) || e), { status: 500 });
      return envelope(500, 1101, "Worker threw exception");
    }
  },
};
`;

/**
 * Evaluated in the user's isolate before any user module (the main module imports it first): binds
 * console output and fetch() to the request that caused them, through AsyncLocalStorage (the
 * `nodejs_als` flag is added to every worker). User code can undo these patches, but only to its
 * own loss: a fetch without a valid flight id is refused, a console line unsent is simply lost.
 */
export const PRELUDE_JS = /* js */ `
import { AsyncLocalStorage } from "node:async_hooks";

export const als = new AsyncLocalStorage();
const MAX_LINES = 1000;
const MAX_LINE = 16384;

const realFetch = globalThis.fetch;
globalThis.fetch = function fetch(input, init) {
  const store = als.getStore();
  const request = new Request(input, init);
  const headers = new Headers(request.headers);
  headers.set("${H.flight}", store ? store.flight : "");
  return realFetch(new Request(request, { headers }));
};

function text(v) {
  if (typeof v === "string") return v;
  if (v instanceof Error) return v.stack || v.name + ": " + v.message;
  if (typeof v === "function") return "[Function " + (v.name || "anonymous") + "]";
  if (typeof v === "object" && v !== null) {
    try { return JSON.stringify(v); } catch { return String(v); }
  }
  return String(v);
}

export function push(store, level, message) {
  if (store.sent >= MAX_LINES) return;
  store.sent++;
  store.queue.push({ ts: Date.now(), level, message: message.length > MAX_LINE ? message.slice(0, MAX_LINE) + "…" : message });
  if (store.queue.length === 1) queueMicrotask(() => flush(store));
}

export function flush(store) {
  const batch = store.queue.splice(0);
  if (batch.length === 0) return;
  try {
    store.ctx.waitUntil(store.gate.log(store.flight, batch).catch(() => {}));
  } catch {
    // the request's context is gone: the lines go with it
  }
}

export function report(store, e) {
  if (store.reported.has(e)) return;
  if (typeof e === "object" && e !== null) store.reported.add(e);
  push(store, "exception", e instanceof Error ? e.stack || e.name + ": " + e.message : "Uncaught " + text(e));
}

for (const level of ["debug", "log", "info", "warn", "error"]) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    const store = als.getStore();
    if (!store) return original(...args);
    if (store.tail) push(store, level, args.map(text).join(" "));
  };
}

globalThis.addEventListener?.("unhandledrejection", (event) => {
  const store = als.getStore();
  if (store) report(store, event.reason);
});
`;

/** The main module of a user's isolate: strips Borde's headers, builds the per-request env. */
export function mainModuleJs(entry: string, aiBinding: string | null): string {
  return /* js */ `
import { als, report, flush } from "./__borde_prelude.js";
import * as user from ${JSON.stringify("./" + entry)};

const handler = user.default;
const AI_BINDING = ${JSON.stringify(aiBinding)};

function requestEnv(raw, store) {
  const env = {};
  for (const k of Object.keys(raw)) if (k !== "__BORDE_GATE") env[k] = raw[k];
  if (AI_BINDING !== null) {
    const gate = raw.__BORDE_GATE;
    // Workers AI's binding: run(model, inputs, options) → result, or a ReadableStream of SSE bytes.
    env[AI_BINDING] = Object.freeze({ run: (model, inputs, options) => gate.ai(store.flight, model, inputs, options) });
  }
  return env;
}

export default {
  async fetch(request, raw, ctx) {
    if (request.headers.get("${H.op}") === "load") return new Response(null, { status: 204 });
    const store = {
      flight: request.headers.get("${H.flight}") ?? "",
      tail: request.headers.get("${H.tail}") === "1",
      gate: raw.__BORDE_GATE,
      ctx,
      queue: [],
      sent: 0,
      reported: new WeakSet(),
    };
    const headers = new Headers(request.headers);
    for (const k of [...headers.keys()]) if (k.startsWith("x-borde-")) headers.delete(k);
    const req = new Request(request, { headers });
    const env = requestEnv(raw, store);
    const userCtx = Object.freeze({
      waitUntil(p) {
        ctx.waitUntil(Promise.resolve(p).catch((e) => { report(store, e); flush(store); }));
      },
      passThroughOnException() {},
      props: {},
    });
    return als.run(store, async () => {
      try {
        if (typeof handler === "function") return await new handler(userCtx, env).fetch(req);
        if (!handler || typeof handler.fetch !== "function") throw new Error("the worker's default export has no fetch handler");
        return await handler.fetch(req, env, userCtx);
      } catch (e) {
        report(store, e);
        flush(store);
        throw e;
      }
    });
  },
};
`;
}

/**
 * The workerd config (capnp text), shared by every process with the same heap limit: the entry
 * socket's address and the key come per process from the command line and the environment.
 * `heapMb` is V8's old-space limit, which V8 applies to each isolate: a worker whose JavaScript
 * heap outgrows it aborts the process (workerd has no gentler way), which the runtime answers as
 * a memory limit.
 */
export function workerdConfig(gatewaySocket: string, heapMb: number): string {
  return `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "host", worker = .host),
    (name = "node", external = (address = ${JSON.stringify("unix:" + gatewaySocket)}, http = ())),
    (name = "internet", network = (allow = ["public"], tlsOptions = (trustBrowserCas = true))),
  ],
  sockets = [ (name = "entry", http = (style = proxy), service = "host") ],
  v8Flags = ["--max-old-space-size=${Math.max(16, Math.round(heapMb))}"],
);

const host :Workerd.Worker = (
  modules = [ (name = "host.js", esModule = embed "host.js") ],
  compatibilityDate = "2025-09-01",
  compatibilityFlags = ["enable_ctx_exports"],
  bindings = [
    (name = "LOADER", workerLoader = ()),
    (name = "NODE", service = "node"),
    (name = "NET", service = "internet"),
    (name = "KEY", fromEnvironment = "BORDE_KEY"),
  ],
  globalOutbound = "internet",
);
`;
}
