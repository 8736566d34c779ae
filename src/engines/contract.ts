import type { Task, TaskInput, TaskOutput } from "../tasks/types.js";

/**
 * The one engine contract. The scheduler, the API and the CLI depend on this file only; every
 * engine (llama.cpp, ONNX, TF.js, fastText, Tesseract) implements it. A loaded model offers the calls
 * of its task: `generate` (text generation), `embed` (embeddings), or `infer` (every other task).
 */

/** The engines Borde has, each for a reason: see README "Engines". */
export type EngineName = "llama" | "onnx" | "tfjs" | "fasttext" | "tesseract";

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
  /**
   * Inputs one `embed` or `infer` call may take at once: the scheduler batches concurrent requests
   * up to this many into one forward pass. 1 (or absent) = no batching.
   */
  readonly maxBatch?: number;
  generate?(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult>;
  embed?(texts: string[], options: { signal: AbortSignal }): Promise<EmbeddingResult>;
  /**
   * One output per input, in order; each output is the shape of its input's task. Inputs are already
   * decoded and validated (narrow on `input.task`).
   */
  infer?(inputs: TaskInput[], options: { signal: AbortSignal }): Promise<TaskOutput[]>;
  dispose(): Promise<void>;
}

export interface ModelSpec {
  id: string;
  task: Task;
  engine: EngineName;
  /** A file (GGUF, ONNX, fastText .bin/.ftz) or a folder (a hub repo's layout, a TF.js model). */
  path: string;
  /** Engine-specific facts a bundled model carries (labels file, model kind…). */
  options?: Readonly<Record<string, unknown>>;
}

export interface Engine {
  readonly name: EngineName;
  /** Memory the model would take once loaded, without loading it (for the scheduler's budget). */
  estimateMemory(spec: ModelSpec): Promise<number>;
  /** Requests the model will serve at once once loaded (`LoadedModel.slots`), known before loading. */
  slotsFor(spec: ModelSpec): number;
  load(spec: ModelSpec): Promise<LoadedModel>;
  dispose(): Promise<void>;
}
