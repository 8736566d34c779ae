import * as tf from "@tensorflow/tfjs-core";
import { setThreadsCount, setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import fs from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

/**
 * TF.js runs on its WebAssembly backend: `@tensorflow/tfjs-node` needs a native TensorFlow download
 * at install time, which an offline node cannot do. The backend is process-wide; it starts once, on
 * the first model load, so a node that serves no TF.js model never pays for it.
 */
let ready: Promise<void> | undefined;

export function ensureBackend(): Promise<void> {
  ready ??= startBackend().catch((e: unknown) => {
    ready = undefined; // a later load may try again
    throw e;
  });
  return ready;
}

async function startBackend(): Promise<void> {
  // The package's Node entry (dist/tf-backend-wasm.node.js) sits beside its .wasm binaries.
  const dist = path.dirname(createRequire(import.meta.url).resolve("@tensorflow/tfjs-backend-wasm"));
  setWasmPaths(dist + path.sep);
  // Node gets the single-threaded binary anyway (TF.js has no wasm threads on Node); say so explicitly.
  setThreadsCount(1);
  // Emscripten's runtime installs process-wide `uncaughtException`/`unhandledRejection` handlers that
  // rethrow (and print the whole minified module): they would override the server's own handling.
  const emitter: NodeJS.EventEmitter = process;
  const events = ["uncaughtException", "unhandledRejection"];
  const before = events.map((e) => emitter.listeners(e));
  const ok = await tf.setBackend("wasm");
  events.forEach((e, i) => {
    for (const l of emitter.listeners(e)) if (!before[i]!.includes(l)) emitter.removeListener(e, l as (...args: unknown[]) => void);
  });
  if (!ok) throw new Error("the TF.js wasm backend failed to start");
}

/** A model is named by its folder (holding `model.json`) or by its JSON file (`centernet.json`). */
export function modelJsonPath(specPath: string): string {
  return specPath.endsWith(".json") ? specPath : path.join(specPath, "model.json");
}

export async function readModelJson(specPath: string): Promise<tf.io.ModelJSON> {
  return JSON.parse(await fs.readFile(modelJsonPath(specPath), "utf8")) as tf.io.ModelJSON;
}

/** Bytes of the weight shards the model JSON lists. */
export async function weightBytes(specPath: string): Promise<number> {
  const file = modelJsonPath(specPath);
  const json = await readModelJson(specPath);
  const sizes = await Promise.all(
    json.weightsManifest.flatMap((g) => g.paths).map(async (p) => (await fs.stat(path.join(path.dirname(file), p))).size),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

/**
 * Reads a TF.js model from disk. TF.js's own file loader lives in tfjs-node, so the JSON and its
 * shards are read here and handed over as in-memory artifacts.
 */
export async function readArtifacts(specPath: string, json?: tf.io.ModelJSON): Promise<tf.io.ModelArtifacts> {
  const dir = path.dirname(modelJsonPath(specPath));
  return tf.io.getModelArtifactsForJSON(json ?? (await readModelJson(specPath)), async (manifest) => {
    const shards = await Promise.all(manifest.flatMap((g) => g.paths).map((p) => fs.readFile(path.join(dir, p))));
    const buffers = shards.map((b) =>
      b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? (b.buffer as ArrayBuffer) : (b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer),
    );
    return [manifest.flatMap((g) => g.weights), buffers];
  });
}

/** An IOHandler over artifacts already read. */
export function fromArtifacts(artifacts: tf.io.ModelArtifacts): tf.io.IOHandler {
  return { load: async () => artifacts };
}

/** TF.js's two model formats; old converters wrote no `format`, so the topology's shape tells. */
export function modelFormat(json: tf.io.ModelJSON): "layers-model" | "graph-model" | undefined {
  if (json.format === "layers-model" || json.format === "graph-model") return json.format;
  const topology = json.modelTopology as Record<string, unknown> | undefined;
  if (topology && ("model_config" in topology || "class_name" in topology)) return "layers-model";
  if (topology && "node" in topology) return "graph-model";
  return undefined;
}
