import type { UsageRecord } from "./types.js";

/**
 * A usage record's columns, in order, once: the SQLite ledger, the cluster outbox and the
 * PostgreSQL ledger all build their tables, inserts and reads from this list.
 */
export const RECORD_FIELDS = [
  { field: "requestId", column: "request_id", kind: "text" },
  { field: "ts", column: "ts", kind: "int" },
  { field: "day", column: "day", kind: "text" },
  { field: "accountId", column: "account_id", kind: "text" },
  { field: "tokenId", column: "token_id", kind: "text" },
  { field: "model", column: "model", kind: "text" },
  { field: "task", column: "task", kind: "text" },
  { field: "pop", column: "pop", kind: "text" },
  { field: "served", column: "served", kind: "text" },
  { field: "unit", column: "unit", kind: "text" },
  { field: "inputUnits", column: "input_units", kind: "real" },
  { field: "outputUnits", column: "output_units", kind: "real" },
  { field: "neurons", column: "neurons", kind: "real" },
  { field: "cpuMs", column: "cpu_ms", kind: "real" },
  { field: "wallMs", column: "wall_ms", kind: "real" },
  { field: "bytesIn", column: "bytes_in", kind: "int" },
  { field: "bytesOut", column: "bytes_out", kind: "int" },
] as const satisfies readonly { field: keyof UsageRecord; column: string; kind: "text" | "int" | "real" }[];

const TYPES = {
  sqlite: { text: "TEXT", int: "INTEGER", real: "REAL" },
  postgres: { text: "TEXT", int: "BIGINT", real: "DOUBLE PRECISION" },
} as const;

/** `request_id TEXT NOT NULL, …, PRIMARY KEY (account_id, request_id)`: the (account, request id) key makes writes idempotent. */
export function recordColumnsDdl(dialect: keyof typeof TYPES): string {
  return [...RECORD_FIELDS.map((f) => `${f.column} ${TYPES[dialect][f.kind]} NOT NULL`), "PRIMARY KEY (account_id, request_id)"].join(",\n  ");
}

/** `request_id, ts, …` in column order. */
export const RECORD_COLUMN_LIST = RECORD_FIELDS.map((f) => f.column).join(", ");
