/** What a token may do. `admin` includes every other scope. */
export const SCOPES = ["ai:run", "workers:deploy", "usage:read", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

export const PLANS = ["free", "paid"] as const;
export type Plan = (typeof PLANS)[number];

/** Per-account overrides of the node's limits (absent keys: the node's defaults). */
export interface AccountLimits {
  /** Requests per minute per task. */
  rate_limits?: Record<string, number>;
  tokens_per_minute?: number;
  max_concurrent?: number;
  /** Data residency: this account's calls are served only in this jurisdiction (cluster mode). */
  jurisdiction?: string;
}

export interface Account {
  id: string;
  name: string;
  plan: Plan;
  daily_neuron_budget: number | null;
  limits: AccountLimits | null;
  created_at: string;
}

/** A token as listed: never its secret, which exists only in the create answer. */
export interface TokenInfo {
  id: string;
  account_id: string;
  name: string;
  scopes: Scope[];
  models: string[] | null;
  jurisdictions: string[] | null;
  daily_neuron_budget: number | null;
  expires_at: string | null;
  created_at: string;
  revoked_at: string | null;
  status: "active" | "expired" | "revoked";
}

/** Who is calling, as the API and the inference path see it. */
export interface Principal {
  accountId: string;
  tokenId: string;
  scopes: readonly Scope[];
  plan: Plan;
  /** Model ids this token may run (an entry ending in `*` is a prefix); null = any. */
  models: readonly string[] | null;
  /** Jurisdictions this token may be served in; null = any. */
  jurisdictions: readonly string[] | null;
  accountBudget: number | null;
  tokenBudget: number | null;
  limits: AccountLimits | null;
}

export function hasScope(p: Principal, scope: Scope): boolean {
  return p.scopes.includes(scope) || p.scopes.includes("admin");
}

export function allowsModel(p: Principal, model: string): boolean {
  return p.models === null || p.models.some((m) => (m.endsWith("*") ? model.startsWith(m.slice(0, -1)) : m === model));
}

/** Who did an admin action, from where: the audit log's "who" and "from where". */
export interface Actor {
  accountId: string;
  tokenId: string;
  ip: string | null;
  userAgent: string | null;
  requestId: string;
}
