import { z } from "zod";
import { BordeError } from "../errors.js";
import type { ChatMessage, ResponseFormat, ToolCall, ToolDefinition } from "../engines/contract.js";

/** Pieces of input both API flavours share; each flavour's schema composes them. */

const MAX_TEXT = 1_000_000;

const TextPart = z.object({ type: z.literal("text"), text: z.string().max(MAX_TEXT) });
export const Content = z.union([z.string().max(MAX_TEXT), z.array(TextPart).max(256)]).nullish();

const ToolCallIn = z.object({
  id: z.string().max(256).optional(),
  type: z.literal("function").optional(),
  function: z.object({ name: z.string().min(1).max(256), arguments: z.union([z.string().max(MAX_TEXT), z.record(z.string(), z.unknown())]) }).optional(),
  name: z.string().min(1).max(256).optional(),
  arguments: z.union([z.string().max(MAX_TEXT), z.record(z.string(), z.unknown())]).optional(),
});

export const Message = z.object({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: Content,
  name: z.string().max(256).optional(),
  tool_calls: z.array(ToolCallIn).max(128).optional(),
  tool_call_id: z.string().max(256).optional(),
});

const JsonSchemaObject = z.record(z.string(), z.unknown());

export const ToolIn = z.union([
  z.object({
    type: z.literal("function"),
    function: z.object({ name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "tool names are 1-64 of [A-Za-z0-9_.-]"), description: z.string().max(4096).optional(), parameters: JsonSchemaObject.optional() }),
  }),
  z.object({ name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "tool names are 1-64 of [A-Za-z0-9_.-]"), description: z.string().max(4096).optional(), parameters: JsonSchemaObject.optional() }),
]);

/** Workers AI: `{type, json_schema: <schema>}`; OpenAI: `{type, json_schema: {name, schema, strict}}`. */
export const ResponseFormatIn = z.object({
  type: z.enum(["text", "json_object", "json_schema"]),
  json_schema: z.record(z.string(), z.unknown()).optional(),
});

export const ToolChoiceIn = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string().min(1).max(256) }) }),
]);

export function toToolChoice(tc: z.infer<typeof ToolChoiceIn> | null | undefined): "auto" | "required" | { name: string } | undefined {
  if (!tc || tc === "none") return undefined;
  return typeof tc === "string" ? tc : { name: tc.function.name };
}

export const Stop = z.union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(16)]).optional();

export function contentText(c: z.infer<typeof Content>): string {
  if (c === null || c === undefined) return "";
  return typeof c === "string" ? c : c.map((p) => p.text).join("");
}

export function toMessages(messages: z.infer<typeof Message>[]): ChatMessage[] {
  return messages.map((m) => {
    const out: ChatMessage = { role: m.role === "developer" ? "system" : m.role, content: contentText(m.content) };
    if (m.name) out.name = m.name;
    if (m.tool_call_id) out.toolCallId = m.tool_call_id;
    if (m.tool_calls?.length) out.toolCalls = m.tool_calls.map((c, i) => toToolCall(c, i));
    return out;
  });
}

function toToolCall(c: z.infer<typeof ToolCallIn>, i: number): ToolCall {
  const name = c.function?.name ?? c.name ?? "";
  const raw = c.function?.arguments ?? c.arguments ?? {};
  let args: unknown = raw;
  if (typeof raw === "string") {
    try {
      args = JSON.parse(raw);
    } catch {
      args = raw;
    }
  }
  return { id: c.id ?? `call_${i}`, name, arguments: args };
}

export function toTools(tools: z.infer<typeof ToolIn>[] | undefined): ToolDefinition[] | undefined {
  if (!tools?.length) return undefined;
  return tools.map((t) => {
    const f = "function" in t ? t.function : t;
    return { name: f.name, description: f.description ?? "", parameters: f.parameters ?? { type: "object", properties: {} } };
  });
}

export function toResponseFormat(rf: z.infer<typeof ResponseFormatIn> | undefined): ResponseFormat | undefined {
  if (!rf || rf.type === "text") return undefined;
  if (rf.type === "json_object") return { type: "json_object" };
  const js = rf.json_schema;
  // A BordeError, not `new z.ZodError(...)`: zod 4's ZodError is not an Error subclass, so Hono's
  // onError would skip it and the client would get an empty 500.
  if (!js) throw new BordeError("InvalidInput", "Invalid input: response_format.json_schema: json_schema is required when type is json_schema");
  const schema = typeof js.schema === "object" && js.schema !== null && ("name" in js || "strict" in js) ? (js.schema as Record<string, unknown>) : js;
  return { type: "json_schema", schema };
}

export function toStop(stop: z.infer<typeof Stop>): string[] | undefined {
  if (stop === undefined) return undefined;
  return typeof stop === "string" ? [stop] : stop;
}
