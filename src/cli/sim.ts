import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { startDelayProxy } from "../network/sim/delay-proxy.js";
import { startSim, type Sim } from "../network/sim/launcher.js";
import { runLoad, type LoadClient, type LoadRequest, type LoadSample } from "../network/sim/loadgen.js";
import { medianOf, renderSvgChart, renderTable, summarize } from "../network/sim/report.js";
import { CLIENT_CITIES, SIM_TOPOLOGY } from "../network/sim/world.js";
import { greatCircleKm } from "../network/topology.js";
import { intOption, parse, UsageError } from "./args.js";

const HELP = `Usage: borde sim [options]

Starts a whole edge network on this machine: a nats-server and a \`borde node\` per PoP (default: six
PoPs at Madrid, Frankfurt (core), Virginia, Sao Paulo, Singapore and Sydney), with network latency
emulated in user space on every PoP-to-PoP and client-to-PoP link (great-circle distance at 2/3 c
in fibre, times a route factor). Prints \`pop <name> <url> pid <pid>\` per PoP once it is ready.
Runs until stopped, or with --duration runs a load test and writes a report.

Options:
  --config FILE          topology file (default: the built-in six-PoP world)
  --models-dir DIR       model store folder of every PoP
  --duration S           run load for S seconds per mode (edge, then central-only), report, stop
  --report FILE.json     where the report goes (an SVG chart is written beside it)
  --concurrency N        requests in flight per client city (default 1)
  --think-ms MS          pause after each answer before a client's next request (default 200):
                         every PoP shares this machine's cores, so a closed loop would measure
                         CPU contention between the simulated PoPs rather than the network
  --kill POP             kill POP's node (SIGKILL) halfway through the edge run
  --route-factor F       path length over great-circle distance (default 1.5)
  -h, --help

Environment: BORDE_DEV_ACCOUNT / BORDE_DEV_TOKEN (the same on every PoP; generated when unset).`;

