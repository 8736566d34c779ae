import { randomBytes } from "node:crypto";

/**
 * Accounts, API tokens, scopes, limits and budgets. The API asks an Authenticator who a bearer
 * token belongs to (the AccountStore is the one behind a node); the Limiter admits or refuses each
 * model call on the principal's limits.
 */
export { AccountStore, type AuditEntry, type NewAccount, type NewToken, type Replicated } from "./store.js";
export { Limiter, type LimiterOptions } from "./limits.js";
export * from "./types.js";
import type { Principal } from "./types.js";

export interface Authenticator {
  /** Returns the token's principal, or null for an unknown token; throws 401 for expired or revoked ones. Must not leak timing. */
  authenticate(token: string): Promise<Principal | null>;
}

export interface DevCredentials {
  accountId: string;
  token: string;
  /** True when generated at start-up (so `borde dev` prints them). */
  generated: boolean;
}

export function devCredentials(accountId?: string, token?: string): DevCredentials {
  return {
    accountId: accountId ?? randomBytes(16).toString("hex"),
    token: token ?? `borde_${randomBytes(24).toString("base64url")}`,
    generated: accountId === undefined || token === undefined,
  };
}
