import type { ServerResponse } from "node:http";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import type { Context } from "hono";
import { BordeError } from "../errors.js";
import { placeHeaders, type Call, type Ctx } from "./context.js";
import { errorBody, toBordeError, type Flavor } from "./errors.js";
import { SSE_HEADERS, sseData } from "./sse.js";

/** Longest an event waits to share a socket write with the next ones. */
const FLUSH_MS = 2;

export interface StreamHooks {
  onCancel: () => void;
  onError: (e: unknown, emit: Emit) => void;
  onEnd?: () => void;
  /** Headers decided while the call ran (where it was served), read when the stream starts. */
  headers?: () => Record<string, string>;
}

/** The hooks every generation stream uses: cancel on disconnect, an error event in the route's envelope, release the call. */
export function streamHooks(c: Ctx, call: Call, flavor: Flavor): StreamHooks {
  return {
    onCancel: () => call.controller.abort(new BordeError("Aborted", "Client closed the stream")),
    onError: (e, emit) => {
      const err = toBordeError(e);
      c.get("log").warn({ code: err.code, reason: err.message }, "stream ended by error");
      emit(sseData(errorBody(err, flavor)));
    },
    onEnd: call.done,
    headers: () => placeHeaders(c, call.ctx),
  };
}

/**
 * Answers with an event stream produced by `run`. An error before the first chunk is thrown (so it
 * becomes a proper error response). Under Node, chunks are written straight to the socket: going
 * through a web ReadableStream and the adapter's reader loop cost ~70 µs of main-thread time per
 * token, and on one engine thread that time is serial with decoding (measured in bench/).
 */
export async function respondWithStream(c: Context, requestId: string, run: (emit: Emit, last: Last) => Promise<void>, hooks: StreamHooks): Promise<Response> {
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  if (!outgoing) {
    const started = await startStream(run, hooks);
    if (!started.ok) throw started.error;
    return c.body(started.stream, 200, { ...SSE_HEADERS, ...hooks.headers?.() });
  }
  return new Promise<Response>((resolve, reject) => {
    let committed = false;
    let closed = false;
    const onClose = () => {
      if (!closed) {
        closed = true;
        hooks.onCancel();
      }
    };
    outgoing.once("close", onClose);
    const commit = () => {
      committed = true;
      outgoing.writeHead(200, { ...SSE_HEADERS, "x-request-id": requestId, ...hooks.headers?.() });
      // The adapter's marker for "the handler wrote the response itself". It must be this very object:
      // a Response built after the adapter replaced the global class takes a fast path that ignores it.
      resolve(RESPONSE_ALREADY_SENT);
    };
    // Events after the first are coalesced for up to FLUSH_MS into one socket write: on a fast model
    // a write (and a client wake-up) per token costs more than the token; the bytes are unchanged.
    let pending = "";
    let flushTimer: NodeJS.Timeout | null = null;
    const flush = () => {
      flushTimer = null;
      if (pending && !closed) outgoing.write(pending);
      pending = "";
    };
    const emit: Emit = (chunk) => {
      if (closed) return;
      if (!committed) {
        commit();
        outgoing.write(chunk);
        return;
      }
      pending += chunk;
      flushTimer ??= setTimeout(flush, FLUSH_MS);
    };
    // The stream's last events: `before` (the usage record) and the socket write happen in one
    // synchronous step, with whatever was still coalescing, so no kill can fall between them.
    const last: Last = (chunks, before) => {
      if (closed) return;
      if (!committed) commit();
      if (flushTimer) {
        clearTimeout(flushTimer);
        flushTimer = null;
      }
      const data = pending + chunks.join("");
      pending = "";
      before();
      outgoing.write(data);
    };
    const finish = () => {
      outgoing.off("close", onClose);
      if (flushTimer) {
        clearTimeout(flushTimer);
        flush();
      }
      if (!closed) {
        closed = true;
        outgoing.end();
      }
      hooks.onEnd?.();
    };
    run(emit, last).then(
      () => {
        if (!committed) {
          if (closed) {
            // The client left before anything was sent: settle the handler all the same.
            outgoing.off("close", onClose);
            hooks.onEnd?.();
            reject(new BordeError("Aborted", "Request was aborted by the client"));
            return;
          }
          commit();
        }
        finish();
      },
      (e) => {
        if (!committed) {
          outgoing.off("close", onClose);
          closed = true;
          hooks.onEnd?.();
          reject(e);
          return;
        }
        if (!closed) hooks.onError(e, emit);
        finish();
      },
    );
  });
}

/**
 * Runs a generation that emits chunks, and decides the HTTP answer at the last possible moment:
 * an error before the first chunk (unknown model, full queue, deadline while queued) still gets its
 * proper status; after that the response is committed as a 200 event stream.
 */
export type Emit = (chunk: string) => void;
/** Sends the stream's final chunks, calling `before` right before they are written (nothing when the client left). */
export type Last = (chunks: string[], before: () => void) => void;

type Started = { ok: true; stream: ReadableStream<Uint8Array> } | { ok: false; error: unknown };

function startStream(run: (emit: Emit, last: Last) => Promise<void>, opts: StreamHooks): Promise<Started> {
  return new Promise<Started>((resolveStart) => {
    let controller: ReadableStreamDefaultController<Uint8Array> | null = null;
    const pending: Uint8Array[] = [];
    let committed = false;
    let closed = false;

    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
        for (const p of pending.splice(0)) c.enqueue(p);
      },
      cancel() {
        closed = true;
        opts.onCancel();
      },
    });

    const encoder = new TextEncoder();
    const emit: Emit = (text) => {
      if (closed) return;
      if (!committed) {
        committed = true;
        resolveStart({ ok: true, stream });
      }
      const chunk = encoder.encode(text);
      if (controller) controller.enqueue(chunk);
      else pending.push(chunk);
    };

    const last: Last = (chunks, before) => {
      if (closed) return;
      before();
      for (const chunk of chunks) emit(chunk);
    };

    run(emit, last).then(
      () => {
        if (!committed) {
          committed = true;
          resolveStart({ ok: true, stream });
        }
        if (!closed) {
          closed = true;
          controller?.close();
        }
        opts.onEnd?.();
      },
      (e) => {
        if (!committed) {
          committed = true;
          closed = true;
          resolveStart({ ok: false, error: e });
        } else if (!closed) {
          opts.onError(e, emit);
          closed = true;
          controller?.close();
        }
        opts.onEnd?.();
      },
    );
  });
}
