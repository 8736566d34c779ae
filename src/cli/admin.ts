import { CLIENT_HELP, CLIENT_OPTIONS, parse, UsageError } from "./args.js";
import { accountOf, call, client, table } from "./client.js";

const ACCOUNTS_HELP = `Usage: borde accounts <create|list> [options]

  create NAME [--plan free|paid] [--daily-budget NEURONS]   prints the new account id
  list                                                     id, name, plan of every account

Options:
  --json           print the API's JSON instead
${CLIENT_HELP}
  -h, --help

Needs a token with the admin scope (the dev token has it).`;

const TOKENS_HELP = `Usage: borde tokens <create|list|revoke> [options]

  create --account ID --scopes ai:run[,usage:read,workers:deploy,admin]
         [--models ID[,ID*...]] [--jurisdictions eu[,...]] [--expires 30d|12h|ISO-TIME]
         [--daily-budget NEURONS] [--name NAME]            prints the new token (shown only once)
  list [--account ID]                                      tokens with their status, never their secrets
  revoke TOKEN_ID                                          the token stops working at once

Options:
  --json           print the API's JSON instead
${CLIENT_HELP}
  -h, --help

Needs a token with the admin scope (the dev token has it).`;

const USAGE_HELP = `Usage: borde usage [options]

Usage and cost by day, model and account, from the node's ledger.

Options:
  --since DAY        first day, YYYY-MM-DD (default 30 days before --until)
  --until DAY        last day (default today, UTC)
  --by LIST          grouping: day,model,account (default day,model)
  --account ID       another account's usage (admin tokens), or --all for every account
  --all              every account (admin tokens)
  --json             print the API's JSON instead
${CLIENT_HELP}
  -h, --help`;

function positiveNumber(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

function list(v: string | undefined): string[] | undefined {
  return v === undefined ? undefined : v.split(",").map((s) => s.trim()).filter(Boolean);
}

/** `30d`, `12h`, `45m` from now, or an ISO time; sent as ISO. */
export function parseExpires(v: string, now = Date.now()): string {
  const m = /^(\d{1,6})([dhm])$/.exec(v);
  if (m) return new Date(now + Number(m[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[m[2] as "d" | "h" | "m"]).toISOString();
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new UsageError(`--expires must be like 30d, 12h, 45m or an ISO time, got ${JSON.stringify(v)}`);
  return new Date(t).toISOString();
}

export async function accountsCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h") {
    console.log(ACCOUNTS_HELP);
    return sub === undefined ? 2 : 0;
  }
  const { values, positionals } = parse(rest, { ...CLIENT_OPTIONS, plan: { type: "string" }, "daily-budget": { type: "string" }, json: { type: "boolean" } });
  if (values.help) {
    console.log(ACCOUNTS_HELP);
    return 0;
  }
  const c = client(values);
  switch (sub) {
    case "create": {
      if (positionals.length !== 1) throw new UsageError("expected exactly one account name, e.g. `borde accounts create acme --plan paid`");
      if (values.plan !== undefined && values.plan !== "free" && values.plan !== "paid") throw new UsageError("--plan must be free or paid");
      const a = (await call(c, "POST", "/client/v4/admin/accounts", {
        name: positionals[0],
        plan: values.plan,
        daily_neuron_budget: positiveNumber(values["daily-budget"], "daily-budget"),
      })) as { id: string };
      console.log(values.json ? JSON.stringify(a, null, 2) : a.id);
      return 0;
    }
    case "list": {
      const accounts = (await call(c, "GET", "/client/v4/admin/accounts")) as { id: string; name: string; plan: string; daily_neuron_budget: number | null }[];
      if (values.json) console.log(JSON.stringify(accounts, null, 2));
      else table(["ID", "NAME", "PLAN", "DAILY BUDGET"], accounts.map((a) => [a.id, a.name, a.plan, a.daily_neuron_budget === null ? "-" : String(a.daily_neuron_budget)]));
      return 0;
    }
    default:
      throw new UsageError(`unknown subcommand "accounts ${sub}"; run \`borde accounts --help\``);
  }
}

export async function tokensCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h") {
    console.log(TOKENS_HELP);
    return sub === undefined ? 2 : 0;
  }
  const { values, positionals } = parse(rest, {
    ...CLIENT_OPTIONS,
    account: { type: "string" },
    scopes: { type: "string" },
    models: { type: "string" },
    jurisdictions: { type: "string" },
    expires: { type: "string" },
    "daily-budget": { type: "string" },
    name: { type: "string" },
    json: { type: "boolean" },
  });
  if (values.help) {
    console.log(TOKENS_HELP);
    return 0;
  }
  const c = client(values);
  switch (sub) {
    case "create": {
      if (!values.account) throw new UsageError("--account ID is required");
      if (!values.scopes) throw new UsageError("--scopes is required, e.g. --scopes ai:run");
      const t = (await call(c, "POST", "/client/v4/admin/tokens", {
        account_id: values.account,
        name: values.name,
        scopes: list(values.scopes),
        models: list(values.models),
        jurisdictions: list(values.jurisdictions),
        expires_at: values.expires === undefined ? undefined : parseExpires(values.expires),
        daily_neuron_budget: positiveNumber(values["daily-budget"], "daily-budget"),
      })) as { token: string };
      console.log(values.json ? JSON.stringify(t, null, 2) : t.token);
      return 0;
    }
    case "list": {
      const q = values.account ? `?account_id=${encodeURIComponent(values.account)}` : "";
      const tokens = (await call(c, "GET", `/client/v4/admin/tokens${q}`)) as { id: string; account_id: string; scopes: string[]; status: string; expires_at: string | null; name: string }[];
      if (values.json) console.log(JSON.stringify(tokens, null, 2));
      else table(["ID", "ACCOUNT", "SCOPES", "STATUS", "EXPIRES", "NAME"], tokens.map((t) => [t.id, t.account_id, t.scopes.join(","), t.status, t.expires_at ?? "-", t.name]));
      return 0;
    }
    case "revoke": {
      if (positionals.length !== 1) throw new UsageError("expected exactly one token id (from `borde tokens list`)");
      const t = await call(c, "DELETE", `/client/v4/admin/tokens/${encodeURIComponent(positionals[0]!)}`);
      console.log(values.json ? JSON.stringify(t, null, 2) : `revoked ${positionals[0]}`);
      return 0;
    }
    default:
      throw new UsageError(`unknown subcommand "tokens ${sub}"; run \`borde tokens --help\``);
  }
}

