/**
 * Single-thread memory READ bandwidth probe.
 *
 * Compiles a tiny C program (cc -O2 -march=native, vectorized) that sums a buffer far larger than
 * the caches and reports the best of several passes. Falls back to a JS typed-array loop when no C
 * compiler is available (that figure is a lower bound: JS rarely saturates memory bandwidth).
 *
 * CLI: node --import tsx bench/membw.ts [--mib 1024] [--passes 5] [--js]
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export interface MemBandwidthResult {
  /** best single-thread read bandwidth, in 1e9 bytes/s */
  gbPerSec: number;
  /** how it was measured, e.g. "c:cc -O2 -march=native" or "js:Float64Array" */
  method: string;
}

export interface MemBandwidthOptions {
  /** buffer size in MiB (default 1024) */
  mib?: number;
  /** passes; the best one is reported (default 5) */
  passes?: number;
  /** "auto" (default): C if a compiler works, else JS; "js" forces the JS loop */
  method?: "auto" | "c" | "js";
}

const C_SOURCE = String.raw`
#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
  int passes = argc > 2 ? atoi(argv[2]) : 5;
  size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
  n &= ~(size_t)7;
  uint64_t *buf = NULL;
  if (posix_memalign((void **)&buf, 4096, n * sizeof(uint64_t)) != 0) return 2;
  for (size_t i = 0; i < n; i++) buf[i] = i * 0x9E3779B97F4A7C15ull; /* fault in all pages */
  double best = 1e30;
  uint64_t total = 0;
  for (int p = 0; p < passes; p++) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    double t0 = now();
    for (size_t i = 0; i < n; i += 8) {
      a0 += buf[i]; a1 += buf[i + 1]; a2 += buf[i + 2]; a3 += buf[i + 3];
      a4 += buf[i + 4]; a5 += buf[i + 5]; a6 += buf[i + 6]; a7 += buf[i + 7];
    }
    double dt = now() - t0;
    total += a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
    if (dt < best) best = dt;
  }
  printf("%.4f %llu\n", (double)(n * sizeof(uint64_t)) / best / 1e9, (unsigned long long)total);
  free(buf);
  return 0;
}
`;

async function measureWithC(mib: number, passes: number): Promise<MemBandwidthResult> {
  const dir = await mkdtemp(join(tmpdir(), "borde-membw-"));
  try {
    const src = join(dir, "membw.c");
    const exe = join(dir, "membw");
    await writeFile(src, C_SOURCE);
    const compilers = [process.env.CC, "cc", "gcc", "clang"].filter((c): c is string => !!c);
    const flagSets = [
      ["-O2", "-march=native", "-ftree-vectorize"],
      ["-O2", "-march=native"],
      ["-O2"],
    ];
    let lastErr: unknown;
    for (const compiler of compilers) {
      for (const flags of flagSets) {
        try {
          await execFileAsync(compiler, [...flags, "-o", exe, src], { timeout: 60_000 });
        } catch (err) {
          lastErr = err;
          continue;
        }
        const { stdout } = await execFileAsync(exe, [String(mib), String(passes)], { timeout: 300_000 });
        const gb = Number(stdout.trim().split(/\s+/)[0]);
        if (!Number.isFinite(gb) || gb <= 0) throw new Error(`bad membw output: ${stdout}`);
        return { gbPerSec: gb, method: `c:${compiler} ${flags.join(" ")}` };
      }
    }
    throw lastErr ?? new Error("no C compiler");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function measureWithJs(mib: number, passes: number): MemBandwidthResult {
  const n = ((mib * 1024 * 1024) / 8) & ~7;
  const buf = new Float64Array(n);
  for (let i = 0; i < n; i++) buf[i] = i & 0xff;
  let best = Infinity;
  let sink = 0;
  for (let p = 0; p < passes; p++) {
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    const t0 = performance.now();
    for (let i = 0; i < n; i += 4) {
      a0 += buf[i] ?? 0;
      a1 += buf[i + 1] ?? 0;
      a2 += buf[i + 2] ?? 0;
      a3 += buf[i + 3] ?? 0;
    }
    const dt = (performance.now() - t0) / 1000;
    sink += a0 + a1 + a2 + a3;
    if (dt < best) best = dt;
  }
  if (sink === -1) console.log(sink); // keep the loop observable
  return { gbPerSec: (n * 8) / best / 1e9, method: "js:Float64Array" };
}

/** Best-of-N single-thread read bandwidth over a buffer much larger than the caches. */
export async function measureReadBandwidth(opts: MemBandwidthOptions = {}): Promise<MemBandwidthResult> {
  const mib = opts.mib ?? 1024;
  const passes = opts.passes ?? 5;
  if (opts.method === "js") return measureWithJs(Math.min(mib, 512), passes);
  if (opts.method === "c") return measureWithC(mib, passes);
  try {
    return await measureWithC(mib, passes);
  } catch {
    return measureWithJs(Math.min(mib, 512), passes);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  const arg = (k: string): number | undefined => {
    const i = argv.indexOf(`--${k}`);
    const v = i >= 0 ? argv[i + 1] : undefined;
    return v === undefined ? undefined : Number(v);
  };
  measureReadBandwidth({ mib: arg("mib"), passes: arg("passes"), method: argv.includes("--js") ? "js" : "auto" })
    .then((r) => console.log(JSON.stringify({ gbPerSec: +r.gbPerSec.toFixed(2), method: r.method })))
    .catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
}
