import { BordeError } from "../errors.js";

/**
 * Reads a request body as JSON with a hard size limit (checked on Content-Length and again while
 * streaming, since a client may lie or send chunked data) and strict UTF-8.
 */
export async function readJsonBody(req: Request, limit: number): Promise<unknown> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit);
  // The body is parsed as JSON whatever Content-Type says: Cloudflare's own examples use `curl -d`,
  // which sends application/x-www-form-urlencoded.
  if (!req.body) throw new BordeError("IncompleteRequest", "Request is missing a body: send a JSON object");
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(limit);
    }
    chunks.push(value);
  }
  if (size === 0) throw new BordeError("IncompleteRequest", "Request is missing a body: send a JSON object");
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new BordeError("InvalidInput", "Invalid input: the body is not valid UTF-8");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new BordeError("InvalidInput", `Invalid input: malformed JSON (${e instanceof Error ? e.message.slice(0, 120) : "parse error"})`);
  }
}

function tooLarge(limit: number): BordeError {
  return new BordeError("RequestTooLarge", `Request is too large: the limit is ${limit} bytes`);
}
