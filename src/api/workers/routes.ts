import type { Hono } from "hono";
import { BordeError } from "../../errors.js";
import type { LogEvent } from "../../workers/types.js";
import type { Workers } from "../../workers/deploy/index.js";
import { decodeModules, DeployBody, MAX_UPLOAD_BYTES, RollbackBody, SecretBody, WORKER_NAME, WORKER_NAME_RULE, BINDING_NAME } from "../../workers/deploy/schema.js";
import { readJsonBody } from "../body.js";
import type { ApiDeps, Ctx, Env } from "../context.js";
import { actor, ok, parseBody } from "../respond.js";
import { SSE_HEADERS, sseData } from "../sse.js";

/** `{name}.workers.localhost`, any port; the label is checked against WORKER_NAME after. */
const WORKER_HOST = /^(.*)\.workers\.localhost\.?(?::\d{1,5})?$/i;
/** Tail events a slow client may have waiting before new ones are dropped (and counted). */
const TAIL_BUFFER = 1000;
const TAIL_HEARTBEAT_MS = 15_000;

/**
 * Public traffic to workers, before any Borde auth (workers are public, like workers.dev): a request
 * whose Host is `{name}.workers.localhost[:port]` (any path), or whose path is `/workers/{name}/...`
 * (the worker sees the path without that prefix). Register before every other route.
 */
export function registerWorkerRouting(app: Hono<Env>, deps: ApiDeps): void {
  app.use("*", async (c, next) => {
    const workers = deps.workers;
    const m = workers ? WORKER_HOST.exec(c.req.header("host") ?? "") : null;
    if (!workers || !m) return next();
    const name = m[1]!.toLowerCase();
    // One label for all of them: worker names in a label would grow the metrics without bound.
    c.set("routeLabel", "{name}.workers.localhost");
    if (!WORKER_NAME.test(name)) throw new BordeError("NoSuchWorker", "No such worker: invalid worker name in Host");
    return forward(c, workers, name, c.req.url);
  });
  const byPath = async (c: Ctx) => {
    const workers = deps.workers;
    if (!workers) throw new BordeError("NotFound", `No route for ${c.req.method} ${c.req.path.slice(0, 200)}`);
    const url = new URL(c.req.url);
    // The raw segment, not a decoded one: `%2e%2e` or `a%2Fb` are simply not worker names.
    const segment = url.pathname.split("/")[2] ?? "";
    if (!WORKER_NAME.test(segment)) throw new BordeError("NoSuchWorker", "No such worker: invalid worker name");
    const rest = url.pathname.slice(`/workers/${segment}`.length) || "/";
    return forward(c, workers, segment, `${url.origin}${rest}${url.search}`);
  };
  app.all("/workers/:name", byPath);
  app.all("/workers/:name/*", byPath);
}

async function forward(c: Ctx, workers: Workers, name: string, url: string): Promise<Response> {
  const raw = c.req.raw;
  const init: RequestInit & { duplex?: "half" } = { method: raw.method, headers: raw.headers, signal: raw.signal, redirect: "manual" };
  if (raw.body && raw.method !== "GET" && raw.method !== "HEAD") {
    init.body = raw.body;
    init.duplex = "half";
  }
  const res = await workers.fetch(name, new Request(url, init), c.get("requestId"));
  // Through the context, so the headers set before (x-request-id) are on the worker's answer too.
  return c.newResponse(res.body, res);
}

/** The worker name in the URL: malformed names are as unknown as missing ones (404), except when creating (400). */
function nameParam(c: Ctx, creating = false): string {
  const name = c.req.param("name") ?? "";
  if (WORKER_NAME.test(name)) return name;
  if (creating) throw new BordeError("InvalidInput", `Invalid input: name: ${WORKER_NAME_RULE}`);
  throw new BordeError("NoSuchWorker", "No such worker");
}

function workersOf(deps: ApiDeps): Workers {
  if (!deps.workers) throw new BordeError("NotFound", "No route: this node does not run workers");
  return deps.workers;
}

/**
 * The deployments API under /client/v4/accounts/{account}/workers (scope `workers:deploy`, checked in
 * app.ts together with the account): upload (the CLI bundles, this stores and activates), list,
 * versions, delete, rollback, secrets, tail.
 */
