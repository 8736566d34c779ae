import { allowsModel, type Limiter, type Principal } from "../accounts/index.js";
import type { ModelStore } from "../catalog/store.js";
import type { ModelInfo, Task } from "../catalog/types.js";
import type { EmbeddingResult, GenerationRequest, GenerationResult, LoadedModel } from "../engines/contract.js";
import type { Batcher } from "../scheduler/batcher.js";
import { isInferTask } from "../tasks/index.js";
import type { TaskInput, TaskOutput } from "../tasks/types.js";
import { BordeError } from "../errors.js";
import type { Logger, Metrics } from "../observability/index.js";
import type { CpuClock } from "../metering/cpu.js";
import type { Meter } from "../metering/meter.js";
import { unitOf } from "../metering/prices.js";
import type { UsageFacts } from "../metering/types.js";
import type { Scheduler } from "../scheduler/index.js";

/**
 * The one internal call. Both API flavours (Workers AI, OpenAI) and later the workers' `env.AI`
 * binding come through here: resolve the model, check the token may use it, admit it on the
 * account's limits, let the scheduler run it, and leave what it used on the call for the meter.
 */
export interface CallContext {
  requestId: string;
  principal: Principal;
  /** Deadline and client disconnect together. */
  signal: AbortSignal;
  /** Set when the model answered: what the meter turns into a usage record. */
  usage?: UsageFacts;
  committed?: boolean;
  /** Frees the request id's reservation; the API calls it once the record is written (or not). */
  release?: () => void;
  /** Jurisdiction the call must be served in (header or account setting); null/absent = anywhere. */
  jurisdiction?: string | null;
  /** Set when another PoP or an upstream served the call: its name (`borde-served-by`). */
  servedBy?: string;
}

/** One model call in a form that can run here or travel to another PoP. */
export type ModelCall = { kind: "generate"; request: GenerationRequest } | { kind: "embed"; texts: string[] } | { kind: "infer"; input: TaskInput };

type CallResultOf = GenerationResult | EmbeddingResult | TaskOutput;

/** What a call gave, with its billing units; `remote` when it ran elsewhere. */
export interface RunOutcome<T = CallResultOf> {
  result: T;
  input: number;
  output: number;
  remote?: { servedBy: string; cpuMs: number };
}

/** The network's part (cluster mode): whether a call goes elsewhere, and taking it there. */
export interface Router {
  /** Resolves a model this node does not have but the network (a PoP, an upstream) serves. */
  lookup(modelId: string): ModelInfo | null;
  /**
   * `here`: this PoP serves it; `elsewhere`: it does not (or not in the allowed jurisdiction);
   * `busy`: it does but is at capacity, so another place takes it if there is one.
   */
  where(ctx: CallContext, info: ModelInfo): "here" | "elsewhere" | "busy";
  /** Runs a call on this PoP, counted against its capacity. */
  here<T>(run: () => Promise<T>): Promise<T>;
  forward(ctx: CallContext, info: ModelInfo, call: ModelCall, onText?: (text: string) => void): Promise<RunOutcome>;
}

export interface InferenceOptions {
  store: ModelStore;
  scheduler: Scheduler;
  metrics: Metrics;
  logger: Logger;
  /** Idempotency of request ids and the daily counters; absent = nothing is metered. */
  meter?: Meter;
  limiter?: Limiter;
  cpu: CpuClock;
  /** Cluster mode: places calls on other PoPs or upstreams. */
  router?: Router;
  /** Groups concurrent embeddings and classification requests into one forward pass. */
  batcher: Batcher;
  /** Pull catalog models on first use instead of answering 5007. */
  autoPull?: (id: string) => Promise<void>;
}

export class InferenceService {
  constructor(private readonly o: InferenceOptions) {}

  /** `signal` bounds the wait for an auto-pull (the download itself goes on for other requests). */
  async resolve(modelId: string, signal?: AbortSignal): Promise<ModelInfo> {
    try {
      return await this.o.store.resolve(modelId);
    } catch (e) {
      const remote = e instanceof BordeError && e.kind === "NoSuchModel" ? this.o.router?.lookup(modelId) : null;
      if (remote) return remote;
      const entry = this.o.store.catalogEntry(modelId);
      if (!(e instanceof BordeError && e.kind === "NoSuchModel" && entry && this.o.autoPull)) throw e;
      this.o.logger.info({ model: modelId }, "auto-pulling model");
      await untilAborted(this.o.autoPull(modelId), signal);
      return this.o.store.resolve(modelId);
    }
  }

