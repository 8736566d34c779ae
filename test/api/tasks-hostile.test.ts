/**
 * Hostile media and task inputs: broken, truncated, lying, empty, mistyped, oversized and misdirected
 * images and audio, in every form a client may send them. Each refusal is a 4xx in the Workers AI
 * error envelope with a message that says what is wrong, never a stack trace; no bad input loads a
 * model or leaves work behind; the node keeps answering good requests; nothing is logged as a server
 * failure. The node runs with `maxAudioSeconds: 1` so that an over-long clip is cheap to send.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import zlib from "node:zlib";
import { ACCOUNT, answer, SHARED, startTestNode, TOKEN, type Answer, type TestNode } from "../helpers.js";

const USE = "@borde/use-lite";
const LID = "@borde/fasttext-lid-176";
const DARKNET = "@local/darknet";
const CENTERNET = "@borde/centernet";
const OCR = "@borde/tesseract-eng";
const VAD = "@borde/silero-vad";
const STORIES = "@local/stories";

/** The default body limit, set explicitly since the 100 MB test measures against it. */
const BODY_LIMIT = 32 * 2 ** 20;

const E = {
  invalid: { status: 400, code: 5006 },
  missing: { status: 400, code: 3003 },
  wrongTask: { status: 400, code: 5007 },
  tooLarge: { status: 413, code: 3006 },
} as const;

/** What a client must never see: frames, source positions, module paths, raw JS error names. */
const LEAKS: [string, RegExp][] = [
  ["stack frame", /at .*\.[cm]?[jt]s:/],
  ["stack frame", /\n\s*at \S/],
  ["source position", /\.[cm]?[jt]sx?:\d/],
  ["node_modules path", /node_modules/],
  ["JS error name", /\b(?:Type|Range|Syntax|Reference)Error\b/],
  ["node internal", /node:internal/],
];

const serverErrors = (logs: string[]) => logs.filter((l) => /"level":(?:50|60)\b/.test(l) || l.includes('"msg":"request failed"'));

/** Deterministic noise (an LCG), so that a failure reproduces. */
function noise(n: number, seed = 7): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) >>> 16;
  return out;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}
/** A valid PNG header (right CRCs) claiming `width`×`height` RGB, with a few bytes of pixel data. */
function liarPng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), pngChunk("IHDR", ihdr), pngChunk("IDAT", zlib.deflateSync(Buffer.alloc(64))), pngChunk("IEND", Buffer.alloc(0))]);
}

/** A WAV header for 16-bit mono 16 kHz with `dataBytes` of samples declared; `actual` bytes follow. */
function wav(dataBytes: number, actual = dataBytes): Buffer {
  const h = Buffer.alloc(44);
  h.write("RIFF", 0, "latin1");
  h.writeUInt32LE(36 + dataBytes, 4);
  h.write("WAVEfmt ", 8, "latin1");
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20); // PCM
  h.writeUInt16LE(1, 22); // mono
  h.writeUInt32LE(16_000, 24);
  h.writeUInt32LE(32_000, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write("data", 36, "latin1");
  h.writeUInt32LE(dataBytes, 40);
  return Buffer.concat([h, Buffer.alloc(actual)]);
}

interface Case {
  name: string;
  model: string;
  /** A JSON value (sent as JSON), or bytes / a form sent as they are. */
  json?: unknown;
  raw?: { body: NonNullable<RequestInit["body"]>; type?: string };
  status: number;
  code: number;
  /** The message must say this (a clear reason, not just "Invalid input"). */
  says: RegExp;
}

function formWith(field: string, value: Blob | string, more: [string, string][] = []): FormData {
  const f = new FormData();
  f.append(field, value);
  for (const [k, v] of more) f.append(k, v);
  return f;
}

