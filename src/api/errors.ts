import type { Context } from "hono";
import { ZodError } from "zod";
import { BordeError } from "../errors.js";
import type { Logger } from "../observability/index.js";

/** Which envelope a route answers errors in. */
export type Flavor = "workers-ai" | "openai";

const OPENAI_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  408: "timeout_error",
  413: "invalid_request_error",
  429: "rate_limit_error",
};

/** Turns anything thrown into a BordeError; unknown errors become a generic 500 (the cause is logged, never sent). */
export function toBordeError(e: unknown): BordeError {
  if (e instanceof BordeError) return e;
  if (e instanceof ZodError) return new BordeError("InvalidInput", formatZod(e));
  return new BordeError("Internal", undefined, { cause: e });
}

export function formatZod(e: ZodError): string {
  const issue = e.issues[0];
  if (!issue) return "Invalid input";
  const where = issue.path.length ? issue.path.join(".") : "body";
  return `Invalid input: ${where}: ${issue.message}${e.issues.length > 1 ? ` (and ${e.issues.length - 1} more)` : ""}`;
}

export function errorBody(err: BordeError, flavor: Flavor): Record<string, unknown> {
  const body: Record<string, unknown> = { result: null, success: false, errors: [{ code: err.code, message: err.message }], messages: [] };
  // The OpenAI SDK reads `error.message`; keeping both shapes lets either SDK report the cause.
  if (flavor === "openai") body.error = { message: err.message, type: OPENAI_TYPES[err.status] ?? "server_error", code: err.code, param: null };
  return body;
}

/** The one place errors become HTTP responses. */
export function errorResponse(c: Context, e: unknown, flavor: Flavor, log: Logger): Response {
  const err = toBordeError(e);
  if (err.isUserError) log.info({ code: err.code, reason: err.message }, "request refused");
  else log.error({ code: err.code, err: err.cause ?? err }, "request failed");
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (err.retryAfter !== undefined) headers["retry-after"] = String(Math.max(1, Math.ceil(err.retryAfter)));
  // The client may still be uploading the rest of an oversized body: close the connection so it is
  // not reused mid-upload (the next request on it would fail with "other side closed").
  if (err.kind === "RequestTooLarge") headers.connection = "close";
  return c.body(JSON.stringify(errorBody(err, flavor)), err.status as 400, headers);
}
