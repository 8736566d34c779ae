/**
 * Downloads one file from a Hugging Face hub (or anything that answers its `resolve` URLs) into the
 * model store: resumable through `<dest>.partial`, sha256-verified, installed with an atomic rename
 * so a half-written file is never at `dest`. `pull-repo.ts` builds whole repo folders from it.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat, type FileHandle } from "node:fs/promises";
import path from "node:path";
import type { HubSource } from "./types.js";

export interface PullProgress {
  /** Bytes in the partial file so far, resumed bytes included. */
  received: number;
  /** Full size of the file, when known. */
  total: number | null;
  /** Average speed of this transfer (resumed bytes excluded). */
  bytesPerSec: number;
  /** Seconds left at the current speed; null while unknown. */
  etaSec: number | null;
  /** Bytes that were already in the partial file when this transfer started. */
  resumedFrom: number;
}

export interface PullOptions {
  /** Hub base URL, e.g. `https://huggingface.co` (or `HF_ENDPOINT`). */
  endpoint: string;
  /** Hub token (`HF_TOKEN`), sent as `Authorization: Bearer`, only to the hub's own origin. */
  token?: string;
  /** Injected for tests; defaults to the global `fetch`. */
  fetch?: typeof fetch;
  /** Aborting leaves the partial file in place so the next pull resumes it. */
  signal?: AbortSignal;
  /** Called at most every 100 ms while bytes arrive, and once at the end. */
  onProgress?: (p: PullProgress) => void;
}

export interface PullResult {
  path: string;
  sha256: string;
  size: number;
  /** Bytes reused from an earlier, interrupted pull (0 for a fresh download). */
  resumedFrom: number;
}

export type PullErrorReason =
  | "http" // the hub answered with an error status
  | "network" // the connection failed or was cut; the partial file is kept for a resume
  | "incomplete" // the body ended before the expected size; the partial file is kept
  | "checksum" // sha256 did not match; the partial file was deleted
  | "size" // size did not match; the partial file was deleted
  | "unverifiable" // no expected sha256 known: refusing to install an unverified file
  | "invalid"; // the source itself is malformed

/** A failed pull. `message` is one line, fit to print as is. */
export class PullError extends Error {
  constructor(
    readonly reason: PullErrorReason,
    message: string,
    readonly httpStatus?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PullError";
  }
}

const MAX_REDIRECTS = 10;
const PROGRESS_INTERVAL_MS = 100;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const SHA1_HEX = /^[0-9a-f]{40}$/;

/** The hub URL of a file: `${endpoint}/${repo}/resolve/${revision}/${file}`, each segment encoded. */
export function resolveUrl(endpoint: string, source: Pick<HubSource, "repo" | "file" | "revision">): string {
  const segments = (p: string, what: string): string => {
    const parts = p.split("/");
    // "." and ".." would be collapsed by URL parsing and point somewhere else on the hub.
    if (parts.some((s) => s === "" || s === "." || s === "..")) {
      throw new PullError("invalid", `invalid ${what} ${JSON.stringify(p)}`);
    }
    return parts.map(encodeURIComponent).join("/");
  };
  if (source.revision === "") throw new PullError("invalid", "empty revision");
  const base = endpoint.replace(/\/+$/, "");
  return `${base}/${segments(source.repo, "repo")}/resolve/${encodeURIComponent(source.revision)}/${segments(source.file, "file")}`;
}

