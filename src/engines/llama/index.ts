import {
  getLlama,
  GgufInsights,
  LlamaChat,
  LlamaCompletion,
  readGgufFileInfo,
  type ChatHistoryItem,
  type ChatModelFunctions,
  type ChatModelResponse,
  type GgufFileInfo,
  type Llama,
  type LlamaContext,
  type LlamaEmbeddingContext,
  type LlamaGrammar,
  type LlamaModel,
  type Token,
  TokenBias,
} from "node-llama-cpp";
import { randomUUID } from "node:crypto";
import type { Task } from "../../catalog/types.js";
import { BordeError } from "../../errors.js";
import type {
  ChatMessage,
  EmbeddingResult,
  Engine,
  GenerateOptions,
  GenerationRequest,
  GenerationResult,
  LoadedModel,
  ModelSpec,
  ResponseFormat,
  ToolCall,
} from "../contract.js";
import { Mutex } from "../../util/mutex.js";

export interface LlamaEngineOptions {
  /** Threads shared by every context of this engine (llama.cpp's `maxThreads`); never more than free cores. */
  threads: number;
  /** Sequences per text-generation context: how many requests one loaded model serves at once. */
  parallel: number;
  /** Context tokens per sequence, capped by the model's training context. */
  contextSize: number;
}

/** Architectures whose GGUF files are embedding models (they have no generation head worth serving). */
const EMBEDDING_ARCHS = new Set(["bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert", "t5encoder"]);

/**
 * The metadata Borde reads, in one place: node-llama-cpp types GGUF metadata per architecture, and
 * the keys that matter here live under `<arch>.*` and `tokenizer.*` whatever the architecture.
 */
function ggufFacts(info: GgufFileInfo) {
  const md = info.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
  const arch = String(md.general?.architecture ?? "");
  const archMd = md[arch] ?? {};
  const tokenizer = md.tokenizer as { chat_template?: unknown; ggml?: { tokens?: unknown[] } } | undefined;
  const trainContext = archMd.context_length;
  const pooling = archMd.pooling_type;
  return {
    arch,
    task: (EMBEDDING_ARCHS.has(arch) || (pooling !== undefined && archMd.causal_attention === false) ? "text-embeddings" : "text-generation") as Task,
    trainContext: typeof trainContext === "number" && trainContext > 0 ? trainContext : undefined,
    /** llama.cpp pools by `<arch>.pooling_type` (1 mean, 2 cls, 3 last); without one it returns the last token's state. */
    pooling: (pooling === 1 ? "mean" : pooling === 2 ? "cls" : "last") as EmbeddingResult["pooling"],
    hasChatTemplate: typeof tokenizer?.chat_template === "string" && tokenizer.chat_template.length > 0,
    vocabSize: Array.isArray(tokenizer?.ggml?.tokens) ? tokenizer.ggml.tokens.length : 0,
  };
}

/** Reads a GGUF header and tells its task, without loading the engine. */
export async function inspectGguf(path: string): Promise<{ task: Task; engine: "llama" }> {
  const info = await readGgufFileInfo(path, { readTensorInfo: false, logWarnings: false });
  return { task: ggufFacts(info).task, engine: "llama" };
}

export async function createLlamaEngine(options: LlamaEngineOptions): Promise<Engine> {
  // build:"never" loads the prebuilt CPU binary shipped in the npm package: nothing compiles or downloads.
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: options.threads, logLevel: "error" as never });
  return new LlamaEngine(llama, options);
}

class LlamaEngine implements Engine {
  readonly name = "llama";
  constructor(
    private readonly llama: Llama,
    private readonly options: LlamaEngineOptions,
  ) {}

  private contextSizeFor(info: GgufFileInfo): number {
    const train = ggufFacts(info).trainContext;
    return Math.max(64, Math.min(this.options.contextSize, train ?? this.options.contextSize));
  }

  slotsFor(spec: ModelSpec): number {
    return spec.task === "text-generation" ? this.options.parallel : 1;
  }

  async estimateMemory(spec: ModelSpec): Promise<number> {
    return this.estimateFromInfo(spec, await readGgufFileInfo(spec.path, { logWarnings: false }));
  }

