/**
 * Synthetic GGUF generator: writes a real `llama`-architecture GGUF v3 file with random weights
 * and a valid SentencePiece-style vocabulary, at a chosen size. Used by the benchmarks so that a
 * realistic-size model is available without any download.
 *
 * The output loads in llama.cpp / node-llama-cpp and decodes at the speed a real model of the same
 * shape and quantization would (the generated text is gibberish).
 *
 * CLI:
 *   node --import tsx bench/synthetic-gguf.ts --params 0.8e9 --type Q8_0 --out bench/models/synth-0.8b-q8_0.gguf [--verify 32]
 *
 * Format reference: GGUF v3 (ggml docs/gguf.md). Layout:
 *   magic "GGUF" | u32 version=3 | u64 tensor_count | u64 kv_count | KVs | tensor infos | pad to alignment | tensor data
 * Every tensor's data offset (relative to the start of the data section) is a multiple of `general.alignment`.
 */
import { open, mkdir, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Token } from "node-llama-cpp";

export type SyntheticWeightType = "Q8_0" | "F16" | "F32";

export interface SyntheticLlamaOptions {
  path: string;
  /** Approximate total parameter count; used to pick dims that are not given explicitly. Default 0.8e9. */
  targetParams?: number;
  nLayers?: number;
  dim?: number;
  ffnDim?: number;
  nHeads?: number;
  nKvHeads?: number;
  /** Default 32000 (Llama-2 size). Minimum 259 (3 specials + 256 byte tokens). */
  vocabSize?: number;
  /** Written as llama.context_length. Default 4096. */
  ctx?: number;
  type: SyntheticWeightType;
  /** PRNG seed; same seed + options => byte-identical file. Default 1. */
  seed?: number;
  /** Written as `tokenizer.chat_template` (a Jinja template, e.g. `QWEN25_CHAT_TEMPLATE` or `CHATML_TEMPLATE`). Default: none. */
  chatTemplate?: string;
  /**
   * Extra special tokens (e.g. `<|im_start|>`, `<|im_end|>`) appended at the end of the vocab as control
   * tokens (token_type 3); they take the last ids (in place of the last SPM pieces), so the vocab still
   * totals `vocabSize`.
   */
  specialTokens?: string[];
  /** Extra user-defined tokens (token_type 4, e.g. `<tool_call>`), appended after `specialTokens`. */
  userDefinedTokens?: string[];
  /** Text of the token written as `tokenizer.ggml.eos_token_id` (must be in the vocab, e.g. `<|im_end|>`). Default `</s>`. */
  eosToken?: string;
  /** `tokenizer.ggml.add_bos_token`. Default true. */
  addBosToken?: boolean;
  /** `general.name`. Default `synthetic-llama-<size>-<type>`. */
  name?: string;
}

export interface SyntheticLlamaResult {
  path: string;
  /** Total parameter count (all tensors). */
  params: number;
  /** File size in bytes. */
  bytes: number;
  /** Weight bytes read per decoded token: every layer tensor + output norm + output.weight + one embedding row. */
  bytesPerToken: number;
}

export interface SyntheticLlamaDims {
  nLayers: number;
  dim: number;
  ffnDim: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  ctx: number;
}

const GGUF_ALIGNMENT = 32;
const QK8_0 = 32;

// gguf_type (metadata value types)
const GT_UINT32 = 4;
const GT_INT32 = 5;
const GT_FLOAT32 = 6;
const GT_BOOL = 7;
const GT_STRING = 8;
const GT_ARRAY = 9;

// ggml_type
const GGML_TYPE: Record<SyntheticWeightType, number> = { F32: 0, F16: 1, Q8_0: 8 };
// llama_ftype (general.file_type)
const FILE_TYPE: Record<SyntheticWeightType, number> = { F32: 0, F16: 1, Q8_0: 7 };

// SentencePiece / llama token types
const TOKEN_TYPE_NORMAL = 1;
const TOKEN_TYPE_UNKNOWN = 2;
const TOKEN_TYPE_CONTROL = 3;
const TOKEN_TYPE_USER_DEFINED = 4;
const TOKEN_TYPE_BYTE = 6;