  /** `model` is an id, or a ModelInfo the caller already resolved (saves a second look-up). */
  async generate(ctx: CallContext, model: string | ModelInfo, request: GenerationRequest, onText?: (text: string) => void): Promise<GenerationResult> {
    const info = typeof model === "string" ? await this.resolve(model, ctx.signal) : model;
    // Any GGUF llama can embed, so embeddings are allowed on generators too; the reverse is not.
    if (info.task !== "text-generation") throw wrongTask(info, "text-generation");
    const result = (await this.dispatch(ctx, info, "text-generation", { kind: "generate", request }, onText)) as GenerationResult;
    // A deadline that fired mid-generation surfaces as an error, not as a short answer.
    if (result.finishReason === "abort" && ctx.signal.aborted) throw ctx.signal.reason;
    return result;
  }

  async embed(ctx: CallContext, model: string | ModelInfo, texts: string[]): Promise<EmbeddingResult> {
    const info = typeof model === "string" ? await this.resolve(model, ctx.signal) : model;
    // Any llama can embed: the call is an embeddings call, limited and billed as one, whatever the
    // model's own task. Other engines embed only with embedding models.
    if (info.engine !== "llama" && info.task !== "text-embeddings") throw wrongTask(info, "text-embeddings");
    return (await this.dispatch(ctx, info, "text-embeddings", { kind: "embed", texts })) as EmbeddingResult;
  }

  /**
   * Every task other than text generation and embeddings. `input` is decoded and validated, or a
   * function that decodes it: then it runs only once the call is admitted, so a refused caller
   * (rate limit, budget, reused id) costs no image or audio decoding.
   */
  async infer(ctx: CallContext, info: ModelInfo, input: TaskInput | (() => Promise<TaskInput>)): Promise<TaskOutput> {
    if (typeof input !== "function" && info.task !== input.task) throw wrongTask(info, input.task);
    if (!isInferTask(info.task)) throw wrongTask(info, "a task other than text generation and embeddings");
    const call = async (): Promise<ModelCall> => ({ kind: "infer", input: typeof input === "function" ? await input() : input });
    return (await this.dispatch(ctx, info, info.task, call)) as TaskOutput;
  }

  /**
   * Runs a call on this node's engines, with no account checks: the node that took the request
   * (this one, or another PoP that forwarded it here) has done those and meters it.
   */
  async runLocal(info: ModelInfo, call: ModelCall, signal: AbortSignal, onText?: (text: string) => void): Promise<RunOutcome> {
    const started = performance.now();
    switch (call.kind) {
      case "generate": {
        let first = true;
        const result = await this.o.scheduler.run(info, signal, (model, s) =>
          need(model, "generate", info).call(model, call.request, {
            signal: s,
            onText: (text) => {
              if (first) {
                first = false;
                this.o.metrics.ttft.observe({ model: info.id }, (performance.now() - started) / 1000);
              }
              onText?.(text);
            },
          }),
        );
        return { result, input: result.usage.prompt_tokens, output: result.usage.completion_tokens };
      }
      case "embed": {
        const result = await this.o.batcher.submit<string[], EmbeddingResult>(info, "embed", call.texts, signal, (model, batches, s) => embedBatch(model, info, batches, s));
        return { result, input: result.promptTokens, output: 0 };
      }
      case "infer": {
        const result = await this.o.batcher.submit<TaskInput, TaskOutput>(info, "infer", call.input, signal, (model, inputs, s) =>
          need(model, "infer", info).call(model, inputs, { signal: s }),
        );
        return { result, ...unitsOf(call.input, result) };
      }
    }
  }

  /** Here, or where the network places it (another PoP, the core, an upstream provider). */
  private dispatch(ctx: CallContext, info: ModelInfo, task: Task, prepare: ModelCall | (() => Promise<ModelCall>), onText?: (text: string) => void): Promise<CallResultOf> {
    const router = this.o.router;
    return this.metered(ctx, info, task, async () => {
      // Prepared (media decoded) only now, after the account's limits admitted the call.
      const call = typeof prepare === "function" ? await prepare() : prepare;
      const local = () => this.runLocal(info, call, ctx.signal, onText);
      if (!router) return local();
      const where = router.where(ctx, info);
      if (where === "here") return router.here(local);
      try {
        return await router.forward(ctx, info, call, onText);
      } catch (e) {
        // At capacity and no other place free: wait here after all, like a single node would.
        if (where === "busy" && e instanceof BordeError && e.kind === "NoLivePlace") return router.here(local);
        throw e;
      }
    });
  }

