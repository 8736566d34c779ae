import type { Task } from "../catalog/types.js";

/**
 * The one engine contract. The scheduler, the API and the CLI depend on this file only; llama.cpp
 * (and later ONNX, TF.js and remote engines) implement it.
 */

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  /** On assistant messages: calls the model made earlier in the conversation. */
  toolCalls?: ToolCall[];
  /** On tool messages: which call this is the result of. */
  toolCallId?: string;
  name?: string;
}

export interface ToolDefinition {
  name: string;
  description: string;
  /** JSON schema of the arguments object. */
  parameters: Record<string, unknown>;
}

export interface ToolCall {
  id: string;
  name: string;
  /** Arguments, already parsed: valid for the tool's schema because generation was grammar-constrained. */
  arguments: unknown;
}

export type ResponseFormat = { type: "text" } | { type: "json_object" } | { type: "json_schema"; schema: Record<string, unknown> };

/** One internal request shape: both the Workers AI and the OpenAI routes translate into it. */
export interface GenerationRequest {
  /** Plain completion of `prompt`, or a chat rendered with the model's template. */
  prompt?: string;
  messages?: ChatMessage[];
  /** Skip the chat template: messages are joined and completed as plain text. */
  raw?: boolean;
  maxTokens: number;
  temperature: number;
  topP?: number;
  topK?: number;
  seed?: number;
  repetitionPenalty?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  stop?: string[];
  responseFormat?: ResponseFormat;
  tools?: ToolDefinition[];
  /**
   * `auto` (default): the model chooses text or calls. `required` or a named tool: the reply is a
   * call, its name and arguments generated under a grammar built from the tools' schemas.
   */
  toolChoice?: "auto" | "required" | { name: string };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export type FinishReason = "stop" | "length" | "tool_calls" | "abort";

export interface GenerationResult {
  text: string;
  toolCalls: ToolCall[];
  usage: Usage;
  finishReason: FinishReason;
}

export interface GenerateOptions {
  signal: AbortSignal;
  /** Called with each piece of text as it is generated (streaming). */
  onText?: (text: string) => void;
}

export interface EmbeddingResult {
  vectors: number[][];
  promptTokens: number;
  /** How token states became one vector: the model's pooling, or the last token for causal models. */
  pooling: "mean" | "cls" | "last";
}

/** A model resident in memory. */
export interface LoadedModel {
  readonly id: string;
  readonly task: Task;
  /** Bytes of memory it holds (weights + contexts), as estimated at load time. */
  readonly memoryBytes: number;
  /** How many requests it can serve at once (sequences of its shared context). */
  readonly slots: number;
  generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult>;
  embed(texts: string[], options: { signal: AbortSignal }): Promise<EmbeddingResult>;
  dispose(): Promise<void>;
}

export interface ModelSpec {
  id: string;
  task: Task;
  path: string;
}

export interface Engine {
  readonly name: string;
  /** Memory the model would take once loaded, without loading it (for the scheduler's budget). */
  estimateMemory(spec: ModelSpec): Promise<number>;
  /** Requests the model will serve at once once loaded (`LoadedModel.slots`), known before loading. */
  slotsFor(spec: ModelSpec): number;
  load(spec: ModelSpec): Promise<LoadedModel>;
  /** Reads what the engine can tell from a file without loading it (its task). */
  inspect(path: string): Promise<{ task: Task }>;
  dispose(): Promise<void>;
}
