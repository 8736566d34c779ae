import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { stringify as toToml } from "smol-toml";
import { natsConfig } from "../nats-config.js";
import { greatCircleKm, oneWayDelayMs, parseTopology, type Pop, type Topology } from "../topology.js";
import { startDelayProxy, type DelayProxy } from "./delay-proxy.js";

export interface SimOptions {
  /** Topology TOML text (default: the six-PoP world). */
  topologyText: string;
  topologyFile: string;
  /** Where configs, NATS stores and logs go. */
  workDir: string;
  modelsDir?: string;
  /** Route factor of the emulated links (real paths are longer than great circles). */
  routeFactor?: number;
  /** The command that starts `borde node` (default: this same program with `node`). */
  nodeCommand?: string[];
  env?: NodeJS.ProcessEnv;
  nats?: string;
  onPop?: (p: SimPop) => void;
}

export interface SimPop {
  name: string;
  url: string;
  pid: number;
  pop: Pop;
}

export interface Sim {
  topology: Topology;
  pops: SimPop[];
  /** A link with the emulated one-way delay from a client at (lat, lon) to a PoP: its base URL. */
  clientLink(from: { lat: number; lon: number; city: string }, pop: string): Promise<string>;
  oneWayMs(a: { lat: number; lon: number }, b: { lat: number; lon: number }): number;
  /** SIGKILLs a PoP's node (its NATS server stays: the machine's network is up, the process died). */
  kill(pop: string): void;
  stop(): Promise<void>;
}

/**
 * Starts a whole network on this machine: one nats-server per PoP (regions joined by gateways),
 * one `borde node` per PoP, and a user-space latency-emulating TCP proxy on every PoP-to-PoP NATS
 * link (and, on demand, on client-to-PoP links): one-way delay = great-circle distance at 2/3 c
 * times the route factor. Linux netem is not available here, and proxies work anywhere.
 */
