import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { BordeError } from "../errors.js";
import type { Db } from "../util/sqlite.js";
import type { Account, AccountLimits, Actor, Plan, Principal, Scope, TokenInfo } from "./types.js";

/** API tokens: `bd_<16 hex id>_<43 base64url secret>`. The id finds the row; the secret is never stored. */
const TOKEN_RE = /^bd_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
/** Compared against when the token's id is unknown, so a miss costs what a hit costs. */
const DUMMY = digest("borde-no-such-token");

export interface NewAccount {
  name: string;
  plan?: Plan;
  dailyNeuronBudget?: number | null;
  limits?: AccountLimits | null;
}

export interface NewToken {
  accountId: string;
  name?: string;
  scopes: Scope[];
  models?: string[] | null;
  jurisdictions?: string[] | null;
  dailyNeuronBudget?: number | null;
  /** Epoch ms. */
  expiresAt?: number | null;
}

/** One replicated row (cluster mode): what `borde.config` carries between PoPs. */
export interface Replicated {
  table: "accounts" | "tokens";
  row: Record<string, unknown>;
}

export interface AuditEntry {
  id: number;
  at: string;
  actor_account: string;
  actor_token: string;
  action: string;
  target: string;
  ip: string | null;
  user_agent: string | null;
  request_id: string;
  details: unknown;
}

type AccountRow = { id: string; name: string; plan: Plan; daily_neuron_budget: number | null; limits: string | null; created_at: number };
type TokenRow = {
  id: string;
  account_id: string;
  name: string;
  hash: Buffer;
  scopes: string;
  models: string | null;
  jurisdictions: string | null;
  daily_neuron_budget: number | null;
  expires_at: number | null;
  created_at: number;
  revoked_at: number | null;
};

/**
 * Accounts, tokens and the audit log in the node's SQLite database. Every admin change and its
 * audit entry are written in one transaction: there is no change without its "who, what, when".
 */
export class AccountStore {
  private readonly q;

