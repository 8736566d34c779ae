import type { AccountStore, Actor } from "../../accounts/index.js";
import { BordeError } from "../../errors.js";
import type { Logger } from "../../observability/index.js";
import type { Db } from "../../util/sqlite.js";
import { Mutex } from "../../util/mutex.js";
import type { LogEvent, WorkerModule, WorkerRuntime, WorkerVersion } from "../types.js";
import { effectiveLimits, MAX_SECRETS, MAX_WORKERS_PER_ACCOUNT, type VersionSettings } from "./schema.js";
import { SecretBox } from "./secrets.js";
import { DeploymentStore, type ScriptRow, type VersionRow } from "./store.js";

/**
 * Workers on a node: deployments (versions, rollback, secrets) in the node's database joined to the
 * runtime that runs them. Every change is made live in the runtime first and committed after, so a
 * version that cannot start never becomes the stored active one; the audit entry is written in the
 * same transaction as the change. Changes to one worker are serialised.
 *
 * node.ts: `const workers = createWorkers({ db, dataDir, runtime, logger, accounts }); await workers.start();`
 * pass `workers` to createApp, and `await workers.close()` (it closes the runtime) at shutdown.
 */
export interface WorkersOptions {
  db: Db;
  /** Where `secret.key` lives (the node's data folder). */
  dataDir: string;
  runtime: WorkerRuntime;
  logger: Logger;
  /** For audit entries; null writes none (tests). */
  accounts: AccountStore | null;
  /** `BORDE_SECRET_KEY`: a secrets key shared by every PoP (else each node makes its own). */
  secretKey?: string;
}

/**
 * A worker as it is on the PoP where it last changed, for the other PoPs (cluster mode): its active
 * version with its code, and its secrets sealed — only when the secrets key is shared, since a
 * node's own key opens nothing elsewhere.
 */
export interface WorkerSnapshot {
  name: string;
  accountId: string;
  deleted: boolean;
  modifiedAt: number;
  version?: { version: number; createdBy: string; settings: VersionSettings; modules: { name: string; type: WorkerModule["type"]; content: string }[] };
  secrets?: { secret: string; sealed: string; updated_at: number }[];
}

export function createWorkers(options: WorkersOptions): Workers {
  return new Workers(options);
}

export interface DeployInput {
  modules: WorkerModule[];
  settings: VersionSettings;
}

export interface ScriptInfo {
  id: string;
  account_id: string;
  active_version: number;
  created_on: string;
  modified_on: string;
}

export interface VersionInfo {
  version: number;
  active: boolean;
  created_on: string;
  /** Token id of whoever deployed it. */
  created_by: string;
  size: number;
  modules: { name: string; type: WorkerModule["type"]; size: number }[];
  compatibility_date: string | null;
  compatibility_flags: string[];
  ai_binding: string | null;
  vars: Record<string, string>;
  /** The limits it runs with (defaults filled in). */
  limits: { cpu_ms: number; wall_ms: number; memory_mb: number; subrequests: number };
  outbound_allow: string[];
}

export interface SecretInfo {
  name: string;
  type: "secret_text";
  modified_on: string;
}

export class Workers {
  private readonly store: DeploymentStore;
  private readonly box: SecretBox;
  private readonly runtime: WorkerRuntime;
  private readonly log: Logger;
  private readonly accounts: AccountStore | null;
  /** Live workers: name → account. The only thing public requests consult. */
  private readonly live = new Map<string, string>();
  /** Workers whose active version failed to start at node start: name → reason. */
  private readonly broken = new Map<string, string>();
  private readonly locks = new Map<string, { mutex: Mutex; users: number }>();
  private readonly tails = new Set<() => void>();
  private publish: ((s: WorkerSnapshot) => void) | null = null;

  /** Cluster mode: every change of a worker here is handed to `publish` once it is live and stored. */
  onChange(publish: (s: WorkerSnapshot) => void): void {
    this.publish = publish;
  }

