import type { Db } from "../../util/sqlite.js";
import type { WorkerModule } from "../types.js";
import { KEEP_VERSIONS, type VersionSettings } from "./schema.js";

export interface ScriptRow {
  name: string;
  account_id: string;
  active_version: number;
  created_at: number;
  modified_at: number;
}

export interface VersionRow {
  name: string;
  version: number;
  account_id: string;
  created_at: number;
  /** Token id of whoever deployed it. */
  created_by: string;
  settings: VersionSettings;
  size: number;
  modules: { name: string; type: WorkerModule["type"]; size: number }[];
}

export interface SecretRow {
  secret: string;
  sealed: Buffer;
  updated_at: number;
}

/**
 * Deployments in the node's SQLite database. A worker (`worker_scripts`, its name unique across the
 * node and owned by one account) has numbered versions (`worker_versions`, with their modules in
 * `worker_modules`) and points at the active one; `worker_secrets` holds its secrets, sealed (see
 * SecretBox) — never plaintext. Deleting a worker deletes its versions, modules and secrets.
 *
 * Deploying adds version max+1 and makes it active; rolling back only moves the pointer to an older
 * version (no row is copied). The newest KEEP_VERSIONS versions are kept, and the active one always.
 */
export class DeploymentStore {
  private readonly q;

