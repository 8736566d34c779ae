import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { BordeError, ERRORS, type ErrorName } from "../errors.js";
import { ACK_TIMEOUT_MS, ALIVE_MS, decode, encode, runSubject, STALL_MS, type RemoteRequest, type Reply } from "./protocol.js";

/**
 * One wildcard subscription per connection for every reply inbox (and every cancel subject): a
 * subscription per call would cost a SUB and an UNSUB each, and its interest would have to reach
 * the gateways before the first reply could travel.
 */
class Inboxes {
  private static readonly byConnection = new WeakMap<NatsConnection, Inboxes>();
  private readonly prefix = createInbox();
  private readonly handlers = new Map<string, (msg: Msg) => void>();
  private next = 0;

  static of(nc: NatsConnection): Inboxes {
    let m = Inboxes.byConnection.get(nc);
    if (!m) Inboxes.byConnection.set(nc, (m = new Inboxes(nc)));
    return m;
  }

  private constructor(nc: NatsConnection) {
    nc.subscribe(`${this.prefix}.*`, {
      callback: (err, msg) => {
        if (err) return;
        this.handlers.get(msg.subject.slice(this.prefix.length + 1))?.(msg);
      },
    });
  }

  open(handler: (msg: Msg) => void): { subject: string; close(): void } {
    const token = (this.next++).toString(36);
    this.handlers.set(token, handler);
    return { subject: `${this.prefix}.${token}`, close: () => this.handlers.delete(token) };
  }
}

/** The call was not taken by that PoP (no responders, no ack, no capacity): safe to try another. */
export class NotTaken extends Error {
  constructor(
    readonly pop: string,
    reason: string,
  ) {
    super(`${pop}: ${reason}`);
    this.name = "NotTaken";
  }
}

export interface RemoteDone {
  result: unknown;
  input: number;
  output: number;
  cpuMs: number;
  servedBy: string;
}

/**
 * Sends one call to one PoP and follows it to its end. Rejects with `NotTaken` when the PoP did
 * not take it (the caller tries the next place), or with a BordeError once it had taken it — a
 * taken call is never run twice; when its PoP dies the call fails within STALL_MS, never hangs.
 */
export function callPop(nc: NatsConnection, pop: string, req: RemoteRequest, o: { signal: AbortSignal; onText?: (text: string) => void }): Promise<RemoteDone> {
  if (o.signal.aborted) return Promise.reject(o.signal.reason);
  return new Promise<RemoteDone>((resolve, reject) => {
    let cancelSubject: string | null = null;
    let timer: NodeJS.Timeout | null = null;
    let settled = false;
    const cancel = () => {
      if (!cancelSubject) return;
      try {
        nc.publish(cancelSubject);
      } catch {
        // Connection closed: the serving PoP's deadline ends it.
      }
    };
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      o.signal.removeEventListener("abort", onAbort);
      // Given up on (abort, stall) after the PoP took it: tell the PoP to stop.
      cancel();
      // Not taken yet: the inbox stays open a while, so that an ack arriving late (a slow link, a
      // blocked event loop) is answered with a cancel — the call is running elsewhere by then.
      if (cancelSubject) inbox.close();
      else {
        lateAck = true;
        setTimeout(() => inbox.close(), LATE_ACK_MS).unref();
      }
      fn();
    };
    let lateAck = false;
    const arm = (ms: number, onFire: () => void) => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(onFire, ms);
    };
    const onAbort = () => finish(() => reject(o.signal.reason));
    const inbox = Inboxes.of(nc).open((msg) => {
        if (lateAck) {
          const late = safeDecode(msg.data);
          if (late?.t === "ack") {
            cancelSubject = late.cancel;
            cancel();
            inbox.close();
          }
          return;
        }
        if (msg.data.length === 0 && msg.headers?.code === 503) return finish(() => reject(new NotTaken(pop, "no node serves the model there")));
        const reply = safeDecode(msg.data);
        if (!reply) return finish(() => reject(new BordeError("PopFailed", `PoP ${pop} sent a malformed reply`)));
        if (reply.t === "ack") cancelSubject = reply.cancel;
        else if (reply.t === "text") o.onText?.(reply.d);
        else if (reply.t === "done") return finish(() => resolve({ result: reply.result, input: reply.input, output: reply.output, cpuMs: reply.cpuMs, servedBy: reply.servedBy }));
        else if (reply.t === "error") {
          // Refused for capacity before it ran: another place may well have room.
          if (reply.kind === "OutOfCapacity") return finish(() => reject(new NotTaken(pop, reply.message)));
          const kind: ErrorName = reply.kind in ERRORS ? reply.kind : "Internal";
          return finish(() => reject(new BordeError(kind, reply.message, reply.retryAfter ? { retryAfter: reply.retryAfter } : undefined)));
        }
        if (!cancelSubject) return; // pieces before the ack cannot happen; ignore rather than trust them
        arm(STALL_MS, () => finish(() => reject(new BordeError("PopFailed", `PoP ${pop} stopped answering while serving the request (no word for ${STALL_MS} ms)`))));
    });
    o.signal.addEventListener("abort", onAbort, { once: true });
    arm(ACK_TIMEOUT_MS, () => finish(() => reject(new NotTaken(pop, `did not take the call within ${ACK_TIMEOUT_MS} ms`))));
    try {
      nc.publish(runSubject(pop, req.model), encode(req), { reply: inbox.subject });
    } catch (e) {
      // Payload over the server's max_payload, or the connection is closed.
      finish(() => reject(e instanceof Error && /payload/i.test(e.message) ? new BordeError("RequestTooLarge", "Request is too large to forward to another PoP") : new NotTaken(pop, String(e))));
    }
  });
}