interface Report {
  since: string;
  until: string;
  price_per_1000_neurons: number;
  rows: { day?: string; model?: string; account_id?: string; requests: number; input_units: number; output_units: number; neurons: number; cost_usd: number }[];
  totals: { requests: number; neurons: number; cost_usd: number };
}

export async function usageCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...CLIENT_OPTIONS,
    since: { type: "string" },
    until: { type: "string" },
    by: { type: "string" },
    account: { type: "string" },
    all: { type: "boolean" },
    json: { type: "boolean" },
  });
  if (values.help) {
    console.log(USAGE_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}; run \`borde usage --help\``);
  const c = client(values);
  const q = new URLSearchParams();
  if (values.since) q.set("since", values.since);
  if (values.until) q.set("until", values.until);
  if (values.by) q.set("group_by", values.by);
  let pathname: string;
  if (values.all || values.account) {
    if (values.account) q.set("account_id", values.account);
    pathname = `/client/v4/admin/usage?${q}`;
  } else {
    pathname = `/client/v4/accounts/${encodeURIComponent(await accountOf(c))}/ai/usage?${q}`;
  }
  const r = (await call(c, "GET", pathname)) as Report;
  if (values.json) {
    console.log(JSON.stringify(r, null, 2));
    return 0;
  }
  const groups = (["day", "model", "account_id"] as const).filter((g) => r.rows.some((row) => row[g] !== undefined));
  table(
    [...groups.map((g) => (g === "account_id" ? "ACCOUNT" : g.toUpperCase())), "REQUESTS", "IN", "OUT", "NEURONS", "COST USD"],
    [
      ...r.rows.map((row) => [
        ...groups.map((g) => String(row[g])),
        String(row.requests),
        String(Math.round(row.input_units)),
        String(Math.round(row.output_units)),
        row.neurons.toFixed(2),
        row.cost_usd.toFixed(6),
      ]),
      [...groups.map((_, i) => (i === 0 ? "TOTAL" : "")), String(r.totals.requests), "", "", r.totals.neurons.toFixed(2), r.totals.cost_usd.toFixed(6)],
    ],
  );
  return 0;
}
