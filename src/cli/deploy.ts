import { bundleProject, deployBody } from "../workers/deploy/bundle.js";
import { readWranglerConfig } from "../workers/deploy/config.js";
import { WORKER_NAME, WORKER_NAME_RULE } from "../workers/deploy/schema.js";
import type { LogEvent } from "../workers/types.js";
import { CLIENT_HELP, CLIENT_OPTIONS, intOption, parse, UsageError } from "./args.js";
import { apiError, call, client, scriptPath, sseData } from "./client.js";

const DEPLOY_HELP = `Usage: borde deploy [DIR] [options]

Bundles the worker in DIR (default: the current folder) from its wrangler.json, wrangler.jsonc or
wrangler.toml — name, main, compatibility_date, compatibility_flags, [ai] binding, [vars], and
Borde's [limits] (cpu_ms, wall_ms, memory_mb, subrequests) and [outbound] allow = [hosts] — the
way wrangler does (esbuild; .wasm, .txt, .html, .sql, .bin imports become modules), uploads it as a
new version and makes that version live.

Options:
  --name NAME      worker name (default: name in the config)
  --config FILE    the wrangler config file to use instead of looking in DIR
  --dry-run        bundle and list the modules; upload nothing
  --json           print the API's JSON instead
${CLIENT_HELP}
  -h, --help

Needs a token with the workers:deploy scope (admin tokens have it).`;

const SECRET_HELP = `Usage: borde secret <put|list|delete> [options]

  put NAME        stores secret NAME, read from stdin (typed without echo on a terminal); the
                  worker sees it as env.NAME at once, without a redeploy
  list            the worker's secret names (never their values)
  delete NAME     removes secret NAME

Options:
  --name WORKER    worker name (default: name in the wrangler config of the current folder)
  --config FILE    the wrangler config file to take the name from
  --json           print the API's JSON instead
${CLIENT_HELP}
  -h, --help`;

const ROLLBACK_HELP = `Usage: borde rollback [options]

Makes the version before the active one live again (or --version N). Later deploys get new version
numbers; rolling back again goes one more version back.

Options:
  --name WORKER    worker name (default: name in the wrangler config of the current folder)
  --config FILE    the wrangler config file to take the name from
  --version N      the version to make active
  --json           print the API's JSON instead
${CLIENT_HELP}
  -h, --help`;

const TAIL_HELP = `Usage: borde tail [options]

Prints a worker's console output, uncaught exceptions and limit events live, one line each, until
Ctrl-C.

Options:
  --name WORKER    worker name (default: name in the wrangler config of the current folder)
  --config FILE    the wrangler config file to take the name from
  --format F       pretty (default) or json (one LogEvent object a line)
${CLIENT_HELP}
  -h, --help`;

const NAME_OPTIONS = { ...CLIENT_OPTIONS, name: { type: "string" }, config: { type: "string" } } as const;

/** `--name`, else the name in the wrangler config (of `--config` or the current folder). */
function workerName(values: { name?: string; config?: string }): string {
  let name = values.name;
  if (name === undefined) {
    try {
      name = readWranglerConfig(values.config ?? process.cwd()).name;
    } catch (e) {
      throw new UsageError(`pass --name WORKER (${(e as Error).message})`);
    }
    if (name === undefined) throw new UsageError("pass --name WORKER (the wrangler config has no name)");
  }
  if (!WORKER_NAME.test(name)) throw new UsageError(`invalid worker name ${JSON.stringify(name)}: ${WORKER_NAME_RULE}`);
  return name;
}

export async function deployCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...NAME_OPTIONS, "dry-run": { type: "boolean" }, json: { type: "boolean" } });
  if (values.help) {
    console.log(DEPLOY_HELP);
    return 0;
  }
  if (positionals.length > 1) throw new UsageError("expected at most one project folder");
  if (values.config && positionals.length) throw new UsageError("pass either a project folder or --config, not both");
  if (values.name !== undefined && !WORKER_NAME.test(values.name)) throw new UsageError(`invalid worker name ${JSON.stringify(values.name)}: ${WORKER_NAME_RULE}`);
  const bundle = await bundleProject(values.config ?? positionals[0] ?? process.cwd(), values.name === undefined ? {} : { name: values.name });
  for (const w of bundle.warnings) console.error(`borde: warning: ${w}`);
  if (values["dry-run"]) {
    if (values.json) console.log(JSON.stringify({ name: bundle.name, modules: bundle.modules.map((m) => ({ name: m.name, type: m.type, size: m.content.byteLength })), settings: bundle.settings }, null, 2));
    else {
      console.log(`bundled ${bundle.name} (dry run, nothing uploaded)`);
      for (const m of bundle.modules) console.log(`  ${m.name}  ${m.type}  ${m.content.byteLength} bytes`);
    }
    return 0;
  }
  const c = client(values);
  const result = (await call(c, "PUT", await scriptPath(c, bundle.name), deployBody(bundle.modules, bundle.settings))) as { id: string; version: number; urls: string[] };
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`deployed ${result.id} version ${result.version}`);
    for (const u of result.urls) console.log(`  ${u}`);
  }
  return 0;
}

