import type { ModelInfo } from "../catalog/types.js";
import type { LoadedModel } from "../engines/contract.js";
import { BordeError } from "../errors.js";
import type { Scheduler } from "./index.js";

/**
 * Batches requests for the same model into one forward pass — where CPU throughput comes from for
 * embeddings and classification. It adds no wait at low load: a request goes straight to the model
 * when it is idle, and the requests that arrive while a pass is running ride together in the next
 * one (up to the model's `maxBatch`). A short `maxWaitMs` linger lets near-simultaneous arrivals
 * (a client's burst) share the first pass too. Waiting items are bounded; more get 429/3040.
 */
export interface BatcherOptions {
  /** How long the first item of a batch waits for company when the model is idle. */
  maxWaitMs: number;
  /** Items that may wait per model; one more is refused. */
  maxPending: number;
  /** Cap on a batch whatever the model allows; 1 turns batching off (benchmarks compare). */
  maxBatch: number;
}

interface Item<I, O> {
  input: I;
  signal: AbortSignal;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
  onAbort: () => void;
}

interface Lane {
  pending: Item<unknown, unknown>[];
  running: number;
  /** Learnt from the model once loaded; 1 until then (the first pass also loads it). */
  maxBatch: number;
  slots: number;
  timer: NodeJS.Timeout | null;
}

export type BatchFn<I, O> = (model: LoadedModel, inputs: I[], signal: AbortSignal) => Promise<O[]>;

export class Batcher {
  private readonly lanes = new Map<string, Lane>();
  /** What each model allows, learnt on its first pass and kept after its lane goes idle. */
  private readonly learnt = new Map<string, { maxBatch: number; slots: number }>();

  constructor(
    private readonly scheduler: Scheduler,
    private readonly options: BatcherOptions,
  ) {}

  /** Runs `input` in some batch of `info`'s model; `run` is called with a whole batch. */
  submit<I, O>(info: ModelInfo, kind: string, input: I, signal: AbortSignal, run: BatchFn<I, O>): Promise<O> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const key = `${info.id}\u0000${info.path}\u0000${kind}`;
    let lane = this.lanes.get(key);
    if (!lane) {
      const known = this.learnt.get(key);
      lane = { pending: [], running: 0, maxBatch: known?.maxBatch ?? 1, slots: known?.slots ?? 1, timer: null };
      this.lanes.set(key, lane);
    }
    if (lane.pending.length >= this.options.maxPending) {
      return Promise.reject(new BordeError("OutOfCapacity", `Out of capacity: ${lane.pending.length} requests already queued for ${info.id}`, { retryAfter: 1 }));
    }
    const l = lane;
    return new Promise<O>((resolve, reject) => {
      const item: Item<I, O> = {
        input,
        signal,
        resolve,
        reject,
        onAbort: () => {
          const i = l.pending.indexOf(item as Item<unknown, unknown>);
          if (i >= 0) l.pending.splice(i, 1);
          reject(signal.reason);
        },
      };
      signal.addEventListener("abort", item.onAbort, { once: true });
      l.pending.push(item as Item<unknown, unknown>);
      if (l.running === 0 && !l.timer) {
        // Idle model: linger briefly so a burst shares the first pass.
        l.timer = setTimeout(() => {
          l.timer = null;
          this.pump(key, l, info, run as BatchFn<unknown, unknown>);
        }, this.options.maxWaitMs);
      } else {
        this.pump(key, l, info, run as BatchFn<unknown, unknown>);
      }
    });
  }

  private pump(key: string, lane: Lane, info: ModelInfo, run: BatchFn<unknown, unknown>): void {
    while (lane.pending.length > 0 && lane.running < lane.slots && !lane.timer) {
      const batch = lane.pending.splice(0, lane.maxBatch);
      for (const item of batch) item.signal.removeEventListener("abort", item.onAbort);
      lane.running++;
      void this.runBatch(key, lane, info, batch, run).finally(() => {
        lane.running--;
        if (lane.pending.length > 0) this.pump(key, lane, info, run);
        else if (lane.running === 0) this.lanes.delete(key);
      });
    }
  }

  private async runBatch(key: string, lane: Lane, info: ModelInfo, batch: Item<unknown, unknown>[], run: BatchFn<unknown, unknown>): Promise<void> {
    // The pass stops only when every caller in it has gone: one client leaving must not cost the others.
    const live = batch.filter((i) => !i.signal.aborted);
    if (live.length === 0) return batch.forEach((i) => i.reject(i.signal.reason));
    const signal = live.length === 1 ? live[0]!.signal : allAborted(live.map((i) => i.signal));
    const pass = (items: Item<unknown, unknown>[], s: AbortSignal) =>
      this.scheduler.run(info, s, async (model, ss) => {
        lane.maxBatch = Math.max(1, Math.min(model.maxBatch ?? 1, this.options.maxBatch));
        lane.slots = Math.max(1, model.slots);
        this.learnt.set(key, { maxBatch: lane.maxBatch, slots: lane.slots });
        const outputs = await run(model, items.map((i) => i.input), ss);
        if (outputs.length !== items.length) throw new BordeError("Internal", `Engine returned ${outputs.length} outputs for ${items.length} inputs`);
        return outputs;
      });
    try {
      const outputs = await pass(live, signal);
      live.forEach((item, n) => (item.signal.aborted ? item.reject(item.signal.reason) : item.resolve(outputs[n])));
    } catch (e) {
      if (live.length > 1 && e instanceof BordeError && e.isUserError && e.kind !== "OutOfCapacity") {
        // One caller's bad input (a text over the model's limit) must not fail the others that
        // shared its pass: run each alone, so only the culprit gets the error.
        for (const item of live) await pass([item], item.signal).then((o) => item.resolve(o[0]), item.reject);
      } else for (const item of live) item.reject(e);
    }
    for (const item of batch) if (!live.includes(item)) item.reject(item.signal.reason);
  }
}

function allAborted(signals: AbortSignal[]): AbortSignal {
  const controller = new AbortController();
  let left = signals.length;
  for (const s of signals) {
    s.addEventListener(
      "abort",
      () => {
        if (--left === 0) controller.abort(s.reason);
      },
      { once: true },
    );
  }
  return controller.signal;
}
