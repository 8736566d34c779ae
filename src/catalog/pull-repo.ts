/**
 * Pulls several files of one hub repo into a folder laid out as in the repo (what transformers.js
 * loads). Every file is fetched with `pullFile`'s rules (resumable, verified) into
 * `<dest>.partial-dir/`, and the folder is installed with one rename only once every file is verified,
 * so `<dest>` is never a half-pulled repo. An interrupted pull resumes file by file: verified files
 * stay in the partial folder, a cut file resumes from its `.partial`.
 */
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { withPullLock } from "./lock.js";
import { probeFile, pullFile, PullError, resolveUrl, type PullOptions, type PullProgress, type PullResult } from "./pull.js";
import type { HubRepoSource } from "./types.js";

export interface RepoPullResult {
  /** The installed folder. */
  path: string;
  /** Bytes of all its files. */
  size: number;
  /** Bytes already on disk before this pull: an interrupted pull's, or all of them when `pulled` is false. */
  resumedFrom: number;
  /** False when the folder was installed already (by an earlier or a concurrent pull): nothing was fetched. */
  pulled: boolean;
  /** The files fetched or resumed by this pull, at their installed paths. */
  files: PullResult[];
}

/** Which revision the partial folder's files come from, so a resume never mixes two commits. */
interface PullState {
  revision: string;
  commit: string | null;
}

const STATE_FILE = ".borde-pull.json";
const SHA256_HEX = /^[0-9a-f]{64}$/i;

/** Where a repo pull keeps its files until every one is verified. */
export function stagingDir(dest: string): string {
  return `${dest}.partial-dir`;
}

export async function pullRepo(source: HubRepoSource, dest: string, options: PullOptions): Promise<RepoPullResult> {
  validate(source, options.endpoint);
  return withPullLock(dest, options.signal, async () => {
    const installed = await installedSize(dest, source);
    if (installed !== null) return { path: dest, size: installed, resumedFrom: installed, pulled: false, files: [] };

    const staging = stagingDir(dest);
    const state = await openStaging(staging, source.revision);
    const local = (file: string) => path.join(staging, ...file.split("/"));

    // What is already verified, and the size of what is not (a HEAD each, which also pins the commit
    // and fails on a missing or refused file before any byte is fetched).
    const sizes: (number | null)[] = [];
    const todo: number[] = [];
    let reused = 0;
    for (const [i, f] of source.files.entries()) {
      const done = await fileSize(local(f.file));
      if (done !== null && (f.size === null || f.size === done)) {
        sizes.push(done);
        reused += done;
        continue;
      }
      if (done !== null) await rm(local(f.file), { force: true }); // the catalog's size changed since
      let probed: Awaited<ReturnType<typeof probeFile>>;
      try {
        probed = await probeFile({ repo: source.repo, file: f.file, revision: state.commit ?? source.revision }, options);
      } catch (e) {
        if (!(f.optional && e instanceof PullError && e.httpStatus === 404)) throw e;
        sizes.push(0); // not in this repo, and not needed
        continue;
      }
      if (state.commit === null && probed.commit !== null) {
        state.commit = probed.commit;
        await writeState(staging, state);
      }
      sizes.push(f.size ?? probed.size);
      todo.push(i);
    }
    const total = sizes.every((s): s is number => s !== null) ? sizes.reduce((a, b) => a + b, 0) : null;

    const progress = new RepoProgress(options.onProgress, total, reused);
    const files: PullResult[] = [];
    for (const i of todo) {
      const f = source.files[i]!;
      const hub = { repo: source.repo, file: f.file, revision: state.commit ?? source.revision, sha256: f.sha256, size: f.size, license: source.license };
      const result = await pullFile(hub, local(f.file), { ...options, onProgress: progress.forFile() }, { gitBlob: true });
      progress.fileDone(result);
      files.push({ ...result, path: path.join(dest, ...f.file.split("/")) });
    }
    progress.finish();

    await rm(path.join(staging, STATE_FILE), { force: true });
    await rename(staging, dest);
    await syncDir(path.dirname(dest));
    const size = files.reduce((a, r) => a + r.size, reused);
    return { path: dest, size, resumedFrom: reused + files.reduce((a, r) => a + r.resumedFrom, 0), pulled: true, files };
  });
}

/**
 * Refuses a source that could write outside its folder or collide with itself, before any request:
 * file paths are checked as URLs (`resolveUrl`) and as local paths.
 */
