import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { crc32, deflateSync } from "node:zlib";
import { describe, it } from "node:test";
import sharp from "sharp";
import { BordeError, type ErrorName } from "../../src/errors.js";
import { bytesFromInput, decodeAudio, decodeImage, DEFAULT_MAX_AUDIO_SECONDS, DEFAULT_MAX_PIXELS } from "../../src/tasks/media.js";

// CI clones the repository with shared/ beside it.
const SHARED = path.resolve(import.meta.dirname, "../../../shared/fixtures");
const read = (file: string) => new Uint8Array(fs.readFileSync(file));
const DOG = read(path.join(SHARED, "images/dog.jpg"));
const GOFORWARD = read(path.join(SHARED, "audio/goforward.wav"));
const ESPEAK = read(path.join(SHARED, "audio/say_espeak.wav"));
/**
 * goforward.wav encoded once with ffmpeg 5.1 (Debian's `ffmpeg`), so tests need no encoder:
 *   -ar 44100 -ac 2 -c:a libmp3lame -b:a 64k goforward.mp3   (44.1 kHz: exercises the resampler)
 *   -c:a flac goforward.flac                                  (16 kHz, lossless)
 *   -ar 48000 -c:a libvorbis -q:a 2 goforward.ogg
 *   -c:a libopus -b:a 24k goforward.opus                      (Ogg Opus, 48 kHz)
 */
const ENCODED = path.resolve(import.meta.dirname, "../fixtures/audio");

const IMAGE_LIMITS = { maxPixels: DEFAULT_MAX_PIXELS };
const AUDIO_LIMITS = { maxSeconds: DEFAULT_MAX_AUDIO_SECONDS };

async function rejectsWith(promise: Promise<unknown> | (() => unknown), kind: ErrorName, pattern: RegExp): Promise<void> {
  await assert.rejects(
    async () => (typeof promise === "function" ? promise() : promise),
    (e: unknown) => {
      assert.ok(e instanceof BordeError, `expected a BordeError, got ${String(e)}`);
      assert.equal(e.kind, kind);
      assert.match(e.message, pattern);
      assert.doesNotMatch(e.message, /vips|sharp|wasm|\n|  at /i, "no decoder internals in the message");
      return true;
    },
  );
}

/** 16-bit PCM WAV, one Float32Array per channel. */
function wav(channels: Float32Array[], rate: number): Uint8Array {
  const frames = channels[0]!.length;
  const n = channels.length;
  const buf = Buffer.alloc(44 + frames * n * 2);
  buf.write("RIFF", 0);
  buf.writeUInt32LE(36 + frames * n * 2, 4);
  buf.write("WAVEfmt ", 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(n, 22);
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * n * 2, 28);
  buf.writeUInt16LE(n * 2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36);
  buf.writeUInt32LE(frames * n * 2, 40);
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < n; c++) buf.writeInt16LE(Math.round(Math.max(-1, Math.min(1, channels[c]![i]!)) * 32767), 44 + (i * n + c) * 2);
  }
  return new Uint8Array(buf);
}

/** The samples of a mono 16-bit WAV, read independently of the decoder. */
function pcm16(bytes: Uint8Array): { samples: Float32Array; rate: number } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  let rate = 0;
  for (let at = 12; at + 8 <= buf.length; ) {
    const id = buf.toString("latin1", at, at + 4);
    const size = buf.readUInt32LE(at + 4);
    if (id === "fmt ") {
      assert.equal(buf.readUInt16LE(at + 10), 1, "mono");
      rate = buf.readUInt32LE(at + 12);
    }
    if (id === "data") {
      const samples = new Float32Array(size / 2);
      for (let i = 0; i < samples.length; i++) samples[i] = buf.readInt16LE(at + 8 + 2 * i) / 32768;
      return { samples, rate };
    }
    at += 8 + size + (size & 1);
  }
  throw new Error("no data chunk");
}

