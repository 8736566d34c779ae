import { BordeError } from "../errors.js";
import type { Principal } from "./types.js";

const WINDOW_MS = 60_000;

export interface LimiterOptions {
  /** Requests per minute per account and task (a task not listed: no limit; 0: refused). */
  rateLimits: Readonly<Record<string, number>>;
  /** Text-generation tokens per minute per account; 0 = no limit. */
  tokensPerMinute: number;
  maxConcurrent: number;
  /** Daily free allocation of free-plan accounts, in neurons. */
  freeNeurons: number;
  /** Neurons used today (UTC) by an account and by a token, from the meter. */
  accountNeuronsToday: (accountId: string) => number;
  tokenNeuronsToday: (tokenId: string) => number;
  now?: () => number;
}

/** A request let in: `done` gives its concurrency slot back and counts its tokens. Call it once. */
export interface Admitted {
  done(tokens: number): void;
}

/**
 * A fixed window with the previous window's count weighted by how much of it still overlaps the
 * last minute: the sliding-window estimate Cloudflare's own rate limiting uses, O(1) per key.
 */
class Window {
  start = 0;
  current = 0;
  previous = 0;

  roll(now: number): void {
    const start = now - (now % WINDOW_MS);
    if (start === this.start) return;
    this.previous = start - this.start === WINDOW_MS ? this.current : 0;
    this.current = 0;
    this.start = start;
  }

  estimate(now: number): number {
    return this.previous * (1 - (now - this.start) / WINDOW_MS) + this.current;
  }

  /**
   * Seconds until the estimate is at most `target`, assuming nothing more is added: later in this
   * window as the previous one fades, or in the next one, where this window's count is the one
   * that fades.
   */
  retryAfter(now: number, target: number): number {
    if (target < 0) return WINDOW_MS / 1000;
    const elapsed = now - this.start;
    let wait: number;
    if (this.current <= target) {
      // previous × (1 − t/W) + current ≤ target  ⇔  t ≥ W × (1 − (target − current) / previous)
      const t = this.previous > 0 ? WINDOW_MS * (1 - (target - this.current) / this.previous) : 0;
      wait = t - elapsed;
    } else {
      // Next window: current × (1 − t/W) ≤ target  ⇔  t ≥ W × (1 − target / current)
      wait = WINDOW_MS - elapsed + WINDOW_MS * (1 - target / this.current);
    }
    return Math.max(1, Math.ceil(wait / 1000));
  }
}

/**
 * Per-node admission on an account's limits: the daily free allocation and neuron budgets (from the
 * meter's counters), concurrent requests, requests per minute per task and text-generation tokens
 * per minute. Every refusal is a 429 with `Retry-After`. In a cluster each PoP counts on its own.
 */
export class Limiter {
  private readonly rpm = new Map<string, Window>();
  private readonly tpm = new Map<string, Window>();
  private readonly running = new Map<string, number>();
  private readonly now: () => number;
  private calls = 0;

  constructor(private readonly o: LimiterOptions) {
    this.now = o.now ?? Date.now;
  }

  admit(p: Principal, task: string): Admitted {
    const now = this.now();

    const used = this.o.accountNeuronsToday(p.accountId);
    if (p.plan === "free" && used >= this.o.freeNeurons)
      throw new BordeError(
        "AccountLimited",
        `Account limited: you have used up your daily free allocation of ${this.o.freeNeurons.toLocaleString("en-US")} neurons; it resets at 00:00 UTC`,
        { retryAfter: secondsToUtcMidnight(now) },
      );
    if (p.accountBudget !== null && used >= p.accountBudget)
      throw new BordeError("BudgetExceeded", `Daily neuron budget of this account (${p.accountBudget}) is used up; it resets at 00:00 UTC`, { retryAfter: secondsToUtcMidnight(now) });
    if (p.tokenBudget !== null && this.o.tokenNeuronsToday(p.tokenId) >= p.tokenBudget)
      throw new BordeError("BudgetExceeded", `Daily neuron budget of this token (${p.tokenBudget}) is used up; it resets at 00:00 UTC`, { retryAfter: secondsToUtcMidnight(now) });

    const maxConcurrent = p.limits?.max_concurrent ?? this.o.maxConcurrent;
    const running = this.running.get(p.accountId) ?? 0;
    if (running >= maxConcurrent) throw new BordeError("RateLimited", `Rate limited: this account already has ${maxConcurrent} requests running`, { retryAfter: 1 });

    const rpmLimit = p.limits?.rate_limits?.[task] ?? this.o.rateLimits[task];
    let rpm: Window | undefined;
    if (rpmLimit !== undefined) {
      rpm = this.window(this.rpm, `${p.accountId}\u0000${task}`, now);
      if (rpm.estimate(now) + 1 > rpmLimit)
        throw new BordeError("RateLimited", `Rate limited: more than ${rpmLimit} ${task} requests per minute`, { retryAfter: rpm.retryAfter(now, rpmLimit - 1) });
    }
    const tpmLimit = task === "text-generation" ? (p.limits?.tokens_per_minute ?? this.o.tokensPerMinute) : 0;
    let tpm: Window | undefined;
    if (tpmLimit > 0) {
      tpm = this.window(this.tpm, p.accountId, now);
      if (tpm.estimate(now) >= tpmLimit)
        throw new BordeError("RateLimited", `Rate limited: more than ${tpmLimit} text-generation tokens per minute`, { retryAfter: tpm.retryAfter(now, tpmLimit - 1) });
    }

    if (rpm) rpm.current++;
    this.running.set(p.accountId, running + 1);
    if (++this.calls % 4096 === 0) this.prune(now);
    let done = false;
    return {
      done: (tokens) => {
        if (done) return;
        done = true;
        const n = (this.running.get(p.accountId) ?? 1) - 1;
        if (n > 0) this.running.set(p.accountId, n);
        else this.running.delete(p.accountId);
        if (tpm && tokens > 0) {
          const t = this.now();
          tpm.roll(t);
          tpm.current += tokens;
        }
      },
    };
  }

  private window(map: Map<string, Window>, key: string, now: number): Window {
    let w = map.get(key);
    if (!w) map.set(key, (w = new Window()));
    w.roll(now);
    return w;
  }

  /** Windows idle for two minutes hold nothing: drop them so the maps stay as small as the active set. */
  private prune(now: number): void {
    for (const map of [this.rpm, this.tpm]) for (const [k, w] of map) if (now - w.start >= 2 * WINDOW_MS) map.delete(k);
  }
}

export function secondsToUtcMidnight(now: number): number {
  const d = new Date(now);
  return Math.max(1, Math.ceil((Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1) - now) / 1000));
}
