import { decodeChunked } from "audio-decode";
// @ts-expect-error -- audio-type (audio-decode's own format sniffer) ships no typings; typed below.
import untypedAudioType from "audio-type";
import sharp from "sharp";
import { BordeError } from "../errors.js";
import type { RawAudio, RawImage } from "./types.js";

/**
 * Media as Workers AI takes it, turned into what engines read: bytes from any of the wire forms,
 * images into 8-bit RGB pixels, audio into mono 16 kHz samples. Every failure the client caused is a
 * 4xx naming the problem; decoder internals stay in `cause` (logged, never sent).
 */

/**
 * 40 megapixels: above any phone camera's photos (12–48 MP sensors mostly bin to 12 MP), while the
 * decoded RGB (120 MB) still fits beside the models in the 24 GiB a node has.
 */
export const DEFAULT_MAX_PIXELS = 40_000_000;

/**
 * 30 minutes: a long meeting recording per request. Decoded at 16 kHz that is 115 MB of samples; a
 * longer file is better split by the client than held in memory whole.
 */
export const DEFAULT_MAX_AUDIO_SECONDS = 30 * 60;

/** The one rate every speech engine here reads (Whisper, Silero VAD). */
const TARGET_RATE = 16_000;

// 2 cores shared with the engines: one libvips thread per decode. The operation cache keeps recent
// images' pixels to speed up repeated pipelines, which never happen here (each request is new bytes).
sharp.concurrency(1);
sharp.cache(false);

const audioType: (bytes: Uint8Array) => string | undefined = untypedAudioType;

const ONE_OF = "a byte array (integers 0-255), a base64 string or a data URL";

/** The bytes of a media field: a JSON byte array, base64, a base64 data URL, or bytes from a file upload. */
export function bytesFromInput(value: unknown, field: string): Uint8Array {
  let bytes: Uint8Array;
  if (value instanceof Uint8Array) bytes = value;
  else if (Array.isArray(value)) bytes = fromByteArray(value, field);
  else if (typeof value === "string") bytes = value.startsWith("data:") ? fromDataUrl(value, field) : fromBase64(value, field);
  else throw new BordeError("InvalidInput", `Invalid input: ${field} must be ${ONE_OF}`);
  if (bytes.length === 0) throw new BordeError("InvalidInput", `Invalid input: ${field} is empty`);
  return bytes;
}

function fromByteArray(values: unknown[], field: string): Uint8Array {
  const bytes = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 255) {
      const shown = typeof v === "string" ? JSON.stringify(v.slice(0, 20)) : String(v);
      throw new BordeError("InvalidInput", `Invalid input: ${field}[${i}] is ${shown}; bytes are integers from 0 to 255`);
    }
    bytes[i] = v;
  }
  return bytes;
}

function fromDataUrl(url: string, field: string): Uint8Array {
  const comma = url.indexOf(",");
  // data:[<media type>][;param=value]*;base64,<data>: only base64 carries binary safely.
  if (comma < 0 || !url.slice(0, comma).toLowerCase().endsWith(";base64")) {
    throw new BordeError("InvalidInput", `Invalid input: ${field} is a data URL but not a base64 one (expected data:<type>;base64,<data>)`);
  }
  return fromBase64(url.slice(comma + 1), field);
}

/**
 * Strict base64: the standard or URL-safe alphabet, padding only at the end. Line breaks and spaces
 * are skipped (MIME wraps base64 at 76 columns); anything else is an error, where Node's decoder
 * would silently drop it and hand a corrupt file to the decoder.
 */