export async function startSim(o: SimOptions): Promise<Sim> {
  const routeFactor = o.routeFactor ?? 1.5;
  const oneWayMs = (a: { lat: number; lon: number }, b: { lat: number; lon: number }) => oneWayDelayMs(greatCircleKm(a, b), routeFactor);
  fs.mkdirSync(o.workDir, { recursive: true });
  const children: ChildProcess[] = [];
  const proxies: DelayProxy[] = [];
  const nodes = new Map<string, ChildProcess>();
  let stopping = false;
  const stop = async () => {
    stopping = true;
    for (const c of [...nodes.values()].reverse()) c.kill("SIGTERM");
    await Promise.all([...nodes.values()].map((c) => exited(c, 15_000)));
    for (const c of children) c.kill("SIGTERM");
    await Promise.all(children.map((c) => exited(c, 5_000)));
    await Promise.all(proxies.map((p) => p.close()));
  };
  try {
    // Free ports for every listener, written into a copy of the topology the nodes read.
    const raw = parseTopology(o.topologyText, o.topologyFile);
    // Ports stay reserved (listened on) until their servers start, so that the link proxies
    // started meanwhile cannot be given one of them.
    const reserved = await reservePorts(raw.pops.length * 5);
    const next = () => reserved.ports.pop()!;
    const pops: Pop[] = raw.pops.map((p) => ({ ...p, port: next(), nats_port: next(), cluster_port: next(), gateway_port: next(), monitor_port: next() }));
    const file = path.join(o.workDir, "topology.toml");
    fs.writeFileSync(
      file,
      toToml({
        nats: raw.nats,
        pop: pops.map(({ name, region, lat, lon, jurisdiction, role, models, capacity, host, port, nats_port, cluster_port, gateway_port, monitor_port }) => ({ name, region, lat, lon, jurisdiction, role, models, capacity, host, port: port!, nats_port, cluster_port, gateway_port, monitor_port })),
        upstream: raw.upstreams,
      }),
    );
    const topology = parseTopology(fs.readFileSync(file, "utf8"), file);

    // A delayed link per (from, to) PoP pair for NATS routes and gateways.
    const links = new Map<string, { host: string; port: number }>();
    for (const from of topology.pops) {
      for (const to of topology.pops) {
        if (from === to) continue;
        const kind = from.region === to.region ? "route" : "gateway";
        if (oneWayMs(from, to) === 0) continue; // same place: a direct link
        const proxy = await startDelayProxy({ target: { host: to.host, port: kind === "route" ? to.cluster_port : to.gateway_port }, delayMs: oneWayMs(from, to) });
        proxies.push(proxy);
        links.set(`${from.name}>${to.name}`, { host: proxy.host, port: proxy.port });
      }
    }
    const natsBin = o.nats ?? "nats-server";
    // Every server, route and gateway of the simulated network requires this token.
    const natsToken = o.env?.BORDE_NATS_TOKEN ?? randomBytes(24).toString("base64url");
    await reserved.release();
    await Promise.all(
      topology.pops.map(async (pop) => {
        const conf = path.join(o.workDir, `${pop.name}.conf`);
        fs.writeFileSync(conf, natsConfig(topology, pop, { storeDir: path.join(o.workDir, "nats-data"), linkAddress: (from, to) => links.get(`${from.name}>${to.name}`), token: natsToken }), { mode: 0o600 });
        const child = spawn(natsBin, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
        children.push(child);
        await waitFor(child, "stderr", /Server is ready/, `nats-server of ${pop.name}`, 15_000);
        child.stderr!.resume();
      }),
    );

    const command = o.nodeCommand ?? [process.execPath, ...process.execArgv, process.argv[1]!];
    const out: SimPop[] = [];
    // One node at a time: each loads its engines, and two cores are shared by everything here.
    for (const pop of topology.pops) {
      const log = fs.openSync(path.join(o.workDir, `${pop.name}.log`), "a");
      const args = [...command.slice(1), "node", "--config", file, "--pop", pop.name, "--data-dir", path.join(o.workDir, "data", pop.name), "--threads", "1"];
      if (o.modelsDir) args.push("--models-dir", o.modelsDir);
      const child = spawn(command[0]!, args, { stdio: ["ignore", "pipe", log], env: { ...process.env, BORDE_LOG_LEVEL: "warn", ...o.env, BORDE_NATS_TOKEN: natsToken } });
      nodes.set(pop.name, child);
      const line = await waitFor(child, "stdout", /listening on (http\S+)/, `borde node ${pop.name}`, 120_000);
      child.stdout!.resume();
      const sp: SimPop = { name: pop.name, url: line[1]!, pid: child.pid!, pop };
      out.push(sp);
      o.onPop?.(sp);
      child.once("exit", (code, signal) => {
        if (!stopping) process.stderr.write(`borde sim: pop ${pop.name} exited (${signal ?? code})\n`);
      });
    }
    const clientLinks = new Map<string, Promise<string>>();
    return {
      topology,
      pops: out,
      oneWayMs,
      clientLink(from, popName) {
        const key = `${from.city}>${popName}`;
        let link = clientLinks.get(key);
        if (!link) {
          const pop = topology.pops.find((p) => p.name === popName)!;
          link = startDelayProxy({ target: { host: pop.host, port: pop.port! }, delayMs: oneWayMs(from, pop) }).then((p) => {
            proxies.push(p);
            return `http://${p.host}:${p.port}`;
          });
          clientLinks.set(key, link);
        }
        return link;
      },
      kill(popName) {
        nodes.get(popName)?.kill("SIGKILL");
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** `n` distinct free ports, held open until `release()`. */
async function reservePorts(n: number): Promise<{ ports: number[]; release(): Promise<void> }> {
  const servers: net.Server[] = [];
  for (let i = 0; i < n; i++) {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    servers.push(server);
  }
  return {
    ports: servers.map((s) => (s.address() as net.AddressInfo).port),
    release: () => Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined),
  };
}

function waitFor(child: ChildProcess, stream: "stdout" | "stderr", pattern: RegExp, what: string, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const s = child[stream]!;
    const timer = setTimeout(() => done(new Error(`${what} did not start within ${timeoutMs} ms`)), timeoutMs);
    const onData = (d: Buffer) => {
      seen += d.toString();
      const m = seen.match(pattern);
      if (m) done(null, m);
      if (seen.length > 65536) seen = seen.slice(-4096);
    };
    const onExit = (code: number | null) => done(new Error(`${what} exited (${code}) before it was ready: ${seen.slice(-500)}`));
    function done(err: Error | null, m?: RegExpMatchArray) {
      clearTimeout(timer);
      s.off("data", onData);
      child.off("exit", onExit);
      if (err) reject(err);
      else resolve(m!);
    }
    s.on("data", onData);
    child.once("exit", onExit);
  });
}

function exited(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.kill("SIGKILL");
    }, ms);
    child.once("exit", () => {
      clearTimeout(t);
      resolve();
    });
  });
}