  constructor(private readonly db: Db) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS worker_scripts (
        name TEXT PRIMARY KEY, account_id TEXT NOT NULL, active_version INTEGER NOT NULL,
        created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS worker_scripts_account ON worker_scripts (account_id);
      CREATE TABLE IF NOT EXISTS worker_versions (
        name TEXT NOT NULL REFERENCES worker_scripts(name) ON DELETE CASCADE, version INTEGER NOT NULL,
        account_id TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL,
        settings TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (name, version));
      CREATE TABLE IF NOT EXISTS worker_modules (
        name TEXT NOT NULL, version INTEGER NOT NULL, idx INTEGER NOT NULL, module TEXT NOT NULL,
        type TEXT NOT NULL, content BLOB NOT NULL, PRIMARY KEY (name, version, idx),
        FOREIGN KEY (name, version) REFERENCES worker_versions(name, version) ON DELETE CASCADE);
      CREATE TABLE IF NOT EXISTS worker_secrets (
        name TEXT NOT NULL REFERENCES worker_scripts(name) ON DELETE CASCADE, secret TEXT NOT NULL,
        sealed BLOB NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (name, secret));`);
    this.q = {
      script: db.prepare("SELECT * FROM worker_scripts WHERE name = ?"),
      scripts: db.prepare("SELECT * FROM worker_scripts ORDER BY name"),
      scriptsOf: db.prepare("SELECT * FROM worker_scripts WHERE account_id = ? ORDER BY name"),
      countOf: db.prepare("SELECT COUNT(*) AS n FROM worker_scripts WHERE account_id = ?"),
      insertScript: db.prepare("INSERT INTO worker_scripts (name, account_id, active_version, created_at, modified_at) VALUES (?, ?, ?, ?, ?)"),
      setActive: db.prepare("UPDATE worker_scripts SET active_version = ?, modified_at = ? WHERE name = ?"),
      deleteScript: db.prepare("DELETE FROM worker_scripts WHERE name = ?"),
      maxVersion: db.prepare("SELECT MAX(version) AS v FROM worker_versions WHERE name = ?"),
      version: db.prepare("SELECT * FROM worker_versions WHERE name = ? AND version = ?"),
      versions: db.prepare("SELECT * FROM worker_versions WHERE name = ? ORDER BY version DESC"),
      previous: db.prepare("SELECT MAX(version) AS v FROM worker_versions WHERE name = ? AND version < ?"),
      insertVersion: db.prepare("INSERT INTO worker_versions (name, version, account_id, created_at, created_by, settings, size) VALUES (?, ?, ?, ?, ?, ?, ?)"),
      prune: db.prepare("DELETE FROM worker_versions WHERE name = ? AND version <= ? AND version != ?"),
      insertModule: db.prepare("INSERT INTO worker_modules (name, version, idx, module, type, content) VALUES (?, ?, ?, ?, ?, ?)"),
      modules: db.prepare("SELECT module, type, content FROM worker_modules WHERE name = ? AND version = ? ORDER BY idx"),
      moduleInfo: db.prepare("SELECT module, type, length(content) AS size FROM worker_modules WHERE name = ? AND version = ? ORDER BY idx"),
      secrets: db.prepare("SELECT secret, sealed, updated_at FROM worker_secrets WHERE name = ? ORDER BY secret"),
      putSecret: db.prepare(
        "INSERT INTO worker_secrets (name, secret, sealed, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (name, secret) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
      ),
      deleteSecret: db.prepare("DELETE FROM worker_secrets WHERE name = ? AND secret = ?"),
      deleteSecrets: db.prepare("DELETE FROM worker_secrets WHERE name = ?"),
      deleteVersion: db.prepare("DELETE FROM worker_versions WHERE name = ? AND version = ?"),
    };
  }

  script(name: string): ScriptRow | undefined {
    return this.q.script.get(name) as ScriptRow | undefined;
  }

  /** Every worker of the node (accountId undefined) or of one account. */
  scripts(accountId?: string): ScriptRow[] {
    return (accountId === undefined ? this.q.scripts.all() : this.q.scriptsOf.all(accountId)) as ScriptRow[];
  }

  count(accountId: string): number {
    return (this.q.countOf.get(accountId) as { n: number }).n;
  }

  nextVersion(name: string): number {
    return ((this.q.maxVersion.get(name) as { v: number | null }).v ?? 0) + 1;
  }

  /** The newest version older than `version`, if one is kept. */
  previousVersion(name: string, version: number): number | null {
    return (this.q.previous.get(name, version) as { v: number | null }).v;
  }

  version(name: string, version: number): VersionRow | undefined {
    const r = this.q.version.get(name, version) as RawVersion | undefined;
    return r && this.toVersion(r);
  }

  versions(name: string): VersionRow[] {
    return (this.q.versions.all(name) as RawVersion[]).map((r) => this.toVersion(r));
  }

  modules(name: string, version: number): WorkerModule[] {
    return (this.q.modules.all(name, version) as { module: string; type: WorkerModule["type"]; content: Buffer }[]).map((m) => ({
      name: m.module,
      type: m.type,
      content: new Uint8Array(m.content.buffer, m.content.byteOffset, m.content.byteLength),
    }));
  }

  /** Adds a version and makes it active (creating the worker on its first version); prunes old versions. Call inside a transaction. */
  addVersion(v: { accountId: string; name: string; version: number; createdBy: string; settings: VersionSettings; modules: WorkerModule[] }, now = Date.now()): void {
    if (this.script(v.name)) this.q.setActive.run(v.version, now, v.name);
    else this.q.insertScript.run(v.name, v.accountId, v.version, now, now);
    const size = v.modules.reduce((n, m) => n + m.content.byteLength, 0);
    this.q.insertVersion.run(v.name, v.version, v.accountId, now, v.createdBy, JSON.stringify(v.settings), size);
    for (const [i, m] of v.modules.entries()) this.q.insertModule.run(v.name, v.version, i, m.name, m.type, Buffer.from(m.content.buffer, m.content.byteOffset, m.content.byteLength));
    this.q.prune.run(v.name, v.version - KEEP_VERSIONS, v.version);
  }

  /**
   * Puts a version as another PoP has it (replication): replaces a local version of that number,
   * makes it active, keeps the other versions. Call inside a transaction.
   */
  putReplicatedVersion(v: { accountId: string; name: string; version: number; createdBy: string; settings: VersionSettings; modules: WorkerModule[] }, modifiedAt: number): void {
    this.q.deleteVersion.run(v.name, v.version);
    this.addVersion(v, modifiedAt);
  }

  /** Replaces every secret of a worker (replication). Call inside a transaction. */
  replaceSecrets(name: string, rows: { secret: string; sealed: Buffer; updated_at: number }[]): void {
    this.q.deleteSecrets.run(name);
    for (const r of rows) this.q.putSecret.run(name, r.secret, r.sealed, r.updated_at);
  }

  setActive(name: string, version: number, now = Date.now()): void {
    this.q.setActive.run(version, now, name);
  }

  deleteScript(name: string): void {
    this.q.deleteScript.run(name);
  }

  secrets(name: string): SecretRow[] {
    return this.q.secrets.all(name) as SecretRow[];
  }

  putSecret(name: string, secret: string, sealed: Buffer, now = Date.now()): void {
    this.q.putSecret.run(name, secret, sealed, now);
    this.q.setActive.run((this.script(name) as ScriptRow).active_version, now, name);
  }

  deleteSecret(name: string, secret: string, now = Date.now()): boolean {
    const deleted = this.q.deleteSecret.run(name, secret).changes > 0;
    if (deleted) this.q.setActive.run((this.script(name) as ScriptRow).active_version, now, name);
    return deleted;
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  private toVersion(r: RawVersion): VersionRow {
    return {
      name: r.name,
      version: r.version,
      account_id: r.account_id,
      created_at: r.created_at,
      created_by: r.created_by,
      settings: JSON.parse(r.settings) as VersionSettings,
      size: r.size,
      modules: (this.q.moduleInfo.all(r.name, r.version) as { module: string; type: WorkerModule["type"]; size: number }[]).map((m) => ({ name: m.module, type: m.type, size: m.size })),
    };
  }
}

type RawVersion = Omit<VersionRow, "settings" | "modules"> & { settings: string };