function fromBase64(text: string, field: string): Uint8Array {
  const clean = /[\t\n\r ]/.test(text) ? text.replace(/[\t\n\r ]+/g, "") : text;
  const bad = clean.search(/[^A-Za-z0-9+/_-]/);
  const padded = bad >= 0 && /^={1,2}$/.test(clean.slice(bad));
  if ((bad >= 0 && !padded) || clean.length % 4 === 1 || (padded && clean.length % 4 !== 0)) {
    const where = bad >= 0 && !padded ? ` (unexpected ${JSON.stringify(clean[bad])} at offset ${bad})` : " (wrong length)";
    throw new BordeError("InvalidInput", `Invalid input: ${field} is not ${ONE_OF}: invalid base64${where}`);
  }
  const buf = Buffer.from(clean, "base64");
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/** Raster formats a client may send. SVG is left out: it is a document (XML, references), not pixels. */
const IMAGE_FORMATS = new Set(["jpeg", "png", "webp", "gif", "tiff", "heif"]);

/**
 * Image bytes to 8-bit RGB: EXIF orientation applied, transparency flattened on white (what a viewer
 * shows), first frame of an animation. The header's dimensions are checked before any pixel is
 * decoded, so a small file that claims to be huge costs nothing.
 */
export async function decodeImage(bytes: Uint8Array, limits: { maxPixels: number }): Promise<RawImage> {
  // failOn "error": a truncated or corrupt file fails, minor warnings (common in phone JPEGs) do not.
  const options = { limitInputPixels: limits.maxPixels, failOn: "error", autoOrient: true } as const;
  let format: string;
  try {
    // The header alone, unlimited so that an oversized image is refused below with its dimensions.
    const meta = await sharp(bytes, { ...options, limitInputPixels: false }).metadata();
    format = meta.format;
    if (meta.width * meta.height > limits.maxPixels) {
      throw new BordeError("InvalidInput", `Invalid image: ${meta.width}×${meta.height} is over the ${limits.maxPixels}-pixel limit`);
    }
  } catch (e) {
    throw imageError(e, limits.maxPixels);
  }
  if (!IMAGE_FORMATS.has(format)) throw new BordeError("InvalidInput", `Invalid image: ${format} is not accepted (send JPEG, PNG, WebP or GIF)`);
  try {
    const { data, info } = await sharp(bytes, options)
      .flatten({ background: "#ffffff" })
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (e) {
    throw imageError(e, limits.maxPixels);
  }
}

function imageError(e: unknown, maxPixels: number): BordeError {
  if (e instanceof BordeError) return e;
  const message = e instanceof Error ? e.message : String(e);
  const reason = /unsupported image format/i.test(message)
    ? "unrecognised format (send JPEG, PNG, WebP or GIF)"
    : /pixel limit/i.test(message)
      ? `the image is over the ${maxPixels}-pixel limit`
      : "the data is corrupt or truncated";
  return new BordeError("InvalidInput", `Invalid image: ${reason}`, { cause: e });
}

/**
 * Decoding streams, a chunk of input at a time, so that audio over the limit is refused just past it
 * rather than after inflating all of it (a 10 MB MP3 at 8 kbit/s is 3 hours; a 250 kB FLAC of
 * silence is 10 minutes of 8-channel 384 kHz, 7 GB as floats). Chunks shrink when the data expands a
 * lot, so that one chunk's output stays near AUDIO_CHUNK_SAMPLES whatever the file.
 */
const AUDIO_CHUNK_BYTES = { first: 4096, min: 256, max: 64 * 1024 };
const AUDIO_CHUNK_SAMPLES = 4_000_000;

/**
 * Decoding work allowed per second of the duration limit: 48 kHz stereo, what a real recording has.
 * Counting samples of all channels bounds the CPU a small hostile file can cost (many channels at a
 * high rate), which the duration alone does not.
 */
const SAMPLE_BUDGET_PER_SECOND = 48_000 * 2;

/** Rates real recordings have; anything else is a forged header (and would make the filter huge). */
const MIN_RATE = 1000;
const MAX_RATE = 384_000;

/**
 * Audio bytes (WAV, MP3, FLAC, Ogg Vorbis/Opus, and the rest audio-decode knows) to mono samples at
 * 16 kHz: channels averaged, then resampled with a windowed-sinc filter (see `Resampler`).
 */
export async function decodeAudio(bytes: Uint8Array, limits: { maxSeconds: number }): Promise<RawAudio> {
  const format = audioType(bytes);
  if (!format) throw new BordeError("InvalidInput", "Invalid audio: unrecognised format (send WAV, MP3, FLAC or OGG)");
  if (format === "wav" && wavIsTruncated(bytes)) throw new BordeError("InvalidInput", "Invalid audio: the WAV data is truncated");
  const out: Float32Array[] = [];
  let resampler: Resampler | undefined;
  let rate = 0;
  let frames = 0;
  let decoded = 0;
  const input = { bytes, offset: 0, size: AUDIO_CHUNK_BYTES.first };
  try {
    // decodeChunked checks the name at run time ("No decoder for …"), so any sniffed name may go in.
    for await (const { channelData, sampleRate } of decodeChunked(chunks(input), format as Parameters<typeof decodeChunked>[1])) {
      if (!resampler) {
        if (!(Number.isInteger(sampleRate) && sampleRate >= MIN_RATE && sampleRate <= MAX_RATE)) {
          throw new BordeError("InvalidInput", `Invalid audio: a sample rate of ${sampleRate} Hz is not supported`);
        }
        rate = sampleRate;
        resampler = new Resampler(rate, TARGET_RATE);
      } else if (sampleRate !== rate) {
        throw new BordeError("InvalidInput", "Invalid audio: the data is corrupt (its sample rate changes mid-stream)");
      }
      const mono = mixToMono(channelData);
      frames += mono.length;
      decoded += mono.length * channelData.length;
      if (frames > limits.maxSeconds * rate) {
        throw new BordeError("RequestTooLarge", `Audio is longer than the ${limits.maxSeconds}-second limit`);
      }
      if (decoded > limits.maxSeconds * SAMPLE_BUDGET_PER_SECOND) {
        throw new BordeError("RequestTooLarge", `Audio holds more samples than ${limits.maxSeconds} s of 48 kHz stereo: send fewer channels or a lower sample rate`);
      }
      const perByte = decoded / input.offset;
      input.size = Math.round(Math.min(AUDIO_CHUNK_BYTES.max, Math.max(AUDIO_CHUNK_BYTES.min, AUDIO_CHUNK_SAMPLES / perByte)));
      out.push(resampler.push(mono));
    }
  } catch (e) {
    if (e instanceof BordeError) throw e;
    const message = e instanceof Error ? e.message : "";
    const reason = message.startsWith("No decoder for") ? `${format} is not supported` : "the data could not be decoded";
    throw new BordeError("InvalidInput", `Invalid audio: ${reason}`, { cause: e });
  }
  if (!resampler || frames === 0) throw new BordeError("InvalidInput", "Invalid audio: no sound could be decoded (the file is empty, truncated or corrupt)");
  out.push(resampler.end());
  return { samples: clamp(concat(out)), sampleRate: TARGET_RATE };
}

/** The input in chunks of `size` bytes, read when each is taken (the caller adjusts `size` between). */
async function* chunks(input: { bytes: Uint8Array; offset: number; size: number }): AsyncGenerator<Uint8Array> {
  while (input.offset < input.bytes.length) {
    const chunk = input.bytes.subarray(input.offset, input.offset + input.size);
    input.offset += chunk.length;
    yield chunk;
  }
}

/**
 * A WAV header states its data's size, so a cut-off upload shows (compressed formats just end early
 * and decode what is there). 0 and 0xFFFFFFFF are what streaming recorders write when the length is
 * not known yet.
 */
function wavIsTruncated(bytes: Uint8Array): boolean {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 12; at + 8 <= bytes.length; ) {
    const id = String.fromCharCode(bytes[at]!, bytes[at + 1]!, bytes[at + 2]!, bytes[at + 3]!);
    const size = view.getUint32(at + 4, true);
    if (id === "data") return size !== 0 && size !== 0xffffffff && size > bytes.length - at - 8;
    at += 8 + size + (size & 1); // chunks are padded to an even size
  }
  return false; // no data chunk: the decoder finds no sound, which is reported as such
}

function mixToMono(channels: Float32Array[]): Float32Array {
  const [first] = channels;
  if (!first) return new Float32Array(0);
  if (channels.length === 1) return first;
  const mono = new Float32Array(first.length);
  for (const ch of channels) for (let i = 0; i < mono.length; i++) mono[i]! += ch[i]!;
  for (let i = 0; i < mono.length; i++) mono[i]! /= channels.length;
  return mono;
}

function concat(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0]!;
  const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
}

