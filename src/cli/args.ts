import { parseArgs, type ParseArgsConfig } from "node:util";

/** A one-line usage error: printed without a stack, exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

export type Options = NonNullable<ParseArgsConfig["options"]>;

export function parse<O extends Options>(argv: string[], options: O, allowPositionals = true) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: "boolean", short: "h" } }, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.split("\n")[0]! : String(e));
  }
}

export function intOption(value: string | undefined, name: string, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
}

export function numberOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got ${JSON.stringify(value)}`);
  return n;
}

/** `--url` / `--token` for every command that talks to a running node. */
export const CLIENT_OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
} as const satisfies Options;

export const CLIENT_HELP = `  --url URL        node to talk to (env BORDE_URL, default http://127.0.0.1:8787)
  --token TOKEN    API token (env BORDE_TOKEN, default the dev token saved by \`borde dev\`)`;
