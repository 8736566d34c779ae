import os from "node:os";

/**
 * Engine threads for this node. llama.cpp collapses when its threads outnumber free cores (measured
 * on a 2-core machine: ~1450 tok/s with 1 thread vs 1-105 tok/s with 2-4 while other work ran), so
 * the default counts the cores not already busy (1-minute load average) and leaves one of them to
 * Node's event loop, which parses requests and writes streams.
 */
export function chooseThreads(requested: number, cores = os.availableParallelism(), load = os.loadavg()[0] ?? 0): number {
  if (requested > 0) return requested;
  const free = Math.max(1, Math.min(cores, cores - Math.round(load)));
  return Math.max(1, free - 1);
}