export function registerWorkers(app: Hono<Env>, deps: ApiDeps): void {
  const base = "/client/v4/accounts/:account/workers/scripts";

  app.get(base, (c) => ok(c, workersOf(deps).list(c.get("principal").accountId)));

  app.put(`${base}/:name`, async (c) => {
    const workers = workersOf(deps);
    const name = nameParam(c, true);
    const body = DeployBody.parse(await readJsonBody(c.req.raw, MAX_UPLOAD_BYTES, (n) => c.set("bytesIn", n)));
    let modules;
    try {
      modules = decodeModules(body.modules);
    } catch (e) {
      throw new BordeError("InvalidInput", `Invalid input: ${(e as Error).message}`);
    }
    if (body.ai_binding !== null && body.ai_binding in body.vars) throw new BordeError("InvalidInput", `Invalid input: vars.${body.ai_binding}: this name is the AI binding`);
    const info = await workers.deploy(actor(c), name, {
      modules,
      settings: {
        ...(body.compatibility_date ? { compatibilityDate: body.compatibility_date } : {}),
        compatibilityFlags: body.compatibility_flags,
        aiBinding: body.ai_binding,
        vars: body.vars,
        limits: body.limits,
        allowOutbound: body.outbound_allow,
      },
    });
    return ok(c, { id: name, ...info, urls: urls(c, name) });
  });

  app.get(`${base}/:name`, (c) => {
    const name = nameParam(c);
    return ok(c, { ...workersOf(deps).get(c.get("principal").accountId, name), urls: urls(c, name) });
  });

  app.delete(`${base}/:name`, async (c) => ok(c, await workersOf(deps).remove(actor(c), nameParam(c))));

  app.post(`${base}/:name/rollback`, async (c) => {
    const workers = workersOf(deps);
    const name = nameParam(c);
    let body: { version?: number } = {};
    try {
      body = await parseBody(c, deps, RollbackBody, 4096);
    } catch (e) {
      // No body at all means "the previous version".
      if (!(e instanceof BordeError && e.kind === "IncompleteRequest")) throw e;
    }
    return ok(c, { id: name, ...(await workers.rollback(actor(c), name, body.version)) });
  });

  app.put(`${base}/:name/secrets`, async (c) => {
    const workers = workersOf(deps);
    const name = nameParam(c);
    const body = await parseBody(c, deps, SecretBody, 64 * 1024);
    return ok(c, await workers.putSecret(actor(c), name, body.name, body.text));
  });

  app.get(`${base}/:name/secrets`, (c) => ok(c, workersOf(deps).listSecrets(c.get("principal").accountId, nameParam(c))));

  app.delete(`${base}/:name/secrets/:secret`, async (c) => {
    const workers = workersOf(deps);
    const name = nameParam(c);
    const secret = c.req.param("secret") ?? "";
    if (!BINDING_NAME.test(secret)) {
      workers.listSecrets(c.get("principal").accountId, name); // 404 for the worker first
      throw new BordeError("NoSuchSecret", "No such secret");
    }
    return ok(c, await workers.deleteSecret(actor(c), name, secret));
  });

  app.get(`${base}/:name/tail`, (c) => {
    const workers = workersOf(deps);
    const name = nameParam(c);
    const enc = new TextEncoder();
    let controller: ReadableStreamDefaultController<Uint8Array> | null = null;
    let dropped = 0;
    const push = (e: LogEvent) => {
      if (!controller) return;
      if ((controller.desiredSize ?? 0) <= 0) {
        dropped++;
        return;
      }
      try {
        if (dropped > 0) {
          controller.enqueue(enc.encode(sseData({ ts: Date.now(), worker: name, level: "warn", message: `borde: ${dropped} events dropped (the tail client reads too slowly)` } satisfies LogEvent)));
          dropped = 0;
        }
        controller.enqueue(enc.encode(sseData(e)));
      } catch {
        end(); // the stream was closed under us
      }
    };
    // Subscribed before the stream exists so that an unknown worker is a plain 404, not a broken stream.
    const unsubscribe = workers.tail(c.get("principal").accountId, name, push);
    let heartbeat: NodeJS.Timeout | undefined;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      unsubscribe();
      controller = null;
    };
    const signal = c.req.raw.signal;
    signal.addEventListener("abort", end, { once: true });
    const stream = new ReadableStream<Uint8Array>(
      {
        start(ctrl) {
          controller = ctrl;
          // A comment at once: the client knows it is connected (and headers are flushed).
          ctrl.enqueue(enc.encode(`: tailing ${name}\n\n`));
          heartbeat = setInterval(() => {
            try {
              controller?.enqueue(enc.encode(": ping\n\n"));
            } catch {
              end();
            }
          }, TAIL_HEARTBEAT_MS);
          heartbeat.unref();
          if (signal.aborted) end();
        },
        cancel: end,
      },
      new CountQueuingStrategy({ highWaterMark: TAIL_BUFFER }),
    );
    return c.body(stream, 200, SSE_HEADERS);
  });
}

/** The two public URLs of a worker on the node that answered. */
function urls(c: Ctx, name: string): string[] {
  const u = new URL(c.req.url);
  return [`${u.protocol}//${name}.workers.localhost${u.port ? `:${u.port}` : ""}/`, `${u.origin}/workers/${name}/`];
}
