import type { z } from "zod";
import type { Actor } from "../accounts/index.js";
import { BordeError } from "../errors.js";
import { readJsonBody } from "./body.js";
import type { ApiDeps, Ctx } from "./context.js";

/** Cloudflare's success envelope, as every management route answers. */
export function ok(c: Ctx, result: unknown): Response {
  return c.json({ result, success: true, errors: [], messages: [] });
}

/** Who is calling and from where: the audit log's actor for an admin or deploy action. */
export function actor(c: Ctx): Actor {
  const p = c.get("principal");
  const incoming = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming;
  return {
    accountId: p.accountId,
    tokenId: p.tokenId,
    ip: incoming?.socket?.remoteAddress ?? null,
    userAgent: c.req.header("user-agent")?.slice(0, 256) ?? null,
    requestId: c.get("requestId"),
  };
}

/** A management route's JSON body, read within `limit` bytes (never above the node's own limit) and validated. */
export async function parseBody<T extends z.ZodType>(c: Ctx, deps: ApiDeps, schema: T, limit: number): Promise<z.output<T>> {
  return schema.parse(await readJsonBody(c.req.raw, Math.min(deps.config.maxBodyBytes, limit)));
}

/** An id from the URL: anything malformed is as unknown as an id that does not exist. */
export function idParam(c: Ctx, name: string, pattern: RegExp, what: string): string {
  const id = c.req.param(name) ?? "";
  if (!pattern.test(id)) throw new BordeError("NoSuchResource", `No such ${what}`);
  return id;
}