export async function secretCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h") {
    console.log(SECRET_HELP);
    return sub === undefined ? 2 : 0;
  }
  const { values, positionals } = parse(rest, { ...NAME_OPTIONS, json: { type: "boolean" } });
  if (values.help) {
    console.log(SECRET_HELP);
    return 0;
  }
  switch (sub) {
    case "put": {
      if (positionals.length !== 1) throw new UsageError("expected exactly one secret name, e.g. `echo -n value | borde secret put API_KEY`");
      const name = workerName(values);
      const c = client(values);
      const base = await scriptPath(c, name);
      const text = await readSecretValue(positionals[0]!);
      const r = await call(c, "PUT", `${base}/secrets`, { name: positionals[0], text, type: "secret_text" });
      console.log(values.json ? JSON.stringify(r, null, 2) : `stored secret ${positionals[0]} on ${name}`);
      return 0;
    }
    case "list": {
      if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
      const name = workerName(values);
      const c = client(values);
      const r = (await call(c, "GET", `${await scriptPath(c, name)}/secrets`)) as { name: string; modified_on: string }[];
      if (values.json) console.log(JSON.stringify(r, null, 2));
      else for (const s of r) console.log(`${s.name}  ${s.modified_on}`);
      return 0;
    }
    case "delete": {
      if (positionals.length !== 1) throw new UsageError("expected exactly one secret name");
      const name = workerName(values);
      const c = client(values);
      const r = await call(c, "DELETE", `${await scriptPath(c, name)}/secrets/${encodeURIComponent(positionals[0]!)}`);
      console.log(values.json ? JSON.stringify(r, null, 2) : `deleted secret ${positionals[0]} from ${name}`);
      return 0;
    }
    default:
      throw new UsageError(`unknown subcommand "secret ${sub}"; run \`borde secret --help\``);
  }
}

export async function rollbackCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...NAME_OPTIONS, version: { type: "string" }, json: { type: "boolean" } });
  if (values.help) {
    console.log(ROLLBACK_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}; use --name WORKER`);
  const version = intOption(values.version, "version", 1);
  const name = workerName(values);
  const c = client(values);
  const r = (await call(c, "POST", `${await scriptPath(c, name)}/rollback`, version === undefined ? {} : { version })) as { version: number; previous_version: number };
  console.log(values.json ? JSON.stringify(r, null, 2) : `rolled back ${name} from version ${r.previous_version} to version ${r.version}`);
  return 0;
}

export async function tailCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...NAME_OPTIONS, format: { type: "string" } });
  if (values.help) {
    console.log(TAIL_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}; use --name WORKER`);
  const format = values.format ?? "pretty";
  if (format !== "pretty" && format !== "json") throw new UsageError("--format must be pretty or json");
  const name = workerName(values);
  const c = client(values);
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    const res = await c.fetch(`${await scriptPath(c, name)}/tail`, { signal: controller.signal, headers: { accept: "text/event-stream" } });
    if (!res.ok) throw new Error(await apiError(res));
    if (!res.body) throw new Error("the node sent no event stream");
    console.error(`borde: tailing ${name} (Ctrl-C to stop)`);
    for await (const data of sseData(res.body)) {
      const event = JSON.parse(data) as LogEvent;
      console.log(format === "json" ? JSON.stringify(event) : prettyEvent(event));
    }
    console.error("borde: the node ended the tail");
    return 1;
  } catch (e) {
    if (controller.signal.aborted) return 0;
    throw e;
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
}

/** One line per event: time, level, message (newlines shown as \n), request id. */
export function prettyEvent(e: LogEvent): string {
  const message = e.message.replace(/\r?\n/g, "\\n");
  return `${new Date(e.ts).toISOString()} ${e.level.padEnd(9)} ${message}${e.requestId ? `  [${e.requestId}]` : ""}`;
}

/** The secret's value: typed without echo on a terminal, else all of stdin less one trailing newline. */
async function readSecretValue(name: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const chunk of stdin) chunks.push(Buffer.from(chunk as Buffer));
    const text = Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
    if (!text) throw new UsageError("the secret value on stdin is empty");
    return text;
  }
  process.stderr.write(`Enter the value of ${name}: `);
  stdin.setRawMode(true);
  stdin.resume();
  stdin.setEncoding("utf8");
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = "";
      const onData = (s: string) => {
        for (const ch of s) {
          if (ch === "\r" || ch === "\n") {
            stdin.off("data", onData);
            process.stderr.write("\n");
            if (!value) reject(new UsageError("the secret value is empty"));
            else resolve(value);
            return;
          }
          if (ch === "\u0003" || ch === "\u0004") {
            stdin.off("data", onData);
            process.stderr.write("\n");
            reject(new UsageError("cancelled"));
            return;
          }
          if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
          else value += ch;
        }
      };
      stdin.on("data", onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}
