import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { ConfigError } from "../../src/config/index.js";
import { FIBRE_KM_PER_S, greatCircleKm, loadTopology, oneWayDelayMs, parseTopology } from "../../src/network/index.js";

const FIXTURE = path.resolve(import.meta.dirname, "../fixtures/network/two-regions.toml");

const pop = (name: string, region: string, role: "edge" | "core", extra = "") =>
  `[[pop]]\nname = "${name}"\nregion = "${region}"\nlat = 50.11\nlon = 8.68\njurisdiction = "eu"\nrole = "${role}"\n${extra}`;
const CORE = pop("frankfurt", "eu-central", "core");

function rejects(text: string, message: string) {
  assert.throws(
    () => parseTopology(text, "t.toml"),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.message, message);
      return true;
    },
  );
}

test("the fixture parses, with defaults and the automatic NATS port plan", () => {
  const t = loadTopology(FIXTURE);
  assert.deepEqual(
    t.pops.map((p) => p.name),
    ["frankfurt", "madrid", "virginia"],
  );
  assert.equal(t.coreRegion, "eu-central");
  assert.deepEqual([...t.regions.keys()], ["eu-central", "us-east"]);
  assert.deepEqual(
    t.regions.get("eu-central")!.map((p) => p.name),
    ["frankfurt", "madrid"],
  );
  const [frankfurt, madrid] = t.pops;
  assert.equal(frankfurt!.capacity, 32);
  assert.equal(madrid!.capacity, 16);
  assert.equal(madrid!.host, "127.0.0.1");
  assert.equal(madrid!.port, 8802);
  assert.deepEqual([madrid!.nats_port, madrid!.cluster_port, madrid!.gateway_port, madrid!.monitor_port], [14232, 14233, 14234, 14235]);
  assert.equal(t.upstreams[0]!.kind, "openai");
  assert.equal(t.upstreams[0]!.api_key_env, "PROVIDER_A_KEY");
});

test("explicit ports win over the port plan; upstreams and models are optional", () => {
  const t = parseTopology(pop("frankfurt", "eu-central", "core", "nats_port = 5000\n"), "t.toml");
  assert.equal(t.pops[0]!.nats_port, 5000);
  assert.equal(t.pops[0]!.cluster_port, 4223);
  assert.deepEqual(t.pops[0]!.models, []);
  assert.deepEqual(t.upstreams, []);
});

test("errors name the entry and the field", () => {
  rejects(
    CORE + pop("lisbon", "eu-south", "edge") + `[[pop]]\nname = "madrid"\nregion = "eu-south"\nlat = 140.42\nlon = -3.7\njurisdiction = "eu"\nrole = "edge"\n`,
    `t.toml: pop[2] "madrid": lat must be between -90 and 90`,
  );
  rejects(
    `[[pop]]\nname = "madrid"\nregion = "eu-south"\nlon = -3.7\njurisdiction = "eu"\nrole = "hub"\nmodels = "x"\nfoo = 1\n`,
    [
      `t.toml: pop[0] "madrid": lat is required`,
      `t.toml: pop[0] "madrid": role must be "edge" or "core"`,
      `t.toml: pop[0] "madrid": models must be a list`,
      `t.toml: pop[0] "madrid": unknown key "foo"`,
    ].join("\n"),
  );
  rejects(pop("Frankfurt", "eu-central", "core"), `t.toml: pop[0] "Frankfurt": name must be lowercase letters, digits and '-' (e.g. "eu-south")`);
  rejects(CORE + `[[upstream]]\nname = "p"\nkind = "openai"\nbase_url = "not a url"\njurisdiction = "us"\n`, `t.toml: upstream[0] "p": base_url must be a URL`);
  rejects(CORE + `[[upstream]]\nname = "p"\nkind = "grpc"\nbase_url = "https://x"\njurisdiction = "us"\n`, `t.toml: upstream[0] "p": kind must be "openai" or "workers-ai"`);
  rejects(CORE + `[nats]\nbase_port = 70000\n`, `t.toml: nats: base_port must be between 1 and 65535`);
  rejects(``, `t.toml: pop: at least one [[pop]] is needed`);
  rejects(`[[pop]\n`, `t.toml: not valid TOML: Invalid TOML document: expected end of table array declaration`);
});

test("cross-entry rules: unique names, a core, one core region, free ports", () => {
  rejects(
    CORE + `[[upstream]]\nname = "frankfurt"\nkind = "openai"\nbase_url = "https://x"\njurisdiction = "us"\n`,
    `t.toml: upstream[0] "frankfurt": name is already used by pop[0] "frankfurt"; names must be unique across pops and upstreams`,
  );
  rejects(pop("madrid", "eu-south", "edge"), `t.toml: topology: at least one pop needs role = "core" (the core holds JetStream and the heavy models)`);
  rejects(
    CORE + pop("virginia", "us-east", "core"),
    `t.toml: topology: core pops are in regions "eu-central", "us-east"; all core pops must be in one region, because JetStream runs on that region's NATS cluster only (JetStream in several gateway-joined clusters split-brains)`,
  );
  rejects(
    pop("frankfurt", "eu-central", "core", "nats_port = 4222\n") + pop("madrid", "eu-central", "edge", "cluster_port = 4222\n"),
    `t.toml: pop[1] "madrid": cluster_port 4222 on 127.0.0.1 is already taken by pop[0] "frankfurt" nats_port`,
  );
  // Two core PoPs in one region are fine.
  assert.equal(parseTopology(CORE + pop("berlin", "eu-central", "core"), "t.toml").coreRegion, "eu-central");
});

test("great-circle distance and fibre delay: Madrid–Frankfurt", () => {
  const madrid = { lat: 40.4168, lon: -3.7038 };
  const frankfurt = { lat: 50.1109, lon: 8.6821 };
  const km = greatCircleKm(madrid, frankfurt);
  // Published great-circle figures for Madrid–Frankfurt are 1,445–1,450 km (the brief's "~1,420" was rough).
  assert.ok(Math.abs(km - 1446) < 5, `Madrid–Frankfurt is about 1,446 km, got ${km}`);
  assert.equal(greatCircleKm(madrid, madrid), 0);
  assert.ok(Math.abs(greatCircleKm({ lat: 0, lon: 0 }, { lat: 0, lon: 180 }) - Math.PI * 6371.0088) < 1e-6);
  // 2/3 of c in fibre ≈ 199,862 km/s, so 1,000 km takes ≈ 5.0 ms before the route factor.
  assert.ok(Math.abs(FIBRE_KM_PER_S - 199_861.64) < 0.01);
  assert.ok(Math.abs(oneWayDelayMs(1000, 1) - 5.0035) < 1e-3);
  // Madrid–Frankfurt with the default route factor 1.5: ≈ 1,446 × 1.5 / 199,862 s ≈ 10.85 ms.
  const ms = oneWayDelayMs(km);
  assert.ok(Math.abs(ms - 10.85) < 0.05, `got ${ms} ms`);
  assert.ok(Math.abs(oneWayDelayMs(km, 2) - (km * 2 * 1000) / FIBRE_KM_PER_S) < 1e-9);
  assert.throws(() => oneWayDelayMs(-1), RangeError);
  assert.throws(() => oneWayDelayMs(1, 0.5), RangeError);
});
