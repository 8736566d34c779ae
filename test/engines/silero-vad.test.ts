import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import decode from "audio-decode";
import type { LoadedModel, ModelSpec } from "../../src/engines/contract.js";
import { estimateSileroVadMemory, loadSileroVad } from "../../src/engines/onnx/silero-vad.js";
import { BordeError } from "../../src/errors.js";
import type { RawAudio, TaskInput, TaskOutput } from "../../src/tasks/types.js";
import { bundledModel } from "../../src/engines/bundled.js";

// Not from ../helpers.js: that module starts whole nodes, and this suite needs only the fixtures.
const AUDIO = path.resolve(import.meta.dirname, "../../../shared/fixtures/audio");

/** The fixtures are mono 16 kHz already: decoding is all the API would have done. */
async function readWav(name: string): Promise<RawAudio> {
  const { channelData, sampleRate } = await decode(await fs.readFile(path.join(AUDIO, name)));
  return { samples: channelData[0]!, sampleRate };
}

describe("Silero VAD v5 on onnxruntime", () => {
  const bundled = bundledModel("@borde/silero-vad");
  const spec: ModelSpec = { id: bundled.id, task: bundled.task, engine: bundled.engine, path: bundled.path, options: bundled.options };
  const signal = new AbortController().signal;
  let model: LoadedModel;

  before(async () => {
    const t0 = performance.now();
    model = await loadSileroVad(spec);
    console.log(`silero load: ${(performance.now() - t0).toFixed(0)} ms`);
  });
  after(async () => {
    await model?.dispose();
  });

  const vad = (audio: RawAudio, threshold = 0.5) =>
    model.infer!([{ task: "voice-activity-detection", audio, threshold }], { signal }).then((r) => r[0] as TaskOutput<"voice-activity-detection">);

  it("finds the one stretch of speech in vadtest.wav (1.5 s to 3.2 s)", async () => {
    const audio = await readWav("vadtest.wav");
    assert.equal(audio.sampleRate, 16_000);
    const rounds = 5;
    const t0 = performance.now();
    let out = await vad(audio);
    for (let i = 1; i < rounds; i++) out = await vad(audio);
    const ms = (performance.now() - t0) / rounds;
    console.log(`silero: ${JSON.stringify(out.segments)} over ${out.duration} s; ${ms.toFixed(1)} ms per call (${((ms / 1000 / out.duration) * 100).toFixed(2)}% of real time)`);
    assert.equal(out.duration, audio.samples.length / 16_000);
    assert.equal(out.segments.length, 1, JSON.stringify(out.segments));
    const [speech] = out.segments;
    assert.ok(Math.abs(speech!.start - 1.5) <= 0.3, `starts at ${speech!.start}`);
    assert.ok(Math.abs(speech!.end - 3.2) <= 0.3, `ends at ${speech!.end}`);
  });

  it("finds no speech in silence, nor in quiet white noise", async () => {
    const silence = await vad(await readWav("sil.wav"));
    assert.deepEqual(silence.segments, []);
    // Seeded, so that the test is the same every run.
    let seed = 42;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    const noise = await vad({ samples: Float32Array.from({ length: 16_000 }, () => 0.01 * random()), sampleRate: 16_000 });
    console.log(`silero: white noise at 0.01 amplitude -> ${JSON.stringify(noise.segments)}`);
    assert.deepEqual(noise.segments, []);
  });

  it("a pause shorter than 100 ms stays inside one segment; a 1 s pause splits it in two", async () => {
    const { samples } = await readWav("vadtest.wav");
    const at = (seconds: number) => Math.round(seconds * 16_000);
    const speech = samples.subarray(at(1.4), at(3.3));
    const half = Math.floor(speech.length / 2);
    const withPause = (seconds: number) => {
      const out = new Float32Array(speech.length + at(seconds) + at(1));
      out.set(speech.subarray(0, half), at(0.5));
      out.set(speech.subarray(half), at(0.5) + half + at(seconds));
      return { samples: out, sampleRate: 16_000 };
    };
    const short = await vad(withPause(0.05));
    const long = await vad(withPause(1));
    console.log(`silero: 50 ms pause -> ${JSON.stringify(short.segments)}; 1 s pause -> ${JSON.stringify(long.segments)}`);
    assert.equal(short.segments.length, 1, JSON.stringify(short.segments));
    assert.equal(long.segments.length, 2, JSON.stringify(long.segments));
  });

  it("a higher threshold never finds more speech than a lower one", async () => {
    const audio = await readWav("vadtest.wav");
    const speechOf = (o: TaskOutput<"voice-activity-detection">) => o.segments.reduce((s, g) => s + g.end - g.start, 0);
    assert.ok(speechOf(await vad(audio, 0.9)) <= speechOf(await vad(audio, 0.3)));
  });

  it("rejects audio not at 16 kHz, a threshold outside (0, 1), and inputs of other tasks, as InvalidInput", async () => {
    const invalid = (e: unknown) => e instanceof BordeError && e.kind === "InvalidInput";
    await assert.rejects(vad({ samples: new Float32Array(8000), sampleRate: 8000 }), invalid);
    await assert.rejects(vad({ samples: new Float32Array(16_000), sampleRate: 16_000 }, 1.5), invalid);
    const wrong = { task: "automatic-speech-recognition", audio: { samples: new Float32Array(16_000), sampleRate: 16_000 } } as TaskInput;
    await assert.rejects(model.infer!([wrong], { signal }), invalid);
  });

  it("estimates memory from the file, serves one slot, and refuses another task", async () => {
    const bytes = await estimateSileroVadMemory(spec);
    assert.ok(bytes > 2 * 2_327_524 && bytes < 64 * 1024 * 1024, String(bytes));
    assert.equal(model.slots, 1);
    await assert.rejects(loadSileroVad({ ...spec, task: "text-classification" }), (e: unknown) => e instanceof BordeError && e.kind === "ModelLoadFailed");
  });

  it("a disposed model serves no more", async () => {
    const other = await loadSileroVad(spec);
    await other.dispose();
    const input = { task: "voice-activity-detection", audio: { samples: new Float32Array(16_000), sampleRate: 16_000 }, threshold: 0.5 } as const;
    await assert.rejects(other.infer!([input], { signal }), BordeError);
  });
});
