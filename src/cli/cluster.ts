import fs from "node:fs";
import path from "node:path";
import { natsConfigs } from "../network/nats-config.js";
import { loadTopology } from "../network/topology.js";
import { parse, UsageError } from "./args.js";

const HELP = `Usage: borde cluster nats-config --config FILE [options]

Writes the nats-server configuration of a network topology: one file per PoP, <pop>.conf. The PoPs
of a region form one NATS cluster; regions are joined by gateways; JetStream runs on the core
region only. Start each with \`nats-server -c <pop>.conf\`.

Options:
  --config FILE      topology file (TOML)
  --out DIR          write the files into DIR (created if missing) and print their paths;
                     without it, print every config to stdout
  --store-dir DIR    JetStream store folder of the core region's servers (default ./nats-data)
  --no-monitoring    leave out the HTTP monitoring port
  -h, --help

With BORDE_NATS_TOKEN set (16+ characters), every server requires it from clients (the Borde nodes,
which read the same variable) and from its routes and gateways; the files then hold the secret and
are written mode 600. Without it the servers accept anyone who can reach them.`;

export async function clusterCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "-h" || sub === "--help") {
    console.log(HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== "nats-config") throw new UsageError(`unknown cluster command ${JSON.stringify(sub)}; run \`borde cluster --help\``);
  const { values } = parse(rest, { config: { type: "string" }, out: { type: "string" }, "store-dir": { type: "string" }, "no-monitoring": { type: "boolean" } }, false);
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.config) throw new UsageError("cluster nats-config needs --config FILE");
  const topology = loadTopology(values.config);
  const token = process.env.BORDE_NATS_TOKEN || undefined;
  if (token !== undefined && (token.length < 16 || !/^[\x21-\x7e]+$/.test(token))) throw new UsageError("BORDE_NATS_TOKEN must be 16+ printable characters without spaces");
  if (token === undefined) process.stderr.write("borde: BORDE_NATS_TOKEN is not set: these servers will accept any client that can reach them\n");
  const configs = natsConfigs(topology, { storeDir: values["store-dir"], monitoring: !values["no-monitoring"], token });
  if (!values.out) {
    for (const [name, text] of configs) process.stdout.write(`# ---- ${name}\n${text}\n`);
    return 0;
  }
  fs.mkdirSync(values.out, { recursive: true });
  for (const [name, text] of configs) {
    const file = path.join(values.out, name);
    fs.writeFileSync(file, text, { mode: 0o600 });
    console.log(file);
  }
  return 0;
}
