/**
 * Upstream fallback: a network whose PoPs do not serve a model sends it to the upstream provider
 * the topology names — here a second Borde node speaking the OpenAI-compatible API — and never to
 * one outside the request's jurisdiction.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { startSim, type Sim } from "../../src/network/sim/launcher.js";
import { utcDay } from "../../src/metering/types.js";
import { startTestNode, TOKEN as PROVIDER_TOKEN, type TestNode } from "../helpers.js";
import { servicesAvailable } from "../services.js";
import { modelCaller, NODE_COMMAND, natsOrSkip } from "./cluster-helpers.js";

const ACCOUNT = "acct_upstream";
const TOKEN = "upstream-token-0123456789";

const topology = (providerUrl: string) => `
[[pop]]
name = "madrid"
region = "eu"
lat = 40.42
lon = -3.70
jurisdiction = "eu"
role = "edge"
models = ["@borde/fasttext-lid-176"]

[[pop]]
name = "frankfurt"
region = "eu"
lat = 50.11
lon = 8.68
jurisdiction = "eu"
role = "core"
models = ["@borde/fasttext-lid-176"]

[[upstream]]
name = "provider-a"
kind = "openai"
base_url = "${providerUrl}/v1"
api_key_env = "PROVIDER_A_KEY"
models = ["@borde/stories260k"]
jurisdiction = "us"
`;

const run = modelCaller(ACCOUNT, TOKEN);

describe("upstream provider fallback (a second Borde node as the provider)", () => {
  let sim: Sim;
  let provider: TestNode;
  let work: string;
  const madrid = () => sim.pops.find((p) => p.name === "madrid")!.url;
  const providerCalls = async () => (await provider.usage!.requestIds(utcDay(Date.now() - 86_400_000), utcDay(Date.now() + 86_400_000))).length;

  before(async () => {
    if (!natsOrSkip(servicesAvailable().nats)) return;
    provider = await startTestNode();
    work = fs.mkdtempSync(path.join(os.tmpdir(), "borde-upstream-"));
    const file = path.join(work, "topology.in.toml");
    fs.writeFileSync(file, topology(provider.url));
    sim = await startSim({
      topologyText: fs.readFileSync(file, "utf8"),
      topologyFile: file,
      workDir: work,
      nodeCommand: NODE_COMMAND,
      modelsDir: path.join(work, "models"),
      env: { BORDE_DEV_ACCOUNT: ACCOUNT, BORDE_DEV_TOKEN: TOKEN, BORDE_DEV_PLAN: "paid", PROVIDER_A_KEY: PROVIDER_TOKEN },
    });
    await new Promise((r) => setTimeout(r, 1000));
  });
  after(async () => {
    await sim?.stop();
    await provider?.close();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it("sends what no PoP serves to the upstream, plain and streamed, billed at the entry PoP", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const prompt = { prompt: "Once upon a time", max_tokens: 10, temperature: 0 };
    const direct = await provider.post("/v1/completions", { model: "@borde/stories260k", ...prompt });
    const expected = ((await direct.json()) as { choices: { text: string }[] }).choices[0]!.text;
    const calls = await providerCalls();
    const r = await run(madrid(), "@borde/stories260k", prompt);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.servedBy, "provider-a");
    assert.equal(r.json.result.response, expected);
    assert.equal(r.json.result.usage.completion_tokens, 10);
    const s = await run(madrid(), "@borde/stories260k", { ...prompt, stream: true });
    assert.equal(s.status, 200, s.text);
    const pieces = s.text.split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)).response ?? "");
    assert.equal(pieces.join(""), expected);
    assert.equal(await providerCalls(), calls + 2, "the provider saw exactly the two calls");
  });

  it("never sends a request pinned to another jurisdiction upstream", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const calls = await providerCalls();
    const r = await run(madrid(), "@borde/stories260k", { prompt: "Once", max_tokens: 4 }, { "borde-jurisdiction": "eu" });
    assert.equal(r.status, 451, r.text);
    assert.equal(r.json.errors[0].code, 7131);
    assert.equal(await providerCalls(), calls, "the provider (us) saw nothing");
  });

  it("answers 502/7132 when the upstream fails", async (t) => {
    if (!sim) return t.skip("no nats-server");
    const r = await run(madrid(), "@borde/stories260k", { prompt: "Once", max_tokens: 100_000 });
    assert.equal(r.status, 400, "bad input is refused at the entry PoP, before any upstream call");
    await provider.close();
    const down = await run(madrid(), "@borde/stories260k", { prompt: "Once", max_tokens: 4 });
    assert.equal(down.status, 502, down.text);
    assert.equal(down.json.errors[0].code, 7132);
    provider = undefined as never;
  });
});