/** Bytes of ggml tensor data for `n` elements of the given type. */
export function tensorBytes(type: SyntheticWeightType, n: number): number {
  switch (type) {
    case "F32":
      return n * 4;
    case "F16":
      return n * 2;
    case "Q8_0":
      if (n % QK8_0 !== 0) throw new Error(`Q8_0 tensor size ${n} not a multiple of ${QK8_0}`);
      return (n / QK8_0) * 34;
  }
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

// ---------------------------------------------------------------------------------------------
// Dimension selection
// ---------------------------------------------------------------------------------------------

function defaultHeads(dim: number): number {
  const headDim = dim >= 256 ? 64 : Math.max(8, dim / 2);
  return Math.max(1, Math.round(dim / headDim));
}

function defaultKvHeads(nHeads: number): number {
  let kv = Math.max(1, Math.floor(nHeads / 8));
  while (nHeads % kv !== 0) kv--;
  return kv;
}

function defaultFfn(dim: number): number {
  // Llama-style ~2.75x, multiple of 64 (so it is also a multiple of the Q8_0 block size).
  return Math.max(64, Math.round((dim * 2.75) / 64) * 64);
}

function paramsPerLayer(dim: number, ffn: number, nHeads: number, nKvHeads: number): number {
  const kvDim = (dim / nHeads) * nKvHeads;
  return 2 * dim * dim + 2 * dim * kvDim + 3 * dim * ffn + 2 * dim;
}

export function countParams(d: SyntheticLlamaDims): number {
  return 2 * d.vocabSize * d.dim + d.dim + d.nLayers * paramsPerLayer(d.dim, d.ffnDim, d.nHeads, d.nKvHeads);
}

/** Resolve model dims: explicit options win; the rest are chosen to approach `targetParams` with a Llama-like aspect ratio. */
export function resolveDims(opts: Omit<SyntheticLlamaOptions, "path" | "type">): SyntheticLlamaDims {
  const target = opts.targetParams ?? 0.8e9;
  const vocabSize = opts.vocabSize ?? 32000;
  const ctx = opts.ctx ?? 4096;
  const candidates = opts.dim !== undefined ? [opts.dim] : [64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096, 5120, 6144, 8192];
  let best: { dims: SyntheticLlamaDims; score: number } | undefined;
  for (const dim of candidates) {
    const nHeads = opts.nHeads ?? defaultHeads(dim);
    const nKvHeads = opts.nKvHeads ?? defaultKvHeads(nHeads);
    const ffnDim = opts.ffnDim ?? defaultFfn(dim);
    const perLayer = paramsPerLayer(dim, ffnDim, nHeads, nKvHeads);
    const nLayers = opts.nLayers ?? Math.max(1, Math.round((target - 2 * vocabSize * dim - dim) / perLayer));
    const dims: SyntheticLlamaDims = { nLayers, dim, ffnDim, nHeads, nKvHeads, vocabSize, ctx };
    const relErr = Math.abs(countParams(dims) - target) / target;
    // Llama family: dim / nLayers ~ 128 (2048/16, 4096/32). Penalize missing the target size hard.
    const score = Math.abs(Math.log2(dim / nLayers / 128)) + (relErr > 0.05 ? 10 * relErr : 0);
    if (!best || score < best.score) best = { dims, score };
  }
  if (!best) throw new Error("no candidate dims");
  validateDims(best.dims);
  return best.dims;
}

function validateDims(d: SyntheticLlamaDims): void {
  const ints: (keyof SyntheticLlamaDims)[] = ["nLayers", "dim", "ffnDim", "nHeads", "nKvHeads", "vocabSize", "ctx"];
  for (const k of ints) {
    if (!Number.isInteger(d[k]) || d[k] < 1) throw new Error(`${k} must be a positive integer (got ${d[k]})`);
  }
  if (d.dim % d.nHeads !== 0) throw new Error(`dim ${d.dim} not divisible by nHeads ${d.nHeads}`);
  if (d.nHeads % d.nKvHeads !== 0) throw new Error(`nHeads ${d.nHeads} not divisible by nKvHeads ${d.nKvHeads}`);
  if ((d.dim / d.nHeads) % 2 !== 0) throw new Error(`head dim ${d.dim / d.nHeads} must be even (RoPE)`);
  if (d.dim % QK8_0 !== 0 || d.ffnDim % QK8_0 !== 0) {
    throw new Error(`dim and ffnDim must be multiples of ${QK8_0} (got ${d.dim}, ${d.ffnDim})`);
  }
  if (d.vocabSize < 259) throw new Error("vocabSize must be >= 259 (3 specials + 256 byte tokens)");
}

// ---------------------------------------------------------------------------------------------
// Vocabulary (SentencePiece / Llama-style)
// ---------------------------------------------------------------------------------------------

const COMMON_WORDS = (
  "the of and to a in is it you that he was for on are with as I his they be at one have this from or had by " +
  "hot word but what some we can out other were all there when up use your how said an each she which do their " +
  "time if will way about many then them write would like so these her long make thing see him two has look more " +
  "day could go come did number sound no most people my over know water than call first who may down side been " +
  "now find any new work part take get place made live where after back little only round man year came show " +
  "every good me give our under name very through just form sentence great think say help low line differ turn " +
  "cause much mean before move right boy old too same tell does set three want air well also play small end put " +
  "home read hand port large spell add even land here must big high such follow act why ask men change went light " +
  "kind off need house picture try us again animal point mother world near build self earth father head stand own " +
  "page should country found answer school grow study still learn plant cover food sun four between state keep eye " +
  "never last let thought city tree cross farm hard start might story saw far sea draw left late run while press " +
  "close night real life few north open seem together next white children begin got walk example ease paper group " +
  "always music those both mark often letter until mile river car feet care second book carry took science eat room " +
  "friend began idea fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl " +
  "usual young ready above ever red list though feel talk bird soon body dog family direct pose leave song measure " +
  "door product black short numeral class wind question happen complete ship area half rock order fire south problem " +
  "piece told knew pass since top whole king space heard best hour better true during hundred five remember step " +
  "early hold west ground interest reach fast verb sing listen six table travel less morning ten simple several " +
  "vowel toward war lay against pattern slow center love person money serve appear road map rain rule govern pull " +
  "cold notice voice unit power town fine certain fly fall lead cry dark machine note wait plan figure star box noun " +
  "field rest correct able pound done beauty drive stood contain front teach week final gave green oh quick develop " +
  "ocean warm free minute strong special mind behind clear tail produce fact street inch multiply nothing course stay " +
  "wheel full force blue object decide surface deep moon island foot system busy test record boat common gold " +
  "possible plane stead dry wonder laugh thousand ago ran check game shape equate miss brought heat snow tire bring " +
  "yes distant fill east paint language among model server request token memory cache thread latency edge inference"
).split(" ");

const SUFFIXES = ["s", "ed", "ing", "er", "ly", "tion", "ment", "ness", "able", "est", "al", "ive", "ous", "ity", "ize", "ful"];

export interface SyntheticVocab {
  tokens: string[];
  scores: number[];
  tokenTypes: number[];
  unk: number;
  bos: number;
  eos: number;
}

/** Tokens added after the SPM pieces (see `SyntheticLlamaOptions`). */
export interface SyntheticExtraTokens {
  specialTokens?: string[];
  userDefinedTokens?: string[];
  eosToken?: string;
}

/**
 * Llama-style SPM vocab: `<unk>`, `<s>`, `</s>`, byte tokens `<0x00>`..`<0xFF>`, then normal pieces with
 * descending scores. Every multi-character piece is added after all of its prefixes, so llama.cpp's SPM
 * bigram-merge tokenizer can actually reach it (real text tokenizes to whole words, not just bytes).
 * `extra` tokens take the last ids (the ids of all other tokens do not change), with score 0.
 */
export function buildVocab(vocabSize: number, extra: SyntheticExtraTokens = {}): SyntheticVocab {
  const special = extra.specialTokens ?? [];
  const userDefined = extra.userDefinedTokens ?? [];
  const nExtra = special.length + userDefined.length;
  if (nExtra > 0 && vocabSize - nExtra < 259) throw new Error(`vocabSize ${vocabSize} leaves no room for ${nExtra} extra tokens`);
  const vocab = buildSpmVocab(vocabSize - nExtra);
  const seen = new Set(vocab.tokens);
  const push = (text: string, type: number): void => {
    if (text.length === 0 || seen.has(text)) throw new Error(`extra token ${JSON.stringify(text)} is empty or already in the vocab`);
    seen.add(text);
    vocab.tokens.push(text);
    vocab.tokenTypes.push(type);
    vocab.scores.push(0);
  };
  for (const t of special) push(t, TOKEN_TYPE_CONTROL);
  for (const t of userDefined) push(t, TOKEN_TYPE_USER_DEFINED);
  if (extra.eosToken !== undefined) {
    const eos = vocab.tokens.indexOf(extra.eosToken);
    if (eos < 0) throw new Error(`eosToken ${JSON.stringify(extra.eosToken)} is not in the vocab`);
    vocab.eos = eos;
  }
  return vocab;
}

function buildSpmVocab(vocabSize: number): SyntheticVocab {
  const tokens: string[] = ["<unk>", "<s>", "</s>"];
  const tokenTypes: number[] = [TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    tokenTypes.push(TOKEN_TYPE_BYTE);
  }
  const nFixed = tokens.length;
  const seen = new Set<string>(tokens);
  const add = (piece: string): void => {
    if (tokens.length >= vocabSize || seen.has(piece)) return;
    seen.add(piece);
    tokens.push(piece);
    tokenTypes.push(TOKEN_TYPE_NORMAL);
  };
  const addWithPrefixes = (piece: string): void => {
    const chars = Array.from(piece);
    for (let i = 1; i <= chars.length; i++) add(chars.slice(0, i).join(""));
  };

  const SP = "\u2581"; // ▁
  add(SP);
  const singles = "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,'-:;!?()\"/&%$#@*+=_[]{}<>|~`^\\";
  for (const ch of singles) add(ch);
  for (const ch of "etaoinshrdlcumwfgypbvkjxqzTAISHWBCMDFP0123456789") add(SP + ch);
  for (const w of COMMON_WORDS) {
    addWithPrefixes(SP + w);
    const cap = w.charAt(0).toUpperCase() + w.slice(1);
    addWithPrefixes(SP + cap);
  }
  for (const s of SUFFIXES) addWithPrefixes(s);
  for (const w of COMMON_WORDS) {
    if (w.length > 2) addWithPrefixes(w); // word-internal continuation pieces
  }
  // Unique filler pieces to reach vocabSize.
  for (let i = 0; tokens.length < vocabSize; i++) add(`${SP}w${i}`);

  const scores = tokens.map((_, i) => (i < nFixed ? 0 : -(i - nFixed)));
  return { tokens, scores, tokenTypes, unk: 0, bos: 1, eos: 2 };
}

// ---------------------------------------------------------------------------------------------
// Chat templates
// ---------------------------------------------------------------------------------------------

/** The ChatML control tokens the templates below use. */
export const CHATML_SPECIAL_TOKENS: readonly string[] = ["<|im_start|>", "<|im_end|>"];

/** Minimal ChatML template (every message as `<|im_start|>role\n...<|im_end|>\n`), no tool support. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * Qwen2.5-Instruct's chat template, verbatim (tokenizer_config.json `chat_template`): ChatML with a default
 * system message, `<tools>` documentation and `<tool_call>` / `<tool_response>` blocks.
 */
export const QWEN25_CHAT_TEMPLATE = String.raw`{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
`;

// ---------------------------------------------------------------------------------------------
// GGUF header serialization
// ---------------------------------------------------------------------------------------------

type KvValue =
  | { t: "u32"; v: number }
  | { t: "f32"; v: number }
  | { t: "bool"; v: boolean }
  | { t: "str"; v: string }
  | { t: "arr_str"; v: string[] }
  | { t: "arr_f32"; v: number[] }
  | { t: "arr_i32"; v: number[] };

class ByteWriter {
  private chunks: Buffer[] = [];
  private cur = Buffer.allocUnsafe(1 << 16);
  private pos = 0;
  length = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.cur.length) return;
    this.chunks.push(this.cur.subarray(0, this.pos));
    this.cur = Buffer.allocUnsafe(Math.max(1 << 16, n));
    this.pos = 0;
  }
  u8(v: number): void {
    this.ensure(1);
    this.cur.writeUInt8(v, this.pos);
    this.pos += 1;
    this.length += 1;
  }
  u32(v: number): void {
    this.ensure(4);
    this.cur.writeUInt32LE(v, this.pos);
    this.pos += 4;
    this.length += 4;
  }
  i32(v: number): void {
    this.ensure(4);
    this.cur.writeInt32LE(v, this.pos);
    this.pos += 4;
    this.length += 4;
  }
  f32(v: number): void {
    this.ensure(4);
    this.cur.writeFloatLE(v, this.pos);
    this.pos += 4;
    this.length += 4;
  }
  u64(v: number | bigint): void {
    this.ensure(8);
    this.cur.writeBigUInt64LE(BigInt(v), this.pos);
    this.pos += 8;
    this.length += 8;
  }
  str(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.ensure(b.length);
    b.copy(this.cur, this.pos);
    this.pos += b.length;
    this.length += b.length;
  }
  zeros(n: number): void {
    this.ensure(n);
    this.cur.fill(0, this.pos, this.pos + n);
    this.pos += n;
    this.length += n;
  }
  toBuffer(): Buffer {
    return Buffer.concat([...this.chunks, this.cur.subarray(0, this.pos)]);
  }
}

