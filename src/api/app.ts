import { Hono, type MiddlewareHandler } from "hono";
import { randomUUID } from "node:crypto";
import { hasScope, type Scope } from "../accounts/index.js";
import { BordeError } from "../errors.js";
import { registerAdmin } from "./admin/routes.js";
import { registerUsage } from "./usage.js";
import type { ApiDeps, Env } from "./context.js";
import { errorResponse, type Flavor } from "./errors.js";
import { registerOpenAi } from "./openai/routes.js";
import { registerWorkersAi } from "./workers-ai/routes.js";
import { registerWorkerRouting, registerWorkers } from "./workers/routes.js";

export type { ApiDeps } from "./context.js";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function flavorOf(path: string): Flavor {
  return path.startsWith("/v1/") || /^\/client\/v4\/accounts\/[^/]+\/ai\/v1\//.test(path) ? "openai" : "workers-ai";
}

/** The HTTP surface: Workers AI REST, OpenAI-compatible, health and metrics. */
export function createApp(deps: ApiDeps): Hono<Env> {
  const app = new Hono<Env>();

  app.use(async (c, next) => {
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    const log = deps.logger.child({ reqId: requestId });
    c.set("requestId", requestId);
    c.set("log", log);
    c.set("flavor", flavorOf(c.req.path));
    c.set("model", "");
    const started = performance.now();
    // Set before the handler builds its response: setting a header on a finished response makes Hono
    // rebuild it, which sends streams down a slower path in the Node adapter (~1 ms on first byte).
    c.header("x-request-id", requestId);
    c.header("borde-pop", deps.config.pop);
    c.set("pop", deps.config.pop);
    try {
      await next();
    } catch (e) {
      // Hono's onError only sees `instanceof Error` throws; anything else (a zod 4 ZodError built by
      // hand, a thrown string) would escape as an empty 500 from the adapter. Catch it here instead.
      c.res = errorResponse(c, e, c.get("flavor"), log);
      c.header("x-request-id", requestId);
      c.header("borde-pop", deps.config.pop);
    }
    const route = c.get("routeLabel") ?? (c.req.routePath === "/*" || c.req.routePath === "*" ? "unmatched" : c.req.routePath);
    // Ids from refused requests (400, 404…) may be anything a client made up: kept as labels they would
    // grow the metrics without bound, so only requests that reached a model keep theirs.
    const model = c.res.status < 400 || [408, 429, 500, 502, 507].includes(c.res.status) ? c.get("model") : "";
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.requests.inc({ route, model, status: String(c.res.status) });
    deps.metrics.latency.observe({ route, model }, seconds);
    if (route !== "/metrics" && route !== "/healthz" && route !== "/readyz")
      log.info({ method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(seconds * 1000), model: model || undefined }, "request");
  });

  app.onError((e, c) => errorResponse(c, e, c.get("flavor") ?? "workers-ai", c.get("log") ?? deps.logger));
  app.notFound((c) => errorResponse(c, new BordeError("NotFound", `No route for ${c.req.method} ${c.req.path.slice(0, 200)}`), c.get("flavor") ?? "workers-ai", c.get("log") ?? deps.logger));

  // Public worker traffic ({name}.workers.localhost, /workers/{name}/…) before any other route or auth.
  registerWorkerRouting(app, deps);

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", (c) => (deps.isReady() ? c.json({ status: "ready" }) : c.json({ status: "starting" }, 503)));
  app.get("/metrics", async (c) => c.body(await deps.metrics.registry.metrics(), 200, { "content-type": deps.metrics.registry.contentType }));

  // Every API call needs the bearer token and the scope its route asks for; the account in the URL
  // must be the token's account (whether that account exists is never revealed to another).
  const authenticate = (scope: Scope | null): MiddlewareHandler<Env> =>
    async (c, next) => {
      const header = c.req.header("authorization") ?? "";
      const m = /^Bearer\s+(\S{1,512})\s*$/i.exec(header);
      const principal = m ? await deps.auth.authenticate(m[1]!) : null;
      if (!principal) throw new BordeError("Unauthorized", header ? "Authentication error: invalid API token" : "Authentication error: missing Authorization: Bearer <token>");
      const account = c.req.param("account");
      if (account !== undefined && account !== principal.accountId) throw new BordeError("Forbidden", "Forbidden: this token cannot act on that account");
      if (scope && !hasScope(principal, scope)) throw new BordeError("Forbidden", `Forbidden: this token lacks the ${scope} scope`);
      const here = deps.config.jurisdiction;
      if (principal.jurisdictions && (!here || !principal.jurisdictions.includes(here)))
        throw new BordeError("Forbidden", `Forbidden: this token may only be served in ${principal.jurisdictions.join(", ")}; this node is in ${here ?? "no declared jurisdiction"}`);
      c.set("principal", principal);
      await next();
    };
  const runScope = authenticate("ai:run");
  const usageScope = authenticate("usage:read");
  const deployScope = authenticate("workers:deploy");
  app.use("/client/v4/accounts/:account/*", (c, next) =>
    (/^\/client\/v4\/accounts\/[^/]+\/ai\/usage\/?$/.test(c.req.path) ? usageScope : /^\/client\/v4\/accounts\/[^/]+\/workers(?:\/|$)/.test(c.req.path) ? deployScope : runScope)(c, next),
  );
  app.use("/v1/*", authenticate("ai:run"));
  app.use("/client/v4/admin/*", authenticate("admin"));

  // Cloudflare's token check; Borde adds the token's account so CLIs can build account URLs.
  app.use("/client/v4/user/*", authenticate(null));
  app.get("/client/v4/user/tokens/verify", (c) => {
    const p = c.get("principal");
    return c.json({ result: { id: p.tokenId, status: "active", account_id: p.accountId, scopes: p.scopes }, success: true, errors: [], messages: [] });
  });

  registerAdmin(app, deps);
  registerUsage(app, deps);
  registerWorkersAi(app, deps);
  registerOpenAi(app, deps, "/client/v4/accounts/:account/ai/v1");
  registerOpenAi(app, deps, "/v1");
  registerWorkers(app, deps);
  return app;
}
