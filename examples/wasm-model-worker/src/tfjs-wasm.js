// TF.js's Wasm backend inside workerd (Cloudflare Workers, Borde).
//
// Workers may not compile WebAssembly from bytes at run time: `WebAssembly.compile(bytes)` and
// `WebAssembly.instantiate(bytes, imports)` throw ("Wasm code generation disallowed by embedder").
// Wasm has to arrive as a module the bundler attached (`import mod from "./x.wasm"` gives a
// precompiled `WebAssembly.Module`), and only `new WebAssembly.Instance(mod, imports)` or
// `WebAssembly.instantiate(mod, imports)` may run. TF.js's Emscripten loader knows nothing of this:
// it fetches the `.wasm` by URL and instantiates the bytes. `useWasmBackend` lets that loader run
// unchanged and hands it the attached module:
//
// - `setWasmPaths(…, true)` makes the loader go through TF.js's platform fetch (its
//   `instantiateWasm` hook) instead of Emscripten's own fetch and streaming compile;
// - that fetch is answered, for the duration of the set-up, with an empty body: nothing is fetched;
// - `WebAssembly.instantiate(bytes, imports)` is answered, for the duration of the set-up, with a
//   synchronous `new WebAssembly.Instance(module, imports)` of the attached module.
//
// Every step settles within microtasks, so the set-up may run in the worker's global scope
// (top-level await): it then happens once, when the isolate starts, and not inside a request.
// No threads (workerd has no Web Workers): the single-threaded SIMD build is used.

import * as tf from "@tensorflow/tfjs-core";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";

/** Makes "wasm" TF.js's backend, instantiating `simdModule` (tfjs-backend-wasm-simd.wasm). */
export async function useWasmBackend(simdModule) {
  if (!(simdModule instanceof WebAssembly.Module)) throw new TypeError("expected the WebAssembly.Module of tfjs-backend-wasm-simd.wasm");
  tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
  tf.env().set("WASM_HAS_SIMD_SUPPORT", true);
  const names = ["tfjs-backend-wasm.wasm", "tfjs-backend-wasm-simd.wasm", "tfjs-backend-wasm-threaded-simd.wasm"];
  setWasmPaths(Object.fromEntries(names.map((n) => [n, `attached:${n}`])), true);

  const platform = tf.env().platform;
  const fetch = platform.fetch;
  const instantiate = WebAssembly.instantiate;
  platform.fetch = async () => ({ ok: true, arrayBuffer: async () => new ArrayBuffer(0) });
  WebAssembly.instantiate = async (source, imports) => {
    if (source instanceof WebAssembly.Module) return new WebAssembly.Instance(source, imports);
    return { instance: new WebAssembly.Instance(simdModule, imports), module: simdModule };
  };
  try {
    if (!(await tf.setBackend("wasm"))) throw new Error("TF.js could not initialize its wasm backend");
    await tf.ready();
  } finally {
    platform.fetch = fetch;
    WebAssembly.instantiate = instantiate;
  }
}
