import type { Db } from "../util/sqlite.js";
import { RECORD_COLUMN_LIST, RECORD_FIELDS, recordColumnsDdl } from "./columns.js";
import type { DailyTotals, UsageQuery, UsageReader, UsageRecord, UsageRow, UsageWriter } from "./types.js";

/** Columns shared by the single-node ledger and the cluster outbox (same record, same order). */
export const RECORD_COLUMNS = recordColumnsDdl("sqlite");

const INSERT_VALUES = RECORD_FIELDS.map((f) => `@${f.field}`).join(", ");

/** `INSERT OR IGNORE` of one record into `table`: the primary key (account, request id) makes it idempotent. */
export function insertRecordSql(table: string): string {
  return `INSERT OR IGNORE INTO ${table} (${RECORD_COLUMN_LIST}) VALUES (${INSERT_VALUES})`;
}

/** Reads a row of the shared columns back into a record. */
export function rowToRecord(r: Record<string, unknown>): UsageRecord {
  const record: Record<string, unknown> = {};
  for (const f of RECORD_FIELDS) record[f.field] = r[f.column];
  return record as unknown as UsageRecord;
}

const GROUP_COLUMNS = { day: "day", model: "model", account: "account_id" } as const;

/** The aggregate every usage report shares (SQLite and PostgreSQL both speak this SQL). */
export function usageSelect(table: string, q: UsageQuery, placeholder: (i: number) => string): { sql: string; params: unknown[] } {
  const groups = [...new Set(q.groupBy)].map((g) => GROUP_COLUMNS[g]);
  const params: unknown[] = [q.since, q.until];
  let where = `day >= ${placeholder(1)} AND day <= ${placeholder(2)}`;
  if (q.accountId !== undefined) {
    params.push(q.accountId);
    where += ` AND account_id = ${placeholder(3)}`;
  }
  const select = [
    ...groups,
    "COUNT(*) AS requests",
    "SUM(input_units) AS input_units",
    "SUM(output_units) AS output_units",
    "SUM(neurons) AS neurons",
    "SUM(cpu_ms) AS cpu_ms",
    "SUM(bytes_in) AS bytes_in",
    "SUM(bytes_out) AS bytes_out",
    "SUM(CASE WHEN served = 'edge' THEN 1 ELSE 0 END) AS edge_requests",
    "SUM(CASE WHEN served = 'forwarded' THEN 1 ELSE 0 END) AS forwarded_requests",
  ].join(", ");
  const group = groups.length ? ` GROUP BY ${groups.join(", ")} ORDER BY ${groups.join(", ")}` : "";
  return { sql: `SELECT ${select} FROM ${table} WHERE ${where}${group}`, params };
}

/** Normalises driver values (PostgreSQL returns SUMs as strings) and drops the empty all-rows group. */
export function toUsageRows(rows: Record<string, unknown>[]): UsageRow[] {
  return rows
    .filter((r) => Number(r.requests) > 0)
    .map((r) => {
      const row: UsageRow = {
        requests: Number(r.requests),
        input_units: Number(r.input_units),
        output_units: Number(r.output_units),
        neurons: Number(r.neurons),
        cpu_ms: Number(r.cpu_ms),
        bytes_in: Number(r.bytes_in),
        bytes_out: Number(r.bytes_out),
        edge_requests: Number(r.edge_requests),
        forwarded_requests: Number(r.forwarded_requests),
      };
      if (r.day !== undefined) row.day = String(r.day);
      if (r.model !== undefined) row.model = String(r.model);
      if (r.account_id !== undefined) row.account_id = String(r.account_id);
      return row;
    });
}

/**
 * The single-node ledger: one SQLite table, one row per answered request, written synchronously
 * before the answer's last byte leaves (so a SIGKILL cannot lose an answered request), keyed by
 * request id (so nothing is counted twice).
 */
export class SqliteLedger implements UsageWriter, UsageReader {
  private readonly insert;
  private readonly totals;
  private readonly exists;

  constructor(private readonly db: Db) {
    // WITHOUT ROWID: the primary key is the table, one B-tree fewer to write per record.
    db.exec(`CREATE TABLE IF NOT EXISTS usage (${RECORD_COLUMNS}) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS usage_day_account ON usage (day, account_id);`);
    this.insert = db.prepare(insertRecordSql("usage"));
    this.exists = db.prepare("SELECT 1 FROM usage WHERE account_id = ? AND request_id = ?");
    this.totals = db.prepare("SELECT account_id, token_id, SUM(neurons) AS neurons FROM usage WHERE day = ? GROUP BY account_id, token_id");
  }

  write(record: UsageRecord): boolean {
    return this.insert.run(record).changes === 1;
  }

  /** Many records in one transaction (benchmarks, imports); returns how many were new. */
  writeMany(records: readonly UsageRecord[]): number {
    let n = 0;
    this.db.transaction(() => {
      for (const r of records) n += this.insert.run(r).changes;
    })();
    return n;
  }

  dailyTotals(day: string): DailyTotals {
    return sumTotals(this.totals.all(day) as { account_id: string; token_id: string; neurons: number }[]);
  }

  async query(q: UsageQuery): Promise<UsageRow[]> {
    const { sql, params } = usageSelect("usage", q, () => "?");
    return toUsageRows(this.db.prepare(sql).all(...params) as Record<string, unknown>[]);
  }

  async requestIds(since: string, until: string): Promise<string[]> {
    return (this.db.prepare("SELECT request_id FROM usage WHERE day >= ? AND day <= ? ORDER BY request_id").all(since, until) as { request_id: string }[]).map((r) => r.request_id);
  }

  /** True when this account already has a record under that request id (a reused idempotency key). */
  has(accountId: string, requestId: string): boolean {
    return this.exists.get(accountId, requestId) !== undefined;
  }

  async close(): Promise<void> {
    // The database handle belongs to the node, which closes it after every user of it.
  }
}

export function sumTotals(rows: { account_id: string; token_id: string; neurons: number }[]): DailyTotals {
  const totals: DailyTotals = { accounts: new Map(), tokens: new Map() };
  for (const r of rows) {
    totals.accounts.set(r.account_id, (totals.accounts.get(r.account_id) ?? 0) + r.neurons);
    totals.tokens.set(r.token_id, (totals.tokens.get(r.token_id) ?? 0) + r.neurons);
  }
  return totals;
}
