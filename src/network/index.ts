export { C_KM_PER_S, EARTH_RADIUS_KM, FIBRE_KM_PER_S, greatCircleKm, loadTopology, oneWayDelayMs, parseTopology } from "./topology.js";
export type { LatLon, Pop, Topology, Upstream } from "./topology.js";
export { natsConfig, natsConfigFileName, natsConfigs } from "./nats-config.js";
export type { NatsConfigOptions } from "./nats-config.js";