/** Lossy decoders and the filter's ripple overshoot slightly; engines are promised [-1, 1]. */
function clamp(samples: Float32Array): Float32Array {
  for (let i = 0; i < samples.length; i++) {
    const v = samples[i]!;
    if (v > 1) samples[i] = 1;
    else if (v < -1) samples[i] = -1;
  }
  return samples;
}

/** Zero crossings of the filter's sinc on each side, at the lower of the two rates: sets its length. */
const ZEROS = 16;
/** Cutoff as a fraction of the lower Nyquist: 0.9 puts it at 7.2 kHz for 16 kHz out, so what aliases is attenuated. */
const ROLLOFF = 0.9;
/** Kaiser window shape: β 8 gives about 80 dB of stopband, far below what 16-bit speech carries. */
const KAISER_BETA = 8;
/** Fractional positions the filter is tabulated at; a rate pair needing more is rounded to the nearest (≤ 1/2048 sample off). */
const MAX_PHASES = 1024;

/**
 * Streaming band-limited resampler: each output sample is the input convolved with a Kaiser-windowed
 * sinc low-pass (cutoff below the lower Nyquist, so downsampling does not alias), tabulated once per
 * fractional phase. No maintained resampling package is installed, and linear interpolation would
 * fold everything above 8 kHz of a 44.1/48 kHz recording back into the speech band. Cost: 2·ZEROS·in/out
 * multiply-adds per output sample (96 for 48 kHz in): about 2 ms per second of 48 kHz audio.
 */