function writeKv(w: ByteWriter, key: string, val: KvValue): void {
  w.str(key);
  switch (val.t) {
    case "u32":
      w.u32(GT_UINT32);
      w.u32(val.v);
      break;
    case "f32":
      w.u32(GT_FLOAT32);
      w.f32(val.v);
      break;
    case "bool":
      w.u32(GT_BOOL);
      w.u8(val.v ? 1 : 0);
      break;
    case "str":
      w.u32(GT_STRING);
      w.str(val.v);
      break;
    case "arr_str":
      w.u32(GT_ARRAY);
      w.u32(GT_STRING);
      w.u64(val.v.length);
      for (const s of val.v) w.str(s);
      break;
    case "arr_f32":
      w.u32(GT_ARRAY);
      w.u32(GT_FLOAT32);
      w.u64(val.v.length);
      for (const x of val.v) w.f32(x);
      break;
    case "arr_i32":
      w.u32(GT_ARRAY);
      w.u32(GT_INT32);
      w.u64(val.v.length);
      for (const x of val.v) w.i32(x);
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Random weight generation
// ---------------------------------------------------------------------------------------------

/** xorshift128 (Marsaglia); fills Uint32Arrays fast, deterministic per seed. */
class XorShift128 {
  private x: number;
  private y: number;
  private z: number;
  private w: number;
  constructor(seed: number) {
    // splitmix-ish seeding so nearby seeds give unrelated streams and the state is never all-zero.
    let s = (seed >>> 0) ^ 0x9e3779b9;
    const next = (): number => {
      s = (s + 0x6d2b79f5) | 0;
      let t = Math.imul(s ^ (s >>> 15), 1 | s);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (t ^ (t >>> 14)) >>> 0;
    };
    this.x = next() | 1;
    this.y = next();
    this.z = next();
    this.w = next();
  }
  fill(out: Uint32Array): void {
    let x = this.x;
    let y = this.y;
    let z = this.z;
    let w = this.w;
    for (let i = 0; i < out.length; i++) {
      const t = x ^ (x << 11);
      x = y;
      y = z;
      z = w;
      w = w ^ (w >>> 19) ^ (t ^ (t >>> 8));
      out[i] = w;
    }
    this.x = x;
    this.y = y;
    this.z = z;
    this.w = w;
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);
/** float32 -> IEEE half bits, round-to-nearest-even (no NaN handling needed here). */
export function f32ToF16Bits(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0] ?? 0;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  e = half >>> 10;
  return sign | half;
}

const CHUNK_ELEMS = 1 << 20; // elements generated per write (multiple of QK8_0)

export interface TensorPlan {
  name: string;
  /** ggml order: ne[0] is the contiguous (input) dimension */
  ne: number[];
  type: SyntheticWeightType;
  /** "ones" for norms, otherwise uniform random in ±amp */
  init: "ones" | "random";
  amp: number;
  /** whether the full tensor is read per decoded token (token_embd: only one row) */
  perToken: boolean;
  nElems: number;
  nBytes: number;
  offset: number;
}

/** Produces the tensor data buffers for one tensor, chunk by chunk. */
function* generateTensor(t: TensorPlan, rng: XorShift128): Generator<Buffer> {
  if (t.init === "ones") {
    // Norm weights are always F32 here.
    const out = Buffer.allocUnsafe(t.nElems * 4);
    for (let i = 0; i < t.nElems; i++) out.writeFloatLE(1, i * 4);
    yield out;
    return;
  }
  let remaining = t.nElems;
  switch (t.type) {
    case "Q8_0": {
      // Quants uniform in [-64, 63] (never -128, which breaks sign-trick SIMD dot products), scale amp/64.
      const scaleBits = f32ToF16Bits(t.amp / 64);
      const lo = scaleBits & 0xff;
      const hi = scaleBits >>> 8;
      const rnd = new Uint32Array(CHUNK_ELEMS / 4);
      const rndBytes = new Uint8Array(rnd.buffer);
      while (remaining > 0) {
        const n = Math.min(remaining, CHUNK_ELEMS);
        const nb = n / QK8_0;
        const words = rnd.subarray(0, n / 4);
        rng.fill(words);
        for (let i = 0; i < words.length; i++) {
          // per byte: (b & 0x7f) + 64 in [64,191], then ^0x80 => signed (b & 0x7f) - 64
          words[i] = (((words[i] ?? 0) & 0x7f7f7f7f) + 0x40404040) ^ 0x80808080;
        }
        const out = Buffer.allocUnsafe(nb * 34);
        let o = 0;
        let r = 0;
        for (let b = 0; b < nb; b++) {
          out[o] = lo;
          out[o + 1] = hi;
          o += 2;
          for (let k = 0; k < 32; k++) out[o + k] = rndBytes[r + k] ?? 0;
          o += 32;
          r += 32;
        }
        yield out;
        remaining -= n;
      }
      return;
    }
    case "F16": {
      // 16 random bits -> table of f16 values uniform in ±amp
      const table = new Uint16Array(65536);
      for (let i = 0; i < 65536; i++) table[i] = f32ToF16Bits(((i + 0.5) / 65536) * 2 * t.amp - t.amp);
      const rnd = new Uint32Array(CHUNK_ELEMS / 2);
      while (remaining > 0) {
        const n = Math.min(remaining, CHUNK_ELEMS);
        const nw = Math.ceil(n / 2);
        const words = rnd.subarray(0, nw);
        rng.fill(words);
        const out16 = new Uint16Array(nw * 2);
        for (let i = 0; i < nw; i++) {
          const wv = words[i] ?? 0;
          out16[2 * i] = table[wv & 0xffff] ?? 0;
          out16[2 * i + 1] = table[wv >>> 16] ?? 0;
        }
        yield Buffer.from(out16.buffer, 0, n * 2);
        remaining -= n;
      }
      return;
    }
    case "F32": {
      const rnd = new Uint32Array(CHUNK_ELEMS);
      const k = (2 * t.amp) / 4294967296;
      while (remaining > 0) {
        const n = Math.min(remaining, CHUNK_ELEMS);
        const words = rnd.subarray(0, n);
        rng.fill(words);
        const outF = new Float32Array(n);
        for (let i = 0; i < n; i++) outF[i] = (words[i] ?? 0) * k - t.amp;
        yield Buffer.from(outF.buffer, 0, n * 4);
        remaining -= n;
      }
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Main writer
// ---------------------------------------------------------------------------------------------

export function planTensors(d: SyntheticLlamaDims, type: SyntheticWeightType): TensorPlan[] {
  const headDim = d.dim / d.nHeads;
  const kvDim = headDim * d.nKvHeads;
  // Uniform ±amp with std = 0.5/sqrt(fan_in): keeps activations O(1) through the residual stream.
  const amp = (fanIn: number): number => Math.sqrt(3) * (0.5 / Math.sqrt(fanIn));
  const plans: TensorPlan[] = [];
  const mat = (name: string, ne0: number, ne1: number, perToken = true, a = amp(ne0)): void => {
    plans.push({ name, ne: [ne0, ne1], type, init: "random", amp: a, perToken, nElems: ne0 * ne1, nBytes: 0, offset: 0 });
  };
  const norm = (name: string): void => {
    plans.push({ name, ne: [d.dim], type: "F32", init: "ones", amp: 0, perToken: true, nElems: d.dim, nBytes: 0, offset: 0 });
  };
  mat("token_embd.weight", d.dim, d.vocabSize, false, 0.02 * Math.sqrt(3));
  for (let l = 0; l < d.nLayers; l++) {
    norm(`blk.${l}.attn_norm.weight`);
    mat(`blk.${l}.attn_q.weight`, d.dim, d.dim);
    mat(`blk.${l}.attn_k.weight`, d.dim, kvDim);
    mat(`blk.${l}.attn_v.weight`, d.dim, kvDim);
    mat(`blk.${l}.attn_output.weight`, d.dim, d.dim);
    norm(`blk.${l}.ffn_norm.weight`);
    mat(`blk.${l}.ffn_gate.weight`, d.dim, d.ffnDim);
    mat(`blk.${l}.ffn_up.weight`, d.dim, d.ffnDim);
    mat(`blk.${l}.ffn_down.weight`, d.ffnDim, d.dim);
  }
  norm("output_norm.weight");
  mat("output.weight", d.dim, d.vocabSize);
  let off = 0;
  for (const p of plans) {
    p.nBytes = tensorBytes(p.type, p.nElems);
    p.offset = off;
    off = alignUp(off + p.nBytes, GGUF_ALIGNMENT);
  }
  return plans;
}

function buildMetadata(d: SyntheticLlamaDims, type: SyntheticWeightType, name: string, opts: SyntheticLlamaOptions): [string, KvValue][] {
  const vocab = buildVocab(d.vocabSize, opts);
  const kv: [string, KvValue][] = [
    ["general.architecture", { t: "str", v: "llama" }],
    ["general.name", { t: "str", v: name }],
    ["general.file_type", { t: "u32", v: FILE_TYPE[type] }],
    ["general.alignment", { t: "u32", v: GGUF_ALIGNMENT }],
    ["llama.vocab_size", { t: "u32", v: d.vocabSize }],
    ["llama.context_length", { t: "u32", v: d.ctx }],
    ["llama.embedding_length", { t: "u32", v: d.dim }],
    ["llama.block_count", { t: "u32", v: d.nLayers }],
    ["llama.feed_forward_length", { t: "u32", v: d.ffnDim }],
    ["llama.rope.dimension_count", { t: "u32", v: d.dim / d.nHeads }],
    ["llama.rope.freq_base", { t: "f32", v: 10000 }],
    ["llama.attention.head_count", { t: "u32", v: d.nHeads }],
    ["llama.attention.head_count_kv", { t: "u32", v: d.nKvHeads }],
    ["llama.attention.layer_norm_rms_epsilon", { t: "f32", v: 1e-5 }],
    ["tokenizer.ggml.model", { t: "str", v: "llama" }],
    ["tokenizer.ggml.tokens", { t: "arr_str", v: vocab.tokens }],
    ["tokenizer.ggml.scores", { t: "arr_f32", v: vocab.scores }],
    ["tokenizer.ggml.token_type", { t: "arr_i32", v: vocab.tokenTypes }],
    ["tokenizer.ggml.bos_token_id", { t: "u32", v: vocab.bos }],
    ["tokenizer.ggml.eos_token_id", { t: "u32", v: vocab.eos }],
    ["tokenizer.ggml.unknown_token_id", { t: "u32", v: vocab.unk }],
    ["tokenizer.ggml.add_bos_token", { t: "bool", v: opts.addBosToken ?? true }],
    ["tokenizer.ggml.add_eos_token", { t: "bool", v: false }],
  ];
  if (opts.chatTemplate !== undefined) kv.push(["tokenizer.chat_template", { t: "str", v: opts.chatTemplate }]);
  if (type === "Q8_0") kv.push(["general.quantization_version", { t: "u32", v: 2 }]);
  return kv;
}

function formatParams(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : `${(n / 1e6).toFixed(1)}M`;
}

export async function writeSyntheticLlama(opts: SyntheticLlamaOptions): Promise<SyntheticLlamaResult> {
  const dims = resolveDims(opts);
  validateDims(dims);
  const type = opts.type;
  if (!(type in GGML_TYPE)) throw new Error(`unsupported type ${String(type)}`);
  const plans = planTensors(dims, type);
  const params = countParams(dims);
  const name = opts.name ?? `synthetic-llama-${formatParams(params)}-${type}`;

  // Header: magic, version, counts, KVs, tensor infos, padding.
  const kvs = buildMetadata(dims, type, name, opts);
  const w = new ByteWriter();
  w.u32(0x46554747); // "GGUF" little-endian
  w.u32(3);
  w.u64(plans.length);
  w.u64(kvs.length);
  for (const [k, v] of kvs) writeKv(w, k, v);
  for (const p of plans) {
    w.str(p.name);
    w.u32(p.ne.length);
    for (const n of p.ne) w.u64(n);
    w.u32(GGML_TYPE[p.type]);
    w.u64(p.offset);
  }
  w.zeros(alignUp(w.length, GGUF_ALIGNMENT) - w.length);
  const header = w.toBuffer();

  const last = plans[plans.length - 1];
  if (!last) throw new Error("no tensors");
  const bytes = header.length + last.offset + last.nBytes;

  const path = resolve(opts.path);
  await mkdir(dirname(path), { recursive: true });
  const fh = await open(path, "w");
  try {
    let pos = 0;
    const write = async (buf: Buffer): Promise<void> => {
      let done = 0;
      while (done < buf.length) {
        const { bytesWritten } = await fh.write(buf, done, buf.length - done, pos);
        done += bytesWritten;
        pos += bytesWritten;
      }
    };
    await write(header);
    const rng = new XorShift128(opts.seed ?? 1);
    const dataStart = header.length;
    for (const p of plans) {
      const pad = dataStart + p.offset - pos;
      if (pad > 0) await write(Buffer.alloc(pad));
      for (const chunk of generateTensor(p, rng)) await write(chunk);
    }
    if (pos !== bytes) throw new Error(`internal: wrote ${pos} bytes, expected ${bytes}`);
    await fh.truncate(bytes);
  } finally {
    await fh.close();
  }

  const embRowBytes = tensorBytes(type, dims.dim);
  const bytesPerToken = plans.reduce((s, p) => s + (p.perToken ? p.nBytes : 0), 0) + embRowBytes;
  return { path, params, bytes, bytesPerToken };
}

// ---------------------------------------------------------------------------------------------
// Synthetic BERT (embedding model)
// ---------------------------------------------------------------------------------------------

export interface SyntheticBertOptions {
  path: string;
  /** Default 2. */
  nLayers?: number;
  /** Hidden size. Default 32. */
  dim?: number;
  /** Default 2 * dim. */
  ffnDim?: number;
  /** Default dim / 16 (head size 16), at least 1. */
  nHeads?: number;
  /**
   * HF-style WordPiece vocabulary: `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]` (any order), word-start
   * pieces as plain text and continuation pieces with a `##` prefix. Default: `buildBertVocab()`.
   */
  vocab?: string[];
  /** Written as bert.context_length (= rows of position_embd). Default 512. */
  ctx?: number;
  /** Type of the large matrices (token embeddings, attention, FFN); norms, biases, positions stay F32. Default F32. */
  type?: "F32" | "F16";
  /** PRNG seed; same seed + options => byte-identical file. Default 1. */
  seed?: number;
}

export interface SyntheticBertResult {
  path: string;
  bytes: number;
  params: number;
  dim: number;
  vocabSize: number;
}

/** Lowercase words of the default synthetic BERT vocabulary (the test phrases first). */
const BERT_WORDS = [
  "hello", "world", "green", "tea", "coffee", "black", "cat", "dog", "red", "blue", "cup", "hot", "cold",
  ...COMMON_WORDS.filter((w) => w === w.toLowerCase()),
];

const BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] as const;

/**
 * HF-style WordPiece vocab (what a BERT `vocab.txt` holds): the five specials, single characters
 * (word-start and `##` forms, so any lowercase ASCII word tokenizes without `[UNK]`), punctuation,
 * `nWords` whole lowercase words and `##` suffix pieces.
 */
export function buildBertVocab(nWords = 200): string[] {
  const out: string[] = [...BERT_SPECIALS];
  const seen = new Set<string>(out);
  const add = (t: string): void => {
    if (!seen.has(t)) {
      seen.add(t);
      out.push(t);
    }
  };
  for (const ch of ".,!?'\"-:;()/&%$#@*+=") add(ch);
  for (const ch of "0123456789abcdefghijklmnopqrstuvwxyz") add(ch);
  for (const ch of "0123456789abcdefghijklmnopqrstuvwxyz") add(`##${ch}`);
  const words = [...new Set(BERT_WORDS)].filter((w) => w.length > 1).slice(0, nWords);
  for (const w of words) add(w);
  for (const s of SUFFIXES) add(`##${s}`);
  return out;
}

/**
 * llama.cpp stores a WordPiece vocab in "phantom space" form (convert_hf_to_gguf.py BertModel.set_vocab):
 * word starts get a leading U+2581, `##` continuations lose their prefix, control tokens stay as they are.
 */
function bertPhantom(token: string, control: boolean): string {
  if (control) return token;
  if (token.startsWith("##")) return token.slice(2);
  return "\u2581" + token;
}

interface BertTensor {
  name: string;
  ne: number[];
  type: "F32" | "F16";
  data: Float32Array;
  offset: number;
  nBytes: number;
}

/**
 * Writes a small `bert` GGUF that llama.cpp loads as an embedding model (mean pooling, non-causal).
 *
 * Weights are random but shaped so the pooled output depends on the text's words: word rows of
 * token_embd are random (unit variance), while the special tokens' rows and the token-type and position
 * embeddings are zero, so `[CLS]`/`[SEP]` add no component shared by every text, and word order does not
 * matter (a bag-of-words model). Each word's state is carried through the layers by the residual
 * connections; layer_norm_epsilon = 1 keeps the near-zero special-token states small. Identical texts
 * give identical vectors, and texts that share a word are closer than texts that share none (measured on
 * all two-word texts over 8 words: cosine ~0.5 vs ~0, ranked right in >98% of triples at dim 32, all
 * or nearly all at dim 48-64).
 *
 * Tensor names and hparams follow llama.cpp's LLM_ARCH_BERT loader (src/models/bert.cpp).
 */
export async function writeSyntheticBert(opts: SyntheticBertOptions): Promise<SyntheticBertResult> {
  const nLayers = opts.nLayers ?? 2;
  const dim = opts.dim ?? 32;
  const ffnDim = opts.ffnDim ?? 2 * dim;
  const nHeads = opts.nHeads ?? Math.max(1, Math.floor(dim / 16));
  const ctx = opts.ctx ?? 512;
  const type = opts.type ?? "F32";
  const hfVocab = opts.vocab ?? buildBertVocab();
  for (const [k, v] of Object.entries({ nLayers, dim, ffnDim, nHeads, ctx })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer (got ${v})`);
  }
  if (dim % nHeads !== 0) throw new Error(`dim ${dim} not divisible by nHeads ${nHeads}`);
  if (type !== "F32" && type !== "F16") throw new Error(`unsupported type ${String(type)}`);
  if (new Set(hfVocab).size !== hfVocab.length) throw new Error("vocab has duplicate tokens");
  const idOf = (t: string): number => {
    const i = hfVocab.indexOf(t);
    if (i < 0) throw new Error(`vocab lacks ${t}`);
    return i;
  };
  const [pad, unk, cls, sep, mask] = BERT_SPECIALS.map(idOf) as [number, number, number, number, number];
  const control = new Set([pad, unk, cls, sep, mask]);
  const tokens = hfVocab.map((t, i) => bertPhantom(t, control.has(i)));
  if (new Set(tokens).size !== tokens.length) throw new Error("vocab has tokens that collide in llama.cpp's phantom-space form");
  const tokenTypes = hfVocab.map((_, i) => (control.has(i) ? TOKEN_TYPE_CONTROL : TOKEN_TYPE_NORMAL));
  const nVocab = tokens.length;
  const nTokenTypes = 2;

  const rng = new XorShift128(opts.seed ?? 1);
  const scratch = new Uint32Array(1 << 16);
  /** Uniform in ±amp. */
  const uniform = (n: number, amp: number): Float32Array => {
    const out = new Float32Array(n);
    const k = (2 * amp) / 4294967296;
    for (let i = 0; i < n; i += scratch.length) {
      const m = Math.min(scratch.length, n - i);
      const words = scratch.subarray(0, m);
      rng.fill(words);
      for (let j = 0; j < m; j++) out[i + j] = (words[j] ?? 0) * k - amp;
    }
    return out;
  };
  const filled = (n: number, v: number): Float32Array => new Float32Array(n).fill(v);
  // std = 0.5/sqrt(fan_in) for the blocks: their output stays small beside the unit-variance residual.
  const amp = (fanIn: number): number => Math.sqrt(3) * (0.5 / Math.sqrt(fanIn));
  const biasAmp = 0.02;

  const tensors: BertTensor[] = [];
  const add = (name: string, ne: number[], data: Float32Array, big = false): void => {
    tensors.push({ name, ne, type: big ? type : "F32", data, offset: 0, nBytes: 0 });
  };

  const tokEmbd = uniform(dim * nVocab, Math.sqrt(3)); // unit variance rows
  for (const id of control) tokEmbd.fill(0, id * dim, (id + 1) * dim);
  add("token_embd.weight", [dim, nVocab], tokEmbd, true);
  add("token_types.weight", [dim, nTokenTypes], filled(dim * nTokenTypes, 0));
  add("position_embd.weight", [dim, ctx], filled(dim * ctx, 0));
  add("token_embd_norm.weight", [dim], filled(dim, 1));
  add("token_embd_norm.bias", [dim], filled(dim, 0));
  for (let l = 0; l < nLayers; l++) {
    for (const m of ["attn_q", "attn_k", "attn_v"]) {
      add(`blk.${l}.${m}.weight`, [dim, dim], uniform(dim * dim, amp(dim)), true);
      add(`blk.${l}.${m}.bias`, [dim], uniform(dim, biasAmp));
    }
    add(`blk.${l}.attn_output.weight`, [dim, dim], uniform(dim * dim, amp(dim)), true);
    add(`blk.${l}.attn_output.bias`, [dim], uniform(dim, biasAmp));
    add(`blk.${l}.attn_output_norm.weight`, [dim], filled(dim, 1));
    add(`blk.${l}.attn_output_norm.bias`, [dim], filled(dim, 0));
    add(`blk.${l}.ffn_up.weight`, [dim, ffnDim], uniform(dim * ffnDim, amp(dim)), true);
    add(`blk.${l}.ffn_up.bias`, [ffnDim], uniform(ffnDim, biasAmp));
    add(`blk.${l}.ffn_down.weight`, [ffnDim, dim], uniform(ffnDim * dim, amp(ffnDim)), true);
    add(`blk.${l}.ffn_down.bias`, [dim], uniform(dim, biasAmp));
    add(`blk.${l}.layer_output_norm.weight`, [dim], filled(dim, 1));
    add(`blk.${l}.layer_output_norm.bias`, [dim], filled(dim, 0));
  }
  let off = 0;
  let params = 0;
  for (const t of tensors) {
    t.nBytes = tensorBytes(t.type, t.data.length);
    t.offset = off;
    off = alignUp(off + t.nBytes, GGUF_ALIGNMENT);
    params += t.data.length;
  }

  const kvs: [string, KvValue][] = [
    ["general.architecture", { t: "str", v: "bert" }],
    ["general.name", { t: "str", v: `synthetic-bert-${formatParams(params)}-${type}` }],
    ["general.file_type", { t: "u32", v: FILE_TYPE[type] }],
    ["general.alignment", { t: "u32", v: GGUF_ALIGNMENT }],
    ["bert.context_length", { t: "u32", v: ctx }],
    ["bert.embedding_length", { t: "u32", v: dim }],
    ["bert.feed_forward_length", { t: "u32", v: ffnDim }],
    ["bert.block_count", { t: "u32", v: nLayers }],
    ["bert.attention.head_count", { t: "u32", v: nHeads }],
    // Real BERTs use 1e-12. With 1, LayerNorm leaves the near-zero [CLS]/[SEP] states small instead of
    // blowing them up to unit scale, so the mean-pooled vector is dominated by the text's words.
    ["bert.attention.layer_norm_epsilon", { t: "f32", v: 1 }],
    ["bert.attention.causal", { t: "bool", v: false }],
    ["bert.pooling_type", { t: "u32", v: 1 }], // LLAMA_POOLING_TYPE_MEAN
    ["tokenizer.ggml.model", { t: "str", v: "bert" }],
    ["tokenizer.ggml.token_type_count", { t: "u32", v: nTokenTypes }],
    ["tokenizer.ggml.tokens", { t: "arr_str", v: tokens }],
    ["tokenizer.ggml.token_type", { t: "arr_i32", v: tokenTypes }],
    // llama.cpp reads the sequence start from bos_token_id (cls_token_id is informational).
    ["tokenizer.ggml.bos_token_id", { t: "u32", v: cls }],
    ["tokenizer.ggml.cls_token_id", { t: "u32", v: cls }],
    ["tokenizer.ggml.seperator_token_id", { t: "u32", v: sep }], // sic: llama.cpp's key spelling
    ["tokenizer.ggml.unknown_token_id", { t: "u32", v: unk }],
    ["tokenizer.ggml.padding_token_id", { t: "u32", v: pad }],
    ["tokenizer.ggml.mask_token_id", { t: "u32", v: mask }],
    ["tokenizer.ggml.add_bos_token", { t: "bool", v: true }],
    ["tokenizer.ggml.add_sep_token", { t: "bool", v: true }],
  ];

  const w = new ByteWriter();
  w.u32(0x46554747); // "GGUF"
  w.u32(3);
  w.u64(tensors.length);
  w.u64(kvs.length);
  for (const [k, v] of kvs) writeKv(w, k, v);
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.ne.length);
    for (const n of t.ne) w.u64(n);
    w.u32(GGML_TYPE[t.type]);
    w.u64(t.offset);
  }
  w.zeros(alignUp(w.length, GGUF_ALIGNMENT) - w.length);
  const header = w.toBuffer();

  const file = Buffer.alloc(header.length + off);
  header.copy(file, 0);
  for (const t of tensors) {
    const at = header.length + t.offset;
    if (t.type === "F32") {
      for (let i = 0; i < t.data.length; i++) file.writeFloatLE(t.data[i] ?? 0, at + 4 * i);
    } else {
      for (let i = 0; i < t.data.length; i++) file.writeUInt16LE(f32ToF16Bits(t.data[i] ?? 0), at + 2 * i);
    }
  }
  const last = tensors[tensors.length - 1];
  const bytes = last ? header.length + last.offset + last.nBytes : header.length;
  const path = resolve(opts.path);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, file.subarray(0, bytes));
  return { path, bytes, params, dim, vocabSize: nVocab };
}

// ---------------------------------------------------------------------------------------------
// Optional: load with node-llama-cpp and measure decode speed
// ---------------------------------------------------------------------------------------------

export interface DecodeBenchResult {
  loadMs: number;
  contextMs: number;
  tokens: number;
  /** decode tokens/s, excluding the first evaluation */
  tokPerSec: number;
  text: string;
}

export async function benchDecode(modelPath: string, opts: { tokens?: number; threads?: number; contextSize?: number } = {}): Promise<DecodeBenchResult> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const t1 = performance.now();
  const context = await model.createContext({ contextSize: opts.contextSize ?? 512, threads: opts.threads ?? 1 });
  const t2 = performance.now();
  try {
    const seq = context.getSequence();
    const bos = model.tokens.bos;
    if (bos === null) throw new Error("model has no BOS token");
    const want = opts.tokens ?? 32;
    const out: Token[] = [];
    let tFirst = 0;
    for await (const tok of seq.evaluate([bos], { temperature: 0 })) {
      if (out.length === 0) tFirst = performance.now();
      out.push(tok);
      if (out.length >= want) break;
    }
    const tEnd = performance.now();
    const decoded = out.length - 1;
    return {
      loadMs: t1 - t0,
      contextMs: t2 - t1,
      tokens: out.length,
      tokPerSec: decoded > 0 ? (decoded * 1000) / (tEnd - tFirst) : 0,
      text: model.detokenize(out),
    };
  } finally {
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

function parseArgs(argv: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf("=");
    if (eq > 0) m.set(a.slice(2, eq), a.slice(eq + 1));
    else {
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith("--")) {
        m.set(a.slice(2), next);
        i++;
      } else m.set(a.slice(2), "");
    }
  }
  return m;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.has("help")) {
    console.log(
      "usage: node --import tsx bench/synthetic-gguf.ts --params 0.8e9 --type Q8_0|F16|F32 [--out FILE]\n" +
        "  [--layers N] [--dim N] [--ffn N] [--heads N] [--kv-heads N] [--vocab N] [--ctx N] [--seed N]\n" +
        "  [--chat qwen25|chatml]  write that chat template, <|im_start|>/<|im_end|> control tokens, EOS <|im_end|>\n" +
        "  [--verify [TOKENS]]  load with node-llama-cpp (1 thread) and measure decode tok/s",
    );
    return;
  }
  const num = (k: string): number | undefined => {
    const v = args.get(k);
    if (v === undefined || v === "") return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`--${k}: not a number: ${v}`);
    return n;
  };
  const type = (args.get("type") ?? "Q8_0").toUpperCase() as SyntheticWeightType;
  if (!["Q8_0", "F16", "F32"].includes(type)) throw new Error(`--type must be Q8_0, F16 or F32`);
  const targetParams = num("params") ?? 0.8e9;
  const out = args.get("out") || `bench/models/synth-${formatParams(targetParams).toLowerCase()}-${type.toLowerCase()}.gguf`;
  const chat = args.get("chat");
  if (chat !== undefined && chat !== "qwen25" && chat !== "chatml") throw new Error("--chat must be qwen25 or chatml");
  const chatOptions: Partial<SyntheticLlamaOptions> = chat
    ? { chatTemplate: chat === "qwen25" ? QWEN25_CHAT_TEMPLATE : CHATML_TEMPLATE, specialTokens: [...CHATML_SPECIAL_TOKENS], eosToken: "<|im_end|>" }
    : {};
  const t0 = performance.now();
  const res = await writeSyntheticLlama({
    ...chatOptions,
    path: out,
    targetParams,
    nLayers: num("layers"),
    dim: num("dim"),
    ffnDim: num("ffn"),
    nHeads: num("heads"),
    nKvHeads: num("kv-heads"),
    vocabSize: num("vocab"),
    ctx: num("ctx"),
    seed: num("seed"),
    type,
  });
  const dims = resolveDims({
    targetParams,
    nLayers: num("layers"),
    dim: num("dim"),
    ffnDim: num("ffn"),
    nHeads: num("heads"),
    nKvHeads: num("kv-heads"),
    vocabSize: num("vocab"),
    ctx: num("ctx"),
  });
  console.log(
    JSON.stringify(
      { ...res, dims, type, writeSeconds: +((performance.now() - t0) / 1000).toFixed(2), gib: +(res.bytes / 2 ** 30).toFixed(3) },
      null,
      2,
    ),
  );
  if (args.has("verify")) {
    const tokens = num("verify") ?? 32;
    const b = await benchDecode(res.path, { tokens, threads: 1 });
    console.log(
      JSON.stringify(
        {
          loadMs: Math.round(b.loadMs),
          contextMs: Math.round(b.contextMs),
          tokens: b.tokens,
          decodeTokPerSec: +b.tokPerSec.toFixed(2),
          effectiveGBps: +((b.tokPerSec * res.bytesPerToken) / 1e9).toFixed(2),
          sample: b.text.slice(0, 120),
        },
        null,
        2,
      ),
    );
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