/** How long a call given up before its ack keeps listening for a late ack (to cancel it). */
const LATE_ACK_MS = 30_000;

function safeDecode(data: Uint8Array): Reply | null {
  try {
    return decode<Reply>(data);
  } catch {
    return null;
  }
}

export type CallHandler = (req: RemoteRequest, o: { signal: AbortSignal; onText?: (text: string) => void; mayRefuse: boolean }) => Promise<{ result: unknown; input: number; output: number; cpuMs: number }>;

/**
 * Serves calls for one model of this PoP: queue group `<pop>`, so the PoP's nodes share them.
 * Acks at once, ticks `alive` while running, streams text when asked, and stops when the caller
 * cancels or the deadline passes.
 */
export function serveModel(nc: NatsConnection, pop: string, model: string, servedBy: string, handle: CallHandler): Subscription {
  return nc.subscribe(runSubject(pop, model), {
    queue: pop,
    callback: (err, msg) => {
      if (err || !msg.reply) return;
      const replyTo = msg.reply;
      const send = (r: Reply): boolean => {
        try {
          nc.publish(replyTo, encode(r));
          return true;
        } catch {
          // Connection closing (the caller notices the silence), or over max_payload (below).
          return false;
        }
      };
      let req: RemoteRequest;
      try {
        req = decode<RemoteRequest>(msg.data);
      } catch {
        send({ t: "error", kind: "InvalidInput", message: "Malformed forwarded call" });
        return;
      }
      const controller = new AbortController();
      const cancel = Inboxes.of(nc).open(() => controller.abort(new BordeError("Aborted", "The entry PoP cancelled the call")));
      const left = req.deadline - Date.now();
      const deadline = setTimeout(() => controller.abort(new BordeError("Timeout", "Request timeout")), Math.max(0, left));
      send({ t: "ack", cancel: cancel.subject });
      const alive = setInterval(() => send({ t: "alive" }), ALIVE_MS);
      handle(req, { signal: controller.signal, onText: req.stream ? (d) => send({ t: "text", d }) : undefined, mayRefuse: req.mayRefuse })
        .then(
          (r) => {
            if (!send({ t: "done", ...r, servedBy })) send({ t: "error", kind: "Internal", message: "The answer could not be sent back from the serving PoP (too large to forward?)" });
          },
          (e: unknown) => {
            const b = e instanceof BordeError ? e : null;
            send({ t: "error", kind: b?.kind ?? "Internal", message: b?.message ?? "Internal error on the serving PoP", retryAfter: b?.retryAfter });
          },
        )
        .finally(() => {
          clearInterval(alive);
          clearTimeout(deadline);
          cancel.close();
        });
    },
  });
}