export async function simCommand(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    {
      config: { type: "string" },
      "models-dir": { type: "string" },
      duration: { type: "string" },
      report: { type: "string" },
      concurrency: { type: "string" },
      "think-ms": { type: "string" },
      kill: { type: "string" },
      "route-factor": { type: "string" },
    },
    false,
  );
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const duration = intOption(values.duration, "duration", 1);
  const concurrency = intOption(values.concurrency, "concurrency", 1) ?? 1;
  const thinkMs = intOption(values["think-ms"], "think-ms") ?? 200;
  const routeFactor = values["route-factor"] === undefined ? 1.5 : Number(values["route-factor"]);
  if (!(routeFactor >= 1)) throw new UsageError("--route-factor must be a number >= 1");
  if (values.report && duration === undefined) throw new UsageError("--report needs --duration");
  const account = process.env.BORDE_DEV_ACCOUNT ?? `sim-${randomBytes(4).toString("hex")}`;
  const token = process.env.BORDE_DEV_TOKEN ?? `sim-${randomBytes(16).toString("hex")}`;
  const topologyText = values.config ? fs.readFileSync(values.config, "utf8") : SIM_TOPOLOGY;
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "borde-sim-"));
  console.log(`borde sim: work dir ${workDir}`);
  console.log(`account ${account}`);
  console.log(`token ${token}`);
  const sim = await startSim({
    topologyText,
    topologyFile: values.config ?? "built-in world",
    workDir,
    modelsDir: values["models-dir"],
    routeFactor,
    // The load generator is one account sending everything: per-account limits are not under test.
    // One secrets key for the whole simulated network, so workers' secrets replicate.
    env: {
      BORDE_DEV_ACCOUNT: account,
      BORDE_DEV_TOKEN: token,
      BORDE_DEV_PLAN: "paid",
      BORDE_RATE_LIMITS: UNLIMITED,
      BORDE_MAX_CONCURRENT: "1000000",
      BORDE_TOKENS_PER_MINUTE: "0",
      BORDE_SECRET_KEY: process.env.BORDE_SECRET_KEY ?? randomBytes(32).toString("hex"),
    },
    onPop: (p) => console.log(`pop ${p.name} ${p.url} pid ${p.pid}`),
  });
  try {
    if (duration === undefined) {
      console.log("borde sim: ready (Ctrl-C stops it)");
      await new Promise<void>((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
      });
      return 0;
    }
    const report = await loadTest(sim, { account, token, seconds: duration, concurrency, thinkMs, kill: values.kill });
    console.log(report.table);
    if (values.report) {
      fs.writeFileSync(values.report, JSON.stringify(report.json, null, 2));
      const svg = values.report.replace(/\.json$/i, "") + ".svg";
      fs.writeFileSync(svg, report.svg);
      console.log(`borde sim: report ${values.report}, chart ${svg}`);
    }
    return 0;
  } finally {
    await sim.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

const UNLIMITED = ["text-generation", "text-embeddings", "text-classification", "image-classification", "object-detection", "image-to-text", "automatic-speech-recognition", "translation", "summarization", "voice-activity-detection"]
  .map((t) => `${t}=1000000000`)
  .join(",");

/** Cities farther than this from the core count as "far" for the edge-vs-core target. */
const FAR_KM = 5000;

async function loadTest(sim: Sim, o: { account: string; token: string; seconds: number; concurrency: number; thinkMs: number; kill?: string }) {
  const pops = sim.topology.pops;
  const core = pops.find((p) => p.role === "core")!;
  const served = (model: string) => pops.filter((p) => p.models.includes(model));
  const run = (model: string) => `/client/v4/accounts/${o.account}/ai/run/${model}`;
  const requests: LoadRequest[] = [];
  const small = ["@borde/stories260k", "@borde/fasttext-lid-176", "@borde/use-lite"].filter((m) => served(m).length > 1);
  if (small.includes("@borde/stories260k")) requests.push({ task: "text-generation", path: run("@borde/stories260k"), body: { prompt: "Once upon a time", max_tokens: 12, temperature: 0 } });
  if (small.includes("@borde/fasttext-lid-176")) requests.push({ task: "text-classification", path: run("@borde/fasttext-lid-176"), body: { text: "Das Wetter ist heute schön und die Straßen sind voller Menschen." } });
  if (small.includes("@borde/use-lite")) requests.push({ task: "text-embeddings", path: run("@borde/use-lite"), body: { text: ["The edge answers close to the user.", "Latency falls with distance."] } });
  if (requests.length === 0) throw new UsageError("the topology has no small model on several PoPs to load-test");

  // Anycast, emulated: each client enters its nearest live PoP and, when that one refuses the
  // connection, the next nearest. Central-only: every client goes to the core.
  const clients: LoadClient[] = [];
  for (const c of CLIENT_CITIES) {
    const byDistance = [...pops].sort((a, b) => greatCircleKm(c, a) - greatCircleKm(c, b));
    clients.push({ ...c, targets: { edge: await Promise.all(byDistance.slice(0, 3).map((p) => sim.clientLink(c, p.name))), central: [await sim.clientLink(c, core.name)] } });
  }
  // Warm-up: every model loaded on every PoP before anything is measured.
  await runLoad({ clients, requests, token: o.token, mode: "edge", concurrencyPerClient: 1, durationMs: 3000 });
  await runLoad({ clients, requests, token: o.token, mode: "central", concurrencyPerClient: 1, durationMs: 2000 });

  const samples: LoadSample[] = [];
  let killedAt: number | null = null;
  const killTimer = o.kill
    ? setTimeout(() => {
        killedAt = Date.now();
        sim.kill(o.kill!);
        console.log(`borde sim: killed pop ${o.kill} (SIGKILL)`);
      }, (o.seconds * 1000) / 2)
    : null;
  samples.push(...(await runLoad({ clients, requests, token: o.token, mode: "edge", concurrencyPerClient: o.concurrency, thinkMs: o.thinkMs, durationMs: o.seconds * 1000 })));
  if (killTimer) clearTimeout(killTimer);
  samples.push(...(await runLoad({ clients, requests, token: o.token, mode: "central", concurrencyPerClient: o.concurrency, thinkMs: o.thinkMs, durationMs: o.seconds * 1000 })));

  const hop = await hopProbe(sim, o);
  const summary = summarize(samples);
  const far = CLIENT_CITIES.filter((c) => greatCircleKm(c, core) > FAR_KM).map((c) => c.city);
  const farRatios = summary.tasks.map((task) => {
    const p50 = (mode: string) => medianOf(samples.filter((s) => s.ok && s.mode === mode && s.task === task && far.includes(s.city)).map((s) => s.ms));
    return { task, edgeP50: p50("edge"), centralP50: p50("central"), ratio: p50("edge") / p50("central") };
  });
  const edge = samples.filter((s) => s.mode === "edge");
  const keptAtEdge = edge.filter((s) => s.ok && s.servedBy !== null && s.servedBy === s.entryPop);
  const bytes = (xs: LoadSample[]) => xs.reduce((n, s) => n + s.bytesIn + s.bytesOut, 0);
  const json = {
    pops: sim.pops.map((p) => ({ name: p.name, url: p.url, pid: p.pid, region: p.pop.region, role: p.pop.role, jurisdiction: p.pop.jurisdiction })),
    clients: CLIENT_CITIES.map((c) => ({ ...c, coreKm: Math.round(greatCircleKm(c, core)), far: far.includes(c.city) })),
    secondsPerMode: o.seconds,
    concurrencyPerClient: o.concurrency,
    thinkMs: o.thinkMs,
    summary,
    farClients: farRatios,
    edge: { requests: edge.length, ok: edge.filter((s) => s.ok).length, successPct: (100 * edge.filter((s) => s.ok).length) / Math.max(1, edge.length), killed: o.kill ?? null, killedAt },
    bytesKeptAtEdge: { bytes: bytes(keptAtEdge), requests: keptAtEdge.length, ofBytes: bytes(edge.filter((s) => s.ok)) },
    hop,
  };
  const lines = [
    renderTable(summary, { ratio: ["edge", "central"] }),
    "",
    `far clients (> ${FAR_KM} km from the core ${core.name}): ${far.join(", ")}`,
    ...farRatios.map((r) => `  ${r.task.padEnd(22)} edge p50 ${r.edgeP50.toFixed(1)} ms  central p50 ${r.centralP50.toFixed(1)} ms  ratio ${r.ratio.toFixed(3)}`),
    `edge run: ${json.edge.ok}/${json.edge.requests} ok (${json.edge.successPct.toFixed(2)}%)${o.kill ? `, pop ${o.kill} killed halfway` : ""}`,
    `bytes kept at the edge: ${json.bytesKeptAtEdge.bytes} of ${json.bytesKeptAtEdge.ofBytes} (${json.bytesKeptAtEdge.requests} requests answered where they entered)`,
    hop
      ? `cross-PoP hop ${hop.entry} -> ${hop.server}: p50 ${hop.forwardedP50.toFixed(2)} ms vs direct ${hop.directP50.toFixed(2)} ms + link round trip ${hop.linkRttP50.toFixed(2)} ms (2 x ${hop.oneWayMs.toFixed(2)} ms emulated) = overhead ${hop.overheadMs.toFixed(2)} ms (${hop.overheadOverFormulaMs.toFixed(2)} ms over the formula)`
      : "cross-PoP hop: not measured (needs two PoPs of different jurisdictions serving stories260k)",
  ];
  return { json, table: lines.join("\n"), svg: renderSvgChart(summary, { title: "Borde sim: p50 latency by client city, edge vs central-only" }) };
}

/** p50 round trip of a small message through a delay proxy to a local echo server. */
async function echoRtt(delayMs: number, n: number): Promise<number> {
  const server = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const proxy = await startDelayProxy({ target: { host: "127.0.0.1", port: (server.address() as net.AddressInfo).port }, delayMs });
  const socket = net.connect(proxy.port, proxy.host);
  socket.setNoDelay(true);
  await new Promise<void>((r) => socket.once("connect", () => r()));
  const rtts: number[] = [];
  for (let i = 0; i < n + 10; i++) {
    const t = performance.now();
    socket.write("ping");
    await new Promise<void>((r) => socket.once("data", () => r()));
    rtts.push(performance.now() - t);
  }
  socket.destroy();
  await proxy.close();
  await new Promise<void>((r) => server.close(() => r()));
  return medianOf(rtts.slice(10));
}

/**
 * What one hop between PoPs costs beyond the emulated link: the same request sent straight to PoP
 * S, and sent to PoP E pinned (borde-jurisdiction) to S's jurisdiction so that E forwards it to S.
 */
async function hopProbe(sim: Sim, o: { account: string; token: string }) {
  const model = "@borde/stories260k";
  // PoPs alone in their region: a gateway connection lands on any server of the remote region and
  // the message may then take an intra-region route (one more emulated link), which would blur
  // what a single hop costs.
  const servers = sim.pops.filter((p) => p.pop.models.includes(model) && sim.topology.regions.get(p.pop.region)?.length === 1);
  let best: { entry: (typeof servers)[number]; server: (typeof servers)[number] } | null = null;
  for (const entry of servers)
    for (const server of servers) {
      if (entry.pop.jurisdiction === server.pop.jurisdiction) continue;
      // The server must be the nearest PoP of its jurisdiction from the entry, or placement picks another.
      const sameJ = servers.filter((p) => p.pop.jurisdiction === server.pop.jurisdiction);
      const nearest = sameJ.sort((a, b) => sim.oneWayMs(entry.pop, a.pop) - sim.oneWayMs(entry.pop, b.pop))[0];
      if (nearest !== server) continue;
      if (!best || sim.oneWayMs(entry.pop, server.pop) < sim.oneWayMs(best.entry.pop, best.server.pop)) best = { entry, server };
    }
  if (!best) return null;
  const body = JSON.stringify({ prompt: "Once upon a time", max_tokens: 4, temperature: 0 });
  const time = async (url: string, headers: Record<string, string>) => {
    const t = performance.now();
    const res = await fetch(`${url}/client/v4/accounts/${o.account}/ai/run/${model}`, { method: "POST", headers: { authorization: `Bearer ${o.token}`, "content-type": "application/json", ...headers }, body });
    await res.arrayBuffer();
    if (!res.ok || res.headers.get("borde-served-by") !== best!.server.name) throw new Error(`hop probe: ${res.status} served by ${res.headers.get("borde-served-by")}`);
    return performance.now() - t;
  };
  const direct: number[] = [];
  const forwarded: number[] = [];
  for (let i = 0; i < 170; i++) {
    // Interleaved, so both see the same machine load.
    direct.push(await time(best.server.url, {}));
    forwarded.push(await time(best.entry.url, { "borde-jurisdiction": best.server.pop.jurisdiction }));
  }
  const oneWayMs = sim.oneWayMs(best.entry.pop, best.server.pop);
  // The first 20 pairs warm connections, caches and the JIT.
  const directP50 = medianOf(direct.slice(20));
  const forwardedP50 = medianOf(forwarded.slice(20));
  // What the emulated link itself costs a round trip, measured: a TCP echo through a proxy with
  // the same delay (the proxy's own scheduling and two loopback hops are part of the link).
  const linkRttP50 = await echoRtt(oneWayMs, 150);
  return {
    entry: best.entry.name,
    server: best.server.name,
    oneWayMs,
    directP50,
    forwardedP50,
    linkRttP50,
    overheadMs: forwardedP50 - directP50 - linkRttP50,
    overheadOverFormulaMs: forwardedP50 - directP50 - 2 * oneWayMs,
  };
}
