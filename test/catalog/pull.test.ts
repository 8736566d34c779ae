import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { createProgressBar, formatBytes, formatDuration } from "../../src/catalog/progress.js";
import { pullFile, PullError, resolveUrl, type PullProgress } from "../../src/catalog/pull.js";
import { isRepoSource, type CatalogEntry, type HubSource } from "../../src/catalog/types.js";
import { TASKS } from "../../src/tasks/types.js";

// CI runs from another clone folder with shared/ beside the repository root.
const MODEL_PATH = path.resolve(import.meta.dirname, "../../../shared/models/stories260K.gguf");
const REPO = "ggml-org/tinyllamas";
const FILE = "tiny/stories260K.gguf";

/** How the imitation hub misbehaves in the current test; reset before each test. */
interface Mode {
  /** Answer 401 unless this Bearer token is sent to the hub. */
  requireToken?: string;
  /** Destroy the socket after this many body bytes, on the next CDN request only. */
  cutAfter?: number;
  /** Send this many body bytes, then hang (until the client goes away). */
  stallAfter?: number;
  /** Answer 200 with the whole file even when a Range is asked for. */
  ignoreRange?: boolean;
  /** Serve bytes that do not match the advertised hash. */
  corrupt?: boolean;
  /** X-Linked-Etag value; null leaves the header out. Defaults to the real sha256. */
  linkedEtag?: string | null;
  /** Origin the hub redirects to (another server = another origin); defaults to itself. */
  cdnOrigin?: string;
}

interface Seen {
  server: "hub" | "other";
  path: string;
  range: string | undefined;
  authorization: string | undefined;
}

let bytes: Buffer;
let sha: string;
let mode: Mode = {};
const seen: Seen[] = [];
let hub: http.Server;
let other: http.Server;
let endpoint: string;
let otherOrigin: string;
const tmpDirs: string[] = [];

function handler(server: Seen["server"]): http.RequestListener {
  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    seen.push({ server, path: url.pathname, range: req.headers.range, authorization: req.headers.authorization });

    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (resolve) {
      if (mode.requireToken !== undefined && req.headers.authorization !== `Bearer ${mode.requireToken}`) {
        res.writeHead(401, { "content-type": "text/plain" }).end("Invalid credentials");
        return;
      }
      const file = (resolve[3] ?? "").split("/").map(decodeURIComponent).join("/");
      if (resolve[1] !== REPO || decodeURIComponent(resolve[2] ?? "") !== "main" || file !== FILE) {
        res.writeHead(404, { "x-error-code": "EntryNotFound" }).end("Entry not found");
        return;
      }
      const headers: http.OutgoingHttpHeaders = {
        location: `${mode.cdnOrigin ?? ""}/cdn/${sha}?signature=xyz`,
        "x-linked-size": String(bytes.length),
        "x-repo-commit": "0123456789abcdef0123456789abcdef01234567",
      };
      const etag = mode.linkedEtag === undefined ? sha : mode.linkedEtag;
      if (etag !== null) headers["x-linked-etag"] = `"${etag}"`;
      res.writeHead(302, headers).end();
      return;
    }

    if (url.pathname.startsWith("/cdn/")) {
      const body = mode.corrupt ? Buffer.from(bytes) : bytes;
      if (mode.corrupt) body[body.length - 10] = (body[body.length - 10] ?? 0) ^ 0xff;
      const range = mode.ignoreRange ? undefined : /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
      let start = 0;
      if (range) {
        start = Number(range[1]);
        if (start >= body.length) {
          res.writeHead(416, { "content-range": `bytes */${body.length}` }).end();
          return;
        }
        res.writeHead(206, {
          "content-length": body.length - start,
          "content-range": `bytes ${start}-${body.length - 1}/${body.length}`,
          "accept-ranges": "bytes",
          etag: '"s3-multipart-etag-3"',
        });
      } else {
        res.writeHead(200, { "content-length": body.length, "accept-ranges": "bytes", etag: '"s3-multipart-etag-3"' });
      }
      const rest = body.subarray(start);
      if (mode.cutAfter !== undefined) {
        const n = mode.cutAfter;
        mode.cutAfter = undefined;
        res.write(rest.subarray(0, n), () => res.socket?.destroy());
        return;
      }
      if (mode.stallAfter !== undefined) {
        res.write(rest.subarray(0, mode.stallAfter));
        return; // never ends; the client aborts, `after` closes what is left
      }
      res.end(rest);
      return;
    }
    res.writeHead(404).end();
  };
}

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function tmpDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "borde-pull-"));
  tmpDirs.push(dir);
  return dir;
}

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