  private changed(name: string, accountId: string): void {
    if (!this.publish) return;
    const script = this.store.script(name);
    if (!script) return this.publish({ name, accountId, deleted: true, modifiedAt: Date.now() });
    const v = this.store.version(name, script.active_version)!;
    this.publish({
      name,
      accountId: script.account_id,
      deleted: false,
      modifiedAt: script.modified_at,
      version: {
        version: v.version,
        createdBy: v.created_by,
        settings: v.settings,
        modules: this.store.modules(name, v.version).map((m) => ({ name: m.name, type: m.type, content: Buffer.from(m.content).toString("base64") })),
      },
      secrets: this.box.shared ? this.store.secrets(name).map((r) => ({ secret: r.secret, sealed: Buffer.from(r.sealed).toString("base64"), updated_at: r.updated_at })) : undefined,
    });
  }

  /**
   * A change made on another PoP: stored and made live here too (the replication log replays the
   * latest state of every worker at start-up; what this node already has is skipped).
   */
  async applyReplica(s: WorkerSnapshot): Promise<void> {
    await this.locked(s.name, async () => {
      const local = this.store.script(s.name);
      if (local && local.account_id !== s.accountId) {
        this.log.warn({ worker: s.name }, "replicated worker has another account than the local one of that name; ignored");
        return;
      }
      // The same state (this node's own change coming back, or a replay at start-up): nothing to do.
      // Otherwise the replication log's order decides, not the PoPs' clocks.
      if (local && !s.deleted && local.modified_at === s.modifiedAt && local.active_version === s.version?.version) return;
      if (s.deleted) {
        if (!local) return;
        this.store.deleteScript(s.name);
        this.live.delete(s.name);
        this.broken.delete(s.name);
        await this.runtime.remove(s.accountId, s.name).catch((e: unknown) => this.log.error({ worker: s.name, err: e }, "runtime failed to remove a worker deleted elsewhere"));
        return;
      }
      const v = s.version!;
      const modules = v.modules.map((m) => ({ name: m.name, type: m.type, content: new Uint8Array(Buffer.from(m.content, "base64")) }));
      this.store.transaction(() => {
        this.store.putReplicatedVersion({ accountId: s.accountId, name: s.name, version: v.version, createdBy: v.createdBy, settings: v.settings, modules }, s.modifiedAt);
        if (s.secrets) this.store.replaceSecrets(s.name, s.secrets.map((r) => ({ secret: r.secret, sealed: Buffer.from(r.sealed, "base64"), updated_at: r.updated_at })));
      });
      try {
        await this.runtime.activate(this.workerVersion(s.accountId, s.name, v.version));
        this.live.set(s.name, s.accountId);
        this.broken.delete(s.name);
        this.log.info({ worker: s.name, version: v.version }, "worker replicated from another PoP");
      } catch (e) {
        this.live.delete(s.name);
        this.broken.set(s.name, reason(e));
        this.log.error({ worker: s.name, err: e }, "replicated worker failed to start here");
      }
    });
  }

  constructor(o: WorkersOptions) {
    this.store = new DeploymentStore(o.db);
    this.log = o.logger.child({ component: "workers" });
    this.box = new SecretBox(o.dataDir, (m) => this.log.warn(m), o.secretKey);
    this.runtime = o.runtime;
    this.accounts = o.accounts;
  }

