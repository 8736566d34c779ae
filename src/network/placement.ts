import { greatCircleKm, oneWayDelayMs, type Pop, type Topology, type Upstream } from "./topology.js";

export type Target = { kind: "pop"; pop: Pop; oneWayMs: number } | { kind: "upstream"; upstream: Upstream };

export interface PlacementQuery {
  topology: Topology;
  /** The PoP that took the request. */
  entry: Pop;
  model: string;
  /** Only places in these jurisdictions may serve it; null = anywhere. */
  allowed: readonly string[] | null;
  /** Whether a PoP is alive and serves the model now (from heartbeats). */
  serves: (pop: string, model: string) => boolean;
  /** Upstreams take only text generation and embeddings. */
  upstreamsAllowed: boolean;
}

/**
 * Where a call may run, best first: the PoPs that serve the model, nearest to the entry PoP first
 * (the entry itself is at distance 0), then the upstream providers that list it. A place outside the
 * pinned jurisdiction is never a candidate — residency is decided here, in one place.
 */
export function placements(q: PlacementQuery): Target[] {
  const inside = (j: string) => q.allowed === null || q.allowed.includes(j);
  const pops = q.topology.pops
    .filter((p) => inside(p.jurisdiction) && q.serves(p.name, q.model))
    .map((pop) => ({ kind: "pop" as const, pop, oneWayMs: pop === q.entry ? 0 : oneWayDelayMs(greatCircleKm(q.entry, pop)) }))
    .sort((a, b) => a.oneWayMs - b.oneWayMs);
  const upstreams = q.topology.upstreams.filter((u) => inside(u.jurisdiction) && u.models.includes(q.model) && q.upstreamsAllowed).map((upstream) => ({ kind: "upstream" as const, upstream }));
  return [...pops, ...upstreams];
}