const tone = (freq: number, rate: number, seconds: number, amplitude = 0.5) =>
  Float32Array.from({ length: Math.round(rate * seconds) }, (_, i) => amplitude * Math.sin((2 * Math.PI * freq * i) / rate));

const rms = (x: Float32Array, from = 0, to = x.length) => {
  let s = 0;
  for (let i = from; i < to; i++) s += x[i]! ** 2;
  return Math.sqrt(s / (to - from));
};

/** Highest normalised correlation of `a` with `b` shifted by up to ±maxLag samples, and that shift. */
function bestCorrelation(a: Float32Array, b: Float32Array, maxLag: number): { r: number; lag: number } {
  let best = { r: -1, lag: 0 };
  for (let lag = -maxLag; lag <= maxLag; lag += 1) {
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let i = Math.max(0, -lag); i < a.length && i + lag < b.length; i++) {
      const x = a[i]!;
      const y = b[i + lag]!;
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    const r = ab / Math.sqrt(aa * bb);
    if (r > best.r) best = { r, lag };
  }
  return best;
}

describe("bytesFromInput", () => {
  it("takes every wire form of a file and gives the same bytes, which decode to the same pixels", async () => {
    const base64 = Buffer.from(DOG).toString("base64");
    const forms: [string, unknown][] = [
      ["byte array", Array.from(DOG)],
      ["base64", base64],
      ["base64 wrapped at 76 columns", base64.replace(/.{76}/g, "$&\r\n")],
      ["URL-safe base64 without padding", Buffer.from(DOG).toString("base64url")],
      ["data URL", `data:image/jpeg;base64,${base64}`],
      ["Buffer", Buffer.from(DOG)],
      ["Uint8Array", DOG],
    ];
    const reference = await decodeImage(DOG, IMAGE_LIMITS);
    assert.equal(reference.width, 768);
    assert.equal(reference.height, 576);
    assert.equal(reference.data.length, 768 * 576 * 3);
    for (const [name, value] of forms) {
      const bytes = bytesFromInput(value, "image");
      assert.ok(Buffer.from(bytes).equals(Buffer.from(DOG)), `${name}: same bytes`);
      const image = await decodeImage(bytes, IMAGE_LIMITS);
      assert.deepEqual([image.width, image.height], [768, 576], name);
      assert.ok(Buffer.from(image.data).equals(Buffer.from(reference.data)), `${name}: same pixels`);
    }
  });

  it("names the field and index of a value that is not a byte", async () => {
    for (const [value, shown] of [
      [256, "256"],
      [-1, "-1"],
      [1.5, "1.5"],
      ["x", '"x"'],
      [null, "null"],
      [Number.NaN, "NaN"],
    ] as const) {
      await rejectsWith(() => bytesFromInput([255, value, 0], "image"), "InvalidInput", new RegExp(`image\\[1\\] is ${shown.replace(/[.]/g, "\\.")}; bytes are integers from 0 to 255`));
    }
  });

  it("refuses empty input, whatever its form", async () => {
    for (const value of [[], "", Buffer.alloc(0), new Uint8Array(0), "data:image/png;base64,", " \n"]) {
      await rejectsWith(() => bytesFromInput(value, "audio"), "InvalidInput", /^Invalid input: audio is empty$/);
    }
  });

  it("refuses malformed base64 and data URLs instead of decoding them loosely", async () => {
    await rejectsWith(() => bytesFromInput("/9j/4AAQ$kZJRg==", "image"), "InvalidInput", /invalid base64 \(unexpected "\$" at offset 8\)/);
    await rejectsWith(() => bytesFromInput("https://example.com/cat.jpg", "image"), "InvalidInput", /invalid base64/);
    await rejectsWith(() => bytesFromInput("ab=c", "image"), "InvalidInput", /invalid base64/);
    await rejectsWith(() => bytesFromInput("abcde", "image"), "InvalidInput", /invalid base64 \(wrong length\)/);
    await rejectsWith(() => bytesFromInput("abcdef=", "image"), "InvalidInput", /invalid base64 \(wrong length\)/);
    await rejectsWith(() => bytesFromInput("data:image/png,%89PNG", "image"), "InvalidInput", /not a base64 one/);
    await rejectsWith(() => bytesFromInput("data:image/png;base64,ab!c", "image"), "InvalidInput", /invalid base64/);
  });

  it("refuses values of other types", async () => {
    for (const value of [null, undefined, 42, {}, { 0: 255 }, true]) {
      await rejectsWith(() => bytesFromInput(value, "image"), "InvalidInput", /image must be a byte array \(integers 0-255\), a base64 string or a data URL/);
    }
  });
});

