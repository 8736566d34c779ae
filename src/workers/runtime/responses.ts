/** The answers the runtime gives in a worker's place, in Borde's (Cloudflare API's) error envelope. */

export const LIMIT_EXCEEDED = { status: 503, code: 1102, message: "Worker exceeded resource limits" } as const;
export const WORKER_THREW = { status: 500, code: 1101, message: "Worker threw exception" } as const;

export function envelope(status: number, code: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ result: null, success: false, errors: [{ code, message }], messages: [] }), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** 503 with Workers' error 1102: the request's worker went over a CPU, memory, wall-time, subrequest or size limit. */
export function limitExceededResponse(): Response {
  return envelope(LIMIT_EXCEEDED.status, LIMIT_EXCEEDED.code, LIMIT_EXCEEDED.message);
}

/** 500 with Workers' error 1101: the worker threw (or could not start). */
export function workerThrewResponse(): Response {
  return envelope(WORKER_THREW.status, WORKER_THREW.code, WORKER_THREW.message);
}
