/**
 * The simulated world `borde sim` starts when given no topology: six PoPs at real city coordinates,
 * Madrid and Frankfurt share region "eu" (a two-server NATS cluster: JetStream needs routes), the
 * others are a region each, joined by gateways; the core is Frankfurt, with
 * JetStream. Small models on every PoP; the heavy one only at the core.
 */
export const SIM_TOPOLOGY = `
[nats]
base_port = 24222

[[pop]]
name = "madrid"
region = "eu"
lat = 40.42
lon = -3.70
jurisdiction = "eu"
role = "edge"
models = ["@borde/stories260k", "@borde/fasttext-lid-176", "@borde/use-lite"]

[[pop]]
name = "frankfurt"
region = "eu"
lat = 50.11
lon = 8.68
jurisdiction = "eu"
role = "core"
models = ["@borde/stories260k", "@borde/fasttext-lid-176", "@borde/use-lite", "@cf/meta/llama-3.2-1b-instruct"]

[[pop]]
name = "virginia"
region = "us-east"
lat = 38.95
lon = -77.45
jurisdiction = "us"
role = "edge"
models = ["@borde/stories260k", "@borde/fasttext-lid-176", "@borde/use-lite"]

[[pop]]
name = "sao-paulo"
region = "sa-east"
lat = -23.55
lon = -46.63
jurisdiction = "br"
role = "edge"
models = ["@borde/stories260k", "@borde/fasttext-lid-176", "@borde/use-lite"]

[[pop]]
name = "singapore"
region = "ap-southeast"
lat = 1.35
lon = 103.82
jurisdiction = "apac"
role = "edge"
models = ["@borde/stories260k", "@borde/fasttext-lid-176", "@borde/use-lite"]

[[pop]]
name = "sydney"
region = "au-east"
lat = -33.87
lon = 151.21
jurisdiction = "apac"
role = "edge"
models = ["@borde/stories260k", "@borde/fasttext-lid-176", "@borde/use-lite"]
`;

/** Where the load generator's clients are (real cities, none exactly on a PoP). */
export const CLIENT_CITIES: readonly { city: string; lat: number; lon: number }[] = [
  { city: "lisbon", lat: 38.72, lon: -9.14 },
  { city: "paris", lat: 48.86, lon: 2.35 },
  { city: "new-york", lat: 40.71, lon: -74.01 },
  { city: "buenos-aires", lat: -34.6, lon: -58.38 },
  { city: "jakarta", lat: -6.21, lon: 106.85 },
  { city: "tokyo", lat: 35.68, lon: 139.69 },
  { city: "melbourne", lat: -37.81, lon: 144.96 },
  { city: "mumbai", lat: 19.08, lon: 72.88 },
];