describe("decodeImage", () => {
  it("flattens transparency on white", async () => {
    // Transparent red, half-transparent black, opaque blue, opaque white.
    const rgba = Buffer.from([255, 0, 0, 0, 0, 0, 0, 128, 0, 0, 255, 255, 255, 255, 255, 255]);
    const png = await sharp(rgba, { raw: { width: 2, height: 2, channels: 4 } }).png().toBuffer();
    const image = await decodeImage(png, IMAGE_LIMITS);
    assert.deepEqual([image.width, image.height], [2, 2]);
    const px = Array.from(image.data);
    assert.deepEqual(px.slice(0, 3), [255, 255, 255]);
    for (const v of px.slice(3, 6)) assert.ok(Math.abs(v - 127) <= 2, `half-transparent black on white is mid grey, got ${v}`);
    assert.deepEqual(px.slice(6, 12), [0, 0, 255, 255, 255, 255]);
  });

  it("turns grey and 16-bit PNG, WebP, TIFF and GIF into 8-bit RGB", async () => {
    const grey = await sharp(Buffer.from([0, 100, 200, 255]), { raw: { width: 2, height: 2, channels: 1 } }).png().toBuffer();
    assert.deepEqual(Array.from((await decodeImage(grey, IMAGE_LIMITS)).data), [0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255]);

    const deep = await sharp({ create: { width: 2, height: 1, channels: 3, background: "#ff8000" } }).toColourspace("rgb16").png().toBuffer();
    assert.equal((await sharp(deep).metadata()).depth, "ushort");
    assert.deepEqual(Array.from((await decodeImage(deep, IMAGE_LIMITS)).data), [255, 128, 0, 255, 128, 0]);

    const green = () => sharp({ create: { width: 5, height: 3, channels: 3, background: "#00ff00" } });
    const lossless = { webp: green().webp({ lossless: true }), tiff: green().tiff({ compression: "lzw" }), gif: green().gif() };
    for (const [format, pipeline] of Object.entries(lossless)) {
      const encoded = await pipeline.toBuffer();
      const image = await decodeImage(encoded, IMAGE_LIMITS);
      assert.deepEqual([image.width, image.height, image.data.length], [5, 3, 45], format);
      assert.deepEqual(Array.from(image.data.subarray(0, 3)), [0, 255, 0], format);
    }
  });

  it("takes the first frame of an animated GIF", async () => {
    const frame = (background: string) => sharp({ create: { width: 8, height: 6, channels: 3, background } }).png().toBuffer();
    const gif = await sharp([await frame("#ff0000"), await frame("#0000ff")], { join: { animated: true } }).gif().toBuffer();
    const image = await decodeImage(gif, IMAGE_LIMITS);
    assert.deepEqual([image.width, image.height], [8, 6]);
    assert.deepEqual(Array.from(image.data.subarray(0, 3)), [255, 0, 0]);
  });

  it("applies the EXIF orientation, as a viewer would show the photo", async () => {
    // Stored 40×20, left half red, right half blue, tagged "rotate 90° clockwise to display".
    const raw = Buffer.alloc(40 * 20 * 3);
    for (let i = 0; i < 40 * 20; i++) raw.set(i % 40 < 20 ? [255, 0, 0] : [0, 0, 255], i * 3);
    const jpeg = await sharp(raw, { raw: { width: 40, height: 20, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
    const image = await decodeImage(jpeg, IMAGE_LIMITS);
    assert.deepEqual([image.width, image.height], [20, 40]);
    const at = (x: number, y: number) => Array.from(image.data.subarray((y * 20 + x) * 3, (y * 20 + x) * 3 + 3));
    const [r1, , b1] = at(10, 5);
    const [r2, , b2] = at(10, 34);
    assert.ok(r1! > 200 && b1! < 60, "the left (red) half is on top");
    assert.ok(b2! > 200 && r2! < 60, "the right (blue) half is at the bottom");
  });

  it("refuses truncated, random and non-raster input with a short reason", async () => {
    await rejectsWith(decodeImage(DOG.subarray(0, 1000), IMAGE_LIMITS), "InvalidInput", /^Invalid image: the data is corrupt or truncated$/);
    const random = Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24);
    await rejectsWith(decodeImage(random, IMAGE_LIMITS), "InvalidInput", /^Invalid image: unrecognised format/);
    const svg = new TextEncoder().encode('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>');
    await rejectsWith(decodeImage(svg, IMAGE_LIMITS), "InvalidInput", /^Invalid image: svg is not accepted/);
    await rejectsWith(decodeImage(GOFORWARD, IMAGE_LIMITS), "InvalidInput", /^Invalid image: unrecognised format/);
  });

  it("refuses a header claiming huge dimensions before decoding any pixel", async () => {
    // A well-formed PNG for 100000×100000 RGB with one empty IDAT: decoding would need 30 GB.
    const chunk = (type: string, data: Buffer) => {
      const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
      const framed = Buffer.alloc(body.length + 8);
      framed.writeUInt32BE(data.length);
      body.copy(framed, 4);
      framed.writeUInt32BE(crc32(body), body.length + 4);
      return framed;
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(100_000, 0);
    ihdr.writeUInt32BE(100_000, 4);
    ihdr.set([8, 2, 0, 0, 0], 8);
    const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const png = Buffer.concat([signature, chunk("IHDR", ihdr), chunk("IDAT", deflateSync(Buffer.alloc(0))), chunk("IEND", Buffer.alloc(0))]);
    const started = performance.now();
    await rejectsWith(decodeImage(png, IMAGE_LIMITS), "InvalidInput", /^Invalid image: 100000×100000 is over the 40000000-pixel limit$/);
    assert.ok(performance.now() - started < 1000, "refused from the header alone");

    await rejectsWith(decodeImage(DOG, { maxPixels: 100_000 }), "InvalidInput", /768×576 is over the 100000-pixel limit/);
  });
});

describe("decodeAudio", () => {
  it("passes 16 kHz mono WAV through sample for sample", async () => {
    const reference = pcm16(GOFORWARD);
    assert.equal(reference.rate, 16000);
    const audio = await decodeAudio(GOFORWARD, AUDIO_LIMITS);
    assert.equal(audio.sampleRate, 16000);
    assert.equal(audio.samples.length, reference.samples.length);
    assert.ok(Math.abs(audio.samples.length / 16000 - 2.786) < 0.001, "2.786 s");
    let maxDiff = 0;
    for (let i = 0; i < audio.samples.length; i++) maxDiff = Math.max(maxDiff, Math.abs(audio.samples[i]! - reference.samples[i]!));
    assert.ok(maxDiff < 1e-4, `max difference ${maxDiff}`);
  });

  it("resamples 22.05 kHz speech to 16 kHz, keeping its duration and waveform", async () => {
    const reference = pcm16(ESPEAK);
    assert.equal(reference.rate, 22050);
    const audio = await decodeAudio(ESPEAK, AUDIO_LIMITS);
    assert.equal(audio.sampleRate, 16000);
    const seconds = reference.samples.length / 22050;
    assert.ok(Math.abs(audio.samples.length / 16000 / seconds - 1) < 0.01, `${audio.samples.length / 16000} s vs ${seconds} s`);
    // Against a naive linear interpolation (good enough for espeak's mostly low-frequency voice):
    // same timing (no shift), same loudness.
    const linear = audio.samples.map((_, i) => {
      const t = (i * 22050) / 16000;
      const k = Math.floor(t);
      return (reference.samples[k] ?? 0) * (1 - (t - k)) + (reference.samples[k + 1] ?? 0) * (t - k);
    });
    const { r, lag } = bestCorrelation(audio.samples, linear, 0);
    assert.ok(r > 0.99 && lag === 0, `correlation ${r.toFixed(4)} at no delay`);
    assert.ok(Math.abs(rms(audio.samples) / rms(linear) - 1) < 0.05, "loudness kept");
  });

  for (const [file, minCorrelation] of [
    ["goforward.mp3", 0.98],
    ["goforward.flac", 0.9999],
    ["goforward.ogg", 0.98],
    ["goforward.opus", 0.95],
  ] as const) {
    it(`decodes ${file} to the WAV's duration (±2%) and waveform`, async () => {
      const reference = pcm16(GOFORWARD).samples;
      const audio = await decodeAudio(read(path.join(ENCODED, file)), AUDIO_LIMITS);
      assert.equal(audio.sampleRate, 16000);
      assert.ok(Math.abs(audio.samples.length / reference.length - 1) < 0.02, `${audio.samples.length} samples vs ${reference.length}`);
      // Searched over ±200 samples, the best match must be at no shift: the decoders trim codec delay,
      // and word timings depend on it.
      const { r, lag } = bestCorrelation(audio.samples, reference, 200);
      assert.ok(r > minCorrelation, `correlation ${r.toFixed(4)} with the WAV`);
      assert.ok(Math.abs(lag) <= 2, `aligned with the WAV (shift ${lag})`);
    });
  }

  it("mixes channels to mono by averaging", async () => {
    const left = tone(440, 16000, 0.5);
    const inverted = left.map((v) => -v);
    const same = await decodeAudio(wav([left, left], 16000), AUDIO_LIMITS);
    assert.ok(rms(same.samples) > 0.35 && Math.abs(rms(same.samples) - rms(left)) < 1e-3, "identical channels: the same signal");
    const opposite = await decodeAudio(wav([left, inverted], 16000), AUDIO_LIMITS);
    assert.ok(rms(opposite.samples) < 1e-4, "opposite channels cancel");
    const oneSided = await decodeAudio(wav([left, new Float32Array(left.length)], 16000), AUDIO_LIMITS);
    assert.ok(Math.abs(rms(oneSided.samples) / rms(left) - 0.5) < 0.01, "one silent channel halves the level");
  });

  it("resamples without distorting speech-band tones", async () => {
    for (const rate of [8000, 11025, 22050, 44056, 44100, 48000, 96000]) {
      const audio = await decodeAudio(wav([tone(1000, rate, 1)], rate), AUDIO_LIMITS);
      assert.equal(audio.samples.length, 16000, `${rate} Hz: 1 s`);
      const ideal = tone(1000, 16000, 1);
      let err = 0;
      for (let i = 1000; i < 15000; i++) err += (audio.samples[i]! - ideal[i]!) ** 2;
      const snr = 10 * Math.log10(rms(ideal, 1000, 15000) ** 2 / (err / 14000));
      assert.ok(snr > 75, `${rate} Hz: 1 kHz tone comes out ${snr.toFixed(1)} dB clean`);
    }
  });

  it("filters out what 16 kHz cannot carry instead of folding it into the speech band", async () => {
    // 10 kHz at 48 kHz would alias to 6 kHz without a low-pass; 12 kHz at 44.1 kHz to 4 kHz.
    for (const [freq, rate] of [
      [10_000, 48_000],
      [12_000, 44_100],
    ] as const) {
      const audio = await decodeAudio(wav([tone(freq, rate, 1)], rate), AUDIO_LIMITS);
      const level = 20 * Math.log10(rms(audio.samples, 1000, 15000) / rms(tone(freq, rate, 1)));
      assert.ok(level < -70, `${freq} Hz at ${rate} Hz: ${level.toFixed(1)} dB`);
    }
  });

  it("refuses audio over the length limit as too large", async () => {
    await rejectsWith(decodeAudio(GOFORWARD, { maxSeconds: 2 }), "RequestTooLarge", /^Audio is longer than the 2-second limit$/);
    await rejectsWith(decodeAudio(read(path.join(ENCODED, "goforward.mp3")), { maxSeconds: 1 }), "RequestTooLarge", /1-second limit/);
    assert.equal((await decodeAudio(GOFORWARD, { maxSeconds: 3 })).samples.length, 44580);
  });

  it("bounds the decoding work: many channels at a high rate count against the limit", async () => {
    // 0.3 s of 8 channels at 48 kHz: under a 1-second limit, but more samples than 1 s of 48 kHz stereo.
    const eight = Array.from({ length: 8 }, () => tone(440, 48_000, 0.3));
    await rejectsWith(decodeAudio(wav(eight, 48_000), { maxSeconds: 1 }), "RequestTooLarge", /more samples than 1 s of 48 kHz stereo/);
    assert.equal((await decodeAudio(wav(eight, 48_000), { maxSeconds: 2 })).samples.length, 4800);
  });

  it("refuses truncated, corrupt and unknown input with a clear reason", async () => {
    await rejectsWith(decodeAudio(GOFORWARD.subarray(0, 40_000), AUDIO_LIMITS), "InvalidInput", /^Invalid audio: the WAV data is truncated$/);
    await rejectsWith(decodeAudio(GOFORWARD.subarray(0, 44), AUDIO_LIMITS), "InvalidInput", /^Invalid audio: the WAV data is truncated$/);
    for (const file of ["goforward.flac", "goforward.ogg", "goforward.opus"]) {
      await rejectsWith(decodeAudio(read(path.join(ENCODED, file)).subarray(0, 1000), AUDIO_LIMITS), "InvalidInput", /^Invalid audio: no sound could be decoded/);
    }
    await rejectsWith(decodeAudio(read(path.join(ENCODED, "goforward.mp3")).subarray(0, 100), AUDIO_LIMITS), "InvalidInput", /^Invalid audio: no sound/);
    const random = Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24);
    await rejectsWith(decodeAudio(random, AUDIO_LIMITS), "InvalidInput", /^Invalid audio: unrecognised format \(send WAV, MP3, FLAC or OGG\)$/);
    await rejectsWith(decodeAudio(DOG, AUDIO_LIMITS), "InvalidInput", /^Invalid audio: unrecognised format/);
    await rejectsWith(decodeAudio(new TextEncoder().encode("RIFF\0\0\0\0WAVEjunkjunkjunk"), AUDIO_LIMITS), "InvalidInput", /^Invalid audio: no sound/);
    await rejectsWith(decodeAudio(new TextEncoder().encode("MThd\0\0\0\x06\0\0\0\x01\0\x60"), AUDIO_LIMITS), "InvalidInput", /^Invalid audio: mid is not supported$/);
    // A FLAC whose frames were overwritten decodes to nothing rather than to noise.
    const flac = read(path.join(ENCODED, "goforward.flac"));
    for (let i = 3000; i < flac.length; i += 7) flac[i] = (i * 31) & 0xff;
    await rejectsWith(decodeAudio(flac, AUDIO_LIMITS), "InvalidInput", /^Invalid audio: /);
  });

  it("refuses a WAV header with an impossible sample rate", async () => {
    for (const rate of [1, 10_000_000]) {
      const bytes = wav([tone(100, 16000, 0.1)], 16000);
      new DataView(bytes.buffer).setUint32(24, rate, true);
      await rejectsWith(decodeAudio(bytes, AUDIO_LIMITS), "InvalidInput", new RegExp(`^Invalid audio: a sample rate of ${rate} Hz is not supported$`));
    }
  });
});