  /** Makes every stored active version live again (deployments survive restarts). A worker that fails is logged and answers 500 until redeployed. */
  async start(): Promise<{ started: number; failed: string[] }> {
    const scripts = this.store.scripts();
    const failed: string[] = [];
    let next = 0;
    const worker = async () => {
      for (let s = scripts[next++]; s !== undefined; s = scripts[next++]) {
        const script = s;
        await this.locked(script.name, async () => {
          try {
            await this.runtime.activate(this.workerVersion(script.account_id, script.name, script.active_version));
            this.live.set(script.name, script.account_id);
            this.broken.delete(script.name);
          } catch (e) {
            failed.push(script.name);
            this.broken.set(script.name, reason(e));
            this.log.error({ worker: script.name, version: script.active_version, err: e }, "worker failed to start");
          }
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(4, scripts.length) }, worker));
    if (scripts.length > 0) this.log.info({ workers: scripts.length - failed.length, failed: failed.length }, "workers started");
    return { started: scripts.length - failed.length, failed };
  }

  async deploy(actor: Actor, name: string, input: DeployInput): Promise<VersionInfo> {
    return this.locked(name, async () => {
      const accountId = actor.accountId;
      const existing = this.store.script(name);
      if (existing && existing.account_id !== accountId) throw new BordeError("WorkerNameTaken", `The worker name ${name} is taken by another account`);
      if (!existing && this.store.count(accountId) >= MAX_WORKERS_PER_ACCOUNT)
        throw new BordeError("InvalidInput", `Invalid input: an account may have at most ${MAX_WORKERS_PER_ACCOUNT} workers; delete one first`);
      const secrets = existing ? this.openSecrets(accountId, name) : {};
      const ai = input.settings.aiBinding;
      if (ai !== null && ai in secrets) throw new BordeError("InvalidInput", `Invalid input: ai_binding: ${ai} is also the name of a secret of this worker`);
      const version = this.store.nextVersion(name);
      const wv = toWorkerVersion(accountId, name, version, input.modules, input.settings, secrets);
      await this.goLive(wv, existing);
      this.store.transaction(() => {
        this.store.addVersion({ accountId, name, version, createdBy: actor.tokenId, settings: input.settings, modules: input.modules });
        this.accounts?.recordAudit(actor, "workers.deploy", name, { version, modules: input.modules.length, bytes: wv.modules.reduce((n, m) => n + m.content.byteLength, 0) });
      });
      this.live.set(name, accountId);
      this.broken.delete(name);
      this.log.info({ worker: name, account: accountId, version }, "worker deployed");
      this.changed(name, accountId);
      return this.versionInfo(this.store.version(name, version)!, version);
    });
  }

  /** Makes `to` (default: the newest version older than the active one) the active version. */
  async rollback(actor: Actor, name: string, to?: number): Promise<VersionInfo & { previous_version: number }> {
    return this.locked(name, async () => {
      const script = this.owned(actor.accountId, name);
      const from = script.active_version;
      const target = to ?? this.store.previousVersion(name, from);
      if (target === null) throw new BordeError("NoPreviousVersion", `No version of ${name} older than the active version ${from} to roll back to`);
      const row = this.store.version(name, target);
      if (!row) throw new BordeError("NoSuchWorker", `No version ${target} of worker ${name} (kept: ${this.store.versions(name).map((v) => v.version).join(", ")})`);
      if (target !== from) {
        await this.goLive(this.workerVersion(actor.accountId, name, target), script);
        this.store.transaction(() => {
          this.store.setActive(name, target);
          this.accounts?.recordAudit(actor, "workers.rollback", name, { from, to: target });
        });
        this.live.set(name, actor.accountId);
        this.broken.delete(name);
        this.log.info({ worker: name, from, to: target }, "worker rolled back");
        this.changed(name, actor.accountId);
      }
      return { ...this.versionInfo(row, target), previous_version: from };
    });
  }

  async remove(actor: Actor, name: string): Promise<{ id: string }> {
    return this.locked(name, async () => {
      this.owned(actor.accountId, name);
      this.store.transaction(() => {
        this.store.deleteScript(name);
        this.accounts?.recordAudit(actor, "workers.delete", name, null);
      });
      this.live.delete(name);
      this.broken.delete(name);
      try {
        await this.runtime.remove(actor.accountId, name);
      } catch (e) {
        this.log.error({ worker: name, err: e }, "runtime failed to remove a deleted worker");
      }
      this.log.info({ worker: name }, "worker deleted");
      this.changed(name, actor.accountId);
      return { id: name };
    });
  }

  list(accountId: string): ScriptInfo[] {
    return this.store.scripts(accountId).map(scriptInfo);
  }

  get(accountId: string, name: string): ScriptInfo & { versions: VersionInfo[] } {
    const script = this.owned(accountId, name);
    return { ...scriptInfo(script), versions: this.store.versions(name).map((v) => this.versionInfo(v, script.active_version)) };
  }

  /** Stores a secret and makes it live on the active version at once (no redeploy). */
  async putSecret(actor: Actor, name: string, secret: string, text: string): Promise<SecretInfo> {
    return this.locked(name, async () => {
      const script = this.owned(actor.accountId, name);
      const rows = this.store.secrets(name);
      if (!rows.some((r) => r.secret === secret) && rows.length >= MAX_SECRETS) throw new BordeError("InvalidInput", `Invalid input: a worker may have at most ${MAX_SECRETS} secrets`);
      const active = this.store.version(name, script.active_version)!;
      if (active.settings.aiBinding === secret) throw new BordeError("InvalidInput", `Invalid input: name: ${secret} is the worker's AI binding`);
      const sealed = this.box.seal(text, [actor.accountId, name, secret]);
      const secrets = { ...this.openSecrets(actor.accountId, name), [secret]: text };
      await this.goLive(toWorkerVersion(actor.accountId, name, script.active_version, this.store.modules(name, script.active_version), active.settings, secrets), script);
      this.store.transaction(() => {
        this.store.putSecret(name, secret, sealed);
        this.accounts?.recordAudit(actor, "workers.secret.put", name, { secret });
      });
      this.log.info({ worker: name, secret }, "worker secret stored");
      this.changed(name, actor.accountId);
      return { name: secret, type: "secret_text", modified_on: new Date().toISOString() };
    });
  }

  listSecrets(accountId: string, name: string): SecretInfo[] {
    this.owned(accountId, name);
    return this.store.secrets(name).map((r) => ({ name: r.secret, type: "secret_text", modified_on: new Date(r.updated_at).toISOString() }));
  }

  async deleteSecret(actor: Actor, name: string, secret: string): Promise<{ name: string }> {
    return this.locked(name, async () => {
      const script = this.owned(actor.accountId, name);
      if (!this.store.secrets(name).some((r) => r.secret === secret)) throw new BordeError("NoSuchSecret", `No secret ${secret} on worker ${name}`);
      const secrets = this.openSecrets(actor.accountId, name);
      delete secrets[secret];
      const active = this.store.version(name, script.active_version)!;
      await this.goLive(toWorkerVersion(actor.accountId, name, script.active_version, this.store.modules(name, script.active_version), active.settings, secrets), script);
      this.store.transaction(() => {
        this.store.deleteSecret(name, secret);
        this.accounts?.recordAudit(actor, "workers.secret.delete", name, { secret });
      });
      this.log.info({ worker: name, secret }, "worker secret deleted");
      this.changed(name, actor.accountId);
      return { name: secret };
    });
  }

  /** Runs a public request on the worker `name` (no Borde auth: workers are public, like workers.dev). */
  async fetch(name: string, request: Request, requestId: string): Promise<Response> {
    const accountId = this.live.get(name);
    if (accountId === undefined) {
      if (this.broken.has(name)) throw new BordeError("Internal", `Worker ${name} failed to start on this node; redeploy it`);
      throw new BordeError("NoSuchWorker", `No worker named ${name} on this node`);
    }
    try {
      return await this.runtime.fetch(accountId, name, request, requestId);
    } catch (e) {
      // Deleted (or replaced) between the look-up above and the runtime: as unknown as never deployed.
      if (e instanceof Error && e.name === "WorkerNotActiveError") throw new BordeError("NoSuchWorker", `No worker named ${name} on this node`, { cause: e });
      throw e;
    }
  }

  /** Live log events of one of the account's workers; returns the unsubscribe. */
  tail(accountId: string, name: string, onEvent: (e: LogEvent) => void): () => void {
    this.owned(accountId, name);
    const unsubscribe = this.runtime.subscribe(accountId, name, onEvent);
    let done = false;
    const stop = () => {
      if (done) return;
      done = true;
      this.tails.delete(stop);
      unsubscribe();
    };
    this.tails.add(stop);
    return stop;
  }

  /** Tails open now (each an SSE client of `GET …/tail`). */
  get tailing(): number {
    return this.tails.size;
  }

  /** Ends every tail and closes the runtime. */
  async close(): Promise<void> {
    for (const stop of [...this.tails]) stop();
    this.live.clear();
    await this.runtime.close();
  }

  /** The account's worker, or 404 (another account's worker is as unknown as a missing one). */
  private owned(accountId: string, name: string): ScriptRow {
    const s = this.store.script(name);
    if (!s || s.account_id !== accountId) throw new BordeError("NoSuchWorker", `No worker named ${name} on this account`);
    return s;
  }

  /** Activates `wv`; if that fails, puts `previous`'s active version back (the runtime may have dropped it) and throws 400/10021. */
  private async goLive(wv: WorkerVersion, previous: ScriptRow | undefined): Promise<void> {
    try {
      await this.runtime.activate(wv);
    } catch (e) {
      this.log.warn({ worker: wv.name, version: wv.version, err: e }, "worker version failed to start");
      if (previous && this.live.has(previous.name)) {
        try {
          await this.runtime.activate(this.workerVersion(previous.account_id, previous.name, previous.active_version));
        } catch (e2) {
          this.live.delete(previous.name);
          this.broken.set(previous.name, reason(e2));
          this.log.error({ worker: previous.name, err: e2 }, "could not restore the active version after a failed activation");
        }
      }
      if (e instanceof BordeError) throw e;
      throw new BordeError("WorkerInvalid", `The worker could not start: ${reason(e)}`, { cause: e });
    }
  }

  private workerVersion(accountId: string, name: string, version: number): WorkerVersion {
    const row = this.store.version(name, version);
    if (!row) throw new Error(`worker ${name} has no version ${version}`);
    return toWorkerVersion(accountId, name, version, this.store.modules(name, version), row.settings, this.openSecrets(accountId, name));
  }

  private openSecrets(accountId: string, name: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const r of this.store.secrets(name)) out[r.secret] = this.box.open(r.sealed, [accountId, name, r.secret]);
    return out;
  }

