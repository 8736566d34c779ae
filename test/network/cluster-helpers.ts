import path from "node:path";

/** Starts `borde node` from source (no build needed), as the network suites' PoP processes. */
export const NODE_COMMAND = [process.execPath, "--import", "tsx", path.resolve(import.meta.dirname, "../cli/borde.ts")];

/** Fails under CI=true when nats-server is missing; otherwise says whether the suite can run. */
export function natsOrSkip(available: boolean): boolean {
  if (available) return true;
  if (process.env.CI === "true") throw new Error("needs nats-server; CI=true requires every service");
  return false;
}
