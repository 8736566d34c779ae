import { BordeError } from "../errors.js";

/**
 * Reads a request body as JSON with a hard size limit (checked on Content-Length and again while
 * streaming, since a client may lie or send chunked data) and strict UTF-8.
 */
export async function readJsonBody(req: Request, limit: number, onSize?: (bytes: number) => void): Promise<unknown> {
  // The body is parsed as JSON whatever Content-Type says: Cloudflare's own examples use `curl -d`,
  // which sends application/x-www-form-urlencoded.
  return parseJson(await readBody(req, limit, onSize));
}

/**
 * A model call's body, as Workers AI takes it: JSON (any Content-Type but those below), a multipart
 * upload (file parts become bytes, other parts strings), or the raw bytes of an image or audio file
 * (`image/*`, `audio/*`, `application/octet-stream`), which stand for the task's media field.
 */
export async function readInputBody(req: Request, limit: number, onSize?: (bytes: number) => void): Promise<{ json: unknown } | { binary: Uint8Array }> {
  const type = (req.headers.get("content-type") ?? "").toLowerCase();
  const bytes = await readBody(req, limit, onSize);
  if (/^(image|audio|video)\/|^application\/octet-stream/.test(type)) {
    if (bytes.byteLength === 0) throw new BordeError("IncompleteRequest", "Request is missing a body: send the file's bytes");
    return { binary: bytes };
  }
  if (!type.startsWith("multipart/form-data")) return { json: parseJson(bytes) };
  let form: FormData;
  try {
    form = await new Response(bytes, { headers: { "content-type": type } }).formData();
  } catch {
    throw new BordeError("InvalidInput", "Invalid input: malformed multipart body");
  }
  const out: Record<string, unknown> = {};
  for (const [key, value] of form) {
    if (key === "__proto__" || key in out) throw new BordeError("InvalidInput", `Invalid input: field ${JSON.stringify(key.slice(0, 64))} is repeated or reserved`);
    out[key] = typeof value === "string" ? value : new Uint8Array(await value.arrayBuffer());
  }
  return { json: out };
}

async function readBody(req: Request, limit: number, onSize?: (bytes: number) => void): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit);
  if (!req.body) throw new BordeError("IncompleteRequest", "Request is missing a body: send a JSON object");
  // With a declared length the HTTP parser already bounds the body: read it in one go (cheaper than
  // pulling a web stream chunk by chunk, which is what chunked bodies need for the limit check).
  if (declared !== null) {
    let buf: ArrayBuffer;
    try {
      buf = await req.arrayBuffer();
    } catch (cause) {
      throw new BordeError("Aborted", "Request was aborted by the client while sending its body", { cause });
    }
    onSize?.(buf.byteLength);
    return new Uint8Array(buf);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  for (;;) {
    let chunk: Awaited<ReturnType<typeof reader.read>>;
    try {
      chunk = await reader.read();
    } catch (cause) {
      // The connection closed mid-upload: the client's doing, not a server fault (and not a 500).
      throw new BordeError("Aborted", "Request was aborted by the client while sending its body", { cause });
    }
    const { done, value } = chunk;
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(limit);
    }
    chunks.push(value);
  }
  onSize?.(size);
  return Buffer.concat(chunks);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function parseJson(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) throw new BordeError("IncompleteRequest", "Request is missing a body: send a JSON object");
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new BordeError("InvalidInput", "Invalid input: the body is not valid UTF-8");
  }
  // Deeply nested values parse, but later recursive code (JSON.stringify, grammar builders) would
  // overflow the stack on them and answer 500; no real request nests anywhere near this deep.
  if (nestedDeeperThan(text, MAX_DEPTH)) throw new BordeError("InvalidInput", `Invalid input: JSON is nested more than ${MAX_DEPTH} levels deep`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new BordeError("InvalidInput", `Invalid input: malformed JSON (${e instanceof Error ? e.message.slice(0, 120) : "parse error"})`);
  }
}

const MAX_DEPTH = 128;

/** Bracket depth outside strings, in one iterative pass (no recursion, so no stack to overflow). */
function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c) i++; // backslash: skip the escaped character
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) inString = true;
    else if (ch === 0x5b || ch === 0x7b) {
      if (++depth > max) return true;
    } else if (ch === 0x5d || ch === 0x7d) depth--;
  }
  return false;
}

function tooLarge(limit: number): BordeError {
  return new BordeError("RequestTooLarge", `Request is too large: the limit is ${limit} bytes`);
}