describe("hostile media and task inputs", () => {
  let node: TestNode;
  let dog: Buffer;
  let vadWav: Buffer;
  let silWav: Buffer;

  before(async () => {
    node = await startTestNode({ maxAudioSeconds: 1, maxBodyBytes: BODY_LIMIT });
    await fs.cp(path.join(SHARED, "models/darknet-tiny-imagenet"), path.join(node.modelsDir, "darknet"), { recursive: true });
    const fixture = (f: string) => fs.readFile(path.join(SHARED, "fixtures", f));
    dog = await fixture("images/dog.jpg");
    vadWav = await fixture("audio/vadtest.wav");
    silWav = await fixture("audio/sil.wav");
  });
  after(async () => {
    await node?.close();
  });

  async function send(c: Pick<Case, "model" | "json" | "raw">): Promise<Answer> {
    const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` };
    let body: NonNullable<RequestInit["body"]>;
    if (c.raw) {
      body = c.raw.body;
      if (c.raw.type) headers["content-type"] = c.raw.type;
    } else {
      body = JSON.stringify(c.json);
      headers["content-type"] = "application/json";
    }
    return answer(await fetch(`${node.ai}/run/${c.model}`, { method: "POST", headers, body }));
  }

  /** Problems with one refusal; empty when it is a proper, clear 4xx envelope. */
  function problems(c: Case, a: Answer): string[] {
    const out: string[] = [];
    if (a.status !== c.status) out.push(`status ${a.status}, expected ${c.status}`);
    for (const [what, re] of LEAKS) if (re.test(a.text)) out.push(`shows a ${what}`);
    if (!a.json) return [...out, "body is not JSON"];
    const { result, success, errors, messages } = a.json;
    if (result !== null || success !== false || !Array.isArray(messages) || messages.length !== 0) out.push("not the error envelope");
    if (!Array.isArray(errors) || errors.length !== 1) return [...out, "errors is not one entry"];
    if (errors[0].code !== c.code) out.push(`code ${errors[0].code}, expected ${c.code}`);
    if (typeof errors[0].message !== "string" || !c.says.test(errors[0].message)) out.push(`message does not say ${c.says}`);
    if (a.headers.get("borde-pop") !== "local") out.push("no borde-pop header");
    return out;
  }

  function corpus(): Case[] {
    const b64 = (b: Buffer) => b.toString("base64");
    const truncatedJpeg = dog.subarray(0, Math.floor(dog.length * 0.6));
    const corruptJpeg = Buffer.from(dog);
    for (let i = 2000; i < corruptJpeg.length - 2000; i += 7) corruptJpeg[i] = (i * 31) & 0xff;
    const huge = liarPng(100_000, 100_000);
    const truncatedWav = vadWav.subarray(0, 30_000);
    const image = (name: string, model: string, bytes: Buffer, type: string, expect: Pick<Case, "status" | "code" | "says">): Case[] => [
      { name: `${name} (raw ${type})`, model, raw: { body: bytes, type }, ...expect },
      { name: `${name} (base64)`, model, json: { image: b64(bytes) }, ...expect },
      { name: `${name} (multipart)`, model, raw: { body: formWith("image", new Blob([bytes])) }, ...expect },
    ];
    const corrupt = { ...E.invalid, says: /Invalid image: the data is corrupt or truncated/ };
    const unrecognised = { ...E.invalid, says: /Invalid image: unrecognised format/ };
    const notAByte = { ...E.invalid, says: /image\[1\] is .*bytes are integers from 0 to 255/ };
    const notMedia = { ...E.invalid, says: /image: expected a byte array, a base64 string or a data URL/ };
    return [
      // Broken images, on each image model and in each form.
      ...image("truncated JPEG", DARKNET, truncatedJpeg, "image/jpeg", corrupt),
      ...image("corrupt JPEG", CENTERNET, corruptJpeg, "image/jpeg", corrupt),
      ...image("random bytes", OCR, noise(4096), "image/jpeg", unrecognised),
      ...image("PNG header claiming 100000×100000", DARKNET, huge, "image/png", { ...E.invalid, says: /100000×100000 is over the 40000000-pixel limit/ }),
      { name: "GIF signature and nothing else", model: DARKNET, raw: { body: Buffer.from("GIF89a"), type: "image/gif" }, ...corrupt },
      { name: "an SVG document", model: DARKNET, raw: { body: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'), type: "image/svg+xml" }, ...E.invalid, says: /svg is not accepted/ },
      { name: "a WAV sent as an image", model: CENTERNET, raw: { body: silWav, type: "image/jpeg" }, ...unrecognised },

      // Empty media, image and audio, every form.
      { name: "image: []", model: DARKNET, json: { image: [] }, ...E.invalid, says: /image is empty/ },
      { name: 'image: ""', model: DARKNET, json: { image: "" }, ...E.invalid, says: /image is empty/ },
      { name: 'image: "data:image/jpeg;base64,"', model: DARKNET, json: { image: "data:image/jpeg;base64," }, ...E.invalid, says: /image is empty/ },
      { name: "multipart with an empty image file", model: CENTERNET, raw: { body: formWith("image", new Blob([]), [["threshold", "0.5"]]) }, ...E.invalid, says: /image is empty/ },
      { name: "raw image/jpeg with no bytes", model: OCR, raw: { body: new Uint8Array(0), type: "image/jpeg" }, ...E.missing, says: /missing a body/ },
      { name: "audio: []", model: VAD, json: { audio: [] }, ...E.invalid, says: /audio is empty/ },
      { name: 'audio: ""', model: VAD, json: { audio: "" }, ...E.invalid, says: /audio is empty/ },
      { name: "multipart with an empty audio file", model: VAD, raw: { body: formWith("audio", new Blob([])) }, ...E.invalid, says: /audio is empty/ },
      { name: "raw audio/wav with no bytes", model: VAD, raw: { body: new Uint8Array(0), type: "audio/wav" }, ...E.missing, says: /missing a body/ },

      // Broken audio.
      { name: "truncated WAV (raw)", model: VAD, raw: { body: truncatedWav, type: "audio/wav" }, ...E.invalid, says: /WAV data is truncated/ },
      { name: "truncated WAV (base64)", model: VAD, json: { audio: b64(truncatedWav) }, ...E.invalid, says: /WAV data is truncated/ },
      { name: "WAV header claiming 1 GB of samples", model: VAD, raw: { body: wav(1e9, 64), type: "audio/wav" }, ...E.invalid, says: /WAV data is truncated/ },
      { name: "WAV with no samples", model: VAD, raw: { body: wav(0), type: "audio/wav" }, ...E.invalid, says: /no sound could be decoded/ },
      { name: "random bytes as audio", model: VAD, raw: { body: noise(4096), type: "audio/wav" }, ...E.invalid, says: /Invalid audio: unrecognised format/ },
      { name: "a JPEG sent as audio", model: VAD, json: { audio: b64(dog) }, ...E.invalid, says: /Invalid audio: unrecognised format/ },
      { name: "audio over the 1 s limit (4.8 s)", model: VAD, raw: { body: vadWav, type: "audio/wav" }, ...E.tooLarge, says: /longer than the 1-second limit/ },
      { name: "audio over the limit as a byte array", model: VAD, json: { audio: [...vadWav] }, ...E.tooLarge, says: /longer than the 1-second limit/ },

      // Byte arrays that are not bytes; strings that are not base64.
      { name: "byte array with 256", model: DARKNET, json: { image: [255, 256] }, ...notAByte },
      { name: "byte array with -1", model: DARKNET, json: { image: [255, -1] }, ...notAByte },
      { name: "byte array with 1.5", model: DARKNET, json: { image: [255, 1.5] }, ...notAByte },
      { name: 'byte array with "x"', model: DARKNET, json: { image: [255, "x"] }, ...notMedia },
      { name: "byte array with null", model: DARKNET, json: { image: [255, null] }, ...notMedia },
      { name: "byte array of arrays", model: DARKNET, json: { image: [[255]] }, ...notMedia },
      { name: "image as a number", model: DARKNET, json: { image: 42 }, ...notMedia },
      { name: "image as an object", model: DARKNET, json: { image: { 0: 255, length: 1 } }, ...notMedia },
      { name: "base64 with a bad character", model: DARKNET, json: { image: "/9j/4AAQ!SkZJRg==" }, ...E.invalid, says: /invalid base64 \(unexpected "!" at offset 8\)/ },
      { name: "base64 of the wrong length", model: DARKNET, json: { image: "/9j/4" }, ...E.invalid, says: /invalid base64 \(wrong length\)/ },
      { name: "a data URL that is not base64", model: DARKNET, json: { image: "data:image/jpeg,%FF%D8" }, ...E.invalid, says: /not a base64 one/ },

      // Media to text models, text to media models.
      { name: "raw image to the language identifier", model: LID, raw: { body: dog, type: "image/jpeg" }, ...E.invalid, says: /text-classification model takes a JSON object, not a file/ },
      { name: "image field to the language identifier", model: LID, json: { image: b64(dog) }, ...E.invalid, says: /text-classification model: text:/ },
      { name: "raw image to the embeddings model", model: USE, raw: { body: dog, type: "image/jpeg" }, ...E.invalid, says: /text-embeddings model takes a JSON object, not a file/ },
      { name: "image field to the embeddings model", model: USE, json: { image: [1, 2, 3] }, ...E.invalid, says: /text/ },
      { name: "raw image to an LLM", model: STORIES, raw: { body: dog, type: "image/jpeg" }, ...E.invalid, says: /text-generation model takes a JSON object, not a file/ },
      { name: "prompt to the embeddings model", model: USE, json: { prompt: "a dog" }, ...E.wrongTask, says: /text-embeddings model, not text-generation/ },
      { name: "text to the image classifier", model: DARKNET, json: { text: "a photo of a dog" }, ...notMedia },
      { name: "prompt to the object detector", model: CENTERNET, json: { prompt: "find the horses" }, ...notMedia },
      { name: "messages to OCR", model: OCR, json: { messages: [{ role: "user", content: "read this" }] }, ...notMedia },
      { name: "text to VAD", model: VAD, json: { text: "hello" }, ...E.invalid, says: /audio: expected a byte array/ },

      // Options of the wrong type or out of range.
      { name: 'top_k: "lots"', model: DARKNET, json: { image: b64(dog), top_k: "lots" }, ...E.invalid, says: /top_k:/ },
      { name: "top_k: 0", model: DARKNET, json: { image: b64(dog), top_k: 0 }, ...E.invalid, says: /top_k:/ },
      { name: "top_k: 2.5", model: DARKNET, json: { image: b64(dog), top_k: 2.5 }, ...E.invalid, says: /top_k:/ },
      { name: 'multipart top_k "lots"', model: DARKNET, raw: { body: formWith("image", new Blob([dog]), [["top_k", "lots"]]) }, ...E.invalid, says: /top_k:/ },
      { name: 'threshold: "high"', model: CENTERNET, json: { image: b64(dog), threshold: "high" }, ...E.invalid, says: /threshold:/ },
      { name: "threshold: 2", model: CENTERNET, json: { image: b64(dog), threshold: 2 }, ...E.invalid, says: /threshold:/ },
      { name: "VAD threshold: 0", model: VAD, json: { audio: b64(silWav), threshold: 0 }, ...E.invalid, says: /threshold:/ },
      { name: "OCR max_tokens: -1", model: OCR, json: { image: b64(dog), max_tokens: -1 }, ...E.invalid, says: /max_tokens:/ },
      { name: "text: 5", model: LID, json: { text: 5 }, ...E.invalid, says: /text: .*expected string/ },
      { name: 'text: ""', model: LID, json: { text: "" }, ...E.invalid, says: /text is empty/ },
      { name: "text: [...]", model: LID, json: { text: ["a", "b"] }, ...E.invalid, says: /text: .*expected string/ },
      { name: "body is an array", model: DARKNET, json: [b64(dog)], ...E.invalid, says: /body must be a JSON object/ },
      { name: "body is a string", model: VAD, json: b64(silWav), ...E.invalid, says: /body must be a JSON object/ },

      // Malformed uploads.
      { name: "multipart with no boundary", model: DARKNET, raw: { body: "--x\r\n\r\n", type: "multipart/form-data" }, ...E.invalid, says: /malformed multipart/ },
      { name: "multipart with the image twice", model: DARKNET, raw: { body: (() => { const f = formWith("image", new Blob([dog])); f.append("image", new Blob([dog])); return f; })() }, ...E.invalid, says: /"image" is repeated/ },
    ];
  }

  test("a corpus of bad media and task inputs gets clear 4xx envelopes, loads no model, and the node still answers", async (t) => {
    const cases = corpus();
    t.diagnostic(`${cases.length} cases`);
    const failures: string[] = [];
    // Four at a time: refusals racing each other must not disturb one another either.
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < cases.length) {
          const c = cases[next++]!;
          const a = await send(c);
          const p = problems(c, a);
          if (p.length) failures.push(`${c.name} → ${p.join("; ")}: ${a.text.slice(0, 200)}`);
        }
      }),
    );
    assert.deepEqual(failures, []);
    // Every refusal came before any engine work: no model was loaded for bad input, nothing waits.
    assert.deepEqual(node.scheduler.snapshot().models, []);

    // Good requests still go through, on every model the corpus aimed at.
    const good: [string, unknown][] = [
      [DARKNET, { image: dog.toString("base64"), top_k: 1 }],
      [CENTERNET, { image: dog.toString("base64") }],
      [LID, { text: "Bonjour tout le monde, comment allez-vous ?" }],
      [USE, { text: "still alive" }],
      [VAD, { audio: silWav.toString("base64") }], // 1.0 s: at the limit, not over it
    ];
    for (const [model, json] of good) {
      const a = await send({ model, json });
      assert.equal(a.status, 200, `${model}: ${a.text.slice(0, 200)}`);
      assert.equal(a.json.success, true);
    }
    const loaded = node.scheduler.snapshot().models;
    assert.deepEqual(loaded.map((m) => m.id).sort(), good.map(([m]) => m).sort(), "only the models good requests used are loaded");
    assert.ok(loaded.every((m) => m.active === 0 && m.queued === 0 && m.state === "ready"));
  });

  test("unknown fields are ignored, as on the text routes, and cannot pollute prototypes", async () => {
    const plain = await send({ model: DARKNET, json: { image: dog.toString("base64"), top_k: 2 } });
    const extra = await send({
      model: DARKNET,
      raw: { body: `{"image":"${dog.toString("base64")}","top_k":2,"bogus":{"deep":[1,2]},"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}`, type: "application/json" },
    });
    assert.equal(extra.status, 200, extra.text.slice(0, 200));
    assert.deepEqual(extra.json.result, plain.json.result);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  test("a 100 MB upload is refused with 413/3006 once past the limit, without the server reading it all", async (t) => {
    const total = 100 * 2 ** 20;
    const check = (status: number, text: string) => {
      assert.equal(status, 413, text);
      const body = JSON.parse(text) as { success: boolean; errors: { code: number; message: string }[] };
      assert.equal(body.success, false);
      assert.equal(body.errors[0]!.code, 3006);
      assert.match(body.errors[0]!.message, /too large: the limit is \d+ bytes/);
    };

    // Chunked, from a generator of 1 MiB pieces pulled as the connection takes them: the server reads
    // up to its limit, answers, and stops reading (fetch hands the early answer back, as undici does).
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= total) return c.close();
        sent += 2 ** 20;
        c.enqueue(new Uint8Array(2 ** 20).fill(0xff));
      },
    });
    const r = await fetch(`${node.ai}/run/${DARKNET}`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "image/jpeg" }, body, duplex: "half" } as RequestInit);
    check(r.status, await r.text());
    t.diagnostic(`chunked: answered ${r.status} after ${(sent / 2 ** 20).toFixed(0)} MiB pulled (limit ${BODY_LIMIT / 2 ** 20} MiB)`);
    assert.ok(sent < BODY_LIMIT + 16 * 2 ** 20, `${sent} bytes were pulled before the answer`);

    // A declared Content-Length of 100 MiB is refused on the header: no body byte is sent at all.
    const declared = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const url = new URL(`${node.ai}/run/${DARKNET}`);
      const req = http.request({ host: url.hostname, port: url.port, method: "POST", path: url.pathname, headers: { authorization: `Bearer ${TOKEN}`, "content-type": "image/jpeg", "content-length": String(total) } }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, text });
        });
      });
      req.on("error", reject);
      req.flushHeaders();
    });
    check(declared.status, declared.text);

    const after = await send({ model: DARKNET, json: { image: dog.toString("base64"), top_k: 1 } });
    assert.equal(after.status, 200);
  });

  test("nothing above was logged as a server failure", () => {
    assert.deepEqual(serverErrors(node.logs).slice(0, 5), []);
  });
});

describe("media is decoded only for admitted calls", () => {
  test("a caller refused by its limits is answered 429 without its image being decoded", async () => {
    // object-detection at 0 requests per minute: every call is refused at admission.
    const node = await startTestNode({ rateLimits: { "object-detection": 0 } });
    try {
      const broken = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]); // a PNG signature, then nothing: undecodable
      const r = await answer(await node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/@borde/centernet`, { image: broken.toString("base64") }));
      // Decoding first would have answered 400 (invalid image); admission first answers 429.
      assert.equal(r.status, 429, r.text);
      assert.equal(r.json?.errors?.[0]?.code, 7104);
    } finally {
      await node.close();
    }
  });
});