  constructor(private readonly db: Db) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS accounts (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, plan TEXT NOT NULL,
        daily_neuron_budget REAL, limits TEXT, created_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS tokens (
        id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,
        hash BLOB NOT NULL, scopes TEXT NOT NULL, models TEXT, jurisdictions TEXT,
        daily_neuron_budget REAL, expires_at INTEGER, created_at INTEGER NOT NULL, revoked_at INTEGER);
      CREATE INDEX IF NOT EXISTS tokens_account ON tokens (account_id);
      CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor_account TEXT NOT NULL,
        actor_token TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, ip TEXT,
        user_agent TEXT, request_id TEXT NOT NULL, details TEXT);`);
    this.q = {
      account: db.prepare("SELECT * FROM accounts WHERE id = ?"),
      accounts: db.prepare("SELECT * FROM accounts ORDER BY created_at, id"),
      insertAccount: db.prepare("INSERT INTO accounts (id, name, plan, daily_neuron_budget, limits, created_at) VALUES (?, ?, ?, ?, ?, ?)"),
      token: db.prepare("SELECT * FROM tokens WHERE id = ?"),
      // One look-up per authenticated request: the token with what the principal needs of its account.
      principal: db.prepare(
        "SELECT t.*, a.plan AS account_plan, a.daily_neuron_budget AS account_budget, a.limits AS account_limits FROM tokens t JOIN accounts a ON a.id = t.account_id WHERE t.id = ?",
      ),
      setPlan: db.prepare("UPDATE accounts SET plan = ? WHERE id = ?"),
      deleteToken: db.prepare("DELETE FROM tokens WHERE id = ?"),
      updateAccount: db.prepare("UPDATE accounts SET name = ?, plan = ?, daily_neuron_budget = ?, limits = ? WHERE id = ?"),
      tokens: db.prepare("SELECT * FROM tokens ORDER BY created_at, id"),
      tokensOf: db.prepare("SELECT * FROM tokens WHERE account_id = ? ORDER BY created_at, id"),
      insertToken: db.prepare(
        "INSERT INTO tokens (id, account_id, name, hash, scopes, models, jurisdictions, daily_neuron_budget, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      revoke: db.prepare("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"),
      audit: db.prepare(
        "INSERT INTO audit (at, actor_account, actor_token, action, target, ip, user_agent, request_id, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      auditList: db.prepare("SELECT * FROM audit ORDER BY id DESC LIMIT ?"),
      upsertAccount: db.prepare("INSERT OR REPLACE INTO accounts (id, name, plan, daily_neuron_budget, limits, created_at) VALUES (?, ?, ?, ?, ?, ?)"),
      upsertToken: db.prepare(
        "INSERT OR REPLACE INTO tokens (id, account_id, name, hash, scopes, models, jurisdictions, daily_neuron_budget, expires_at, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      ),
    };
  }

  /**
   * Makes sure the dev account and its token exist (`borde dev`): the token is the one given or
   * generated at start-up, so a restart with a new token replaces the old one.
   */
  ensureDev(accountId: string, token: string, plan: Plan): void {
    this.db.transaction(() => {
      const existing = this.q.account.get(accountId) as AccountRow | undefined;
      if (!existing) this.q.insertAccount.run(accountId, "dev", plan, null, null, Date.now());
      else if (existing.plan !== plan) this.q.setPlan.run(plan, accountId);
      const devTokenId = `dev-${accountId}`;
      this.q.deleteToken.run(devTokenId);
      this.q.insertToken.run(devTokenId, accountId, "dev", digest(token), JSON.stringify(["admin"]), null, null, null, null, Date.now());
      this.devTokenId = devTokenId;
    })();
  }

  private devTokenId: string | null = null;
  private replicate: ((change: Replicated) => void) | null = null;

  /**
   * Cluster mode: every account and token change made here is handed to `publish` (after its
   * transaction commits), and `applyReplica` takes the changes made on other PoPs.
   */
  onChange(publish: (change: Replicated) => void): void {
    this.replicate = publish;
  }

  private changed(table: Replicated["table"], id: string): void {
    if (!this.replicate) return;
    const row = (table === "accounts" ? this.q.account : this.q.token).get(id) as Record<string, unknown> | undefined;
    if (row) this.replicate({ table, row: table === "tokens" ? { ...row, hash: Buffer.from(row.hash as Buffer).toString("base64") } : row });
  }

  /**
   * A change made on another PoP: the row as it is there replaces ours (the replication log
   * orders changes per key, so the last one wins). The dev token is each node's own, never replicated.
   */
  applyReplica(change: Replicated): void {
    const r = change.row;
    if (change.table === "accounts") {
      this.q.upsertAccount.run(r.id, r.name, r.plan, r.daily_neuron_budget ?? null, r.limits ?? null, r.created_at);
    } else {
      if (typeof r.id === "string" && r.id.startsWith("dev-")) return;
      this.q.upsertToken.run(r.id, r.account_id, r.name, Buffer.from(String(r.hash), "base64"), r.scopes, r.models ?? null, r.jurisdictions ?? null, r.daily_neuron_budget ?? null, r.expires_at ?? null, r.created_at, r.revoked_at ?? null);
    }
  }

  /**
   * The token's principal, or null when no such token exists. Compares sha256 digests with
   * `timingSafeEqual`. Expired and revoked tokens are refused with a reason (their holder knows them).
   */
  authenticate(token: string, now = Date.now()): Principal | null {
    const m = TOKEN_RE.exec(token);
    // Tokens not in Borde's format can only be the dev token (any string the operator chose).
    const id = m ? m[1]! : this.devTokenId;
    const row = id ? (this.q.principal.get(id) as (TokenRow & { account_plan: Plan; account_budget: number | null; account_limits: string | null }) | undefined) : undefined;
    const match = timingSafeEqual(digest(token), row?.hash ?? DUMMY);
    if (!row || !match) return null;
    if (row.revoked_at !== null) throw new BordeError("Unauthorized", "Authentication error: this API token was revoked");
    if (row.expires_at !== null && row.expires_at <= now) throw new BordeError("Unauthorized", "Authentication error: this API token has expired");
    const t = parseTokenRow(row);
    return {
      accountId: row.account_id,
      tokenId: row.id,
      scopes: t.scopes,
      plan: row.account_plan,
      models: t.models,
      jurisdictions: t.jurisdictions,
      accountBudget: row.account_budget,
      tokenBudget: row.daily_neuron_budget,
      limits: row.account_limits ? (JSON.parse(row.account_limits) as AccountLimits) : null,
    };
  }

  createAccount(input: NewAccount, actor: Actor): Account {
    const id = randomBytes(16).toString("hex");
    const now = Date.now();
    this.db.transaction(() => {
      this.q.insertAccount.run(id, input.name, input.plan ?? "free", input.dailyNeuronBudget ?? null, input.limits ? JSON.stringify(input.limits) : null, now);
      this.recordAudit(actor, "account.create", id, { name: input.name, plan: input.plan ?? "free", daily_neuron_budget: input.dailyNeuronBudget ?? null, limits: input.limits ?? null });
    })();
    this.changed("accounts", id);
    return this.getAccount(id)!;
  }

  updateAccount(id: string, patch: Partial<NewAccount>, actor: Actor): Account {
    this.db.transaction(() => {
      const row = this.q.account.get(id) as AccountRow | undefined;
      if (!row) throw new BordeError("NoSuchResource", "No such account");
      this.q.updateAccount.run(
          patch.name ?? row.name,
          patch.plan ?? row.plan,
          patch.dailyNeuronBudget === undefined ? row.daily_neuron_budget : patch.dailyNeuronBudget,
          patch.limits === undefined ? row.limits : patch.limits ? JSON.stringify(patch.limits) : null,
          id,
        );
      this.recordAudit(actor, "account.update", id, patch);
    })();
    this.changed("accounts", id);
    return this.getAccount(id)!;
  }

  getAccount(id: string): Account | null {
    const row = this.q.account.get(id) as AccountRow | undefined;
    return row ? toAccount(row) : null;
  }

  listAccounts(): Account[] {
    return (this.q.accounts.all() as AccountRow[]).map(toAccount);
  }

  /** Creates a token; its secret is in the answer and nowhere else. */
  createToken(input: NewToken, actor: Actor): { token: string; info: TokenInfo } {
    const id = randomBytes(8).toString("hex");
    const token = `bd_${id}_${randomBytes(32).toString("base64url")}`;
    const now = Date.now();
    this.db.transaction(() => {
      if (!this.q.account.get(input.accountId)) throw new BordeError("NoSuchResource", "No such account");
      this.q.insertToken.run(
        id,
        input.accountId,
        input.name ?? "",
        digest(token),
        JSON.stringify(input.scopes),
        input.models ? JSON.stringify(input.models) : null,
        input.jurisdictions ? JSON.stringify(input.jurisdictions) : null,
        input.dailyNeuronBudget ?? null,
        input.expiresAt ?? null,
        now,
      );
      this.recordAudit(actor, "token.create", id, {
        account_id: input.accountId,
        scopes: input.scopes,
        models: input.models ?? null,
        jurisdictions: input.jurisdictions ?? null,
        expires_at: input.expiresAt ?? null,
      });
    })();
    this.changed("tokens", id);
    return { token, info: toTokenInfo(this.q.token.get(id) as TokenRow) };
  }

  revokeToken(id: string, actor: Actor): TokenInfo {
    this.db.transaction(() => {
      if (!this.q.token.get(id)) throw new BordeError("NoSuchResource", "No such token");
      this.q.revoke.run(Date.now(), id);
      this.recordAudit(actor, "token.revoke", id, null);
    })();
    this.changed("tokens", id);
    return toTokenInfo(this.q.token.get(id) as TokenRow);
  }

  listTokens(accountId?: string): TokenInfo[] {
    const rows = (accountId === undefined ? this.q.tokens.all() : this.q.tokensOf.all(accountId)) as TokenRow[];
    return rows.map((r) => toTokenInfo(r));
  }

  audit(limit = 100): AuditEntry[] {
    return (this.q.auditList.all(limit) as (Omit<AuditEntry, "at" | "details"> & { at: number; details: string | null })[]).map((r) => ({
      ...r,
      at: new Date(r.at).toISOString(),
      details: r.details === null ? null : (JSON.parse(r.details) as unknown),
    }));
  }

  /**
   * One audit entry. Called inside the change's own transaction — here, or by another store of
   * the same database (workers: deploy, rollback, secrets) — so both are written or neither.
   */
  recordAudit(actor: Actor, action: string, target: string, details: unknown): void {
    this.q.audit.run(Date.now(), actor.accountId, actor.tokenId, action, target, actor.ip, actor.userAgent, actor.requestId, details === null ? null : JSON.stringify(details));
  }
}

function toAccount(r: AccountRow): Account {
  return {
    id: r.id,
    name: r.name,
    plan: r.plan,
    daily_neuron_budget: r.daily_neuron_budget,
    limits: r.limits ? (JSON.parse(r.limits) as AccountLimits) : null,
    created_at: new Date(r.created_at).toISOString(),
  };
}

function toTokenInfo(r: TokenRow, now = Date.now()): TokenInfo {
  return {
    id: r.id,
    account_id: r.account_id,
    name: r.name,
    ...parseTokenRow(r),
    daily_neuron_budget: r.daily_neuron_budget,
    expires_at: r.expires_at === null ? null : new Date(r.expires_at).toISOString(),
    created_at: new Date(r.created_at).toISOString(),
    revoked_at: r.revoked_at === null ? null : new Date(r.revoked_at).toISOString(),
    status: r.revoked_at !== null ? "revoked" : r.expires_at !== null && r.expires_at <= now ? "expired" : "active",
  };
}

/** The JSON columns of a token row, read the one way both the principal and the listing need. */
function parseTokenRow(r: TokenRow): Pick<TokenInfo, "scopes" | "models" | "jurisdictions"> {
  return {
    scopes: JSON.parse(r.scopes) as Scope[],
    models: r.models ? (JSON.parse(r.models) as string[]) : null,
    jurisdictions: r.jurisdictions ? (JSON.parse(r.jurisdictions) as string[]) : null,
  };
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}
