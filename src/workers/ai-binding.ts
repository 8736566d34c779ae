import type { AccountStore, Principal } from "../accounts/index.js";
import { EmbeddingsInput, embeddingsResult, finalStreamEvent, textGenerationInput, textGenerationResult, toGenerationRequest } from "../api/workers-ai/convert.js";
import { SSE_DONE, sseData } from "../api/sse.js";
import { BordeError } from "../errors.js";
import type { CallContext, InferenceService } from "../inference/index.js";
import type { Meter } from "../metering/meter.js";
import type { AiBridge } from "./types.js";
import { decodeTaskInput, isInferTask, type DecodeLimits } from "../tasks/index.js";

export interface AiBindingOptions {
  inference: InferenceService;
  accounts: AccountStore;
  meter: Meter;
  maxTokensLimit: number;
  decodeLimits: DecodeLimits;
}

/**
 * `env.AI.run(...)` inside a worker, on the node's side: the same conversion, inference service,
 * limits and metering as `POST /ai/run/{model}`, on behalf of the worker's account. The principal
 * is the account itself (token id `worker:<name>`), so usage reports show which worker spent what.
 */
export function createAiBridge(o: AiBindingOptions): AiBridge {
  const textInput = textGenerationInput(o.maxTokensLimit);
  return {
    async run({ accountId, worker, requestId, model, inputs, signal }) {
      const account = o.accounts.getAccount(accountId);
      if (!account) throw new BordeError("Forbidden", "Forbidden: the worker's account no longer exists");
      const principal: Principal = {
        accountId,
        tokenId: `worker:${worker}`,
        scopes: ["ai:run"],
        plan: account.plan,
        models: null,
        jurisdictions: null,
        accountBudget: account.daily_neuron_budget,
        tokenBudget: null,
        limits: account.limits,
      };
      if (typeof inputs !== "object" || inputs === null || Array.isArray(inputs)) throw new BordeError("InvalidInput", "Invalid input: inputs must be an object");
      const body = inputs as Record<string, unknown>;
      const bytesIn = Buffer.byteLength(JSON.stringify(inputs));
      const ctx: CallContext = { requestId, principal, signal };
      const done = () => {
        ctx.release?.();
        ctx.release = undefined;
      };
      const info = await o.inference.resolve(model, signal);
      if (isInferTask(info.task)) {
        try {
          const task = info.task;
          const result = await o.inference.infer(ctx, info, () => decodeTaskInput(task, body, o.decodeLimits));
          o.meter.commit(ctx, { bytesIn, bytesOut: Buffer.byteLength(JSON.stringify(result)) });
          return result;
        } finally {
          done();
        }
      }
      const asksForText = "prompt" in body || "messages" in body;
      if (!asksForText && (info.task === "text-embeddings" || "text" in body)) {
        try {
          const input = EmbeddingsInput.parse(body);
          const result = embeddingsResult(await o.inference.embed(ctx, info, typeof input.text === "string" ? [input.text] : input.text));
          o.meter.commit(ctx, { bytesIn, bytesOut: Buffer.byteLength(JSON.stringify(result)) });
          return result;
        } finally {
          done();
        }
      }
      const input = textInput.parse(body);
      const request = toGenerationRequest(input);
      if (!input.stream) {
        try {
          const result = textGenerationResult(await o.inference.generate(ctx, info, request));
          o.meter.commit(ctx, { bytesIn, bytesOut: Buffer.byteLength(JSON.stringify(result)) });
          return result;
        } finally {
          done();
        }
      }
      // Workers' binding returns the SSE bytes as a stream; the record is written before the last event.
      const encoder = new TextEncoder();
      let bytesOut = 0;
      return new ReadableStream<Uint8Array>({
        start(controller) {
          const send = (s: string) => {
            bytesOut += Buffer.byteLength(s);
            controller.enqueue(encoder.encode(s));
          };
          o.inference
            .generate(ctx, info, request, (text) => send(sseData({ response: text })))
            .then((r) => {
              const last = [sseData(finalStreamEvent(r)), SSE_DONE];
              o.meter.commit(ctx, { bytesIn, bytesOut: bytesOut + last.reduce((n, s) => n + Buffer.byteLength(s), 0) });
              for (const s of last) send(s);
              controller.close();
            })
            .catch((e: unknown) => controller.error(e))
            .finally(done);
        },
      });
    },
  };
}
