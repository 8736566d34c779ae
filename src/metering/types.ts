import type { Task } from "../catalog/types.js";

/** What a request's input and output are counted in, per task. */
export type Unit = "tokens" | "images" | "audio_seconds" | "characters";

/**
 * One answered request, as billed. (accountId, requestId) is the idempotency key everywhere (SQLite
 * ledger, outbox, JetStream message id `<account>/<request>`, PostgreSQL primary key): writing the
 * same record twice is a no-op.
 */
export interface UsageRecord {
  requestId: string;
  /** Epoch milliseconds when the answer was complete. */
  ts: number;
  /** UTC day of `ts`, `YYYY-MM-DD`: the day budgets and the free allocation count against. */
  day: string;
  accountId: string;
  tokenId: string;
  model: string;
  task: Task;
  /** The PoP (or single node) that took the request. */
  pop: string;
  /** `edge`: answered by the PoP that took it; `forwarded`: served elsewhere (core, another PoP, upstream). */
  served: "edge" | "forwarded";
  unit: Unit;
  inputUnits: number;
  outputUnits: number;
  neurons: number;
  /** Engine CPU time attributed to this request (its fair share while it ran beside others). */
  cpuMs: number;
  wallMs: number;
  bytesIn: number;
  bytesOut: number;
}

/** Where usage records go. Implementations must be idempotent on `requestId` and durable on return. */
export interface UsageWriter {
  /** Durably stores the record before returning; false when a record with that id already existed. */
  write(record: UsageRecord): boolean;
  /** True when (account, request id) is already recorded here: a reused id is refused, never run free. */
  has(accountId: string, requestId: string): boolean;
  /** Neurons this writer holds for `day`, per account and per token: restores budget counters at start-up. */
  dailyTotals(day: string): DailyTotals;
  close(): Promise<void>;
}

export interface DailyTotals {
  accounts: Map<string, number>;
  tokens: Map<string, number>;
}

export type UsageGroup = "day" | "model" | "account";

export interface UsageQuery {
  /** Only this account; all accounts when absent (admin). */
  accountId?: string;
  /** Inclusive UTC days, `YYYY-MM-DD`. */
  since: string;
  until: string;
  groupBy: readonly UsageGroup[];
}

export interface UsageRow {
  day?: string;
  model?: string;
  account_id?: string;
  requests: number;
  input_units: number;
  output_units: number;
  neurons: number;
  cpu_ms: number;
  bytes_in: number;
  bytes_out: number;
  edge_requests: number;
  forwarded_requests: number;
}

/** Reads the ledger for reports (`/ai/usage`, `borde usage`). */
export interface UsageReader {
  query(q: UsageQuery): Promise<UsageRow[]>;
  /** Every request id in the ledger between two days (tests, reconciliation). */
  requestIds(since: string, until: string): Promise<string[]>;
}

export function utcDay(ts: number): string {
  return new Date(ts).toISOString().slice(0, 10);
}

/** What the inference path measured for one call; the API adds bytes and commits it as a record. */
export interface UsageFacts {
  model: string;
  task: Task;
  unit: Unit;
  inputUnits: number;
  outputUnits: number;
  cpuMs: number;
  wallMs: number;
}
