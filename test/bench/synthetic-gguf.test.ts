import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaLogLevel, readGgufFileInfo, type Llama, type Token } from "node-llama-cpp";
import {
  buildVocab,
  countParams,
  f32ToF16Bits,
  resolveDims,
  tensorBytes,
  writeSyntheticLlama,
  type SyntheticWeightType,
} from "../../bench/synthetic-gguf.js";

const TINY = { nLayers: 2, dim: 64, ffnDim: 128, nHeads: 2, nKvHeads: 1, vocabSize: 600, ctx: 256 };

let dir = "";
let llama: Llama | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "borde-synth-gguf-"));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
});

after(async () => {
  await llama?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function expectedBytesUpperBound(type: SyntheticWeightType): number {
  const { dim, ffnDim, nLayers, vocabSize } = TINY;
  const kvDim = (dim / TINY.nHeads) * TINY.nKvHeads;
  const mats = 2 * vocabSize * dim + nLayers * (2 * dim * dim + 2 * dim * kvDim + 3 * dim * ffnDim);
  return tensorBytes(type, mats) + (2 * nLayers + 1) * dim * 4;
}

for (const type of ["F32", "Q8_0"] as const) {
  test(`tiny synthetic llama (${type}) writes valid GGUF, loads and generates`, async () => {
    const path = join(dir, `tiny-${type}.gguf`);
    const res = await writeSyntheticLlama({ path, ...TINY, type, seed: 7 });

    // size on disk
    const st = await stat(path);
    assert.equal(st.size, res.bytes);
    assert.equal(res.params, countParams(resolveDims(TINY)));
    const dataBytes = expectedBytesUpperBound(type);
    assert.ok(res.bytes > dataBytes, "file holds at least all tensor data");
    // header (vocab + tensor infos + alignment padding) is small for this vocab
    assert.ok(res.bytes - dataBytes < 64 * 1024, `header overhead ${res.bytes - dataBytes}`);
    assert.ok(res.bytesPerToken < res.bytes && res.bytesPerToken > dataBytes / 2);

    // raw header
    const head = (await readFile(path)).subarray(0, 24);
    assert.equal(head.toString("latin1", 0, 4), "GGUF");
    assert.equal(head.readUInt32LE(4), 3);

    // metadata as read back by node-llama-cpp
    const info = await readGgufFileInfo(path, { logWarnings: false });
    assert.equal(info.version, 3);
    assert.equal(info.metadata.general.architecture, "llama");
    assert.equal(info.architectureMetadata.block_count, TINY.nLayers);
    assert.equal(info.architectureMetadata.embedding_length, TINY.dim);
    assert.equal(info.architectureMetadata.feed_forward_length, TINY.ffnDim);
    assert.equal(info.architectureMetadata.attention?.head_count, TINY.nHeads);
    assert.equal(info.architectureMetadata.attention?.head_count_kv, TINY.nKvHeads);
    assert.equal(info.metadata.general.file_type, type === "F32" ? 0 : 7);
    assert.equal(Number(info.tensorCount), 3 + 9 * TINY.nLayers);
    assert.equal(info.metadata.tokenizer.ggml.tokens.length, TINY.vocabSize);
    const names = new Set((info.tensorInfo ?? []).map((t) => t.name));
    for (const n of ["token_embd.weight", "output_norm.weight", "output.weight", "blk.1.ffn_down.weight", "blk.0.attn_k.weight"]) {
      assert.ok(names.has(n), `tensor ${n}`);
    }
    // tensor data section ends exactly at EOF
    const last = info.tensorInfo?.at(-1);
    assert.ok(last && info.infoEndOffset !== undefined);
    assert.equal(info.infoEndOffset % 32, 0);
    assert.equal(last.name, "output.weight");
    assert.equal(
      info.infoEndOffset + Number(last.offset) + tensorBytes(type, TINY.vocabSize * TINY.dim),
      st.size,
    );

    // load + greedy generate 8 tokens with 1 thread
    assert.ok(llama);
    const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
    try {
      assert.equal(model.fileInfo.metadata.general.architecture, "llama");
      assert.equal(model.fileInfo.architectureMetadata.block_count, TINY.nLayers);
      assert.equal(model.tokens.bos, 1);
      assert.equal(model.tokens.eos, 2);
      const context = await model.createContext({ contextSize: 256, threads: 1 });
      try {
        const seq = context.getSequence();
        const out: Token[] = [];
        for await (const tok of seq.evaluate([model.tokens.bos!], { temperature: 0 })) {
          out.push(tok);
          if (out.length >= 8) break;
        }
        assert.equal(out.length, 8);
        for (const t of out) assert.ok(t >= 0 && t < TINY.vocabSize);
        assert.equal(typeof model.detokenize(out), "string");
      } finally {
        await context.dispose();
      }
    } finally {
      await model.dispose();
    }
  });
}

test("same seed gives byte-identical files; different seed differs", async () => {
  const a = join(dir, "a.gguf");
  const b = join(dir, "b.gguf");
  const c = join(dir, "c.gguf");
  await writeSyntheticLlama({ path: a, ...TINY, type: "F16", seed: 3 });
  await writeSyntheticLlama({ path: b, ...TINY, type: "F16", seed: 3 });
  await writeSyntheticLlama({ path: c, ...TINY, type: "F16", seed: 4 });
  const [ba, bb, bc] = await Promise.all([readFile(a), readFile(b), readFile(c)]);
  assert.ok(ba.equals(bb));
  assert.equal(ba.length, bc.length);
  assert.ok(!ba.equals(bc));
});

test("vocab is SentencePiece-shaped and unique", () => {
  const v = buildVocab(32000);
  assert.equal(v.tokens.length, 32000);
  assert.equal(new Set(v.tokens).size, 32000);
  assert.deepEqual(v.tokens.slice(0, 3), ["<unk>", "<s>", "</s>"]);
  assert.equal(v.tokens[3], "<0x00>");
  assert.equal(v.tokens[258], "<0xFF>");
  assert.equal(v.tokenTypes[10], 6);
  assert.ok(v.tokens.includes("\u2581the"));
  for (let i = 260; i < v.scores.length; i++) assert.ok((v.scores[i] ?? 0) < (v.scores[i - 1] ?? 0));
});

test("dims auto-selection approaches the target size", () => {
  const d = resolveDims({ targetParams: 0.8e9 });
  const p = countParams(d);
  assert.ok(Math.abs(p - 0.8e9) / 0.8e9 < 0.05, `params ${p}`);
  assert.equal(d.dim % d.nHeads, 0);
  assert.equal(d.nHeads % d.nKvHeads, 0);
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(-2), 0xc000);
  assert.equal(f32ToF16Bits(0.5), 0x3800);
});