class Resampler {
  /** Kernel taps for each phase, `taps` per phase. */
  private readonly table: Float32Array;
  private readonly taps: number;
  private readonly phases: number;
  /** Output i sits at input position i·step/den: step and den are the rates' ratio in lowest terms. */
  private readonly step: number;
  private readonly den: number;
  private readonly half: number;
  /** Input not yet consumed; `start` is the absolute index of its first sample (negative: zero history). */
  private pending: Float32Array;
  private start: number;
  private consumed = 0;
  private produced = 0;
  private readonly passthrough: boolean;

  constructor(inRate: number, outRate: number) {
    this.passthrough = inRate === outRate;
    const g = gcd(inRate, outRate);
    this.step = inRate / g;
    this.den = outRate / g;
    const scale = Math.min(1, outRate / inRate);
    const cutoff = (ROLLOFF * scale) / 2; // cycles per input sample
    this.half = Math.ceil(ZEROS / scale);
    this.taps = 2 * this.half;
    this.phases = Math.min(this.den, MAX_PHASES);
    this.table = new Float32Array(this.phases * this.taps);
    const i0Beta = besselI0(KAISER_BETA);
    for (let p = 0; p < this.phases; p++) {
      const frac = p / this.phases;
      let sum = 0;
      for (let k = 0; k < this.taps; k++) {
        const d = k - this.half + 1 - frac; // distance from the output position to input tap base-half+1+k
        const x = 2 * cutoff * d;
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const r = d / this.half;
        const w = Math.abs(r) >= 1 ? 0 : besselI0(KAISER_BETA * Math.sqrt(1 - r * r)) / i0Beta;
        const h = sinc * w;
        this.table[p * this.taps + k] = h;
        sum += h;
      }
      // Unit gain at DC for every phase, so a constant stays constant (no phase-dependent ripple).
      for (let k = 0; k < this.taps; k++) this.table[p * this.taps + k]! /= sum;
    }
    this.pending = new Float32Array(this.half - 1);
    this.start = -(this.half - 1);
  }

  /** Feeds input; returns the output whose filter window is complete. */
  push(input: Float32Array): Float32Array {
    this.consumed += input.length;
    if (this.passthrough) return input;
    const joined = new Float32Array(this.pending.length + input.length);
    joined.set(this.pending);
    joined.set(input, this.pending.length);
    return this.run(joined, Infinity);
  }

  /** Flushes the tail (the input past the end counts as silence). */
  end(): Float32Array {
    if (this.passthrough) return new Float32Array(0);
    const joined = new Float32Array(this.pending.length + this.half + 1);
    joined.set(this.pending);
    const total = Math.ceil((this.consumed * this.den) / this.step);
    return this.run(joined, total);
  }

  private run(x: Float32Array, limit: number): Float32Array {
    const { table, taps, half, step, den, phases } = this; // locals: the loop below is the hot path
    const end = this.start + x.length;
    // Output i needs input up to about i·step/den + half: this bounds how many are ready.
    const ready = Math.ceil(((end - half + 1) * den) / step) + 1 - this.produced;
    const from = this.produced;
    const out = new Float32Array(Math.max(0, Math.min(ready, limit - from)));
    let i = from;
    for (; i < limit; i++) {
      const pos = i * step;
      let base = Math.floor(pos / den);
      let phase = Math.round(((pos - base * den) * phases) / den);
      if (phase === phases) {
        base++;
        phase = 0;
      }
      const first = base - half + 1;
      if (first + taps > end) break;
      const o = phase * taps;
      const at = first - this.start;
      let acc = 0;
      for (let k = 0; k < taps; k++) acc += x[at + k]! * table[o + k]!;
      out[i - from] = acc;
    }
    this.produced = i;
    // Keep the input the next output's window starts at.
    const nextFirst = Math.floor((i * step) / den) - half + 1;
    const keep = Math.max(0, Math.min(x.length, nextFirst - this.start));
    this.pending = x.slice(keep);
    this.start += keep;
    return out.subarray(0, i - from);
  }
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Modified Bessel function of the first kind, order 0 (the Kaiser window's shape), by its power series. */
function besselI0(x: number): number {
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 50 && term > sum * 1e-12; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
  }
  return sum;
}
