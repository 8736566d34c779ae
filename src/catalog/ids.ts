import { BordeError } from "../errors.js";

/**
 * Model ids are `@<namespace>/<name>[/<name>...]`. Anything else — `..`, absolute paths, NUL,
 * backslashes, percent-escapes that decode to those — is refused before it can reach the file system.
 */
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const NAMESPACES = new Set(["cf", "hf", "local", "borde"]);

export function parseModelId(id: string): { namespace: string; segments: string[] } {
  if (typeof id !== "string" || id.length === 0 || id.length > 256) throw invalid(id);
  if (!id.startsWith("@")) throw invalid(id);
  const [ns, ...segments] = id.slice(1).split("/");
  if (!ns || !NAMESPACES.has(ns) || segments.length === 0) throw invalid(id);
  for (const s of segments) if (!SEGMENT.test(s) || s.includes("..")) throw invalid(id);
  return { namespace: ns, segments };
}

function invalid(id: unknown): BordeError {
  const shown = typeof id === "string" ? JSON.stringify(id.slice(0, 80)) : "(none)";
  return new BordeError("InvalidModelId", `The model name is invalid: ${shown}. Expected @cf/<author>/<name>, @local/<file stem> or @borde/<name>`);
}
