import { CLIENT_HELP, CLIENT_OPTIONS, intOption, numberOption, parse, UsageError } from "./args.js";
import { accountOf, apiError, client, sseData } from "./client.js";

const HELP = `Usage: borde ai run <model> (--prompt TEXT | --text TEXT) [options]

Runs a model on a node through the Workers AI REST API and prints the result.

Options:
  --prompt TEXT        text generation prompt
  --system TEXT        system message (sends messages instead of a prompt)
  --text TEXT          embed TEXT instead (prints the vector as JSON)
  --stream             print text as it is generated
  --max-tokens N       default 256
  --temperature T      default 0.6
  --seed N             same seed, same output
  --json               print the whole JSON result
${CLIENT_HELP}
  -h, --help`;

export async function aiCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h") {
    console.log(HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== "run") throw new UsageError(`unknown subcommand "ai ${sub}"; run \`borde ai --help\``);
  const { values, positionals } = parse(rest, {
    ...CLIENT_OPTIONS,
    prompt: { type: "string" },
    system: { type: "string" },
    text: { type: "string" },
    stream: { type: "boolean" },
    "max-tokens": { type: "string" },
    temperature: { type: "string" },
    seed: { type: "string" },
    json: { type: "boolean" },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const model = positionals[0];
  if (!model || positionals.length > 1) throw new UsageError("expected exactly one model id, e.g. `borde ai run @borde/stories260k --prompt \"Once upon a time\"`");
  if ((values.prompt === undefined) === (values.text === undefined)) throw new UsageError("pass one of --prompt or --text");
  const c = client(values);
  const account = await accountOf(c);
  const body: Record<string, unknown> =
    values.text !== undefined
      ? { text: values.text }
      : {
          ...(values.system ? { messages: [{ role: "system", content: values.system }, { role: "user", content: values.prompt }] } : { prompt: values.prompt }),
          max_tokens: intOption(values["max-tokens"], "max-tokens", 1),
          temperature: numberOption(values.temperature, "temperature"),
          seed: intOption(values.seed, "seed"),
          stream: values.stream || undefined,
        };
  const res = await c.fetch(`/client/v4/accounts/${encodeURIComponent(account)}/ai/run/${model}`, { method: "POST", body: JSON.stringify(body) });
  if (!res.ok) {
    console.error(`borde: ${await apiError(res)}`);
    return 1;
  }
  if (values.stream && values.text === undefined) return printStream(res, values.json === true);
  const json = (await res.json()) as { result: { response?: string } };
  if (values.json || values.text !== undefined) console.log(JSON.stringify(json.result, null, values.json ? 2 : 0));
  else console.log(json.result.response ?? "");
  return 0;
}

async function printStream(res: Response, json: boolean): Promise<number> {
  for await (const data of sseData(res.body!)) {
    if (data === "[DONE]") {
      process.stdout.write("\n");
      return 0;
    }
    if (json) {
      console.log(data);
      continue;
    }
    const parsed = JSON.parse(data) as { response?: string; errors?: { message: string }[] };
    if (parsed.errors?.length) {
      console.error(`\nborde: ${parsed.errors[0]!.message}`);
      return 1;
    }
    if (parsed.response) process.stdout.write(parsed.response);
  }
  process.stdout.write("\n");
  return 0;
}

