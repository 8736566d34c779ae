/** Server-sent events, framed exactly as Workers AI and OpenAI send them: `data: <json>\n\n`. */
/** Events are strings: the socket path concatenates several into one write before encoding. */
export function sseData(payload: unknown): string {
  return `data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`;
}

export const SSE_DONE = "data: [DONE]\n\n";

export const SSE_HEADERS = {
  "content-type": "text/event-stream",
  "cache-control": "no-cache",
  connection: "keep-alive",
} as const;