  /** Weights plus the context (KV cache for every sequence), from metadata already read. */
  private async estimateFromInfo(spec: ModelSpec, info: GgufFileInfo): Promise<number> {
    const insights = await GgufInsights.from(info, this.llama);
    const model = await insights.estimateModelResourceRequirementsV2({ gpuLayers: 0 });
    const ctx = await insights.estimateContextResourceRequirementsV2({
      contextSize: this.contextSizeFor(info),
      modelGpuLayers: 0,
      sequences: this.slotsFor(spec),
      isEmbeddingContext: spec.task === "text-embeddings",
    });
    return model.cpuRam + ctx.cpuRam;
  }

  async load(spec: ModelSpec): Promise<LoadedModel> {
    let model: LlamaModel;
    try {
      model = await this.llama.loadModel({ modelPath: spec.path, gpuLayers: 0 });
    } catch (cause) {
      throw new BordeError("ModelLoadFailed", `model ${spec.id} failed to load`, { cause });
    }
    // The loaded model's own metadata: no second read of the file.
    const memoryBytes = await this.estimateFromInfo(spec, model.fileInfo).catch(() => model.size);
    const contextSize = this.contextSizeFor(model.fileInfo);
    const slots = this.slotsFor(spec);
    let context: LlamaContext | null = null;
    if (spec.task === "text-generation") {
      try {
        context = await model.createContext({ contextSize, sequences: slots, threads: this.options.threads });
      } catch (cause) {
        await model.dispose(); // its weights would otherwise stay in memory, unaccounted
        throw new BordeError("ModelLoadFailed", `model ${spec.id} failed to load: no context of ${contextSize} tokens x ${slots} sequences could be created`, { cause });
      }
    }
    return new LlamaLoadedModel(this.llama, spec, model, context, contextSize, this.options.threads, memoryBytes, slots);
  }

  async dispose(): Promise<void> {
    await this.llama.dispose();
  }
}

class LlamaLoadedModel implements LoadedModel {
  private embeddingContext: Promise<LlamaEmbeddingContext> | null = null;
  private readonly embedLock = new Mutex();
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>();
  private closers: Token[] | null = null;
  private readonly facts: ReturnType<typeof ggufFacts>;

  constructor(
    private readonly llama: Llama,
    private readonly spec: ModelSpec,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext | null,
    private readonly contextSize: number,
    private readonly threads: number,
    readonly memoryBytes: number,
    readonly slots: number,
  ) {
    this.facts = ggufFacts(model.fileInfo);
  }

  get id(): string {
    return this.spec.id;
  }
  get task(): Task {
    return this.spec.task;
  }

  private tokenizeWithBos(text: string): Token[] {
    const bos = this.model.tokens.bos;
    const tokens = this.model.tokenize(text, false);
    // Match the reference implementations: a prompt starts with BOS when the model defines one.
    return bos !== null && this.model.tokens.shouldPrependBosToken ? [bos, ...tokens] : tokens;
  }

  private async grammarFor(format: ResponseFormat | undefined): Promise<LlamaGrammar | undefined> {
    if (!format || format.type === "text") return undefined;
    const key = format.type === "json_object" ? "json" : JSON.stringify(format.schema);
    let g = this.grammars.get(key);
    if (!g) {
      const base =
        format.type === "json_object"
          ? this.llama.getGrammarFor("json")
          : this.llama.createGrammarForJsonSchema(format.schema as never);
      g = base.then((b) =>
        this.llama.createGrammar({ grammar: finiteNumbers(b.grammar), stopGenerationTriggers: b.stopGenerationTriggers, trimWhitespaceSuffix: b.trimWhitespaceSuffix }),
      );
      g.catch(() => this.grammars.delete(key));
      if (this.grammars.size > 64) this.grammars.delete(this.grammars.keys().next().value!);
      this.grammars.set(key, g);
    }
    try {
      return await g;
    } catch (cause) {
      throw new BordeError("InvalidInput", `response_format: unsupported JSON schema (${errorText(cause)})`, { cause });
    }
  }