function source(over: Partial<HubSource> = {}): HubSource {
  return { repo: REPO, file: FILE, revision: "main", sha256: null, size: null, license: "mit", ...over };
}

function cdnRequests(): Seen[] {
  return seen.filter((s) => s.path.startsWith("/cdn/"));
}

before(async () => {
  bytes = await fs.readFile(MODEL_PATH);
  sha = createHash("sha256").update(bytes).digest("hex");
  hub = http.createServer(handler("hub"));
  other = http.createServer(handler("other"));
  endpoint = await listen(hub);
  otherOrigin = await listen(other);
});

after(async () => {
  for (const server of [hub, other]) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  await Promise.all(tmpDirs.map((d) => fs.rm(d, { recursive: true, force: true })));
});

beforeEach(() => {
  mode = {};
  seen.length = 0;
});

describe("pullFile", () => {
  test("pulls through the hub's redirect and verifies against X-Linked-Etag", async () => {
    const dest = path.join(await tmpDir(), "nested", "folder", "model.gguf");
    const progress: PullProgress[] = [];
    const result = await pullFile(source(), dest, { endpoint, onProgress: (p) => progress.push(p) });

    assert.deepEqual(result, { path: dest, sha256: sha, size: bytes.length, resumedFrom: 0 });
    assert.ok((await fs.readFile(dest)).equals(bytes));
    assert.equal(await exists(`${dest}.partial`), false);
    assert.deepEqual(
      seen.map((s) => s.path),
      [`/${REPO}/resolve/main/tiny/stories260K.gguf`, `/cdn/${sha}`],
    );
    assert.equal(cdnRequests()[0]?.range, undefined);
    const last = progress.at(-1);
    assert.equal(last?.received, bytes.length);
    assert.equal(last?.total, bytes.length);
    assert.equal(last?.etaSec, 0);
  });

  test("accepts a catalog sha256 and size that match the hub", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    const result = await pullFile(source({ sha256: sha.toUpperCase(), size: bytes.length }), dest, { endpoint: `${endpoint}/` });
    assert.equal(result.sha256, sha);
    assert.ok((await fs.readFile(dest)).equals(bytes));
  });

  test("resumes a cut transfer with a Range request from the partial's size", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    const cut = 300_000;
    mode.cutAfter = cut;
    await assert.rejects(pullFile(source(), dest, { endpoint }), (err: unknown) => {
      assert.ok(err instanceof PullError, String(err));
      assert.match(err.message, /pull again to resume/);
      return true;
    });
    assert.equal(await exists(dest), false);
    const partialSize = (await fs.stat(`${dest}.partial`)).size;
    assert.ok(partialSize > 0 && partialSize <= cut, `partial holds ${partialSize} bytes`);
    assert.ok((await fs.readFile(`${dest}.partial`)).equals(bytes.subarray(0, partialSize)));

    seen.length = 0;
    const progress: PullProgress[] = [];
    const result = await pullFile(source(), dest, { endpoint, onProgress: (p) => progress.push(p) });
    assert.equal(cdnRequests()[0]?.range, `bytes=${partialSize}-`);
    assert.equal(result.resumedFrom, partialSize);
    assert.equal(result.sha256, sha);
    assert.ok((await fs.readFile(dest)).equals(bytes));
    assert.equal(await exists(`${dest}.partial`), false);
    assert.ok(progress.every((p) => p.resumedFrom === partialSize));
  });

  test("refuses a file whose sha256 differs from the catalog's, removing the partial", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    await fs.writeFile(`${dest}.partial`, bytes.subarray(0, 1000));
    const wrong = "0".repeat(64);
    await assert.rejects(pullFile(source({ sha256: wrong }), dest, { endpoint }), (err: unknown) => {
      assert.ok(err instanceof PullError);
      assert.equal(err.reason, "checksum");
      assert.match(err.message, new RegExp(`expected ${wrong}.*${sha}`));
      return true;
    });
    assert.equal(await exists(dest), false);
    assert.equal(await exists(`${dest}.partial`), false);
  });

  test("refuses bytes that do not hash to the hub's sha256", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    mode.corrupt = true;
    await assert.rejects(pullFile(source(), dest, { endpoint }), (err: unknown) => {
      assert.ok(err instanceof PullError);
      assert.equal(err.reason, "checksum");
      assert.match(err.message, new RegExp(`expected ${sha}, got [0-9a-f]{64}$`));
      return true;
    });
    assert.equal(await exists(dest), false);
    assert.equal(await exists(`${dest}.partial`), false);
  });

  test("refuses a size that disagrees with the catalog", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    await assert.rejects(pullFile(source({ size: bytes.length + 1 }), dest, { endpoint }), /size mismatch.*expected \d+ bytes \(catalog\), hub reports \d+/);
    assert.equal(await exists(dest), false);
  });

  test("refuses to install when no sha256 is known at all", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    mode.linkedEtag = null;
    await assert.rejects(pullFile(source(), dest, { endpoint }), (err: unknown) => {
      assert.ok(err instanceof PullError);
      assert.equal(err.reason, "unverifiable");
      return true;
    });
    assert.equal(await exists(dest), false);
    assert.equal(await exists(`${dest}.partial`), false);
    // Refused as soon as the headers arrived; the body was never read.
    assert.equal(cdnRequests().length, 1);
  });

  test("a 404 gives a clear one-line error", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    await assert.rejects(pullFile(source({ file: "missing.gguf" }), dest, { endpoint }), (err: unknown) => {
      assert.ok(err instanceof PullError);
      assert.equal(err.httpStatus, 404);
      assert.equal(err.message, `hub answered 404 for ${endpoint}/${REPO}/resolve/main/missing.gguf (no such repository, revision or file)`);
      return true;
    });
    assert.equal(await exists(dest), false);
    assert.equal(await exists(`${dest}.partial`), false);
  });

  test("restarts from zero when the server ignores Range and answers 200", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    await fs.writeFile(`${dest}.partial`, Buffer.alloc(5000, 0x41)); // junk that must not survive
    mode.ignoreRange = true;
    const result = await pullFile(source(), dest, { endpoint });
    assert.equal(cdnRequests()[0]?.range, "bytes=5000-");
    assert.equal(result.resumedFrom, 0);
    assert.equal(result.sha256, sha);
    assert.ok((await fs.readFile(dest)).equals(bytes));
  });

  test("installs a partial that is already complete when the server answers 416", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    await fs.writeFile(`${dest}.partial`, bytes);
    const result = await pullFile(source(), dest, { endpoint });
    assert.equal(cdnRequests()[0]?.range, `bytes=${bytes.length}-`);
    assert.deepEqual(result, { path: dest, sha256: sha, size: bytes.length, resumedFrom: bytes.length });
    assert.ok((await fs.readFile(dest)).equals(bytes));
    assert.equal(await exists(`${dest}.partial`), false);
  });

  test("sends HF_TOKEN as a Bearer token to the hub, and a 401 hints at it", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    mode.requireToken = "hf_secret";
    await assert.rejects(pullFile(source(), dest, { endpoint }), (err: unknown) => {
      assert.ok(err instanceof PullError);
      assert.equal(err.httpStatus, 401);
      assert.match(err.message, /^hub answered 401 for .* set HF_TOKEN/);
      return true;
    });
    await assert.rejects(pullFile(source(), dest, { endpoint, token: "hf_wrong" }), /401.*token in HF_TOKEN was refused/);

    seen.length = 0;
    const result = await pullFile(source(), dest, { endpoint, token: "hf_secret" });
    assert.equal(result.sha256, sha);
    assert.equal(seen[0]?.authorization, "Bearer hf_secret");
    // Same origin (a renamed repo, a same-host CDN): the token may follow.
    assert.equal(cdnRequests()[0]?.authorization, "Bearer hf_secret");
  });

  test("never sends the token to a CDN on another origin", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    mode.requireToken = "hf_secret";
    mode.cdnOrigin = otherOrigin;
    const result = await pullFile(source(), dest, { endpoint, token: "hf_secret" });
    assert.equal(result.sha256, sha);
    const [first, second] = seen;
    assert.equal(first?.server, "hub");
    assert.equal(first?.authorization, "Bearer hf_secret");
    assert.equal(second?.server, "other");
    assert.equal(second?.authorization, undefined);
  });

  test("abort via signal keeps the partial, and the next pull resumes it", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    mode.stallAfter = 100_000;
    const controller = new AbortController();
    await assert.rejects(
      pullFile(source(), dest, {
        endpoint,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.received > 0) controller.abort();
        },
      }),
      (err: unknown) => {
        assert.equal((err as Error).name, "AbortError");
        return true;
      },
    );
    assert.equal(await exists(dest), false);
    const partialSize = (await fs.stat(`${dest}.partial`)).size;
    assert.ok(partialSize > 0 && partialSize <= 100_000, `partial holds ${partialSize} bytes`);

    mode = {};
    seen.length = 0;
    const result = await pullFile(source(), dest, { endpoint });
    assert.equal(cdnRequests()[0]?.range, `bytes=${partialSize}-`);
    assert.equal(result.resumedFrom, partialSize);
    assert.ok((await fs.readFile(dest)).equals(bytes));
  });

  test("uses an injected fetch", async () => {
    const dest = path.join(await tmpDir(), "model.gguf");
    const urls: string[] = [];
    const fetchSpy: typeof fetch = (input, init) => {
      urls.push(String(input));
      return fetch(input, init);
    };
    await pullFile(source(), dest, { endpoint, fetch: fetchSpy });
    assert.deepEqual(urls, [`${endpoint}/${REPO}/resolve/main/tiny/stories260K.gguf`, `${endpoint}/cdn/${sha}?signature=xyz`]);
  });
});

