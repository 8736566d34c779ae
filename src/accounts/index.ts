import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * The auth seam. The API asks an Authenticator who a bearer token belongs to; today the dev node
 * has one account and one token, later the accounts module (scopes, limits, budgets) plugs in here.
 */
export interface Principal {
  accountId: string;
  tokenId: string;
  scopes: readonly string[];
}

export interface Authenticator {
  /** Returns the token's principal, or null for an unknown token. Must not leak timing. */
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

/** One account, one token: what `borde dev` needs. Compares digests so every comparison takes the same time. */
export function createDevAuthenticator(creds: DevCredentials): Authenticator {
  const expected = digest(creds.token);
  const principal: Principal = Object.freeze({ accountId: creds.accountId, tokenId: "dev", scopes: Object.freeze(["ai:run", "admin"]) });
  return {
    async authenticate(token: string) {
      return timingSafeEqual(digest(token), expected) ? principal : null;
    },
  };
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}