  /**
   * Tokens made only of JSON closing characters (`"`, `}`, `]`, `,`, spaces), found once per model.
   * Past the soft token limit they are strongly favoured, so the grammar steers the value to its
   * shortest valid completion instead of wandering on inside a string.
   */
  private closingTokens(): Token[] {
    if (this.closers) return this.closers;
    const out: Token[] = [];
    for (let t = 0; t < this.facts.vocabSize; t++) {
      const text = this.model.detokenize([t as Token]).trim();
      if (text.length > 0 && /^["}\]][\s"}\],]*$/.test(text)) out.push(t as Token);
    }
    this.closers = out;
    return out;
  }

  private softLimitBias(limit: number, generated: () => number): () => TokenBias {
    const idle = new TokenBias(this.model.tokenizer);
    let closing: TokenBias | null = null;
    return () => {
      if (generated() < limit) return idle;
      if (!closing) {
        closing = new TokenBias(this.model.tokenizer);
        for (const t of this.closingTokens()) closing.set(t, { logit: 50 });
      }
      return closing;
    };
  }

  /**
   * With a JSON grammar, `maxTokens` is a soft limit: generation goes on until the value is complete
   * (at most the context), because a JSON value cut at a token budget is invalid for every schema.
   */
  async generate(req: GenerationRequest, opts: GenerateOptions): Promise<GenerationResult> {
    if (req.tools?.length && req.toolChoice && req.toolChoice !== "auto") return this.forcedToolCall(req, opts);
    if (!this.context) throw new BordeError("NoSuchModel", `model ${this.id} is an embedding model; it does not generate text`);
    const hasTools = (req.tools?.length ?? 0) > 0;
    // With tools, the chat wrapper's function-calling grammar governs; a response_format is not applied.
    const grammar = hasTools ? undefined : await this.grammarFor(req.responseFormat);
    const useChat = hasTools || (req.messages !== undefined && !req.raw && this.facts.hasChatTemplate);
    const sequence = this.context.getSequence();
    // Generated tokens, counted as they come: drives the JSON soft limit (and usage on the plain path).
    let completionTokens = 0;
    try {
      const common = {
        signal: opts.signal,
        stopOnAbortSignal: true,
        maxTokens: req.maxTokens,
        temperature: req.temperature,
        topK: req.topK,
        topP: req.topP,
        seed: req.seed,
        // A stop string would cut a grammar-constrained value short of valid JSON, so JSON mode ignores it.
        customStopTriggers: !grammar && req.stop && req.stop.length > 0 ? req.stop : undefined,
        repeatPenalty:
          req.repetitionPenalty !== undefined || req.frequencyPenalty !== undefined || req.presencePenalty !== undefined
            ? { penalty: req.repetitionPenalty ?? 1, frequencyPenalty: req.frequencyPenalty, presencePenalty: req.presencePenalty }
            : (false as const),
        tokenBias: grammar ? this.softLimitBias(req.maxTokens, () => completionTokens) : undefined,
        onToken: (t: Token[]) => {
          completionTokens += t.length;
        },
        onTextChunk: opts.onText,
      };
      if (!useChat) {
        const promptText = req.prompt ?? renderPlain(req.messages ?? []);
        const input = this.tokenizeWithBos(promptText);
        if (input.length >= this.contextSize)
          throw new BordeError("InvalidInput", `prompt is ${input.length} tokens; this model's context holds ${this.contextSize}`);
        const completion = new LlamaCompletion({ contextSequence: sequence });
        const res = await completion.generateCompletionWithMeta(input, {
          ...common,
          maxTokens: grammar ? this.contextSize - input.length : Math.min(req.maxTokens, this.contextSize - input.length),
          grammar,
        });
        if (grammar && res.metadata.stopReason === "maxTokens") throw new BordeError("IncompleteOutput");
        return {
          text: res.response,
          toolCalls: [],
          usage: usage(input.length, completionTokens),
          finishReason: finishReason(res.metadata.stopReason, opts.signal),
        };
      }

      const chat = new LlamaChat({ contextSequence: sequence });
      const history = toHistory(req.messages ?? [{ role: "user", content: req.prompt ?? "" }]);
      const functions = req.tools?.length ? toFunctions(req.tools) : undefined;
      const res = await chat.generateResponse(history, {
        ...common,
        maxTokens: grammar ? this.contextSize : req.maxTokens,
        ...(functions ? { functions } : { grammar }),
      } as Parameters<LlamaChat["generateResponse"]>[1]);
      if (grammar && res.metadata.stopReason === "maxTokens") throw new BordeError("IncompleteOutput");
      const meter = sequence.tokenMeter.getState();
      const toolCalls: ToolCall[] = (res.functionCalls ?? []).map((c) => ({
        id: callId(),
        name: c.functionName,
        arguments: c.params ?? {},
      }));
      // node-llama-cpp meters a token as output whenever its logits are read: once per sampled token,
      // the first of them read on the prompt's last token. So prompt = input + 1, completion = output.
      // (onToken's count is not used here: it sees re-tokenised text and overcounts.)
      const sampled = meter.usedOutputTokens;
      const promptTokens = meter.usedInputTokens + (sampled > 0 ? 1 : 0);
      return {
        text: res.response,
        toolCalls,
        usage: usage(promptTokens, sampled),
        finishReason: toolCalls.length > 0 ? "tool_calls" : finishReason(res.metadata.stopReason, opts.signal),
      };
    } catch (e) {
      if (e instanceof BordeError) throw e;
      // The model's own function call failed node-llama-cpp's validation: an output failure, not the
      // caller's. (The class is not exported at run time; its name is what can be recognised.)
      if (e instanceof Error && e.constructor.name === "LlamaFunctionCallValidationError")
        throw new BordeError("IncompleteOutput", `The model produced an invalid function call (${errorText(e)})`, { cause: e });
      const msg = errorText(e);
      // node-llama-cpp reports an over-long chat (after trying to shift it) with this message: the caller's input.
      if (/did not return a history that fits the context size/.test(msg))
        throw new BordeError("InvalidInput", `input does not fit this model's context of ${this.contextSize} tokens`, { cause: e });
      // A tool schema node-llama-cpp cannot turn into a grammar is the caller's input too; other errors are ours.
      if (hasTools && e instanceof Error && !(e instanceof TypeError || e instanceof ReferenceError) && /schema|grammar|gbnf/i.test(msg))
        throw new BordeError("InvalidInput", `tools: unsupported parameters schema (${msg})`, { cause: e });
      throw e;
    } finally {
      // Awaited: llama.cpp frees the sequence asynchronously, and the scheduler hands this slot to the
      // next request as soon as we return — it must find the sequence free ("No sequences left" otherwise).
      await sequence.dispose();
    }
  }

  /** A call the caller demanded: `{name, arguments}` generated under a grammar, so both are valid. */
  private async forcedToolCall(req: GenerationRequest, opts: GenerateOptions): Promise<GenerationResult> {
    const choice = req.toolChoice;
    const tools = (req.tools ?? []).filter((t) => typeof choice !== "object" || t.name === choice.name);
    if (tools.length === 0) throw new BordeError("InvalidInput", "tool_choice names a function that is not in tools");
    const variants = tools.map((t) => ({
      type: "object",
      properties: { name: { const: t.name }, arguments: t.parameters },
      required: ["name", "arguments"],
    }));
    const schema = variants.length === 1 ? variants[0]! : { oneOf: variants };
    const instruction =
      "Call one of these functions. Reply with a JSON object {\"name\": ..., \"arguments\": ...}.\n" +
      tools.map((t) => JSON.stringify({ name: t.name, description: t.description, parameters: t.parameters })).join("\n");
    const messages: ChatMessage[] = req.messages ? [{ role: "system", content: instruction }, ...req.messages] : [
      { role: "system", content: instruction },
      { role: "user", content: req.prompt ?? "" },
    ];
    const inner = await this.generate(
      { ...req, prompt: undefined, messages, tools: undefined, toolChoice: undefined, stop: undefined, responseFormat: { type: "json_schema", schema } },
      { signal: opts.signal },
    );
    if (inner.finishReason === "abort") return inner;
    const call = JSON.parse(inner.text) as { name: string; arguments: unknown };
    return {
      text: "",
      toolCalls: [{ id: callId(), name: call.name, arguments: call.arguments }],
      usage: inner.usage,
      finishReason: "tool_calls",
    };
  }

  async embed(texts: string[], opts: { signal: AbortSignal }): Promise<EmbeddingResult> {
    if (!this.embeddingContext) {
      const created = this.model.createEmbeddingContext({ contextSize: this.contextSize, threads: this.threads });
      this.embeddingContext = created;
      created.catch(() => {
        if (this.embeddingContext === created) this.embeddingContext = null; // retry next time, don't cache a failure
      });
    }
    const ctx = await this.embeddingContext;
    // An embedding context evaluates one text at a time; callers queue here instead of racing.
    return this.embedLock.run(async () => {
      const vectors: number[][] = [];
      let promptTokens = 0;
      for (const text of texts) {
        if (opts.signal.aborted) throw opts.signal.reason;
        const tokens = this.model.tokenize(text, false).length;
        if (tokens + 2 > this.contextSize)
          throw new BordeError("InvalidInput", `text is ${tokens} tokens; this model's context holds ${this.contextSize}`);
        promptTokens += tokens;
        const emb = await ctx.getEmbeddingFor(text);
        vectors.push(normalize(emb.vector));
      }
      return { vectors, promptTokens, pooling: this.facts.pooling };
    });
  }

  async dispose(): Promise<void> {
    if (this.embeddingContext) await (await this.embeddingContext.catch(() => null))?.dispose();
    await this.context?.dispose();
    await this.model.dispose();
  }
}

