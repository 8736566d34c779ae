/**
 * What PoPs say to each other over NATS.
 *
 * - `borde.hb` — heartbeats: every node says every `HEARTBEAT_MS` which PoP it is and which models
 *   it serves. A PoP not heard for `DEAD_AFTER_MS` is dead to placement.
 * - `borde.run.<pop>.<model token>` — model calls to one PoP, served by the queue group `<pop>` (so
 *   several nodes of one PoP share its load). One subject per model: a PoP subscribes only to what it
 *   serves, and NATS answers "no responders" at once for a model (or a PoP) that is not there —
 *   which is what makes a retry elsewhere safe and immediate.
 * - The reply subject (an inbox of the calling node) receives, in order: `ack` (the call is taken:
 *   from here on it is not retried elsewhere), `text` pieces (streams), `alive` ticks while it runs,
 *   then `done` or `error`. A call whose serving node goes quiet for `STALL_MS` failed with it.
 */
import type { ErrorName } from "../errors.js";
import type { Principal } from "../accounts/index.js";
import type { ModelCall } from "../inference/index.js";
import type { UsageFacts } from "../metering/types.js";
import type { EngineName } from "../engines/contract.js";
import type { Task } from "../tasks/types.js";

export const HEARTBEAT_SUBJECT = "borde.hb";
export const HEARTBEAT_MS = 500;
export const DEAD_AFTER_MS = 2000;
/** A taken call sends `alive` this often; silence for STALL_MS means its node is gone. */
export const ALIVE_MS = 250;
export const STALL_MS = 1500;
/** No `ack` within this long: the PoP is not taking calls (stuck, partitioned); try the next one. */
export const ACK_TIMEOUT_MS = 1000;

export function modelToken(model: string): string {
  // NATS subject tokens cannot hold '.', '*', '>' or spaces; model ids hold '.' and '/'.
  return Buffer.from(model).toString("base64url");
}

export function runSubject(pop: string, model: string): string {
  return `borde.run.${pop}.${modelToken(model)}`;
}

export interface Heartbeat {
  pop: string;
  node: string;
  jurisdiction: string;
  role: "edge" | "core";
  models: { id: string; task: Task; engine: EngineName }[];
  /** Calls running on this node now. */
  active: number;
}

export interface RemoteRequest {
  model: string;
  requestId: string;
  /** Who asked (the entry PoP authenticated them); the serving PoP needs it only for logs. */
  principal: Pick<Principal, "accountId" | "tokenId">;
  /** Epoch ms after which the answer is of no use. */
  deadline: number;
  /** Send `text` pieces as they come. */
  stream: boolean;
  call: ModelCall;
  /** The entry PoP, for logs and `borde-pop`. */
  from: string;
  /** Other places remain after this one: a PoP at capacity should refuse (and not queue) it. */
  mayRefuse: boolean;
}

export type Reply =
  | { t: "ack"; cancel: string }
  | { t: "text"; d: string }
  | { t: "alive" }
  | { t: "done"; result: unknown; input: number; output: number; cpuMs: number; servedBy: string; usage?: UsageFacts }
  | { t: "error"; kind: ErrorName; message: string; retryAfter?: number };

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * JSON that keeps byte and sample arrays (decoded images, audio) as base64 instead of number lists:
 * a 1 MP image is 3 MB of pixels, which as a JSON number list would be ~11 MB. The markers are keys
 * starting with `$`; a user's own keys starting with `$` (a tool schema's `$ref`) travel with one
 * more `$`, so user data can never pass for a marker.
 */
export function encode(value: unknown): Uint8Array {
  return enc.encode(
    JSON.stringify(value, (_k, v: unknown) => {
      if (v instanceof Float32Array) return { $f32: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") };
      if (v instanceof Uint8Array) return { $u8: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") };
      if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).some((k) => k.startsWith("$"))) {
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.startsWith("$") ? `$${k}` : k, x]));
      }
      return v;
    }),
  );
}

export function decode<T>(bytes: Uint8Array): T {
  return JSON.parse(dec.decode(bytes), (_k, v: unknown) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (typeof o.$u8 === "string") return new Uint8Array(Buffer.from(o.$u8, "base64"));
      if (typeof o.$f32 === "string") {
        const b = Buffer.from(o.$f32, "base64");
        if (b.byteLength % 4 !== 0) throw new Error("malformed sample array");
        return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
      }
      if (Object.keys(o).some((k) => k.startsWith("$$"))) return Object.fromEntries(Object.entries(o).map(([k, x]) => [k.startsWith("$$") ? k.slice(1) : k, x]));
    }
    return v;
  }) as T;
}
