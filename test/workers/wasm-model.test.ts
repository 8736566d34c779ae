import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { bundleProject } from "../../src/workers/deploy/bundle.js";
import { Miniflare, type ModuleDefinition } from "miniflare";

/**
 * examples/wasm-model-worker: a worker that runs its own model (a TF.js layers model on TF.js's
 * Wasm backend) inside workerd. Bundled the way wrangler bundles, run in Miniflare's workerd,
 * checked against ONNX Runtime's outputs for the same trained model (model/expected.json, written
 * by model/train.py), and measured against the 128 MB memory budget of a worker.
 */

const EXAMPLE = path.resolve(import.meta.dirname, "../../examples/wasm-model-worker");
const MEMORY_BUDGET_MB = 128;
const INFERENCES = 300;

interface Expected {
  test_accuracy: number;
  cases: { pixels: number[]; label: number; predicted: number; probabilities: number[] }[];
}
interface Prediction {
  digit: number;
  confidence: number;
  probabilities: number[];
}

const MINIFLARE_TYPES = { esm: "ESModule", wasm: "CompiledWasm", text: "Text", data: "Data" } as const;

/** The example bundled by Borde's own bundler (wrangler's rules), as Miniflare modules. */
async function bundle(dir: string): Promise<{ modules: ModuleDefinition[]; bytes: number }> {
  const b = await bundleProject(dir);
  const modules: ModuleDefinition[] = b.modules.map((m) => ({ type: MINIFLARE_TYPES[m.type], path: m.name, contents: m.content }));
  return { modules, bytes: b.modules.reduce((n, m) => n + m.content.byteLength, 0) };
}

/** The workerd process a Miniflare just started: this process's workerd child not in `known`. */
function workerdChild(known: Set<number>): number | undefined {
  if (process.platform !== "linux") return undefined;
  for (const entry of fs.readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || known.has(pid)) continue;
    try {
      const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
      if (/^Name:\s+workerd$/m.test(status) && new RegExp(`^PPid:\\s+${process.pid}$`, "m").test(status)) return pid;
    } catch {
      // gone, or not ours to read
    }
  }
  return undefined;
}

function workerdChildren(): Set<number> {
  const pids = new Set<number>();
  for (let pid = workerdChild(pids); pid !== undefined; pid = workerdChild(pids)) pids.add(pid);
  return pids;
}

interface Memory {
  rssMb: number;
  peakMb: number;
  /** Resident memory that is not a file mapping (the shared workerd executable is one). */
  anonMb: number;
}
function memory(pid: number): Memory {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, "m").exec(status)?.[1] ?? NaN);
  return { rssMb: kb("VmRSS") / 1024, peakMb: kb("VmHWM") / 1024, anonMb: kb("RssAnon") / 1024 };
}

/** User + system CPU seconds the process has used. */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100 on Linux)
}

const mb = (n: number) => `${n.toFixed(1)} MB`;

const ECHO_WORKER = `export default {
  async fetch(request) {
    const body = await request.json();
    return Response.json({ predictions: [{ digit: 0, confidence: 1, probabilities: body.pixels.slice(0, 10).map((v) => v / 16 + 1e-9) }] });
  },
};`;

async function startWorker(modules: ModuleDefinition[]): Promise<{ mf: Miniflare; pid: number | undefined; readyMs: number }> {
  const known = workerdChildren();
  const t0 = performance.now();
  const mf = new Miniflare({ modules, compatibilityDate: "2025-09-01" });
  await mf.ready;
  const readyMs = performance.now() - t0;
  return { mf, pid: workerdChild(known), readyMs };
}