function validate(source: HubRepoSource, endpoint: string): void {
  if (source.files.length === 0) throw new PullError("invalid", `no files listed for ${source.repo}`);
  const names = new Set(source.files.map((f) => f.file));
  if (names.size !== source.files.length) throw new PullError("invalid", `a file is listed twice for ${source.repo}`);
  for (const f of source.files) {
    resolveUrl(endpoint, { repo: source.repo, file: f.file, revision: source.revision });
    const bad =
      /[\\\0:]/.test(f.file) ||
      f.file.endsWith(".partial") ||
      f.file === STATE_FILE ||
      // A file that is also another's folder (`onnx` and `onnx/model.onnx`) cannot both be written.
      [...names].some((other) => other.startsWith(`${f.file}/`));
    if (bad) throw new PullError("invalid", `invalid file name ${JSON.stringify(f.file)} for ${source.repo}`);
    if (f.sha256 !== null && !SHA256_HEX.test(f.sha256)) throw new PullError("invalid", `catalog sha256 for ${source.repo}/${f.file} is not 64 hex digits`);
    if (f.size !== null && !(Number.isSafeInteger(f.size) && f.size >= 0)) throw new PullError("invalid", `catalog size for ${source.repo}/${f.file} is not a byte count`);
  }
}

/** Total bytes of an installed repo folder, or null when it is not installed. */
async function installedSize(dest: string, source: HubRepoSource): Promise<number | null> {
  const st = await stat(dest).catch(() => null);
  if (!st?.isDirectory()) return null;
  let size = 0;
  for (const f of source.files) size += (await fileSize(path.join(dest, ...f.file.split("/")))) ?? 0;
  return size;
}

/** Opens the partial folder, starting it afresh when it holds files of another revision (or of unknown origin). */
async function openStaging(staging: string, revision: string): Promise<PullState> {
  const text = await readFile(path.join(staging, STATE_FILE), "utf8").catch(() => null);
  const state = text === null ? null : parseState(text);
  if (state !== null && state.revision === revision) return state;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  const fresh = { revision, commit: null };
  await writeState(staging, fresh);
  return fresh;
}

function parseState(text: string): PullState | null {
  try {
    const v = JSON.parse(text) as Partial<PullState>;
    if (typeof v.revision !== "string" || !(v.commit === null || (typeof v.commit === "string" && /^[0-9a-f]{40}$/.test(v.commit)))) return null;
    return { revision: v.revision, commit: v.commit };
  } catch {
    return null;
  }
}

async function writeState(staging: string, state: PullState): Promise<void> {
  await writeFile(path.join(staging, STATE_FILE), JSON.stringify(state));
}

async function fileSize(p: string): Promise<number | null> {
  const st = await stat(p).catch(() => null);
  return st?.isFile() ? st.size : null;
}

async function syncDir(dir: string): Promise<void> {
  // Makes the rename durable; not every platform lets a directory be fsynced.
  try {
    const fh = await open(dir, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // best effort
  }
}

/** One progress over the whole repo: bytes summed over its files, speed over this pull's bytes only. */
class RepoProgress {
  private readonly started = Date.now();
  /** Bytes of the files finished so far, reused ones included. */
  private done: number;
  /** Bytes that were on disk when the pull started: reused files, and the finished files' partials. */
  private resumed: number;

  constructor(
    private readonly onProgress: ((p: PullProgress) => void) | undefined,
    private readonly total: number | null,
    reused: number,
  ) {
    this.done = reused;
    this.resumed = reused;
  }

  forFile(): ((p: PullProgress) => void) | undefined {
    if (!this.onProgress) return undefined;
    return (p) => this.emit(this.done + p.received, this.resumed + p.resumedFrom);
  }

  fileDone(result: PullResult): void {
    this.done += result.size;
    this.resumed += result.resumedFrom;
  }

  finish(): void {
    this.emit(this.done, this.resumed);
  }

  private emit(received: number, resumedFrom: number): void {
    if (!this.onProgress) return;
    const seconds = Math.max((Date.now() - this.started) / 1000, 0.001);
    const bytesPerSec = (received - resumedFrom) / seconds;
    const etaSec = this.total === null ? null : received >= this.total ? 0 : bytesPerSec > 0 ? (this.total - received) / bytesPerSec : null;
    this.onProgress({ received, total: this.total, bytesPerSec, etaSec, resumedFrom });
  }
}
