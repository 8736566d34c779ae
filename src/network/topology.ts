/**
 * The network topology file (TOML): the points of presence (PoPs), the upstream providers and the
 * NATS port plan. `parseTopology` validates it with zod and explains every problem by naming the
 * entry (`pop[2] "madrid": lat must be between -90 and 90`).
 *
 * Rules beyond the shape of each entry:
 * - at least one PoP and at least one core PoP;
 * - names are unique across PoPs and upstreams (they are used in headers and NATS server names);
 * - the PoPs of one region form one NATS cluster; regions are joined by gateways (see nats-config.ts);
 * - all core PoPs are in one region: JetStream (replicated config, usage events) runs only on the
 *   core region's cluster and the other regions reach it through the gateways. JetStream enabled in
 *   every cluster of a supercluster split-brained in our trials (docs/DESIGN.md), so a second core
 *   region is rejected rather than silently half-working;
 * - every NATS port (client, cluster, gateway, monitoring) of PoPs on the same host is distinct.
 *
 * One PoP is one NATS server node (`server_name` = the PoP's name). NATS ports left out are
 * assigned from `[nats] base_port`: PoP number i (0-based, in file order) gets
 * base + i*stride + 0 (clients), +1 (cluster routes), +2 (gateways), +3 (HTTP monitoring).
 */
import fs from "node:fs";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { ConfigError } from "../config/index.js";

const NAME = /^[a-z0-9][a-z0-9-]*$/;
const name = z.string().regex(NAME, "must be lowercase letters, digits and '-' (e.g. \"eu-south\")");
const port = z.number().int("must be an integer").min(1, "must be between 1 and 65535").max(65535, "must be between 1 and 65535");
const nonEmpty = z.string().min(1, "must not be empty");
const models = z.array(nonEmpty).default([]);

const popSchema = z.strictObject({
  name,
  region: name,
  lat: z.number().min(-90, "must be between -90 and 90").max(90, "must be between -90 and 90"),
  lon: z.number().min(-180, "must be between -180 and 180").max(180, "must be between -180 and 180"),
  jurisdiction: name,
  role: z.enum(["edge", "core"], "must be \"edge\" or \"core\""),
  models,
  /** Concurrent requests this PoP accepts before others take over. */
  capacity: z.number().int("must be an integer").min(1, "must be at least 1").default(16),
  /** Address the PoP's HTTP API and NATS server listen on (and others reach it at). */
  host: nonEmpty.default("127.0.0.1"),
  /** HTTP API port of the PoP's Borde node. */
  port: port.optional(),
  nats_port: port.optional(),
  cluster_port: port.optional(),
  gateway_port: port.optional(),
  monitor_port: port.optional(),
});

const upstreamSchema = z.strictObject({
  name,
  kind: z.enum(["openai", "workers-ai"], "must be \"openai\" or \"workers-ai\""),
  base_url: z.url("must be a URL"),
  api_key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name").optional(),
  models,
  jurisdiction: name,
});

const natsSchema = z.strictObject({
  /** First port of the automatic NATS port plan. */
  base_port: port.default(4222),
  /** Ports reserved per PoP in the automatic plan (>= 4). */
  port_stride: z.number().int("must be an integer").min(4, "must be at least 4").max(1000, "must be at most 1000").default(10),
});

const topologySchema = z.strictObject({
  pop: z.array(popSchema, "must be a list of [[pop]] tables").min(1, "at least one [[pop]] is needed"),
  upstream: z.array(upstreamSchema, "must be a list of [[upstream]] tables").default([]),
  nats: natsSchema.default({ base_port: 4222, port_stride: 10 }),
});

export interface Pop {
  name: string;
  region: string;
  lat: number;
  lon: number;
  jurisdiction: string;
  role: "edge" | "core";
  models: string[];
  capacity: number;
  host: string;
  port?: number | undefined;
  nats_port: number;
  cluster_port: number;
  gateway_port: number;
  monitor_port: number;
}

export type Upstream = z.infer<typeof upstreamSchema>;

export interface Topology {
  file: string;
  pops: Pop[];
  upstreams: Upstream[];
  nats: { base_port: number; port_stride: number };
  /** Region → its PoPs (file order); each region is one NATS cluster. */
  regions: Map<string, Pop[]>;
  /** The one region that holds the core PoPs and JetStream. */
  coreRegion: string;
}

function describe(raw: unknown, path: readonly PropertyKey[]): { where: string; field: string } {
  const [top, index, ...rest] = path;
  if ((top === "pop" || top === "upstream") && typeof index === "number") {
    const entry = (raw as Record<string, unknown[]> | undefined)?.[top]?.[index] as Record<string, unknown> | undefined;
    const entryName = typeof entry?.name === "string" ? ` ${JSON.stringify(entry.name)}` : "";
    return { where: `${top}[${index}]${entryName}`, field: fieldPath(rest) };
  }
  if (top === undefined) return { where: "topology", field: "" };
  return { where: String(top), field: fieldPath(path.slice(1)) };
}

function fieldPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("");
}

function fail(file: string, problems: string[]): never {
  throw new ConfigError(problems.map((p) => `${file}: ${p}`).join("\n"));
}

