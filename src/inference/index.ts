import type { Principal } from "../accounts/index.js";
import type { ModelStore } from "../catalog/store.js";
import type { ModelInfo, Task } from "../catalog/types.js";
import type { EmbeddingResult, GenerationRequest, GenerationResult } from "../engines/contract.js";
import { BordeError } from "../errors.js";
import type { Logger, Metrics } from "../observability/index.js";
import type { Scheduler } from "../scheduler/index.js";

/**
 * The one internal call. Both API flavours (Workers AI, OpenAI) and later the workers' `env.AI`
 * binding come through here: resolve the model, check its task, let the scheduler run it, count.
 */
export interface UsageRecord {
  requestId: string;
  principal: Principal;
  model: string;
  task: Task;
  promptTokens: number;
  completionTokens: number;
  wallMs: number;
}

/** Seam for metering (a later issue): called once per answered request. */
export interface UsageSink {
  record(usage: UsageRecord): void;
}

export interface CallContext {
  requestId: string;
  principal: Principal;
  /** Deadline and client disconnect together. */
  signal: AbortSignal;
}

export interface InferenceOptions {
  store: ModelStore;
  scheduler: Scheduler;
  metrics: Metrics;
  logger: Logger;
  usage?: UsageSink;
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
    const started = performance.now();
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
    this.count(ctx, info, result.usage.prompt_tokens, result.usage.completion_tokens, started);
    return result;
  }

  async embed(ctx: CallContext, model: string | ModelInfo, texts: string[]): Promise<EmbeddingResult> {
    const info = typeof model === "string" ? await this.resolve(model, ctx.signal) : model;
    const started = performance.now();
    const result = await this.o.scheduler.run(info, ctx.signal, (model, signal) => model.embed(texts, { signal }));
    this.count(ctx, info, result.promptTokens, 0, started);
    return result;
  }

  private count(ctx: CallContext, info: ModelInfo, promptTokens: number, completionTokens: number, started: number): void {
    this.o.metrics.tokens.inc({ model: info.id, direction: "in" }, promptTokens);
    if (completionTokens) this.o.metrics.tokens.inc({ model: info.id, direction: "out" }, completionTokens);
    this.o.usage?.record({
      requestId: ctx.requestId,
      principal: ctx.principal,
      model: info.id,
      task: info.task,
      promptTokens,
      completionTokens,
      wallMs: performance.now() - started,
    });
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
