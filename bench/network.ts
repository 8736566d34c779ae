/**
 * `npm run bench:network`: the edge network in the six-PoP simulation (issue 5), in one run.
 *
 * Runs `borde sim` (from source) on the built-in world: a nats-server and a `borde node` process per
 * PoP (Madrid, Frankfurt = core, Virginia, Sao Paulo, Singapore, Sydney), user-space latency on
 * every PoP-to-PoP and client-to-PoP link (great circle at 2/3 c x 1.5). Clients in eight cities
 * send small-model requests (stories260k text generation, fastText language id, USE-lite embeddings):
 * first each to its nearest PoP (edge), with Sydney's node SIGKILLed halfway through, then all to
 * the core (central-only, the baseline). Then the cross-PoP hop probe: the same call sent straight
 * to a PoP, and sent to another PoP pinned (borde-jurisdiction) so that it is forwarded there.
 *
 * Targets: far clients' small-model p50 <= 0.3 x central-only; a cross-PoP hop adds <= 2 ms over
 * the emulated link; >= 99% of requests succeed while a PoP is killed.
 *
 * Environment: BENCH_SECONDS (per mode, default 30), BENCH_KILL (default sydney; "none" to skip).
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const seconds = process.env.BENCH_SECONDS ?? "30";
const kill = process.env.BENCH_KILL ?? "sydney";
const out = path.resolve(import.meta.dirname, "results");
fs.mkdirSync(out, { recursive: true });
const report = path.join(out, "network.json");
console.log(`# bench:network — ${os.cpus().length} x ${os.cpus()[0]?.model}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
const args = ["--import", "tsx", path.resolve(import.meta.dirname, "../test/cli/borde.ts"), "sim", "--duration", seconds, "--report", report];
if (kill !== "none") args.push("--kill", kill);
const r = spawnSync(process.execPath, args, { stdio: "inherit" });
process.exit(r.status ?? 1);
