import Database from "better-sqlite3";
import fs from "node:fs";
import path from "node:path";

export type Db = Database.Database;

/**
 * Opens (creating) a SQLite file in WAL mode. `synchronous = NORMAL` makes each commit durable
 * against a crash of this process (the WAL is in the OS page cache before `run()` returns) without
 * an fsync per commit; `full` adds the fsync, for durability against power loss too.
 */
export function openDatabase(file: string, sync: "normal" | "full" = "normal"): Db {
  if (file !== ":memory:") fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma(`synchronous = ${sync === "full" ? "FULL" : "NORMAL"}`);
  // Another process (a CLI reading usage) may hold the lock for a moment.
  db.pragma("busy_timeout = 5000");
  db.pragma("foreign_keys = ON");
  if (file !== ":memory:") fs.chmodSync(file, 0o600);
  return db;
}
