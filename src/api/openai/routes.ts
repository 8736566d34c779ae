import type { Hono } from "hono";
import { randomUUID } from "node:crypto";
import { parseModelId } from "../../catalog/ids.js";
import { BordeError } from "../../errors.js";
import { readJsonBody } from "../body.js";
import { callContext, type ApiDeps, type Ctx, type Env } from "../context.js";
import { SSE_DONE, sseData } from "../sse.js";
import { respondWithStream, streamHooks } from "../stream.js";
import { meteredJson, meteredStream } from "../metered.js";
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
  modelObject,
  openAiToolCalls,
  textCompletion,
} from "./convert.js";
import type { GenerationRequest, GenerationResult } from "../../engines/contract.js";

/** OpenAI-compatible API, mounted under `/client/v4/accounts/{id}/ai/v1` and `/v1`. */
export function registerOpenAi(app: Hono<Env>, deps: ApiDeps, base: string): void {
  const chatIn = chatCompletionInput(deps.config.maxTokensLimit);
  const completionIn = completionInput(deps.config.maxTokensLimit);

  async function body(c: Ctx): Promise<Record<string, unknown>> {
    const raw = await readJsonBody(c.req.raw, deps.config.maxBodyBytes, (n) => c.set("bytesIn", n));
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new BordeError("InvalidInput", "Invalid input: the body must be a JSON object");
    const b = raw as Record<string, unknown>;
    if (typeof b.model === "string") {
      parseModelId(b.model);
      c.set("model", b.model);
    }
    return b;
  }

  /**
   * One generation answered as OpenAI answers it: a JSON body, or an SSE stream whose events the
   * route builds from each text piece and from the result. The call's deadline covers both.
   */
  async function answer(
    c: Ctx,
    model: string,
    request: GenerationRequest,
    stream: boolean,
    plain: (r: GenerationResult) => unknown,
    events: { text: (text: string) => string[]; end: (r: GenerationResult) => string[] },
  ): Promise<Response> {
    const call = callContext(c, deps.config);
    if (!stream) {
      try {
        return meteredJson(c, deps, call, plain(await deps.inference.generate(call.ctx, model, request)));
      } finally {
        call.done();
      }
    }
    return respondWithStream(
      c,
      c.get("requestId"),
      async (raw, last) => {
        const out = meteredStream(c, deps, call, raw, last);
        const r = await deps.inference.generate(call.ctx, model, request, (text) => events.text(text).forEach(out.emit));
        out.finish([...events.end(r), SSE_DONE]);
      },
      streamHooks(c, call, "openai"),
    );
  }

  app.post(`${base}/chat/completions`, async (c) => {
    const input = chatIn.parse(await body(c));
    const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const includeUsage = input.stream_options?.include_usage === true;
    const chunk = (delta: Record<string, unknown>, fr: string | null) => sseData(chatChunk(id, input.model, created, delta, fr, includeUsage));
    const role = chunk({ role: "assistant", content: "" }, null);
    let sentRole = false;
    return answer(c, input.model, chatToRequest(input), input.stream === true, (r) => chatCompletion(id, input.model, created, r), {
      text: (text) => {
        const out = sentRole ? [] : [role];
        sentRole = true;
        return [...out, chunk({ content: text }, null)];
      },
      end: (r) => [
        ...(sentRole ? [] : [role]),
        // Tool calls follow OpenAI's delta format: a chunk naming each call, then its arguments.
        ...openAiToolCalls(r.toolCalls).flatMap((call, index) => [
          chunk({ tool_calls: [{ index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } }] }, null),
          chunk({ tool_calls: [{ index, function: { arguments: call.function.arguments } }] }, null),
        ]),
        chunk({}, finish(r.finishReason)),
        ...(includeUsage ? [sseData({ id, object: "chat.completion.chunk", created, model: input.model, choices: [], usage: r.usage })] : []),
      ],
    });
  });

  app.post(`${base}/completions`, async (c) => {
    const input = completionIn.parse(await body(c));
    const id = `cmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const includeUsage = input.stream_options?.include_usage === true;
    const chunk = (text: string, fr: string | null) =>
      sseData({ id, object: "text_completion", created, model: input.model, choices: [{ index: 0, text, logprobs: null, finish_reason: fr }], ...(includeUsage ? { usage: null } : {}) });
    return answer(c, input.model, completionToRequest(input), input.stream === true, (r) => textCompletion(id, input.model, created, r), {
      text: (text) => [chunk(text, null)],
      end: (r) => [
        chunk("", finish(r.finishReason)),
        ...(includeUsage ? [sseData({ id, object: "text_completion", created, model: input.model, choices: [], usage: r.usage })] : []),
      ],
    });
  });

  app.post(`${base}/embeddings`, async (c) => {
    const input = EmbeddingInput.parse(await body(c));
    if (input.dimensions) throw new BordeError("InvalidInput", "Invalid input: dimensions: this model's embedding size is fixed");
    const texts = typeof input.input === "string" ? [input.input] : input.input;
    const call = callContext(c, deps.config);
    try {
      const r = await deps.inference.embed(call.ctx, input.model, texts);
      return meteredJson(c, deps, call, embeddingsList(input.model, r.vectors, r.promptTokens, input.encoding_format ?? "float"));
    } finally {
      call.done();
    }
  });

  app.get(`${base}/models`, async (c) => {
    const models = (await deps.store.list()).filter((m) => m.installed);
    return c.json({ object: "list", data: models.map(modelObject) });
  });

  app.get(`${base}/models/:model{.+}`, async (c) => {
    const id = c.req.param("model");
    parseModelId(id);
    return c.json(modelObject(await deps.store.resolve(id)));
  });
}