/** Parses and validates a topology; throws ConfigError with one line per problem. */
export function parseTopology(text: string, file: string): Topology {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (e) {
    fail(file, [`not valid TOML: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`]);
  }
  if ((raw as Record<string, unknown>).pop === undefined) fail(file, ["pop: at least one [[pop]] is needed"]);
  const result = topologySchema.safeParse(raw, {
    error: (iss) => {
      if (iss.code === "invalid_type") return iss.input === undefined ? "is required" : `must be ${iss.expected === "array" ? "a list" : `a ${iss.expected}`}`;
      return undefined;
    },
  });
  if (!result.success) {
    fail(
      file,
      result.error.issues.map((iss) => {
        const { where, field } = describe(raw, iss.path);
        if (iss.code === "unrecognized_keys") return `${where}${field ? `.${field}` : ""}: unknown key${iss.keys.length > 1 ? "s" : ""} ${iss.keys.map((k) => JSON.stringify(k)).join(", ")}`;
        return `${where}: ${field ? `${field} ` : ""}${iss.message}`;
      }),
    );
  }
  const data = result.data;
  const problems: string[] = [];
  const label = (kind: string, i: number, n: string) => `${kind}[${i}] ${JSON.stringify(n)}`;

  const seen = new Map<string, string>();
  const entries = [...data.pop.map((p, i) => ({ kind: "pop", i, n: p.name })), ...data.upstream.map((u, i) => ({ kind: "upstream", i, n: u.name }))];
  for (const { kind, i, n } of entries) {
    const first = seen.get(n);
    if (first) problems.push(`${label(kind, i, n)}: name is already used by ${first}; names must be unique across pops and upstreams`);
    else seen.set(n, label(kind, i, n));
  }

  const { base_port, port_stride } = data.nats;
  const pops: Pop[] = data.pop.map((p, i) => {
    const base = base_port + i * port_stride;
    return {
      ...p,
      nats_port: p.nats_port ?? base,
      cluster_port: p.cluster_port ?? base + 1,
      gateway_port: p.gateway_port ?? base + 2,
      monitor_port: p.monitor_port ?? base + 3,
    };
  });
  pops.forEach((p, i) => {
    for (const key of ["nats_port", "cluster_port", "gateway_port", "monitor_port"] as const) {
      if (p[key] > 65535) problems.push(`${label("pop", i, p.name)}: ${key} ${p[key]} (from [nats] base_port) is above 65535; lower base_port or set ${key}`);
    }
  });

  // Every listening port on one host must be distinct.
  const ports = new Map<string, string>();
  pops.forEach((p, i) => {
    for (const key of ["port", "nats_port", "cluster_port", "gateway_port", "monitor_port"] as const) {
      const value = p[key];
      if (value === undefined) continue;
      const at = `${p.host}:${value}`;
      const first = ports.get(at);
      if (first) problems.push(`${label("pop", i, p.name)}: ${key} ${value} on ${p.host} is already taken by ${first}`);
      else ports.set(at, `${label("pop", i, p.name)} ${key}`);
    }
  });

  const regions = new Map<string, Pop[]>();
  for (const p of pops) regions.set(p.region, [...(regions.get(p.region) ?? []), p]);
  const coreRegions = [...new Set(pops.filter((p) => p.role === "core").map((p) => p.region))];
  if (coreRegions.length === 0) {
    problems.push(`topology: at least one pop needs role = "core" (the core holds JetStream and the heavy models)`);
  } else if (coreRegions.length > 1) {
    problems.push(
      `topology: core pops are in regions ${coreRegions.map((r) => JSON.stringify(r)).join(", ")}; all core pops must be in one region, ` +
        `because JetStream runs on that region's NATS cluster only (JetStream in several gateway-joined clusters split-brains)`,
    );
  }
  if (problems.length > 0) fail(file, problems);

  return { file, pops, upstreams: data.upstream, nats: data.nats, regions, coreRegion: coreRegions[0]! };
}

/** Reads and parses a topology file; I/O errors become ConfigError too. */
export function loadTopology(file: string): Topology {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read topology ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return parseTopology(text, file);
}

export interface LatLon {
  lat: number;
  lon: number;
}

/** Mean Earth radius (IUGG), km. */
export const EARTH_RADIUS_KM = 6371.0088;
/** Speed of light in vacuum, km/s. */
export const C_KM_PER_S = 299_792.458;
/** Light in optical fibre travels at about 2/3 of c (refractive index ≈ 1.5): ≈ 199,862 km/s. */
export const FIBRE_KM_PER_S = (C_KM_PER_S * 2) / 3;

/** Great-circle distance in km between two points (haversine formula, spherical Earth). */
export function greatCircleKm(a: LatLon, b: LatLon): number {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}

/**
 * One-way network delay in ms over `km` of great-circle distance: light in fibre (2/3 c) over the
 * distance times a route factor (real cable paths are longer than the great circle; 1.5 is a
 * common rule of thumb). Propagation only: no queueing, serialization or processing time.
 */
export function oneWayDelayMs(km: number, routeFactor = 1.5): number {
  if (!(km >= 0) || !(routeFactor >= 1)) throw new RangeError(`oneWayDelayMs: need km >= 0 and routeFactor >= 1, got ${km}, ${routeFactor}`);
  return ((km * routeFactor) / FIBRE_KM_PER_S) * 1000;
}
