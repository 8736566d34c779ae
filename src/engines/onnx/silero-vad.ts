import fs from "node:fs/promises";
import ort from "onnxruntime-node";
import { BordeError } from "../../errors.js";
import type { RawAudio, SpeechSegment, TaskInput, TaskOutput } from "../../tasks/types.js";
import type { LoadedModel, ModelSpec } from "../contract.js";

/**
 * Silero VAD v5 on onnxruntime: a speech probability per 32 ms window, turned into speech segments
 * the way silero-vad's own `get_speech_timestamps` does (hysteresis, minimum speech, minimum
 * silence, padding), with its defaults.
 */

const SAMPLE_RATE = 16_000;
/** v5 at 16 kHz takes exactly 512 new samples per call... */
const WINDOW = 512;
/** ...behind the last 64 samples of the previous call, which the model expects as context. */
const CONTEXT = 64;
/** The recurrent state carried from window to window: [2, batch 1, 128]. */
const STATE_SIZE = 2 * 1 * 128;
/** Speech ends where the probability falls this far below the threshold (silero's `neg_threshold`). */
const HYSTERESIS = 0.15;
/** Shorter bursts are noise, not speech. */
const MIN_SPEECH_SAMPLES = 0.25 * SAMPLE_RATE;
/** Shorter pauses do not end a segment: the segments on both sides are one. */
const MIN_SILENCE_SAMPLES = 0.1 * SAMPLE_RATE;
/** Segments are widened this much on each side so that no word is cut at its edge. */
const PAD_SAMPLES = 0.03 * SAMPLE_RATE;
/**
 * A guess calibrated on silero_vad_v5.onnx (2.3 MB file, ~10 MB more RSS per session, the
 * onnxruntime library itself not counted): weights twice over, plus the session's arenas.
 */
const SESSION_OVERHEAD_BYTES = 8 * 1024 * 1024;


/** Memory a Silero session takes once loaded (a guess from the file size, see SESSION_OVERHEAD_BYTES). */
export async function estimateSileroVadMemory(spec: ModelSpec): Promise<number> {
  return (await fs.stat(spec.path)).size * 2 + SESSION_OVERHEAD_BYTES;
}

export async function loadSileroVad(spec: ModelSpec): Promise<LoadedModel> {
  if (spec.task !== "voice-activity-detection") {
    throw new BordeError("ModelLoadFailed", `model ${spec.id}: Silero VAD serves voice-activity-detection, not ${spec.task}`);
  }
  let session: ort.InferenceSession | null;
  let memoryBytes: number;
  try {
    memoryBytes = await estimateSileroVadMemory(spec);
    // One thread: the model is tiny and sequential, and the node's cores belong to every engine.
    session = await ort.InferenceSession.create(spec.path, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  } catch (cause) {
    throw new BordeError("ModelLoadFailed", `model ${spec.id} failed to load`, { cause });
  }

  return {
    id: spec.id,
    task: "voice-activity-detection",
    memoryBytes,
    slots: 1,
    maxBatch: 1,
    async infer(inputs: TaskInput[], options: { signal: AbortSignal }): Promise<TaskOutput[]> {
      const outputs: TaskOutput<"voice-activity-detection">[] = [];
      for (const input of inputs) {
        const { audio, threshold } = vadInputOf(input);
        if (!session) throw new BordeError("Internal", `model ${spec.id} was disposed`);
        const probs = await speechProbabilities(session, audio.samples, options.signal);
        outputs.push({ segments: speechSegments(probs, threshold, audio.samples.length), duration: audio.samples.length / SAMPLE_RATE });
      }
      return outputs;
    },
    async dispose(): Promise<void> {
      const s = session;
      session = null;
      await s?.release();
    },
  };
}

function vadInputOf(input: TaskInput): { audio: RawAudio; threshold: number } {
  if (input.task !== "voice-activity-detection") {
    throw new BordeError("InvalidInput", `Silero VAD serves voice-activity-detection, not ${input.task}`);
  }
  if (input.audio.sampleRate !== SAMPLE_RATE) {
    throw new BordeError("InvalidInput", `Silero VAD takes ${SAMPLE_RATE} Hz audio, not ${input.audio.sampleRate} Hz`);
  }
  if (!(input.threshold > 0 && input.threshold < 1)) {
    throw new BordeError("InvalidInput", `threshold must be between 0 and 1, not ${input.threshold}`);
  }
  return input;
}

/** The model's speech probability for each 512-sample window, the last one padded with silence. */
async function speechProbabilities(session: ort.InferenceSession, samples: Float32Array, signal: AbortSignal): Promise<Float32Array> {
  const windows = Math.ceil(samples.length / WINDOW);
  const probs = new Float32Array(windows);
  const sr = new ort.Tensor("int64", BigInt64Array.of(BigInt(SAMPLE_RATE)), []);
  let state = new ort.Tensor("float32", new Float32Array(STATE_SIZE), [2, 1, 128]);
  // Each frame is the previous frame's last 64 samples followed by 512 new ones (zeros before the first).
  let frame = new Float32Array(CONTEXT + WINDOW);
  for (let w = 0; w < windows; w++) {
    if (signal.aborted) throw new BordeError("Aborted");
    const next = new Float32Array(CONTEXT + WINDOW);
    next.set(frame.subarray(WINDOW));
    next.set(samples.subarray(w * WINDOW, (w + 1) * WINDOW), CONTEXT);
    frame = next;
    const out = await session.run({ input: new ort.Tensor("float32", frame, [1, frame.length]), state, sr });
    probs[w] = (out.output!.data as Float32Array)[0]!;
    state = out.stateN as typeof state;
  }
  return probs;
}

/** silero-vad's `get_speech_timestamps` over window probabilities, in seconds. */
function speechSegments(probs: Float32Array, threshold: number, totalSamples: number): SpeechSegment[] {
  const negThreshold = Math.max(threshold - HYSTERESIS, 0.01);
  const spans: { start: number; end: number }[] = [];
  let start = -1;
  let silenceFrom = -1;
  probs.forEach((p, w) => {
    const at = w * WINDOW;
    if (p >= threshold) {
      silenceFrom = -1; // a pause shorter than the minimum silence: the segment goes on
      if (start < 0) start = at;
      return;
    }
    if (start < 0 || p >= negThreshold) return;
    if (silenceFrom < 0) silenceFrom = at;
    if (at - silenceFrom < MIN_SILENCE_SAMPLES) return;
    if (silenceFrom - start > MIN_SPEECH_SAMPLES) spans.push({ start, end: silenceFrom });
    start = -1;
    silenceFrom = -1;
  });
  if (start >= 0 && totalSamples - start > MIN_SPEECH_SAMPLES) spans.push({ start, end: totalSamples });

  // Pad each side, but never past the middle of the gap to a neighbour, nor past the audio.
  return spans.map(({ start: s, end: e }, i) => {
    const prev = spans[i - 1];
    const next = spans[i + 1];
    const start = prev ? Math.max(s - PAD_SAMPLES, (prev.end + s) / 2) : Math.max(0, s - PAD_SAMPLES);
    const end = next ? Math.min(e + PAD_SAMPLES, (e + next.start) / 2) : Math.min(totalSamples, e + PAD_SAMPLES);
    return { start: round(start / SAMPLE_RATE), end: round(end / SAMPLE_RATE) };
  });
}

const round = (seconds: number) => Math.round(seconds * 1000) / 1000;
