/**
 * An imitation Hugging Face hub serving one multi-file repo the way the real one does: files kept in
 * git (config.json, tokenizer.json) are answered by the hub itself with their git blob id as ETag;
 * LFS files (the weights) are a 302 to a CDN carrying X-Linked-Etag (sha256) and X-Linked-Size.
 * Every answer names the commit (`X-Repo-Commit`); `main` and that commit both resolve.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

export const REPO = "org/tiny-onnx";
export const COMMIT = "0123456789abcdef0123456789abcdef01234567";

export interface HubFile {
  file: string;
  bytes: Buffer;
  lfs: boolean;
}

export interface HubMode {
  /** Destroy the socket after this many body bytes of this file, on its next GET only. */
  cut?: { file: string; after: number };
  /** Serve this file's bytes altered (the advertised hash stays the true one). */
  corrupt?: string;
  /** Replace this file's ETag (git files) or X-Linked-Etag (LFS files); null leaves it out. */
  etag?: { file: string; value: string | null };
  /** Hold every GET body this long before sending (to make pulls overlap). */
  delayMs?: number;
}

export interface HubRequest {
  method: string;
  path: string;
  range: string | undefined;
  /** Body bytes sent (GET of file content only). */
  sent: number;
}

export interface RepoHub {
  endpoint: string;
  files: Map<string, HubFile>;
  mode: HubMode;
  requests: HubRequest[];
  /** GETs of file content (the hub's own for git files, the CDN's for LFS files), by repo path. */
  contentGets(): { file: string; range: string | undefined; sent: number }[];
  close(): Promise<void>;
}

export function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export function gitBlobId(bytes: Buffer): string {
  return createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
}

/** Deterministic filler, so that no two files (or runs) need fixtures on disk. */
export function filler(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export async function startRepoHub(files: HubFile[], repo = REPO): Promise<RepoHub> {
  const byPath = new Map(files.map((f) => [f.file, f]));
  const bySha = new Map(files.filter((f) => f.lfs).map((f) => [sha256(f.bytes), f]));
  const hub: RepoHub = {
    endpoint: "",
    files: byPath,
    mode: {},
    requests: [],
    contentGets: () =>
      hub.requests
        .filter((r) => r.method === "GET" && (r.path.startsWith("/cdn/") || (r.path.includes("/resolve/") && byPath.get(contentFile(r.path))?.lfs === false)))
        .map((r) => ({ file: contentFile(r.path), range: r.range, sent: r.sent })),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const contentFile = (p: string): string => {
    if (p.startsWith("/cdn/")) return bySha.get(p.slice("/cdn/".length))?.file ?? p;
    return decodeURIComponent(p.replace(/^\/[^/]+\/[^/]+\/resolve\/[^/]+\//, ""));
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const seen: HubRequest = { method: req.method ?? "GET", path: url.pathname, range: req.headers.range, sent: 0 };
    hub.requests.push(seen);
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (m) {
      const revision = decodeURIComponent(m[2]!);
      const file = byPath.get(m[3]!.split("/").map(decodeURIComponent).join("/"));
      if (m[1] !== repo || (revision !== "main" && revision !== COMMIT) || !file) {
        res.writeHead(404, { "x-error-code": "EntryNotFound", "x-repo-commit": COMMIT }).end("Entry not found");
        return;
      }
      const override = hub.mode.etag?.file === file.file ? hub.mode.etag : undefined;
      if (file.lfs) {
        const headers: http.OutgoingHttpHeaders = {
          location: `/cdn/${sha256(file.bytes)}?signature=xyz`,
          "x-linked-size": String(file.bytes.length),
          "x-repo-commit": COMMIT,
        };
        const etag = override ? override.value : sha256(file.bytes);
        if (etag !== null) headers["x-linked-etag"] = `"${etag}"`;
        res.writeHead(302, headers).end();
        return;
      }
      const etag = override ? override.value : gitBlobId(file.bytes);
      serve(req, res, file, seen, { "x-repo-commit": COMMIT, ...(etag === null ? {} : { etag: `"${etag}"` }) });
      return;
    }
    if (url.pathname.startsWith("/cdn/")) {
      const file = bySha.get(url.pathname.slice("/cdn/".length));
      if (!file) {
        res.writeHead(404).end();
        return;
      }
      serve(req, res, file, seen, { etag: '"s3-multipart-etag-3"' });
      return;
    }
    res.writeHead(404).end();
  });

  function serve(req: http.IncomingMessage, res: http.ServerResponse, file: HubFile, seen: HubRequest, extra: http.OutgoingHttpHeaders): void {
    let body = file.bytes;
    if (hub.mode.corrupt === file.file) {
      body = Buffer.from(body);
      body[body.length - 1] = (body[body.length - 1] ?? 0) ^ 0xff;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    let start = 0;
    if (range) {
      start = Number(range[1]);
      if (start >= body.length) {
        res.writeHead(416, { "content-range": `bytes */${body.length}`, ...extra }).end();
        return;
      }
      res.writeHead(206, { "content-length": body.length - start, "content-range": `bytes ${start}-${body.length - 1}/${body.length}`, ...extra });
    } else {
      res.writeHead(200, { "content-length": body.length, "accept-ranges": "bytes", ...extra });
    }
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const rest = body.subarray(start);
    const send = () => {
      const cut = hub.mode.cut;
      if (cut?.file === file.file) {
        hub.mode.cut = undefined;
        seen.sent = Math.min(cut.after, rest.length);
        res.write(rest.subarray(0, cut.after), () => res.socket?.destroy());
        return;
      }
      seen.sent = rest.length;
      res.end(rest);
    };
    if (hub.mode.delayMs) setTimeout(send, hub.mode.delayMs);
    else send();
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  hub.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return hub;
}