  /**
   * Runs one model call on the caller's behalf: token restrictions, the request id's idempotency,
   * the account's limits, and the CPU and wall time it used, left on `ctx.usage` for the meter.
   */
  private async metered<T>(ctx: CallContext, info: ModelInfo, task: Task, run: () => Promise<RunOutcome<T>>): Promise<T> {
    const p = ctx.principal;
    if (!allowsModel(p, info.id)) throw new BordeError("Forbidden", `Forbidden: this token may not use model ${info.id}`);
    const release = this.o.meter?.claim(p.accountId, ctx.requestId);
    let admitted;
    try {
      admitted = this.o.limiter?.admit(p, task);
    } catch (e) {
      release?.();
      throw e;
    }
    const stopCpu = this.o.cpu.start();
    const started = performance.now();
    let tokens = 0;
    let value: T;
    try {
      const { result, input, output, remote } = await run();
      tokens = input + output;
      this.o.metrics.tokens.inc({ model: info.id, direction: "in" }, input);
      if (output) this.o.metrics.tokens.inc({ model: info.id, direction: "out" }, output);
      // Served elsewhere: the CPU was spent there (and reported back), not here.
      const cpuMs = remote ? (stopCpu(), remote.cpuMs) : stopCpu();
      ctx.usage = { model: info.id, task, unit: unitOf(task), inputUnits: input, outputUnits: output, cpuMs, wallMs: performance.now() - started };
      if (remote) ctx.servedBy = remote.servedBy;
      value = result;
    } catch (e) {
      release?.();
      throw e;
    } finally {
      stopCpu();
      admitted?.done(tokens);
    }
    // An answered call keeps its id reserved until the API has written its record (then the
    // ledger answers for it) or given up on it.
    if (release) ctx.release = release;
    return value;
  }
}

function wrongTask(info: ModelInfo, task: string): BordeError {
  return new BordeError("NoSuchModel", `No such model ${info.id} or task: it is a ${info.task} model, not ${task}`);
}

/** The model's call for a task, or a 5007 when its engine does not offer it. */
function need<K extends "generate" | "embed" | "infer">(model: LoadedModel, call: K, info: ModelInfo): NonNullable<LoadedModel[K]> {
  const fn = model[call];
  if (!fn) throw new BordeError("NoSuchModel", `No such model ${info.id} or task: the ${info.engine} engine cannot ${call} with it`);
  return fn as NonNullable<LoadedModel[K]>;
}

/**
 * Embeds several requests' texts in one engine call and splits the vectors back. Engines report one
 * token total per call, so each request is billed its share by characters (exact when alone).
 */
async function embedBatch(model: LoadedModel, info: ModelInfo, batches: string[][], signal: AbortSignal): Promise<EmbeddingResult[]> {
  const embed = need(model, "embed", info);
  const all = await embed.call(model, batches.flat(), { signal });
  if (batches.length === 1) return [all];
  const chars = batches.map((b) => b.reduce((n, t) => n + t.length, 0));
  const totalChars = chars.reduce((a, b) => a + b, 0) || 1;
  let offset = 0;
  let tokensLeft = all.promptTokens;
  return batches.map((b, i) => {
    const vectors = all.vectors.slice(offset, offset + b.length);
    offset += b.length;
    const share = i === batches.length - 1 ? tokensLeft : Math.round((all.promptTokens * chars[i]!) / totalChars);
    tokensLeft -= share;
    return { vectors, promptTokens: share, pooling: all.pooling };
  });
}

/**
 * Billing units of a task call: images count 1, audio its seconds, text its length in tokens
 * estimated at 4 characters each (these engines do not all tokenise, and the estimate is the same
 * whichever engine answers).
 */
function unitsOf(input: TaskInput, output: unknown): { input: number; output: number } {
  const tokens = (s: string) => Math.ceil(s.length / 4);
  switch (input.task) {
    case "image-classification":
    case "object-detection":
    case "image-to-text":
      return { input: 1, output: 0 };
    case "automatic-speech-recognition":
    case "voice-activity-detection":
      return { input: Math.round((input.audio.samples.length / input.audio.sampleRate) * 1000) / 1000, output: 0 };
    case "text-classification":
      return { input: tokens(input.text), output: 0 };
    case "translation":
      return { input: tokens(input.text), output: tokens((output as TaskOutput<"translation">).translated_text) };
    case "summarization":
      return { input: tokens(input.text), output: tokens((output as TaskOutput<"summarization">).summary) };
  }
}

function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(abortError(signal.reason));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal.reason));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Abort reasons from platform signals (AbortSignal.timeout, a closed request) as catalog errors. */
function abortError(reason: unknown): BordeError {
  if (reason instanceof BordeError) return reason;
  if (reason instanceof Error && reason.name === "TimeoutError") return new BordeError("Timeout", "Request timeout: the model was still being pulled");
  return new BordeError("Aborted", "Request was aborted by the client");
}
