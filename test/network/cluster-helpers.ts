import path from "node:path";

/** Starts `borde node` from source (no build needed), as the network suites' PoP processes. */
export const NODE_COMMAND = [process.execPath, "--import", "tsx", path.resolve(import.meta.dirname, "../cli/borde.ts")];

/** Fails under CI=true when nats-server is missing; otherwise says whether the suite can run. */
export function natsOrSkip(available: boolean): boolean {
  if (available) return true;
  if (process.env.CI === "true") throw new Error("needs nats-server; CI=true requires every service");
  return false;
}

/** A `POST …/ai/run/{model}` caller for one account: status, placement headers, body (and JSON). */
export function modelCaller(account: string, token: string) {
  return async (url: string, model: string, body: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${url}/client/v4/accounts/${account}/ai/run/${model}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    return {
      status: res.status,
      pop: res.headers.get("borde-pop"),
      servedBy: res.headers.get("borde-served-by"),
      type: res.headers.get("content-type"),
      text,
      json: text.startsWith("{") ? JSON.parse(text) : undefined,
    };
  };
}
