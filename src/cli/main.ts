import { ConfigError } from "../config/index.js";
import { UsageError } from "./args.js";
import { accountsCommand, tokensCommand, usageCommand } from "./admin.js";
import { aiCommand } from "./ai.js";
import { clusterCommand } from "./cluster.js";
import { deployCommand, rollbackCommand, secretCommand, tailCommand } from "./deploy.js";
import { devCommand } from "./dev.js";
import { ledgerCommand } from "./ledger.js";
import { modelsCommand } from "./models.js";
import { nodeCommand } from "./node.js";
import { simCommand } from "./sim.js";
import { workersCommand } from "./workers.js";

const HELP = `borde — self-hostable edge AI inference (Workers AI and OpenAI compatible)

Usage: borde <command> [options]

Commands:
  dev                        start a single node with embedded defaults
  node --config F --pop P    start a node of PoP P of a network topology (NATS cluster)
  sim                        run a whole simulated edge network on this machine (+ load report)
  ai run <model>             run a model on a node (text generation or embeddings)
  models list|pull|rm        manage the local model store
  accounts create|list       manage accounts (admin token)
  tokens create|list|revoke  manage API tokens (admin token)
  usage                      usage and cost by day, model and account
  deploy [dir]               bundle a wrangler project and deploy it as a new worker version
  secret put|list|delete     a worker's secrets (encrypted at rest, live without redeploy)
  rollback                   make a worker's previous version active again
  tail                       stream a worker's console output and errors live
  workers list|versions|delete
                             the account's workers and their versions; delete one
  ledger                     core process: write usage from JetStream into the PostgreSQL ledger
  cluster nats-config        write the nats-server configuration of a network topology

Run \`borde <command> --help\` for a command's options.`;

/** Entry point; returns the process exit code. Errors are one line on stderr, never a stack. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
      case "-h":
      case "--help":
      case "help":
        console.log(HELP);
        return command === undefined ? 2 : 0;
      case "dev":
        return await devCommand(rest);
      case "node":
        return await nodeCommand(rest);
      case "sim":
        return await simCommand(rest);
      case "ai":
        return await aiCommand(rest);
      case "models":
        return await modelsCommand(rest);
      case "ledger":
        return await ledgerCommand(rest);
      case "accounts":
        return await accountsCommand(rest);
      case "tokens":
        return await tokensCommand(rest);
      case "usage":
        return await usageCommand(rest);
      case "deploy":
        return await deployCommand(rest);
      case "secret":
        return await secretCommand(rest);
      case "rollback":
        return await rollbackCommand(rest);
      case "tail":
        return await tailCommand(rest);
      case "workers":
        return await workersCommand(rest);
      case "cluster":
        return await clusterCommand(rest);
      case "--version":
      case "-v":
        console.log("borde 0.1.0");
        return 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}; run \`borde --help\``);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError) {
      console.error(`borde: ${e.message}`);
      return 2;
    }
    console.error(`borde: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`);
    return 1;
  }
}
