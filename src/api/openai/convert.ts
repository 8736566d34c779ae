import { schemaOf } from "../workers-ai/convert.js";
import type { Task } from "../../tasks/index.js";
import { z } from "zod";
import type { FinishReason, GenerationRequest, GenerationResult, ToolCall } from "../../engines/contract.js";
import { Message, ResponseFormatIn, Stop, ToolChoiceIn, ToolIn, toMessages, toResponseFormat, toStop, toToolChoice, toTools } from "../schemas.js";

/** Pure converters between OpenAI's shapes and the internal request. Unknown fields are ignored, as OpenAI-compatible servers do. */

const Common = {
  model: z.string().min(1).max(256),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  top_k: z.number().int().min(1).max(1000).nullish(),
  n: z.literal(1).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  stop: Stop.nullable(),
  seed: z.number().int().min(-(2 ** 53)).max(2 ** 53).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().min(0).max(2).nullish(),
  user: z.string().max(256).optional(),
};

export function chatCompletionInput(maxTokensLimit: number) {
  return z
    .object({
      ...Common,
      messages: z.array(Message).min(1).max(1024),
      max_completion_tokens: z.number().int().min(1).nullish(),
      response_format: ResponseFormatIn.nullish(),
      tools: z.array(ToolIn).max(128).nullish(),
      tool_choice: ToolChoiceIn.nullish(),
      logprobs: z.literal(false).nullish(),
    })
    .superRefine((v, ctx) => {
      const mt = v.max_completion_tokens ?? v.max_tokens;
      if (mt && mt > maxTokensLimit) ctx.addIssue({ code: "custom", path: ["max_tokens"], message: `must be at most ${maxTokensLimit}` });
      if (v.messages.every((m) => !m.content || (typeof m.content === "string" ? m.content.trim() === "" : m.content.length === 0)))
        ctx.addIssue({ code: "custom", path: ["messages"], message: "at least one message must have content" });
      if (v.tool_choice && typeof v.tool_choice === "object" && !(v.tools ?? []).some((t) => ("function" in t ? t.function.name : t.name) === (v.tool_choice as { function: { name: string } }).function.name))
        ctx.addIssue({ code: "custom", path: ["tool_choice"], message: "names a function that is not in tools" });
    });
}

export function completionInput(maxTokensLimit: number) {
  return z
    .object({
      ...Common,
      prompt: z.union([z.string().max(1_000_000), z.array(z.string().max(1_000_000)).length(1)]),
      echo: z.literal(false).nullish(),
      logprobs: z.null().optional(),
      suffix: z.null().optional(),
      best_of: z.literal(1).nullish(),
    })
    .superRefine((v, ctx) => {
      if (v.max_tokens && v.max_tokens > maxTokensLimit) ctx.addIssue({ code: "custom", path: ["max_tokens"], message: `must be at most ${maxTokensLimit}` });
      // Refinements still run after a non-fatal issue (e.g. `prompt: []` failing length(1)): no `!` here.
      const p = typeof v.prompt === "string" ? v.prompt : v.prompt[0];
      if (p !== undefined && p.trim() === "") ctx.addIssue({ code: "custom", path: ["prompt"], message: "must not be empty" });
    });
}

export const EmbeddingInput = z.object({
  model: z.string().min(1).max(256),
  input: z.union([z.string().min(1).max(1_000_000), z.array(z.string().min(1).max(1_000_000)).min(1).max(256)]),
  encoding_format: z.enum(["float", "base64"]).nullish(),
  dimensions: z.number().int().min(1).nullish(),
  user: z.string().max(256).optional(),
});

type ChatIn = z.infer<ReturnType<typeof chatCompletionInput>>;
type CompletionIn = z.infer<ReturnType<typeof completionInput>>;

function sampling(v: ChatIn | CompletionIn) {
  return {
    // OpenAI's default temperature is 1.
    temperature: v.temperature ?? 1,
    topP: v.top_p ?? undefined,
    topK: v.top_k ?? undefined,
    seed: v.seed === null || v.seed === undefined ? undefined : ((v.seed % 2 ** 32) + 2 ** 32) % 2 ** 32,
    frequencyPenalty: v.frequency_penalty ?? undefined,
    presencePenalty: v.presence_penalty ?? undefined,
    repetitionPenalty: v.repetition_penalty || undefined,
    stop: toStop(v.stop ?? undefined),
  };
}

export function chatToRequest(v: ChatIn): GenerationRequest {
  const tools = v.tool_choice === "none" ? undefined : toTools(v.tools ?? undefined);
  return {
    messages: toMessages(v.messages),
    maxTokens: v.max_completion_tokens ?? v.max_tokens ?? 256,
    ...sampling(v),
    responseFormat: toResponseFormat(v.response_format ?? undefined),
    tools,
    toolChoice: toToolChoice(v.tool_choice),
  };
}

export function completionToRequest(v: CompletionIn): GenerationRequest {
  return { prompt: typeof v.prompt === "string" ? v.prompt : v.prompt[0]!, maxTokens: v.max_tokens ?? 256, ...sampling(v) };
}

export function finish(r: FinishReason): "stop" | "length" | "tool_calls" {
  return r === "abort" ? "stop" : r;
}

export function openAiToolCalls(calls: ToolCall[]) {
  return calls.map((c) => ({ id: c.id, type: "function" as const, function: { name: c.name, arguments: JSON.stringify(c.arguments) } }));
}

export function chatCompletion(id: string, model: string, created: number, r: GenerationResult) {
  return {
    id,
    object: "chat.completion",
    created,
    model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: r.toolCalls.length && !r.text ? null : r.text, ...(r.toolCalls.length ? { tool_calls: openAiToolCalls(r.toolCalls) } : {}) },
        logprobs: null,
        finish_reason: finish(r.finishReason),
      },
    ],
    usage: r.usage,
  };
}

export function chatChunk(id: string, model: string, created: number, delta: Record<string, unknown>, finishReason: string | null, includeUsage: boolean) {
  return { id, object: "chat.completion.chunk", created, model, choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }], ...(includeUsage ? { usage: null } : {}) };
}

export function textCompletion(id: string, model: string, created: number, r: GenerationResult) {
  return { id, object: "text_completion", created, model, choices: [{ index: 0, text: r.text, logprobs: null, finish_reason: finish(r.finishReason) }], usage: r.usage };
}

export function embeddingsList(model: string, vectors: number[][], promptTokens: number, format: "float" | "base64") {
  return {
    object: "list",
    data: vectors.map((v, index) => ({ object: "embedding", index, embedding: format === "base64" ? Buffer.from(new Float32Array(v).buffer).toString("base64") : v })),
    model,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  };
}

export function modelObject(m: { id: string; source: string; task: Task }) {
  return { id: m.id, object: "model", created: 0, owned_by: m.source === "local" ? "local" : "borde", task: m.task, schema: schemaOf(m.task) };
}
