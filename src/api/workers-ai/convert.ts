import { z } from "zod";
import { taskJsonSchema, type Task } from "../../tasks/index.js";
import type { GenerationRequest, GenerationResult } from "../../engines/contract.js";
import { Message, ResponseFormatIn, Stop, ToolChoiceIn, ToolIn, toMessages, toResponseFormat, toStop, toToolChoice, toTools } from "../schemas.js";

/** Pure converters between Workers AI's task shapes and the internal request. */

export function textGenerationInput(maxTokensLimit: number) {
  return z
    .object({
      prompt: z.string().max(1_000_000).optional(),
      messages: z.array(Message).min(1).max(1024).optional(),
      raw: z.boolean().optional(),
      stream: z.boolean().optional(),
      max_tokens: z.number().int().min(1).max(maxTokensLimit).default(256),
      temperature: z.number().min(0).max(5).default(0.6),
      top_p: z.number().min(0).max(2).optional(),
      top_k: z.number().int().min(1).max(1000).optional(),
      seed: z.number().int().min(0).max(9_999_999_999).optional(),
      repetition_penalty: z.number().min(0).max(2).optional(),
      frequency_penalty: z.number().min(-2).max(2).optional(),
      presence_penalty: z.number().min(-2).max(2).optional(),
      stop: Stop,
      response_format: ResponseFormatIn.optional(),
      tools: z.array(ToolIn).max(128).optional(),
      tool_choice: ToolChoiceIn.optional(),
      lora: z.string().optional(),
    })
    .superRefine((v, ctx) => {
      if ((v.prompt === undefined) === (v.messages === undefined))
        ctx.addIssue({ code: "custom", path: [], message: "send exactly one of `prompt` or `messages`" });
      if (v.prompt !== undefined && v.prompt.trim() === "") ctx.addIssue({ code: "custom", path: ["prompt"], message: "must not be empty" });
      if (v.messages && v.messages.every((m) => !m.content || (typeof m.content === "string" ? m.content.trim() === "" : m.content.length === 0)))
        ctx.addIssue({ code: "custom", path: ["messages"], message: "at least one message must have content" });
      if (v.tool_choice && typeof v.tool_choice === "object" && !(v.tools ?? []).some((t) => ("function" in t ? t.function.name : t.name) === (v.tool_choice as { function: { name: string } }).function.name))
        ctx.addIssue({ code: "custom", path: ["tool_choice"], message: "names a function that is not in tools" });
      if (v.lora !== undefined) ctx.addIssue({ code: "custom", path: ["lora"], message: "LoRA adapters are not supported" });
    });
}

export type TextGenerationInput = z.infer<ReturnType<typeof textGenerationInput>>;

export function toGenerationRequest(i: TextGenerationInput): GenerationRequest {
  return {
    prompt: i.prompt,
    messages: i.messages ? toMessages(i.messages) : undefined,
    raw: i.raw,
    maxTokens: i.max_tokens,
    temperature: i.temperature,
    topP: i.top_p === undefined ? undefined : Math.min(1, i.top_p),
    topK: i.top_k,
    seed: i.seed === undefined ? undefined : i.seed % 2 ** 32,
    // 0 is in Workers AI's documented range; llama.cpp would divide by it, so it means "off".
    repetitionPenalty: i.repetition_penalty ? i.repetition_penalty : undefined,
    frequencyPenalty: i.frequency_penalty,
    presencePenalty: i.presence_penalty,
    stop: toStop(i.stop),
    responseFormat: toResponseFormat(i.response_format),
    tools: i.tool_choice === "none" ? undefined : toTools(i.tools),
    toolChoice: toToolChoice(i.tool_choice),
  };
}

export const EmbeddingsInput = z.object({
  text: z.union([z.string().min(1).max(1_000_000), z.array(z.string().min(1).max(1_000_000)).min(1).max(256)], {
    error: "text must be a non-empty string or a list of 1-256 non-empty strings",
  }),
});

/** Workers AI's text-generation result: tool calls in its own `{name, arguments}` shape. */
export function textGenerationResult(r: GenerationResult) {
  const out: Record<string, unknown> = { response: r.text };
  if (r.toolCalls.length) out.tool_calls = r.toolCalls.map((c) => ({ name: c.name, arguments: c.arguments }));
  out.usage = r.usage;
  return out;
}

/** The last event of a Workers AI stream. */
export function finalStreamEvent(r: GenerationResult) {
  const out: Record<string, unknown> = { response: "" };
  if (r.toolCalls.length) out.tool_calls = r.toolCalls.map((c) => ({ name: c.name, arguments: c.arguments }));
  out.usage = r.usage;
  return out;
}

export function embeddingsResult(r: { vectors: number[][]; pooling: string }) {
  return { shape: [r.vectors.length, r.vectors[0]?.length ?? 0], data: r.vectors, pooling: r.pooling };
}

/** Output shapes, published as JSON Schema by the models search endpoint. */
export const EmbeddingsOutput = z.object({ shape: z.array(z.number().int()), data: z.array(z.array(z.number())), pooling: z.enum(["mean", "cls", "last"]) });
export const TextGenerationOutput = z.object({
  response: z.string(),
  tool_calls: z.array(z.object({ name: z.string(), arguments: z.unknown() })).optional(),
  usage: z.object({ prompt_tokens: z.number().int(), completion_tokens: z.number().int(), total_tokens: z.number().int() }),
});

/** The task's input and output as JSON Schema, as the search endpoint publishes them. */
export function schemaOf(task: Task): { input: unknown; output: unknown } {
  const own = taskJsonSchema(task);
  if (own) return own;
  if (task === "text-embeddings") return (embeddingsSchema ??= { input: z.toJSONSchema(EmbeddingsInput, { io: "input" }), output: z.toJSONSchema(EmbeddingsOutput) });
  return (generationSchema ??= { input: z.toJSONSchema(textGenerationInput(4096), { io: "input", unrepresentable: "any" }), output: z.toJSONSchema(TextGenerationOutput) });
}
let embeddingsSchema: { input: unknown; output: unknown } | undefined;
let generationSchema: { input: unknown; output: unknown } | undefined;
