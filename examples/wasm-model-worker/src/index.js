// A worker that runs its own model: a digits classifier (TF.js layers model, 2.4k parameters)
// executed by TF.js's WebAssembly backend inside the worker, no env.AI call. The model, the Wasm
// runtime and the JavaScript are all part of the deployed bundle.
//
//   POST / {"pixels": [64 numbers 0..16]}            one 8x8 image, row by row
//   POST / {"pixels": [[64 numbers], [64 numbers]]}  a batch (up to 256)
//   → {"model": "digits-mlp", "backend": "wasm", "predictions": [{"digit", "confidence", "probabilities"}]}
//   GET  /  → what the model expects, and the memory it holds

import * as tf from "@tensorflow/tfjs-core";
import { loadLayersModel } from "@tensorflow/tfjs-layers";
// A precompiled WebAssembly.Module (a CompiledWasm module, wrangler's default rule for *.wasm).
import simdWasm from "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm";
import topology from "../model/digits-mlp.json";
// An ArrayBuffer (a Data module, wrangler's default rule for *.bin).
import weights from "../model/digits-mlp.weights.bin";
import { useWasmBackend } from "./tfjs-wasm.js";

const MAX_BATCH = 256;

// Global scope: runs once per isolate, when it starts, not inside a request.
await useWasmBackend(simdWasm);
const model = await loadLayersModel(
  tf.io.fromMemory({ modelTopology: topology.modelTopology, weightSpecs: topology.weightsManifest[0].weights, weightData: weights }),
);

function parse(body) {
  const pixels = body && typeof body === "object" ? body.pixels : undefined;
  if (!Array.isArray(pixels) || pixels.length === 0) return "pixels: expected 64 numbers, or an array of such rows";
  const rows = Array.isArray(pixels[0]) ? pixels : [pixels];
  if (rows.length > MAX_BATCH) return `pixels: at most ${MAX_BATCH} rows`;
  const flat = new Float32Array(rows.length * 64);
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    if (!Array.isArray(row) || row.length !== 64) return `pixels[${r}]: expected 64 numbers`;
    for (let i = 0; i < 64; i++) {
      const v = row[i];
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > 16) return `pixels[${r}][${i}]: expected a number from 0 to 16`;
      flat[r * 64 + i] = v;
    }
  }
  return { flat, count: rows.length };
}

function json(body, status = 200) {
  return Response.json(body, { status });
}

export default {
  async fetch(request) {
    if (request.method === "GET") {
      const mem = tf.memory();
      return json({
        model: "digits-mlp",
        backend: tf.getBackend(),
        input: { pixels: "64 numbers 0..16 (an 8x8 image, row by row), or up to 256 such rows" },
        output: "a digit 0-9 per row, with its probabilities",
        // What the model holds in this isolate: its weights as tensors, and the Wasm heap TF.js runs in.
        memory: { tensors: mem.numTensors, tensorBytes: mem.numBytes, wasmHeapBytes: tf.backend().wasm.HEAPU8.byteLength },
      });
    }
    if (request.method !== "POST") return json({ error: "use GET or POST" }, 405);
    let body;
    try {
      body = await request.json();
    } catch {
      return json({ error: "the body is not JSON" }, 400);
    }
    const input = parse(body);
    if (typeof input === "string") return json({ error: input }, 400);
    const probs = tf.tidy(() => model.predict(tf.tensor2d(input.flat, [input.count, 64])).dataSync());
    const predictions = [];
    for (let r = 0; r < input.count; r++) {
      const p = Array.from(probs.subarray(r * 10, r * 10 + 10));
      let digit = 0;
      for (let d = 1; d < 10; d++) if (p[d] > p[digit]) digit = d;
      predictions.push({ digit, confidence: p[digit], probabilities: p });
    }
    return json({ model: "digits-mlp", backend: tf.getBackend(), predictions });
  },
};