describe("a model inside a worker: examples/wasm-model-worker", { timeout: 60_000 }, () => {
  const expected = JSON.parse(fs.readFileSync(path.join(EXAMPLE, "model/expected.json"), "utf8")) as Expected;
  let modules: ModuleDefinition[];
  let mf: Miniflare;
  let pid: number | undefined;
  let baseline: { idle: Memory; busy: Memory } | undefined;
  let idle: Memory | undefined;
  const figures: string[] = [];

  before(async () => {
    const t0 = performance.now();
    const b = await bundle(EXAMPLE);
    modules = b.modules;
    figures.push(`bundle: ${modules.map((m) => `${m.path.replace(/^[0-9a-f]{40}-/, "")} ${(m.contents as Uint8Array | string).length} B (${m.type})`).join(", ")}; ${(b.bytes / 1e6).toFixed(2)} MB in all, bundled in ${(performance.now() - t0).toFixed(0)} ms`);

    // What a workerd process costs with no model: a worker that reads the same JSON bodies and
    // answers about as much JSON, started and driven the same way.
    // The first workerd a process starts pays one-time costs (Miniflare's own set-up): not counted.
    await (await startWorker([{ type: "ESModule", path: "index.js", contents: ECHO_WORKER }])).mf.dispose();
    const echo = await startWorker([{ type: "ESModule", path: "index.js", contents: ECHO_WORKER }]);
    if (echo.pid !== undefined) {
      const echoIdle = memory(echo.pid);
      for (let i = 0; i < INFERENCES; i++) await (await echo.mf.dispatchFetch("http://echo.test/", { method: "POST", body: JSON.stringify({ pixels: expected.cases[i % expected.cases.length]!.pixels }) })).text();
      baseline = { idle: echoIdle, busy: memory(echo.pid) };
    }
    figures.push(`cold start, no model (echo worker): workerd ready in ${echo.readyMs.toFixed(0)} ms`);
    await echo.mf.dispose();

    const started = await startWorker(modules);
    ({ mf, pid } = started);
    if (pid !== undefined) idle = memory(pid);
    figures.push(`cold start: workerd ready in ${started.readyMs.toFixed(0)} ms, the model already loaded (in the worker's global scope)`);
  });

  after(async () => {
    await mf?.dispose();
    for (const line of figures) console.log(`# wasm-model-worker ${line}`);
  });

  it("bundles the wrangler way: the Wasm runtime as a CompiledWasm module, the weights as Data", () => {
    const wasm = modules.filter((m) => m.type === "CompiledWasm");
    assert.equal(wasm.length, 1);
    assert.match(wasm[0]!.path, /^[0-9a-f]{40}-tfjs-backend-wasm-simd\.wasm$/);
    const data = modules.filter((m) => m.type === "Data");
    assert.deepEqual(
      data.map((m) => m.path.replace(/^[0-9a-f]{40}-/, "")),
      ["digits-mlp.weights.bin"],
    );
    // The JavaScript must not carry the Wasm as bytes (workerd would refuse to compile them anyway).
    const js = modules[0]!.contents as string;
    assert.ok(!js.includes("AGFzbQ"), "no base64 Wasm in the JavaScript");
  });

  it("the first request after start is answered by the model on TF.js's wasm backend", async () => {
    const t0 = performance.now();
    const cpu0 = pid === undefined ? 0 : cpuSeconds(pid);
    const r = await mf.dispatchFetch("http://digits.test/", { method: "POST", body: JSON.stringify({ pixels: expected.cases[0]!.pixels }) });
    const body = (await r.json()) as { backend: string; predictions: Prediction[] };
    const ms = performance.now() - t0;
    assert.equal(r.status, 200, JSON.stringify(body));
    assert.equal(body.backend, "wasm");
    assert.equal(body.predictions[0]!.digit, expected.cases[0]!.predicted);
    figures.push(`first request: ${ms.toFixed(1)} ms${pid === undefined ? "" : `, ${((cpuSeconds(pid) - cpu0) * 1000).toFixed(0)} ms of workerd CPU (10 ms ticks)`}`);
    const info = await mf.dispatchFetch("http://digits.test/");
    assert.equal(((await info.json()) as { backend: string }).backend, "wasm");
  });

  it("predicts what ONNX Runtime predicts for the same model, one image at a time and as a batch", async () => {
    let right = 0;
    for (const c of expected.cases) {
      const r = await mf.dispatchFetch("http://digits.test/", { method: "POST", body: JSON.stringify({ pixels: c.pixels }) });
      assert.equal(r.status, 200);
      const [p] = ((await r.json()) as { predictions: Prediction[] }).predictions;
      assert.equal(p!.digit, c.predicted);
      assert.equal(p!.probabilities.length, 10);
      for (let d = 0; d < 10; d++) assert.ok(Math.abs(p!.probabilities[d]! - c.probabilities[d]!) < 1e-5, `digit ${d}: ${p!.probabilities[d]} vs ${c.probabilities[d]}`);
      assert.equal(p!.confidence, p!.probabilities[p!.digit]);
      if (p!.digit === c.label) right++;
    }
    // The held-out cases are real handwritten digits: the model reads (nearly) all of them right.
    assert.ok(right >= expected.cases.length - 1, `${right}/${expected.cases.length} right`);

    const r = await mf.dispatchFetch("http://digits.test/", { method: "POST", body: JSON.stringify({ pixels: expected.cases.map((c) => c.pixels) }) });
    const batch = ((await r.json()) as { predictions: Prediction[] }).predictions;
    assert.deepEqual(
      batch.map((p) => p.digit),
      expected.cases.map((c) => c.predicted),
    );
    for (const [i, p] of batch.entries()) for (let d = 0; d < 10; d++) assert.ok(Math.abs(p.probabilities[d]! - expected.cases[i]!.probabilities[d]!) < 1e-5);
  });

  it("rejects bad input with 400 and keeps serving", async () => {
    for (const body of ["not json", "{}", JSON.stringify({ pixels: [1, 2, 3] }), JSON.stringify({ pixels: Array(64).fill(17) }), JSON.stringify({ pixels: Array(257).fill(Array(64).fill(0)) })]) {
      const r = await mf.dispatchFetch("http://digits.test/", { method: "POST", body });
      assert.equal(r.status, 400, body.slice(0, 40));
      assert.match(((await r.json()) as { error: string }).error, /./);
    }
    const r = await mf.dispatchFetch("http://digits.test/", { method: "POST", body: JSON.stringify({ pixels: Array(256).fill(expected.cases[1]!.pixels) }) });
    const p = ((await r.json()) as { predictions: Prediction[] }).predictions;
    assert.equal(p.length, 256);
    assert.ok(p.every((x) => x.digit === expected.cases[1]!.predicted));
  });

  it(`stays within the ${MEMORY_BUDGET_MB} MB memory budget over ${INFERENCES} inferences`, async (t) => {
    const stats = async () => ((await (await mf.dispatchFetch("http://digits.test/")).json()) as { memory: { tensors: number; tensorBytes: number; wasmHeapBytes: number } }).memory;
    const before = await stats();
    const cpu0 = pid === undefined ? 0 : cpuSeconds(pid);
    const latencies: number[] = [];
    for (let i = 0; i < INFERENCES; i++) {
      const c = expected.cases[i % expected.cases.length]!;
      const t0 = performance.now();
      const r = await mf.dispatchFetch("http://digits.test/", { method: "POST", body: JSON.stringify({ pixels: c.pixels }) });
      const [p] = ((await r.json()) as { predictions: Prediction[] }).predictions;
      latencies.push(performance.now() - t0);
      assert.equal(p!.digit, c.predicted);
    }
    latencies.sort((a, b) => a - b);
    const q = (f: number) => latencies[Math.min(latencies.length - 1, Math.floor(f * latencies.length))]!.toFixed(2);
    const cpu = pid === undefined ? "" : `; ${(((cpuSeconds(pid) - cpu0) * 1000) / INFERENCES).toFixed(2)} ms of workerd CPU per request`;
    figures.push(`inference (one image, dispatchFetch round trip): p50 ${q(0.5)} ms, p99 ${q(0.99)} ms${cpu}`);

    // The model holds the same memory after as before: every intermediate tensor is disposed
    // (tf.tidy) and the Wasm heap did not grow.
    const after = await stats();
    assert.deepEqual(after, before);
    assert.equal(after.tensors, 4, "fc1 and fc2, kernel and bias");
    assert.equal(after.tensorBytes, fs.statSync(path.join(EXAMPLE, "model/digits-mlp.weights.bin")).size);
    figures.push(`in the isolate: ${after.tensors} tensors (${after.tensorBytes} B of weights), Wasm heap ${(after.wasmHeapBytes / 2 ** 20).toFixed(0)} MiB, unchanged over ${INFERENCES} inferences`);

    if (pid === undefined || idle === undefined) return t.skip("needs Linux /proc to measure the workerd process");
    const busy = memory(pid);
    if (baseline) {
      figures.push(`workerd RSS, no model (echo worker): idle ${mb(baseline.idle.rssMb)}, after ${INFERENCES} requests ${mb(baseline.busy.rssMb)}`);
    }
    figures.push(`workerd RSS, model worker: idle ${mb(idle.rssMb)} (anonymous ${mb(idle.anonMb)}), after ${INFERENCES} inferences ${mb(busy.rssMb)} (anonymous ${mb(busy.anonMb)}), peak ${mb(busy.peakMb)}`);
    if (baseline) figures.push(`the model's own cost: ${mb(idle.rssMb - baseline.idle.rssMb)} idle, ${mb(busy.rssMb - baseline.busy.rssMb)} after ${INFERENCES} requests`);
    // The whole workerd process (its executable, Miniflare's own services and the per-request
    // growth that any worker shows included) stays under a worker's budget.
    assert.ok(busy.peakMb < MEMORY_BUDGET_MB, `peak RSS ${mb(busy.peakMb)}`);
    // And the model adds far less than the budget to what the same process costs without it.
    if (baseline) assert.ok(busy.rssMb - baseline.busy.rssMb < MEMORY_BUDGET_MB / 2, `the model costs ${mb(busy.rssMb - baseline.busy.rssMb)}`);
  });
});
