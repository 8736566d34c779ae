import { createProgressBar, ModelStore, PullError } from "../catalog/index.js";
import { loadConfig } from "../config/index.js";
import { BUNDLED_MODELS, inspectModel } from "../engines/index.js";
import { parse, UsageError } from "./args.js";

const HELP = `Usage: borde models <list|pull|rm> [options]

  list [--json]        catalog and local models, and whether each is installed
  pull <id>            download a catalog model from the Hugging Face hub (resumable, sha256-verified)
  rm <id>              delete an installed model

Options:
  --models-dir DIR     model store folder (env BORDE_MODELS_DIR, default ~/.borde/models)
  -h, --help

Environment: HF_ENDPOINT (hub base URL), HF_TOKEN (sent as a bearer token to the hub).`;

export async function modelsCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h") {
    console.log(HELP);
    return sub === undefined ? 2 : 0;
  }
  const { values, positionals } = parse(rest, { "models-dir": { type: "string" }, json: { type: "boolean" } });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const config = loadConfig({ modelsDir: values["models-dir"] });
  // Reading a GGUF header needs no engine, so these commands start fast.
  const store = new ModelStore({ dir: config.modelsDir, inspect: inspectModel, bundled: BUNDLED_MODELS });
  switch (sub) {
    case "list": {
      const models = await store.list();
      if (values.json) {
        console.log(JSON.stringify(models, null, 2));
        return 0;
      }
      const rows = models.map((m) => [m.id, m.task, m.source, m.installed ? "yes" : "no", m.sizeBytes === null ? "?" : `${(m.sizeBytes / 1e6).toFixed(1)} MB`]);
      const head = ["ID", "TASK", "SOURCE", "INSTALLED", "SIZE"];
      const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
      return 0;
    }
    case "pull": {
      const id = one(positionals, "pull");
      const bar = createProgressBar(process.stderr, id);
      const controller = new AbortController();
      const onSig = () => controller.abort(new Error("interrupted; run the same pull again to resume"));
      let reported = false;
      process.once("SIGINT", onSig);
      try {
        const onProgress: typeof bar.update = (p) => {
          reported = true;
          bar.update(p);
        };
        const r = await store.pull(id, { endpoint: config.hfEndpoint, token: config.hfToken, signal: controller.signal, onProgress });
        if (reported) bar.done();
        const resumed = r.resumedFrom ? `, resumed at ${r.resumedFrom}` : "";
        // A repo (a folder of files) has no one sha256: each file was verified on its own.
        if (!("files" in r)) console.log(`pulled ${id} -> ${r.path} (${r.size} bytes, sha256 ${r.sha256}${resumed})`);
        else if (!r.pulled) console.log(`${id} is already installed at ${r.path}`);
        else console.log(`pulled ${id} -> ${r.path} (${r.size} bytes${resumed})`);
        return 0;
      } catch (e) {
        // Finish a progress line that was started; a pull that failed before any byte must not say "done".
        if (reported) bar.done();
        if (e instanceof PullError || (e instanceof Error && e.name === "AbortError")) throw new Error(e.message);
        throw e;
      } finally {
        process.off("SIGINT", onSig);
      }
    }
    case "rm": {
      const id = one(positionals, "rm");
      if (!(await store.remove(id))) throw new Error(`${id} is not installed`);
      console.log(`removed ${id}`);
      return 0;
    }
    default:
      throw new UsageError(`unknown subcommand "models ${sub}"; run \`borde models --help\``);
  }
}

function one(positionals: string[], sub: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected one model id: borde models ${sub} <id>`);
  return positionals[0]!;
}

