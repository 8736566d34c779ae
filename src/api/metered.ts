import type { ServerResponse } from "node:http";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { placeHeaders, type ApiDeps, type Call, type Ctx } from "./context.js";
import type { Emit, Last } from "./stream.js";

/**
 * Answers a model call's JSON body. The usage record is written first and the bytes go out in the
 * same synchronous step (straight to the socket under Node), so a process killed at any moment has
 * either answered and recorded, or neither — the window between the two is a few microseconds.
 */
export function meteredJson(c: Ctx, deps: ApiDeps, call: Call, payload: unknown): Response {
  const body = JSON.stringify(payload);
  const bytes = Buffer.byteLength(body);
  deps.meter.commit(call.ctx, { bytesIn: c.get("bytesIn") ?? 0, bytesOut: bytes });
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  const place = placeHeaders(c, call.ctx);
  if (!outgoing) return c.body(body, 200, { "content-type": "application/json", ...place });
  outgoing.writeHead(200, { "content-type": "application/json", "content-length": bytes, "x-request-id": c.get("requestId"), ...place });
  outgoing.end(body);
  return RESPONSE_ALREADY_SENT;
}

/**
 * Counts the bytes a stream emits, and commits the usage record in the same synchronous step as
 * the stream's last events are written: a stream cut before its end is not billed, one that ended
 * is recorded before it ends.
 */
export function meteredStream(c: Ctx, deps: ApiDeps, call: Call, emit: Emit, last: Last): { emit: Emit; finish: (events: string[]) => void } {
  let bytes = 0;
  return {
    emit: (chunk) => {
      bytes += Buffer.byteLength(chunk);
      emit(chunk);
    },
    finish: (events) => {
      for (const e of events) bytes += Buffer.byteLength(e);
      last(events, () => deps.meter.commit(call.ctx, { bytesIn: c.get("bytesIn") ?? 0, bytesOut: bytes }));
    },
  };
}
