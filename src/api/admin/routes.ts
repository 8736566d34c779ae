import type { Hono } from "hono";
import { z } from "zod";
import { PLANS, SCOPES } from "../../accounts/index.js";
import { BordeError } from "../../errors.js";
import type { ApiDeps, Env } from "../context.js";
import { actor, idParam, ok, parseBody } from "../respond.js";
import { usageReport, UsageParams } from "../usage.js";

/** Names are for people: letters, digits and a little punctuation; no control or markup characters. */
const Name = z.string().min(1).max(64).regex(/^[\p{L}\p{N} ._@+-]+$/u, "names are 1-64 letters, digits, spaces or ._@+-");
const AccountId = /^[A-Za-z0-9_-]{1,64}$/;
const TokenId = /^(?:[0-9a-f]{16}|dev-[A-Za-z0-9_-]{1,64})$/;
const Budget = z.number().positive().max(1e12).nullable();
const Limits = z
  .object({
    rate_limits: z.record(z.string().regex(/^[a-z-]{1,64}$/), z.number().int().min(0).max(1e9)).optional(),
    tokens_per_minute: z.number().int().min(0).max(1e12).optional(),
    max_concurrent: z.number().int().min(1).max(1e6).optional(),
    jurisdiction: z.string().regex(/^[a-z]{2,16}$/, "jurisdictions are 2-16 lowercase letters, e.g. eu").optional(),
  })
  .strict();

const NewAccountBody = z.object({ name: Name, plan: z.enum(PLANS).optional(), daily_neuron_budget: Budget.optional(), limits: Limits.nullable().optional() }).strict();
const PatchAccountBody = NewAccountBody.partial().strict();
const NewTokenBody = z
  .object({
    account_id: z.string().regex(AccountId, "account ids are 1-64 of [A-Za-z0-9_-]"),
    name: Name.optional(),
    scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length),
    models: z
      .array(z.string().regex(/^@[a-z]+\/[A-Za-z0-9._\/-]{0,200}\*?$/, "model ids like @cf/meta/llama-3.2-1b-instruct, or a prefix ending in *"))
      .min(1)
      .max(100)
      .optional(),
    jurisdictions: z.array(z.string().regex(/^[a-z]{2,16}$/, "jurisdictions are 2-16 lowercase letters, e.g. eu")).min(1).max(16).optional(),
    daily_neuron_budget: Budget.optional(),
    /** ISO 8601 time or epoch seconds. */
    // Bounded so the time stays a valid Date (year 5000 at most) whatever way it is written.
    expires_at: z.union([z.iso.datetime({ offset: true }), z.number().int().positive().max(95_617_584_000)]).optional(),
  })
  .strict();

/**
 * The admin API under /client/v4/admin: accounts, tokens, every account's usage, the audit log.
 * Only `admin` tokens reach it (checked in app.ts before any of these run).
 */
export function registerAdmin(app: Hono<Env>, deps: ApiDeps): void {
  const base = "/client/v4/admin";

  app.post(`${base}/accounts`, async (c) => {
    const b = await parseBody(c, deps, NewAccountBody, 64 * 1024);
    return ok(c, deps.accounts.createAccount({ name: b.name, plan: b.plan, dailyNeuronBudget: b.daily_neuron_budget, limits: b.limits }, actor(c)));
  });
  app.get(`${base}/accounts`, (c) => ok(c, deps.accounts.listAccounts()));
  app.get(`${base}/accounts/:id`, (c) => {
    const a = deps.accounts.getAccount(idParam(c, "id", AccountId, "account"));
    if (!a) throw new BordeError("NoSuchResource", "No such account");
    return ok(c, a);
  });
  app.patch(`${base}/accounts/:id`, async (c) => {
    const id = idParam(c, "id", AccountId, "account");
    const b = await parseBody(c, deps, PatchAccountBody, 64 * 1024);
    return ok(c, deps.accounts.updateAccount(id, { name: b.name, plan: b.plan, dailyNeuronBudget: b.daily_neuron_budget, limits: b.limits }, actor(c)));
  });

  app.post(`${base}/tokens`, async (c) => {
    const b = await parseBody(c, deps, NewTokenBody, 64 * 1024);
    const expiresAt = b.expires_at === undefined ? null : typeof b.expires_at === "number" ? b.expires_at * 1000 : Date.parse(b.expires_at);
    if (expiresAt !== null && expiresAt <= Date.now()) throw new BordeError("InvalidInput", "Invalid input: expires_at is in the past");
    if (expiresAt !== null && !(expiresAt <= 95_617_584_000_000)) throw new BordeError("InvalidInput", "Invalid input: expires_at is after the year 5000");
    const { token, info } = deps.accounts.createToken(
      {
        accountId: b.account_id,
        name: b.name,
        scopes: [...new Set(b.scopes)],
        models: b.models ?? null,
        jurisdictions: b.jurisdictions ?? null,
        dailyNeuronBudget: b.daily_neuron_budget ?? null,
        expiresAt,
      },
      actor(c),
    );
    return ok(c, { ...info, token });
  });
  app.get(`${base}/tokens`, (c) => {
    const account = c.req.query("account_id");
    if (account !== undefined && !AccountId.test(account)) return ok(c, []);
    return ok(c, deps.accounts.listTokens(account));
  });
  app.delete(`${base}/tokens/:id`, (c) => ok(c, deps.accounts.revokeToken(idParam(c, "id", TokenId, "token"), actor(c))));

  app.get(`${base}/usage`, async (c) => {
    const q = UsageParams.parse(c.req.query());
    if (q.account_id !== undefined && !AccountId.test(q.account_id)) throw new BordeError("InvalidInput", "Invalid input: account_id: malformed account id");
    return ok(c, await usageReport(deps, q, q.account_id));
  });

  app.get(`${base}/audit`, (c) => {
    const limit = z.coerce.number().int().min(1).max(10_000).default(100).parse(c.req.query("limit"));
    return ok(c, deps.accounts.audit(limit));
  });
}
