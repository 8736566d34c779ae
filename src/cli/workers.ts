import { WORKER_NAME, WORKER_NAME_RULE } from "../workers/deploy/schema.js";
import { CLIENT_HELP, CLIENT_OPTIONS, parse, UsageError } from "./args.js";
import { call, client, scriptPath, table } from "./client.js";

const HELP = `Usage: borde workers <list|versions|delete> [options]

  list             the account's workers and their active versions
  versions NAME    a worker's kept versions (the active one marked *)
  delete NAME      deletes a worker: every version and secret

Options:
  --json           print the API's JSON instead
${CLIENT_HELP}
  -h, --help

Needs a token with the workers:deploy scope (admin tokens have it).`;

export async function workersCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h") {
    console.log(HELP);
    return sub === undefined ? 2 : 0;
  }
  const { values, positionals } = parse(rest, { ...CLIENT_OPTIONS, json: { type: "boolean" } });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const c = client(values);
  const one = (): string => {
    if (positionals.length !== 1) throw new UsageError(`expected exactly one worker name, e.g. \`borde workers ${sub} my-worker\``);
    if (!WORKER_NAME.test(positionals[0]!)) throw new UsageError(`invalid worker name ${JSON.stringify(positionals[0])}: ${WORKER_NAME_RULE}`);
    return positionals[0]!;
  };
  switch (sub) {
    case "list": {
      const base = await scriptPath(c);
      const r = (await call(c, "GET", base)) as { id: string; active_version: number; modified_on: string }[];
      if (values.json) console.log(JSON.stringify(r, null, 2));
      else table(["NAME", "ACTIVE VERSION", "MODIFIED"], r.map((w) => [w.id, String(w.active_version), w.modified_on]));
      return 0;
    }
    case "versions": {
      const name = one();
      const r = (await call(c, "GET", await scriptPath(c, name))) as {
        versions: { version: number; active: boolean; created_on: string; created_by: string; size: number }[];
      };
      if (values.json) console.log(JSON.stringify(r, null, 2));
      else table(["VERSION", "CREATED", "BY", "SIZE"], r.versions.map((v) => [`${v.version}${v.active ? " *" : ""}`, v.created_on, v.created_by, String(v.size)]));
      return 0;
    }
    case "delete": {
      const name = one();
      const r = await call(c, "DELETE", await scriptPath(c, name));
      console.log(values.json ? JSON.stringify(r, null, 2) : `deleted ${name}`);
      return 0;
    }
    default:
      throw new UsageError(`unknown subcommand "workers ${sub}"; run \`borde workers --help\``);
  }
}
