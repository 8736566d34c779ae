import { loadConfig, ENV_VARS } from "../config/index.js";
import { startNode } from "../node.js";
import { intOption, numberOption, parse } from "./args.js";
import { saveDevState } from "./client.js";

const HELP = `Usage: borde dev [options]

Starts a single Borde node: the Workers AI and OpenAI-compatible APIs on one port, models from the
models folder (plus the bundled @borde/stories260k), one dev account and token.

Options:
  --port N               port (default 8787; 0 = any free port)
  --host ADDR            address to listen on (default 127.0.0.1)
  --models-dir DIR       model store folder (default ~/.borde/models)
  --preload IDS          comma-separated model ids to load before accepting traffic
  --auto-pull            pull catalog models on first request instead of answering 5007
  --threads N            engine threads (default: cores free at start-up, minus one for the event loop)
  --parallel N           concurrent sequences per model (default 16)
  --memory-budget-mb N   memory for resident models; LRU eviction past it
  --data-dir DIR         accounts, tokens, audit log and usage ledger (default ~/.borde/data)
  --free-neurons N       daily free allocation of free-plan accounts (default 10000)
  --config FILE          settings file (TOML, or JSON); flags and environment override it
  -h, --help

Environment:
${Object.values(ENV_VARS)
  .map(([name, text]) => `  ${name.padEnd(24)} ${text}`)
  .join("\n")}`;

export async function devCommand(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    {
      port: { type: "string" },
      host: { type: "string" },
      "models-dir": { type: "string" },
      preload: { type: "string" },
      "auto-pull": { type: "boolean" },
      threads: { type: "string" },
      parallel: { type: "string" },
      "memory-budget-mb": { type: "string" },
      "data-dir": { type: "string" },
      "free-neurons": { type: "string" },
      config: { type: "string" },
    },
    false,
  );
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const config = loadConfig({
    port: intOption(values.port, "port"),
    host: values.host,
    modelsDir: values["models-dir"],
    preload: values.preload,
    autoPull: values["auto-pull"],
    threads: intOption(values.threads, "threads"),
    parallel: intOption(values.parallel, "parallel", 1),
    memoryBudgetMb: intOption(values["memory-budget-mb"], "memory-budget-mb", 16),
    dataDir: values["data-dir"],
    freeNeurons: numberOption(values["free-neurons"], "free-neurons"),
    configFile: values.config,
  });
  const node = await startNode(config);
  const c = node.credentials;
  saveDevState({ url: node.url, accountId: c.accountId, token: c.token });
  // stdout is for people and scripts; logs go to stderr as JSON.
  console.log(`borde dev listening on ${node.url}`);
  console.log(`  account  ${c.accountId}${config.devAccount ? "" : "   (set BORDE_DEV_ACCOUNT to fix it)"}`);
  console.log(`  token    ${c.token}${config.devToken ? "" : "   (set BORDE_DEV_TOKEN to fix it)"}`);
  console.log(`  models   ${config.modelsDir}`);
  console.log(`  try      curl ${node.url}/client/v4/accounts/${c.accountId}/ai/run/@borde/stories260k -H "Authorization: Bearer ${c.token}" -d '{"prompt":"Once upon a time"}'`);

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  await node.close();
  return 0;
}