describe("resolveUrl", () => {
  test("encodes each path segment and the revision as one segment", () => {
    assert.equal(
      resolveUrl("https://huggingface.co/", { repo: "org/repo", file: "sub dir/a#b.gguf", revision: "refs/pr/1" }),
      "https://huggingface.co/org/repo/resolve/refs%2Fpr%2F1/sub%20dir/a%23b.gguf",
    );
  });

  test("rejects paths that would escape through URL normalisation", () => {
    assert.throws(() => resolveUrl("https://h", { repo: "org/repo", file: "../x.gguf", revision: "main" }), PullError);
    assert.throws(() => resolveUrl("https://h", { repo: "org//repo", file: "x.gguf", revision: "main" }), PullError);
  });
});

describe("createProgressBar", () => {
  function fakeStream(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
    let out = "";
    const stream = {
      isTTY,
      columns: 100,
      write(chunk: string): boolean {
        out += chunk;
        return true;
      },
    } as unknown as NodeJS.WriteStream;
    return { stream, text: () => out };
  }
  const p = (received: number): PullProgress => ({ received, total: 4_000_000, bytesPerSec: 1_500_000, etaSec: 2.5, resumedFrom: 0 });

  test("redraws one line on a TTY", () => {
    const { stream, text } = fakeStream(true);
    const bar = createProgressBar(stream, "llama");
    bar.update(p(1_000_000));
    bar.update(p(4_000_000));
    bar.done();
    const out = text();
    assert.equal(out.split("\r").length, 4); // two updates and the final redraw
    assert.ok(out.endsWith("\n"));
    assert.match(out, /llama \[#+\]\s+100% 4\.00 MB \/ 4\.00 MB {2}1\.50 MB\/s {2}ETA 3s/);
  });

  test("prints throttled plain lines elsewhere, plus a final one", () => {
    const { stream, text } = fakeStream(false);
    const bar = createProgressBar(stream, "llama");
    bar.update(p(1_000_000));
    bar.update(p(2_000_000)); // within 2 s of the first: not printed
    bar.update(p(4_000_000));
    bar.done();
    const lines = text().trimEnd().split("\n");
    assert.equal(lines.length, 2);
    assert.match(lines[0] ?? "", /^llama 25% 1\.00 MB \/ 4\.00 MB/);
    assert.match(lines[1] ?? "", /^llama 100% 4\.00 MB \/ 4\.00 MB/);
    assert.ok(!text().includes("\r"));
  });

  test("formats bytes and durations", () => {
    assert.equal(formatBytes(999), "999 B");
    assert.equal(formatBytes(807_694_464), "808 MB");
    assert.equal(formatBytes(4_920_739_232), "4.92 GB");
    assert.equal(formatDuration(42), "42s");
    assert.equal(formatDuration(185), "3m05s");
    assert.equal(formatDuration(3720), "1h02m");
  });
});

describe("catalog.json", () => {
  test("every entry is well formed", async () => {
    const file = path.resolve(import.meta.dirname, "../../src/catalog/catalog.json");
    const entries = JSON.parse(await fs.readFile(file, "utf8")) as CatalogEntry[];
    assert.ok(Array.isArray(entries) && entries.length > 0);
    const ids = new Set<string>();
    const checkHash = (id: string, f: { sha256: string | null; size: number | null }) => {
      assert.ok(f.sha256 === null || /^[0-9a-f]{64}$/.test(f.sha256), `${id}: sha256`);
      assert.ok(f.size === null || (Number.isSafeInteger(f.size) && f.size > 0), `${id}: size`);
    };
    for (const e of entries) {
      assert.match(e.id, /^@(cf|borde)\/[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)*$/, e.id);
      assert.ok(!ids.has(e.id), `duplicate id ${e.id}`);
      ids.add(e.id);
      assert.ok((TASKS as readonly string[]).includes(e.task), `${e.id}: task ${e.task}`);
      assert.equal(typeof e.description, "string");
      assert.ok(e.description.length > 0, `${e.id}: description`);
      const s = e.source;
      assert.match(s.repo, /^[\w.-]+\/[\w.-]+$/, `${e.id}: repo`);
      assert.ok(s.revision.length > 0, `${e.id}: revision`);
      assert.ok(typeof s.license === "string" && s.license.length > 0, `${e.id}: license`);
      if (isRepoSource(s)) {
        // A repo is a folder for the ONNX engine (transformers.js): its config and at least one model file.
        assert.equal(e.engine, "onnx", `${e.id}: engine`);
        const names = s.files.map((f) => f.file);
        assert.ok(names.includes("config.json"), `${e.id}: config.json`);
        assert.ok(names.some((n) => /^onnx\/.*_quantized\.onnx$/.test(n)), `${e.id}: a quantized onnx/ file`);
        assert.equal(new Set(names).size, names.length, `${e.id}: duplicate files`);
        for (const f of s.files) {
          checkHash(`${e.id} ${f.file}`, f);
          assert.doesNotThrow(() => resolveUrl("https://huggingface.co", { repo: s.repo, file: f.file, revision: s.revision }));
        }
      } else {
        assert.ok((e.engine ?? "llama") === "llama", `${e.id}: engine`);
        assert.ok(s.file.length > 0 && s.file.endsWith(".gguf"), `${e.id}: file`);
        checkHash(e.id, s);
        assert.doesNotThrow(() => resolveUrl("https://huggingface.co", s));
      }
    }
    const expected: Record<string, [string, string | null]> = {
      "@cf/meta/llama-3.2-1b-instruct": ["text-generation", null],
      "@cf/meta/llama-3.2-3b-instruct": ["text-generation", null],
      "@cf/meta/llama-3.1-8b-instruct": ["text-generation", null],
      "@cf/baai/bge-small-en-v1.5": ["text-embeddings", null],
      "@cf/baai/bge-base-en-v1.5": ["text-embeddings", null],
      "@borde/bge-small-en-v1.5-onnx": ["text-embeddings", "Xenova/bge-small-en-v1.5"],
      "@borde/bge-base-en-v1.5-onnx": ["text-embeddings", "Xenova/bge-base-en-v1.5"],
      "@cf/huggingface/distilbert-sst-2-int8": ["text-classification", "Xenova/distilbert-base-uncased-finetuned-sst-2-english"],
      "@cf/microsoft/resnet-50": ["image-classification", "Xenova/resnet-50"],
      "@cf/facebook/detr-resnet-50": ["object-detection", "Xenova/detr-resnet-50"],
      "@cf/openai/whisper": ["automatic-speech-recognition", "Xenova/whisper-small"],
      "@cf/openai/whisper-tiny-en": ["automatic-speech-recognition", "Xenova/whisper-tiny.en"],
      "@cf/meta/m2m100-1.2b": ["translation", "Xenova/m2m100_418M"],
      "@cf/facebook/bart-large-cnn": ["summarization", "Xenova/bart-large-cnn"],
    };
    for (const [id, [task, repo]] of Object.entries(expected)) {
      const e = entries.find((x) => x.id === id);
      assert.ok(e, `missing ${id}`);
      assert.equal(e.task, task, id);
      assert.equal(isRepoSource(e.source) ? e.source.repo : null, repo, id);
    }
  });
});