/** `"<hex>"`, `W/"<hex>"` or `<hex>` → lower-case hex, if it has the given form. */
function hexFromEtag(value: string | null, form: RegExp): string | null {
  if (value === null) return null;
  const v = value.trim().replace(/^W\//, "").replace(/^"(.*)"$/, "$1").toLowerCase();
  return form.test(v) ? v : null;
}

function parseSize(value: string | null): number | null {
  if (value === null || !/^\d+$/.test(value.trim())) return null;
  return Number(value.trim());
}

// Parses `bytes a-b/total`, or `bytes */total` (sent with a 416).
function parseContentRange(value: string | null): { start: number | null; total: number | null } | null {
  if (value === null) return null;
  const m = /^bytes\s+(?:(\d+)-\d+|\*)\/(\d+|\*)$/.exec(value.trim());
  if (!m) return null;
  return { start: m[1] === undefined ? null : Number(m[1]), total: m[2] === "*" || m[2] === undefined ? null : Number(m[2]) };
}

async function fileSize(p: string): Promise<number> {
  try {
    return (await stat(p)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw e;
  }
}

async function hashFile(p: string, hash: Hasher, length: number): Promise<void> {
  if (length === 0) return;
  const stream = createReadStream(p, { start: 0, end: length - 1 });
  for await (const chunk of stream) hash.update(chunk as Buffer);
}

interface HubHeaders {
  /** From `X-Linked-Etag`, else a 64-hex `ETag` from the hub's own origin. */
  sha256: string | null;
  /**
   * A 40-hex `ETag` from the hub's own origin: for a file kept in git rather than LFS (config.json,
   * tokenizer.json) the hub's ETag is the git blob id, sha1 over `blob <size>\0` and the bytes.
   */
  gitBlob: string | null;
  /** From `X-Linked-Size`. */
  size: number | null;
  /** From `X-Repo-Commit`: the commit a branch or tag resolved to. */
  commit: string | null;
}

interface Fetched {
  response: Response;
  hub: HubHeaders;
}

function httpError(status: number, url: string, tokenSent: boolean): PullError {
  let hint = "";
  if (status === 401 || status === 403) {
    hint = tokenSent
      ? " (the token in HF_TOKEN was refused or has no access to this repository; gated repositories must be accepted on the hub first)"
      : " (the repository may be gated or private: set HF_TOKEN to a hub token with access)";
  } else if (status === 404) {
    hint = " (no such repository, revision or file)";
  } else if (status === 429) {
    hint = " (rate limited; try again later or set HF_TOKEN)";
  }
  return new PullError("http", `hub answered ${status} for ${url}${hint}`, status);
}

function isRedirect(status: number): boolean {
  return status >= 300 && status < 400 && status !== 304;
}

/**
 * Requests with redirects followed by hand: the hub 302s to a CDN on another host, and the token must
 * only ever go to the hub's own origin. (Fetch drops Authorization across origins too, but not every
 * runtime or injected fetch does, and the hub's headers on the redirect itself are needed.)
 * `stopAt` ends the walk early on an answer that already says enough (a HEAD probe).
 */
async function hubRequest(
  url: string,
  init: { method: "GET" | "HEAD"; range: number; stopAt?: (response: Response, hub: HubHeaders, crossOrigin: boolean) => boolean },
  options: PullOptions,
): Promise<Fetched> {
  const doFetch = options.fetch ?? globalThis.fetch;
  const hubOrigin = new URL(url).origin;
  const hub: HubHeaders = { sha256: null, gitBlob: null, size: null, commit: null };
  let current = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const sameOrigin = new URL(current).origin === hubOrigin;
    const headers: Record<string, string> = { "user-agent": "borde", "accept-encoding": "identity" };
    if (init.range > 0) headers.range = `bytes=${init.range}-`;
    if (options.token && sameOrigin) headers.authorization = `Bearer ${options.token}`;
    let response: Response;
    try {
      response = await doFetch(current, { method: init.method, headers, redirect: "manual", signal: options.signal });
    } catch (e) {
      if (options.signal?.aborted) throw options.signal.reason ?? e;
      throw new PullError("network", `cannot reach ${hop === 0 ? url : new URL(current).host}: ${errorText(e)}`, undefined, { cause: e });
    }
    // The hub sends the LFS sha256 and size on its own answers (the redirect, or the file itself).
    hub.sha256 ??= hexFromEtag(response.headers.get("x-linked-etag"), SHA256_HEX);
    hub.size ??= parseSize(response.headers.get("x-linked-size"));
    if (sameOrigin) {
      hub.sha256 ??= hexFromEtag(response.headers.get("etag"), SHA256_HEX);
      // A CDN's ETag is its own business (S3 multipart ids); only the hub's names a git blob.
      if (response.headers.get("x-linked-etag") === null) hub.gitBlob ??= hexFromEtag(response.headers.get("etag"), SHA1_HEX);
      hub.commit ??= hexFromEtag(response.headers.get("x-repo-commit"), SHA1_HEX);
    }

    if (isRedirect(response.status)) {
      const location = response.headers.get("location");
      await response.body?.cancel().catch(() => {});
      if (!location) throw new PullError("http", `hub answered ${response.status} without a Location for ${url}`, response.status);
      const next = new URL(location, current);
      if (init.stopAt?.(response, hub, next.origin !== hubOrigin)) return { response, hub };
      current = next.toString();
      continue;
    }
    if (response.status === 416 || response.ok) return { response, hub };
    await response.body?.cancel().catch(() => {});
    throw httpError(response.status, url, Boolean(options.token));
  }
  throw new PullError("http", `too many redirects for ${url}`);
}

/**
 * What the hub says about a file before downloading it: its size and the commit its revision is at.
 * A HEAD that stops at the hub's own redirect to a CDN (which carries `X-Linked-Size`), the way hub
 * clients learn a file's metadata; refused files (401, 404) fail here, before any byte is fetched.
 */
export async function probeFile(source: Pick<HubSource, "repo" | "file" | "revision">, options: PullOptions): Promise<{ size: number | null; commit: string | null }> {
  const url = resolveUrl(options.endpoint, source);
  const { response, hub } = await hubRequest(url, { method: "HEAD", range: 0, stopAt: (_r, hub, crossOrigin) => crossOrigin || hub.size !== null }, options);
  await response.body?.cancel().catch(() => {});
  const size = hub.size ?? (response.ok ? parseSize(response.headers.get("content-length")) : null);
  return { size, commit: hub.commit };
}

function errorText(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
  return `${e.message}${cause}`;
}

class Progress {
  private last = 0;
  private readonly started = Date.now();
  constructor(
    private readonly onProgress: ((p: PullProgress) => void) | undefined,
    private readonly resumedFrom: number,
    private readonly total: number | null,
  ) {}

  report(received: number, force = false): void {
    if (!this.onProgress) return;
    const now = Date.now();
    if (!force && now - this.last < PROGRESS_INTERVAL_MS) return;
    this.last = now;
    const seconds = Math.max((now - this.started) / 1000, 0.001);
    const bytesPerSec = (received - this.resumedFrom) / seconds;
    const etaSec =
      this.total === null ? null : received >= this.total ? 0 : bytesPerSec > 0 ? (this.total - received) / bytesPerSec : null;
    this.onProgress({ received, total: this.total, bytesPerSec, etaSec, resumedFrom: this.resumedFrom });
  }
}

/** What the downloaded bytes must hash to. */
type Expected = { kind: "sha256"; hex: string; from: "catalog" | "hub" } | { kind: "git-blob"; hex: string };

/** Always the bytes' sha256 (what a pull reports); also git's blob id when that is what is checked. */
class Hasher {
  private readonly sha256 = createHash("sha256");
  private readonly blob: Hash | null;
  constructor(gitBlobSize: number | null) {
    this.blob = gitBlobSize === null ? null : createHash("sha1").update(`blob ${gitBlobSize}\0`);
  }
  update(bytes: Uint8Array): void {
    this.sha256.update(bytes);
    this.blob?.update(bytes);
  }
  digest(): { sha256: string; gitBlob: string | null } {
    return { sha256: this.sha256.digest("hex"), gitBlob: this.blob?.digest("hex") ?? null };
  }
}

function hasherFor(expected: Expected, size: number): Hasher {
  return new Hasher(expected.kind === "git-blob" ? size : null);
}

/** The mismatch, as one line; null when the bytes are the expected ones. */
function mismatch(expected: Expected, got: { sha256: string; gitBlob: string | null }, url: string): string | null {
  if (expected.kind === "sha256") return got.sha256 === expected.hex ? null : `sha256 mismatch for ${url}: expected ${expected.hex}, got ${got.sha256}`;
  return got.gitBlob === expected.hex ? null : `git blob id mismatch for ${url}: expected ${expected.hex} (the hub's ETag), got ${got.gitBlob}`;
}

/**
 * How a file may be verified. A GGUF, or any weights file, must have a sha256 (the catalog's or the
 * hub's LFS one). `gitBlob` also accepts, for a file the hub keeps in git rather than LFS and so
 * has no sha256 for, the git blob id the hub sends as its ETag: the bytes are then proven to be
 * the ones in the hub's commit, with SHA-1's (weaker, but not forgeable by a transfer error or a
 * truncation) strength. Repo pulls use it for config.json and tokenizer files.
 */
export interface VerifyPolicy {
  gitBlob: boolean;
}

/**
 * Pulls `source` into `dest`. Resumes `${dest}.partial` when one is there; refuses to install a
 * file whose sha256 it cannot check (no `source.sha256` and no hub-provided hash).
 */
export async function pullFile(source: HubSource, dest: string, options: PullOptions, policy: VerifyPolicy = { gitBlob: false }): Promise<PullResult> {
  const url = resolveUrl(options.endpoint, source);
  const partial = `${dest}.partial`;
  if (source.sha256 !== null && !SHA256_HEX.test(source.sha256.toLowerCase())) {
    throw new PullError("invalid", `catalog sha256 for ${source.repo}/${source.file} is not 64 hex digits`);
  }
  await mkdir(path.dirname(dest), { recursive: true });

  // At most one restart from zero: after a 200 that ignored Range, a bad 416 or a wrong Content-Range.
  for (let attempt = 0; ; attempt++) {
    const outcome = await attemptPull(source, url, dest, partial, options, policy, attempt > 0);
    if (outcome !== "restart") return outcome;
    if (attempt >= 1) throw new PullError("http", `hub kept answering inconsistent ranges for ${url}`);
    await rm(partial, { force: true });
  }
}

async function attemptPull(
  source: HubSource,
  url: string,
  dest: string,
  partial: string,
  options: PullOptions,
  policy: VerifyPolicy,
  fresh: boolean,
): Promise<PullResult | "restart"> {
  let start = fresh ? 0 : await fileSize(partial);
  if (source.size !== null && start > source.size) {
    await rm(partial, { force: true });
    start = 0;
  }

  const { response, hub } = await hubRequest(url, { method: "GET", range: start }, options);
  try {
    const expected = expectedDigest(source, hub, policy, url);
    // A catalog pin that disagrees with the hub means the file changed upstream: stop before downloading it.
    if (expected.kind === "sha256" && expected.from === "catalog" && hub.sha256 !== null && hub.sha256 !== expected.hex) {
      await rm(partial, { force: true });
      throw new PullError("checksum", `sha256 mismatch for ${url}: expected ${expected.hex} (catalog), hub reports ${hub.sha256}`);
    }
    if (source.size !== null && hub.size !== null && hub.size !== source.size) {
      await rm(partial, { force: true });
      throw new PullError("size", `size mismatch for ${url}: expected ${source.size} bytes (catalog), hub reports ${hub.size}`);
    }
    let expectedSize = source.size ?? hub.size;

    if (response.status === 416) {
      // Nothing left past `start`: the partial is either the whole file or garbage.
      const total = parseContentRange(response.headers.get("content-range"))?.total ?? expectedSize;
      if (start > 0 && total !== null && start === total) {
        const hash = hasherFor(expected, start);
        await hashFile(partial, hash, start);
        const got = hash.digest();
        if (mismatch(expected, got, url) === null) return await install(partial, dest, got.sha256, start, start, options, expectedSize);
      }
      return "restart";
    }

    let offset = 0;
    if (response.status === 206) {
      const range = parseContentRange(response.headers.get("content-range"));
      if (range === null || range.start !== start) return "restart";
      offset = start;
      expectedSize ??= range.total;
    } else {
      // 200: a full body, whether or not we asked for a range.
      expectedSize ??= parseSize(response.headers.get("content-length"));
    }
    if (expectedSize !== null && offset > expectedSize) return "restart";
    // Git's blob id hashes the size first, so it must be known before the first byte.
    if (expected.kind === "git-blob" && expectedSize === null) {
      throw new PullError("unverifiable", `the hub sent no size for ${url}, needed to check its git blob id; refusing to install an unverified file`);
    }

    const hash = hasherFor(expected, expectedSize ?? 0);
    await hashFile(partial, hash, offset);
    const received = await receive(response, partial, offset, hash, expectedSize, url, options);
    const got = hash.digest();

    if (expectedSize !== null && received < expectedSize) {
      throw new PullError("incomplete", `transfer of ${url} ended early at ${received} of ${expectedSize} bytes; pull again to resume`);
    }
    if (expectedSize !== null && received > expectedSize) {
      await rm(partial, { force: true });
      throw new PullError("size", `size mismatch for ${url}: expected ${expectedSize} bytes, got ${received}`);
    }
    const wrong = mismatch(expected, got, url);
    if (wrong !== null) {
      await rm(partial, { force: true });
      throw new PullError("checksum", wrong);
    }
    return await install(partial, dest, got.sha256, received, offset, options, expectedSize);
  } finally {
    // Releases the connection when we bail out before reading the body (no-op once consumed).
    await response.body?.cancel().catch(() => {});
  }
}

function expectedDigest(source: HubSource, hub: HubHeaders, policy: VerifyPolicy, url: string): Expected {
  if (source.sha256 !== null) return { kind: "sha256", hex: source.sha256.toLowerCase(), from: "catalog" };
  if (hub.sha256 !== null) return { kind: "sha256", hex: hub.sha256, from: "hub" };
  if (policy.gitBlob && hub.gitBlob !== null) return { kind: "git-blob", hex: hub.gitBlob };
  const sent = policy.gitBlob ? "no X-Linked-Etag and no git blob ETag" : "no X-Linked-Etag";
  throw new PullError("unverifiable", `no sha256 known for ${url}: the catalog has none and the hub sent ${sent}; refusing to install an unverified file`);
}

/** Streams the body into the partial file (appending at `offset`), hashing as it goes. */
async function receive(
  response: Response,
  partial: string,
  offset: number,
  hash: Hasher,
  expectedSize: number | null,
  url: string,
  options: PullOptions,
): Promise<number> {
  const progress = new Progress(options.onProgress, offset, expectedSize);
  let received = offset;
  let fh: FileHandle | undefined;
  try {
    fh = await open(partial, offset === 0 ? "w" : "r+");
    progress.report(received, true);
    if (response.body === null) return received;
    const reader = response.body.getReader();
    for (;;) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (options.signal?.aborted) throw options.signal.reason ?? e;
        throw new PullError(
          "network",
          `transfer of ${url} was cut at ${received} bytes (${errorText(e)}); pull again to resume`,
          undefined,
          { cause: e },
        );
      }
      if (chunk.done) break;
      const bytes = chunk.value;
      // Positional writes: a partial opened "r+" must be extended exactly at `received`.
      await fh.write(bytes, 0, bytes.byteLength, received);
      hash.update(bytes);
      const first = received === offset;
      received += bytes.byteLength;
      if (expectedSize !== null && received > expectedSize) break;
      progress.report(received, first);
    }
    await fh.sync();
    progress.report(received, true);
    return received;
  } finally {
    await fh?.close();
  }
}

async function install(
  partial: string,
  dest: string,
  sha256: string,
  size: number,
  resumedFrom: number,
  options: PullOptions,
  expectedSize: number | null,
): Promise<PullResult> {
  const fh = await open(partial, "r+");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(partial, dest);
  // Make the rename itself durable; not every platform lets a directory be fsynced.
  try {
    const dir = await open(path.dirname(dest), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch {
    // best effort
  }
  if (resumedFrom === size) {
    // Installed straight from a complete partial (416): still tell the listener it is done.
    options.onProgress?.({ received: size, total: expectedSize ?? size, bytesPerSec: 0, etaSec: 0, resumedFrom });
  }
  return { path: dest, sha256, size, resumedFrom };
}