  private versionInfo(v: VersionRow, active: number): VersionInfo {
    const l = effectiveLimits(v.settings.limits);
    return {
      version: v.version,
      active: v.version === active,
      created_on: new Date(v.created_at).toISOString(),
      created_by: v.created_by,
      size: v.size,
      modules: v.modules,
      compatibility_date: v.settings.compatibilityDate ?? null,
      compatibility_flags: v.settings.compatibilityFlags,
      ai_binding: v.settings.aiBinding,
      vars: v.settings.vars,
      limits: { cpu_ms: l.cpuMs, wall_ms: l.wallMs, memory_mb: l.memoryMb, subrequests: l.subrequests },
      outbound_allow: v.settings.allowOutbound,
    };
  }

  /** Runs fn alone for this worker name (deploys, rollbacks and secret changes of one worker never interleave). */
  private async locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    let lock = this.locks.get(name);
    if (!lock) this.locks.set(name, (lock = { mutex: new Mutex(), users: 0 }));
    lock.users++;
    try {
      return await lock.mutex.run(fn);
    } finally {
      if (--lock.users === 0) this.locks.delete(name);
    }
  }
}

function toWorkerVersion(accountId: string, name: string, version: number, modules: WorkerModule[], s: VersionSettings, secrets: Record<string, string>): WorkerVersion {
  return {
    accountId,
    name,
    version,
    modules,
    ...(s.compatibilityDate ? { compatibilityDate: s.compatibilityDate } : {}),
    compatibilityFlags: s.compatibilityFlags,
    aiBinding: s.aiBinding,
    vars: s.vars,
    secrets,
    limits: effectiveLimits(s.limits),
    allowOutbound: s.allowOutbound,
  };
}

function scriptInfo(s: ScriptRow): ScriptInfo {
  return { id: s.name, account_id: s.account_id, active_version: s.active_version, created_on: new Date(s.created_at).toISOString(), modified_on: new Date(s.modified_at).toISOString() };
}

/**
 * One line of an error for a client: no stack, bounded. workerd puts the cause (`Uncaught
 * SyntaxError: …`, `No such module …`) after a generic first line, so a line naming an error wins.
 */
function reason(e: unknown): string {
  const lines = (e instanceof Error ? e.message : String(e)).split("\n").map((l) => l.trim()).filter(Boolean);
  let i = lines.findIndex((l) => /\bUncaught\b|No such module/.test(l));
  if (i < 0) i = lines.findIndex((l) => /\b[A-Za-z]*Error:/.test(l));
  if (i < 0) return (lines[0] ?? "unknown error").slice(0, 500);
  const where = lines[i + 1];
  return `${lines[i]}${where?.startsWith("at ") && !/host\.js|node_modules/.test(where) ? ` (${where})` : ""}`.slice(0, 500);
}

export { DeploymentStore } from "./store.js";
export { SecretBox } from "./secrets.js";
export type { VersionSettings } from "./schema.js";
