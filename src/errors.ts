/**
 * The error catalog. Every error Borde answers with is one of these entries; `api/errors.ts` maps
 * them to HTTP in one place. Codes are Workers AI's where Workers AI has one (so clients written for
 * Cloudflare keep working), Cloudflare API's 10000 for authentication, and Borde's own above 7000.
 */
export const ERRORS = {
  NoSuchModel: { code: 5007, status: 400, message: "No such model or task" },
  InvalidInput: { code: 5006, status: 400, message: "Invalid input" },
  IncompleteRequest: { code: 3003, status: 400, message: "Request is missing headers or body" },
  InvalidModelId: { code: 3042, status: 404, message: "The model name is invalid" },
  RequestTooLarge: { code: 3006, status: 413, message: "Request is too large" },
  Timeout: { code: 3007, status: 408, message: "Request timeout" },
  Aborted: { code: 3008, status: 408, message: "Request was aborted" },
  AccountLimited: { code: 3036, status: 429, message: "Daily free allocation used up" },
  OutOfCapacity: { code: 3040, status: 429, message: "Out of capacity" },
  Unauthorized: { code: 10000, status: 401, message: "Authentication error" },
  Forbidden: { code: 10001, status: 403, message: "Forbidden" },
  NotFound: { code: 7000, status: 404, message: "No route for that URI" },
  ModelTooLarge: { code: 7100, status: 507, message: "Model does not fit in the memory budget" },
  ModelLoadFailed: { code: 7101, status: 500, message: "Model failed to load" },
  ModelPullFailed: { code: 7103, status: 502, message: "The model could not be pulled from the hub" },
  IncompleteOutput: { code: 7102, status: 500, message: "The model could not complete a valid JSON value within its context" },
  RateLimited: { code: 7104, status: 429, message: "Rate limit exceeded" },
  BudgetExceeded: { code: 7105, status: 429, message: "Daily neuron budget used up" },
  DuplicateRequestId: { code: 7106, status: 409, message: "This request id was already used and billed" },
  NoSuchResource: { code: 7107, status: 404, message: "No such account or token" },
  NoSuchWorker: { code: 10007, status: 404, message: "No such worker" },
  WorkerInvalid: { code: 10021, status: 400, message: "The worker failed validation: it could not start" },
  WorkerNameTaken: { code: 7120, status: 409, message: "This worker name is taken by another account" },
  NoSuchSecret: { code: 7121, status: 404, message: "No such secret" },
  NoPreviousVersion: { code: 7122, status: 409, message: "No previous version to roll back to" },
  PopFailed: { code: 7130, status: 502, message: "The PoP serving the request failed while serving it" },
  NotServedInJurisdiction: { code: 7131, status: 451, message: "Nothing inside the requested jurisdiction serves this model" },
  UpstreamFailed: { code: 7132, status: 502, message: "The upstream provider failed" },
  NoLivePlace: { code: 7133, status: 503, message: "No live PoP or upstream serves this model now" },
  Internal: { code: 3043, status: 500, message: "Internal server error" },
} as const satisfies Record<string, { code: number; status: number; message: string }>;

export type ErrorName = keyof typeof ERRORS;

/** User errors (4xx) are the caller's fault and logged at info; system errors (5xx) at error. */
export class BordeError extends Error {
  readonly code: number;
  readonly status: number;
  /** Seconds a client should wait before retrying (sent as `Retry-After`). */
  readonly retryAfter: number | undefined;

  constructor(
    readonly kind: ErrorName,
    message?: string,
    options?: { cause?: unknown; retryAfter?: number },
  ) {
    super(message ?? ERRORS[kind].message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "BordeError";
    this.code = ERRORS[kind].code;
    this.status = ERRORS[kind].status;
    this.retryAfter = options?.retryAfter;
  }

  get isUserError(): boolean {
    return this.status < 500;
  }
}
