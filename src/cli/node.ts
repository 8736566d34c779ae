import os from "node:os";
import path from "node:path";
import { loadConfig } from "../config/index.js";
import { loadTopology } from "../network/topology.js";
import { startNode } from "../node.js";
import { intOption, parse, UsageError } from "./args.js";

const HELP = `Usage: borde node --config TOPOLOGY --pop NAME [options]

Starts one node of PoP NAME of a network topology (see \`borde cluster nats-config\`): its HTTP API
on the PoP's host and port, connected to the PoP's NATS server. It serves the PoP's models to the
network and places every call it takes on the nearest live PoP that serves the model (or an
upstream provider), within the request's jurisdiction.

Options:
  --config FILE          topology file (TOML)
  --pop NAME             which PoP of the topology this node is
  --port N               HTTP port (default: the PoP's \`port\`, else 8787)
  --models-dir DIR       model store folder (default ~/.borde/models)
  --data-dir DIR         accounts, tokens and usage outbox (default ~/.borde/data/<pop>)
  --threads N            engine threads
  --settings FILE        node settings file (TOML/JSON, as \`borde dev --config\`)
  -h, --help

Environment: as \`borde dev\` (BORDE_DEV_ACCOUNT, BORDE_DEV_TOKEN, ...).`;

export async function nodeCommand(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    {
      config: { type: "string" },
      pop: { type: "string" },
      port: { type: "string" },
      "models-dir": { type: "string" },
      "data-dir": { type: "string" },
      threads: { type: "string" },
      settings: { type: "string" },
    },
    false,
  );
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.config) throw new UsageError("node needs --config TOPOLOGY");
  if (!values.pop) throw new UsageError("node needs --pop NAME");
  const topology = loadTopology(values.config);
  const pop = topology.pops.find((p) => p.name === values.pop);
  if (!pop) throw new UsageError(`no pop ${JSON.stringify(values.pop)} in ${values.config}; it has ${topology.pops.map((p) => p.name).join(", ")}`);
  const config = loadConfig({
    port: intOption(values.port, "port") ?? pop.port,
    host: pop.host,
    modelsDir: values["models-dir"],
    dataDir: values["data-dir"] ?? (process.env.BORDE_DATA_DIR ? undefined : path.join(os.homedir(), ".borde", "data", pop.name)),
    threads: intOption(values.threads, "threads"),
    natsUrl: `nats://${pop.host}:${pop.nats_port}`,
    pop: pop.name,
    jurisdiction: pop.jurisdiction,
    configFile: values.settings,
  });
  const node = await startNode(config, { cluster: { topology, pop } });
  console.log(`borde node ${pop.name} listening on ${node.url}`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await node.close();
  return 0;
}