/**
 * node-llama-cpp's number rules allow exponents of up to 16 digits (`7e4323707056546411`), which
 * JSON.parse turns into Infinity (sent on as null) — not a valid integer or number for any schema.
 * Integers lose the exponent (a negative one would make a fraction); other numbers keep two digits.
 */
export function finiteNumbers(grammar: string): string {
  return grammar
    .split("\n")
    .map((line) => {
      if (line.startsWith("integer-number-rule ::=")) return line.replace(/ \(\[eE\] \[-\+\]\? .*\)\?$/, "");
      return line.replace(/\[eE\] \[-\+\]\? (\("0" \| \[1-9\] \[0-9\]\{0,15\}\)|\[0-9\] \[1-9\]\{0,15\})/g, "[eE] [-+]? [0-9]{1,2}");
    })
    .join("\n");
}

function callId(): string {
  return `call_${randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

function usage(prompt: number, completion: number) {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function finishReason(stop: string, signal: AbortSignal): GenerationResult["finishReason"] {
  if (signal.aborted || stop === "abort") return "abort";
  return stop === "maxTokens" ? "length" : "stop";
}

function normalize(v: readonly number[]): number[] {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n) || 1;
  return v.map((x) => x / n);
}

/** A model without a chat template (or `raw`) completes the conversation as plain text. */
function renderPlain(messages: ChatMessage[]): string {
  return messages.map((m) => m.content).join("\n\n");
}

function toFunctions(tools: GenerationRequest["tools"] & object): ChatModelFunctions {
  const out: Record<string, { description?: string; params?: unknown }> = {};
  for (const t of tools) out[t.name] = { description: t.description || undefined, params: t.parameters };
  return out as ChatModelFunctions;
}

function toHistory(messages: ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  const results = new Map<string, string>();
  for (const m of messages) if (m.role === "tool" && m.toolCallId) results.set(m.toolCallId, m.content);
  for (const m of messages) {
    if (m.role === "system") history.push({ type: "system", text: m.content });
    else if (m.role === "user") history.push({ type: "user", text: m.content });
    else if (m.role === "assistant") {
      const response: ChatModelResponse["response"] = [];
      if (m.content) response.push(m.content);
      for (const c of m.toolCalls ?? [])
        response.push({ type: "functionCall", name: c.name, params: c.arguments as never, result: results.get(c.id) ?? "" });
      history.push({ type: "model", response });
    } else if (m.role === "tool" && !m.toolCallId) {
      // A tool result with no call id to attach it to: keep it as context the model can read.
      history.push({ type: "user", text: m.content });
    }
  }
  history.push({ type: "model", response: [] });
  return history;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message.split("\n")[0]! : String(e);
}
