import { BordeError } from "../errors.js";
import type { Logger } from "../observability/index.js";
import { neuronsFor, type Pricing } from "./prices.js";
import { utcDay, type UsageFacts, type UsageRecord, type UsageWriter } from "./types.js";

export interface MeterOptions {
  /** Where records go; null turns metering off (benchmarks measure the path without it). */
  writer: UsageWriter | null;
  pop: string;
  pricing: Pricing;
  logger: Logger;
  now?: () => number;
}

/** The part of a call the meter needs: who, which request, and what it measured. */
export interface Metered {
  requestId: string;
  principal: { accountId: string; tokenId: string };
  usage?: UsageFacts;
  /** Set when another PoP or an upstream served it: the record says `forwarded`. */
  servedBy?: string;
  /** Set once the record is written: a call is committed at most once. */
  committed?: boolean;
}

export interface Delivery {
  bytesIn: number;
  bytesOut: number;
  served?: UsageRecord["served"];
}

/**
 * Turns each answered call into exactly one usage record. `commit` writes it synchronously, and the
 * API calls it right before the answer's last bytes go out: a process killed before that point has
 * answered nothing and recorded nothing; after it, the record is on disk. The request id (per
 * account) is the idempotency key: a second call with an id already recorded or still running is
 * refused (409), so no one pays twice and no one gets a second answer for free.
 */
export class Meter {
  private day: string;
  /** Epoch ms of the next 00:00 UTC: the counters roll then, without a date string per call. */
  private nextDayAt = 0;
  private accounts = new Map<string, number>();
  private tokens = new Map<string, number>();
  private readonly inFlight = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly o: MeterOptions) {
    this.now = o.now ?? Date.now;
    this.day = utcDay(this.now());
    this.load();
  }

  get enabled(): boolean {
    return this.o.writer !== null;
  }

  accountNeuronsToday(accountId: string): number {
    this.roll();
    return this.accounts.get(accountId) ?? 0;
  }

  tokenNeuronsToday(tokenId: string): number {
    this.roll();
    return this.tokens.get(tokenId) ?? 0;
  }

  /** Reserves a request id for one call; throws 409 when it is running or already billed. Returns the release. */
  claim(accountId: string, requestId: string): () => void {
    if (!this.o.writer) return () => undefined;
    const key = `${accountId}/${requestId}`;
    if (this.inFlight.has(key) || this.o.writer.has(accountId, requestId))
      throw new BordeError("DuplicateRequestId", `Request id ${requestId} was already used by this account; send a new x-request-id`);
    this.inFlight.add(key);
    return () => this.inFlight.delete(key);
  }

  /** Writes the call's record (once); returns it, or null when there is nothing to record. */
  commit(call: Metered, delivery: Delivery): UsageRecord | null {
    const facts = call.usage;
    if (!facts || call.committed || !this.o.writer) return null;
    const ts = this.now();
    const record: UsageRecord = {
      requestId: call.requestId,
      ts,
      day: utcDay(ts),
      accountId: call.principal.accountId,
      tokenId: call.principal.tokenId,
      model: facts.model,
      task: facts.task,
      pop: this.o.pop,
      served: delivery.served ?? (call.servedBy ? "forwarded" : "edge"),
      unit: facts.unit,
      inputUnits: facts.inputUnits,
      outputUnits: facts.outputUnits,
      neurons: neuronsFor(facts.model, facts.inputUnits, facts.outputUnits, facts.cpuMs, facts.wallMs, this.o.pricing),
      cpuMs: round3(facts.cpuMs),
      wallMs: round3(facts.wallMs),
      bytesIn: delivery.bytesIn,
      bytesOut: delivery.bytesOut,
    };
    let fresh: boolean;
    try {
      fresh = this.o.writer.write(record);
    } catch (cause) {
      // Not recorded means not answered: the caller turns this into a 500 instead of a free answer.
      this.o.logger.error({ err: cause, requestId: record.requestId }, "usage record could not be written");
      throw new BordeError("Internal", "Usage could not be recorded; the request was not billed", { cause });
    }
    call.committed = true;
    this.roll();
    // Already there (another process wrote that id): it was counted when it was first written.
    if (fresh && record.day === this.day) {
      this.accounts.set(record.accountId, (this.accounts.get(record.accountId) ?? 0) + record.neurons);
      this.tokens.set(record.tokenId, (this.tokens.get(record.tokenId) ?? 0) + record.neurons);
    }
    return record;
  }

  /** At 00:00 UTC the daily counters start again (budgets and the free allocation reset). */
  private roll(): void {
    const now = this.now();
    if (now < this.nextDayAt) return;
    this.day = utcDay(now);
    this.load();
  }

  private load(): void {
    const d = new Date(Date.parse(`${this.day}T00:00:00Z`));
    this.nextDayAt = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
    const totals = this.o.writer?.dailyTotals(this.day);
    this.accounts = totals?.accounts ?? new Map();
    this.tokens = totals?.tokens ?? new Map();
  }
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
