import type { Hono } from "hono";
import { randomUUID } from "node:crypto";
import { parseModelId } from "../../catalog/ids.js";
import { BordeError } from "../../errors.js";
import { readJsonBody } from "../body.js";
import { callContext, type ApiDeps, type Ctx, type Env } from "../context.js";
import { errorBody, toBordeError } from "../errors.js";
import { SSE_DONE, sseData } from "../sse.js";
import { respondWithStream } from "../stream.js";
import {
  chatChunk,
  chatCompletion,
  chatCompletionInput,
  chatToRequest,
  completionInput,
  completionToRequest,
  EmbeddingInput,
  embeddingsList,
  finish,
  openAiToolCalls,
  textCompletion,
} from "./convert.js";

/** OpenAI-compatible API, mounted under `/client/v4/accounts/{id}/ai/v1` and `/v1`. */
export function registerOpenAi(app: Hono<Env>, deps: ApiDeps, base: string): void {
  const chatIn = chatCompletionInput(deps.config.maxTokensLimit);
  const completionIn = completionInput(deps.config.maxTokensLimit);

  async function body(c: Ctx): Promise<Record<string, unknown>> {
    const raw = await readJsonBody(c.req.raw, deps.config.maxBodyBytes);
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new BordeError("InvalidInput", "Invalid input: the body must be a JSON object");
    const b = raw as Record<string, unknown>;
    if (typeof b.model === "string") {
      parseModelId(b.model);
      c.set("model", b.model);
    }
    return b;
  }

  app.post(`${base}/chat/completions`, async (c) => {
    const input = chatIn.parse(await body(c));
    const request = chatToRequest(input);
    const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const { ctx, controller, done } = callContext(c, deps.config);
    if (!input.stream) {
      try {
        return c.json(chatCompletion(id, input.model, created, await deps.inference.generate(ctx, input.model, request)));
      } finally {
        done();
      }
    }
    const includeUsage = input.stream_options?.include_usage === true;
    const chunk = (delta: Record<string, unknown>, fr: string | null) => sseData(chatChunk(id, input.model, created, delta, fr, includeUsage));
    let sentRole = false;
    return respondWithStream(
      c,
      c.get("requestId"),
      async (emit) => {
        const r = await deps.inference.generate(ctx, input.model, request, (text) => {
          if (!sentRole) {
            sentRole = true;
            emit(chunk({ role: "assistant", content: "" }, null));
          }
          emit(chunk({ content: text }, null));
        });
        if (!sentRole) emit(chunk({ role: "assistant", content: "" }, null));
        // Tool calls follow OpenAI's delta format: a chunk naming each call, then its arguments.
        openAiToolCalls(r.toolCalls).forEach((call, index) => {
          emit(chunk({ tool_calls: [{ index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } }] }, null));
          emit(chunk({ tool_calls: [{ index, function: { arguments: call.function.arguments } }] }, null));
        });
        emit(chunk({}, finish(r.finishReason)));
        if (includeUsage) emit(sseData({ id, object: "chat.completion.chunk", created, model: input.model, choices: [], usage: r.usage }));
        emit(SSE_DONE);
      },
      streamHooks(c, controller, done),
    );
  });

  app.post(`${base}/completions`, async (c) => {
    const input = completionIn.parse(await body(c));
    const request = completionToRequest(input);
    const id = `cmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const { ctx, controller, done } = callContext(c, deps.config);
    if (!input.stream) {
      try {
        return c.json(textCompletion(id, input.model, created, await deps.inference.generate(ctx, input.model, request)));
      } finally {
        done();
      }
    }
    const includeUsage = input.stream_options?.include_usage === true;
    const chunk = (text: string, fr: string | null) =>
      sseData({ id, object: "text_completion", created, model: input.model, choices: [{ index: 0, text, logprobs: null, finish_reason: fr }], ...(includeUsage ? { usage: null } : {}) });
    return respondWithStream(
      c,
      c.get("requestId"),
      async (emit) => {
        const r = await deps.inference.generate(ctx, input.model, request, (text) => emit(chunk(text, null)));
        emit(chunk("", finish(r.finishReason)));
        if (includeUsage) emit(sseData({ id, object: "text_completion", created, model: input.model, choices: [], usage: r.usage }));
        emit(SSE_DONE);
      },
      streamHooks(c, controller, done),
    );
  });

  app.post(`${base}/embeddings`, async (c) => {
    const input = EmbeddingInput.parse(await body(c));
    if (input.dimensions) throw new BordeError("InvalidInput", "Invalid input: dimensions: this model's embedding size is fixed");
    const texts = typeof input.input === "string" ? [input.input] : input.input;
    const { ctx, done } = callContext(c, deps.config);
    try {
      const r = await deps.inference.embed(ctx, input.model, texts);
      return c.json(embeddingsList(input.model, r.vectors, r.promptTokens, input.encoding_format ?? "float"));
    } finally {
      done();
    }
  });

  app.get(`${base}/models`, async (c) => {
    const models = (await deps.store.list()).filter((m) => m.installed);
    return c.json({ object: "list", data: models.map((m) => ({ id: m.id, object: "model", created: 0, owned_by: m.source === "local" ? "local" : "borde", task: m.task })) });
  });

  app.get(`${base}/models/:model{.+}`, async (c) => {
    const id = c.req.param("model");
    parseModelId(id);
    const m = await deps.store.resolve(id);
    return c.json({ id: m.id, object: "model", created: 0, owned_by: m.source === "local" ? "local" : "borde", task: m.task });
  });
}

function streamHooks(c: Ctx, controller: AbortController, done: () => void) {
  return {
    onCancel: () => controller.abort(new BordeError("Aborted", "Client closed the stream")),
    onError: (e: unknown, emit: (chunk: string) => void) => {
      const err = toBordeError(e);
      c.get("log").warn({ code: err.code, reason: err.message }, "stream ended by error");
      emit(sseData(errorBody(err, "openai")));
    },
    onEnd: done,
  };
}
