import { allowsModel, type Limiter, type Principal } from "../accounts/index.js";
import type { ModelStore } from "../catalog/store.js";
import type { ModelInfo, Task } from "../catalog/types.js";
import type { EmbeddingResult, GenerationRequest, GenerationResult } from "../engines/contract.js";
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
    if (info.task !== "text-generation") throw new BordeError("NoSuchModel", `No such model ${info.id} or task: it is a ${info.task} model, not text-generation`);
    const modelId = info.id;
    return this.metered(ctx, info, "text-generation", async (started) => {
      let first = true;
      const result = await this.o.scheduler.run(info, ctx.signal, (model, signal) =>
        model.generate(request, {
          signal,
          onText: (text) => {
            if (first) {
              first = false;
              this.o.metrics.ttft.observe({ model: modelId }, (performance.now() - started) / 1000);
            }
            onText?.(text);
          },
        }),
      );
      // A deadline that fired mid-generation surfaces as an error, not as a short answer.
      if (result.finishReason === "abort" && ctx.signal.aborted) throw ctx.signal.reason;
      return { result, input: result.usage.prompt_tokens, output: result.usage.completion_tokens };
    });
  }

  async embed(ctx: CallContext, model: string | ModelInfo, texts: string[]): Promise<EmbeddingResult> {
    const info = typeof model === "string" ? await this.resolve(model, ctx.signal) : model;
    // Any llama can embed: the call is an embeddings call, limited and billed as one, whatever the model's own task.
    return this.metered(ctx, info, "text-embeddings", async () => {
      const result = await this.o.scheduler.run(info, ctx.signal, (model, signal) => model.embed(texts, { signal }));
      return { result, input: result.promptTokens, output: 0 };
    });
  }

  /**
   * Runs one model call on the caller's behalf: token restrictions, the request id's idempotency,
   * the account's limits, and the CPU and wall time it used, left on `ctx.usage` for the meter.
   */
  private async metered<T>(ctx: CallContext, info: ModelInfo, task: Task, run: (started: number) => Promise<{ result: T; input: number; output: number }>): Promise<T> {
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
      const { result, input, output } = await run(started);
      tokens = input + output;
      this.o.metrics.tokens.inc({ model: info.id, direction: "in" }, input);
      if (output) this.o.metrics.tokens.inc({ model: info.id, direction: "out" }, output);
      ctx.usage = { model: info.id, task, unit: unitOf(task), inputUnits: input, outputUnits: output, cpuMs: stopCpu(), wallMs: performance.now() - started };
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
