import type { EmbeddingResult, GenerationRequest, GenerationResult } from "../engines/contract.js";
import { BordeError } from "../errors.js";
import type { ModelCall } from "../inference/index.js";
import type { Upstream } from "./topology.js";

/**
 * Calls an upstream provider — an OpenAI-compatible API or Workers AI's REST API (Cloudflare's, or
 * another Borde) — for a model no PoP serves. Text generation (streamed or not) and embeddings
 * travel; other tasks would need their media re-encoded to the provider's wire form and are not
 * forwarded upstream (placement skips upstreams for them).
 */
export async function callUpstream(
  u: Upstream,
  model: string,
  call: ModelCall,
  o: { signal: AbortSignal; onText?: (text: string) => void; env?: NodeJS.ProcessEnv },
): Promise<{ result: GenerationResult | EmbeddingResult; input: number; output: number }> {
  if (call.kind === "infer") throw new BordeError("NoLivePlace", `Upstream ${u.name} is only used for text generation and embeddings`);
  const key = u.api_key_env ? (o.env ?? process.env)[u.api_key_env] : undefined;
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const base = u.base_url.replace(/\/+$/, "");
  const stream = call.kind === "generate" && o.onText !== undefined;
  let url: string;
  let body: Record<string, unknown>;
  if (u.kind === "openai") {
    if (call.kind === "embed") {
      url = `${base}/embeddings`;
      body = { model, input: call.texts };
    } else {
      const r = call.request;
      url = r.messages ? `${base}/chat/completions` : `${base}/completions`;
      body = { model, ...(r.messages ? { messages: r.messages.map((m) => ({ role: m.role, content: m.content })) } : { prompt: r.prompt ?? "" }), ...sampling(r) };
      if (stream) Object.assign(body, { stream: true, stream_options: { include_usage: true } });
    }
  } else {
    url = `${base}/ai/run/${model}`;
    body = call.kind === "embed" ? { text: call.texts } : { ...(call.request.messages ? { messages: call.request.messages } : { prompt: call.request.prompt ?? "" }), ...sampling(call.request), stream };
  }
  let res: Response;
  try {
    res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body), signal: o.signal });
  } catch (cause) {
    if (o.signal.aborted) throw o.signal.reason;
    throw new BordeError("UpstreamFailed", `Upstream ${u.name} could not be reached`, { cause });
  }
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    throw new BordeError("UpstreamFailed", `Upstream ${u.name} answered ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`);
  }
  // A body cut, or not what the provider promised: the provider failed (502), not Borde (500).
  const failed = (cause: unknown): never => {
    if (o.signal.aborted) throw o.signal.reason;
    throw new BordeError("UpstreamFailed", `Upstream ${u.name} sent an unreadable answer`, { cause });
  };
  if (stream) return readStream(u, res, o.onText!, (call as { request: GenerationRequest }).request).catch(failed);
  const json = (await res.json().catch(failed)) as Record<string, any>; // provider JSON, checked field by field below
  if (call.kind === "embed") {
    const vectors: number[][] = u.kind === "openai" ? (json.data ?? []).map((d: { embedding: number[] }) => d.embedding) : (json.result?.data ?? []);
    // Billed by the provider's count, else estimated as everywhere else (4 characters a token).
    const tokens = Number(json.usage?.prompt_tokens ?? 0) || estimateTokens(call.texts.join(""));
    if (vectors.length !== call.texts.length) throw new BordeError("UpstreamFailed", `Upstream ${u.name} returned ${vectors.length} vectors for ${call.texts.length} texts`);
    return { result: { vectors, promptTokens: tokens, pooling: "mean" }, input: tokens, output: 0 };
  }
  const text: string = u.kind === "openai" ? (json.choices?.[0]?.message?.content ?? json.choices?.[0]?.text ?? "") : (json.result?.response ?? "");
  const usage = u.kind === "openai" ? json.usage : json.result?.usage;
  return finish(text, usage ?? estimatedUsage(call.request, text), u.kind === "openai" && json.choices?.[0]?.finish_reason === "length" ? "length" : "stop");
}

function sampling(r: GenerationRequest): Record<string, unknown> {
  return { max_tokens: r.maxTokens, temperature: r.temperature, top_p: r.topP, seed: r.seed, stop: r.stop };
}

function estimateTokens(s: string): number {
  return Math.ceil(s.length / 4);
}

/** A provider that reports no usage is billed an estimate, never nothing. */
function estimatedUsage(r: GenerationRequest, text: string) {
  const prompt = r.prompt ?? (r.messages ?? []).map((m) => m.content).join("\n");
  return { prompt_tokens: estimateTokens(prompt), completion_tokens: estimateTokens(text) };
}

function finish(text: string, usage: { prompt_tokens?: number; completion_tokens?: number } | undefined, reason: "stop" | "length") {
  const p = Number(usage?.prompt_tokens ?? 0);
  const c = Number(usage?.completion_tokens ?? 0);
  const result: GenerationResult = { text, toolCalls: [], usage: { prompt_tokens: p, completion_tokens: c, total_tokens: p + c }, finishReason: reason };
  return { result, input: p, output: c };
}

/** Server-sent events of either flavour: OpenAI's `choices[0].delta`, Workers AI's `response`. */
async function readStream(u: Upstream, res: Response, onText: (t: string) => void, request: GenerationRequest) {
  let text = "";
  let usage: { prompt_tokens?: number; completion_tokens?: number } | undefined;
  let reason: "stop" | "length" = "stop";
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") continue;
      let ev: Record<string, any>;
      try {
        ev = JSON.parse(data);
      } catch {
        continue;
      }
      const piece: string = u.kind === "openai" ? (ev.choices?.[0]?.delta?.content ?? ev.choices?.[0]?.text ?? "") : (ev.response ?? "");
      if (u.kind === "openai" && ev.choices?.[0]?.finish_reason === "length") reason = "length";
      if (ev.usage) usage = ev.usage;
      if (piece) {
        text += piece;
        onText(piece);
      }
    }
  }
  return finish(text, usage ?? estimatedUsage(request, text), reason);
}
