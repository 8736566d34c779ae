import type { Hono } from "hono";
import { z } from "zod";
import { BordeError } from "../errors.js";
import { utcDay, type UsageGroup } from "../metering/types.js";
import { ok } from "./respond.js";
import type { ApiDeps, Env } from "./context.js";

const Day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, "days are YYYY-MM-DD")
  // The shape alone lets 2024-13-45 through; a real day reads back as itself.
  .refine((d) => {
    const t = Date.parse(`${d}T00:00:00Z`);
    return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === d;
  }, "no such day");
const GROUPS = ["day", "model", "account"] as const;

export const UsageParams = z.object({
  since: Day.optional(),
  until: Day.optional(),
  group_by: z
    .string()
    .max(64)
    .transform((s) => s.split(",").map((x) => x.trim()).filter(Boolean))
    .pipe(z.array(z.enum(GROUPS)).max(3))
    .optional(),
  account_id: z.string().max(64).optional(),
});

/** Usage by day, model and/or account with its cost, from the ledger this node reads. */
export async function usageReport(deps: ApiDeps, q: z.output<typeof UsageParams>, accountId: string | undefined) {
  if (!deps.usage) throw new BordeError("NotFound", "This node keeps no ledger: usage is reported by the core (set BORDE_POSTGRES_URL)");
  const until = q.until ?? utcDay(Date.now());
  const since = q.since ?? utcDay(Date.parse(`${until}T00:00:00Z`) - 30 * 86_400_000);
  if (since > until) throw new BordeError("InvalidInput", "Invalid input: since is after until");
  const groupBy: UsageGroup[] = q.group_by ?? ["day", "model"];
  const rows = await deps.usage.query({ accountId, since, until, groupBy });
  const price = deps.config.pricePer1000Neurons;
  const cost = (neurons: number) => Math.round((neurons / 1000) * price * 1e6) / 1e6;
  const totals = rows.reduce((t, r) => ({ requests: t.requests + r.requests, neurons: t.neurons + r.neurons }), { requests: 0, neurons: 0 });
  return {
    since,
    until,
    group_by: groupBy,
    price_per_1000_neurons: price,
    free_neurons_per_day: deps.config.freeNeurons,
    rows: rows.map((r) => ({ ...r, neurons: round(r.neurons), cost_usd: cost(r.neurons) })),
    totals: { requests: totals.requests, neurons: round(totals.neurons), cost_usd: cost(totals.neurons) },
  };
}

function round(n: number): number {
  return Math.round(n * 1e4) / 1e4;
}

/** GET /client/v4/accounts/{id}/ai/usage: the token's own account (scope usage:read). */
export function registerUsage(app: Hono<Env>, deps: ApiDeps): void {
  app.get("/client/v4/accounts/:account/ai/usage", async (c) => {
    const q = UsageParams.parse(c.req.query());
    return ok(c, await usageReport(deps, q, c.get("principal").accountId));
  });
}
