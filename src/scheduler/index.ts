import type { ModelInfo } from "../catalog/types.js";
import type { LoadedModel, ModelSpec } from "../engines/contract.js";
import type { ModelLoader } from "../engines/registry.js";
import { BordeError } from "../errors.js";

export interface SchedulerOptions {
  /** The engines (a registry), or one engine alone in tests. */
  engine: ModelLoader;
  /** Memory that resident models may hold together. */
  memoryBudgetBytes: number;
  /** Requests that may wait for a slot per model; one more is refused with 429/3040. */
  maxQueue: number;
  /** How long close() lets running requests finish before unloading under them. Default 10 s. */
  drainMs?: number;
  /** Called whenever queue depth or residency changes (metrics). */
  onChange?: (snapshot: SchedulerSnapshot) => void;
  log?: { info: (obj: object, msg: string) => void; warn: (obj: object, msg: string) => void };
  now?: () => number;
}

export interface SchedulerSnapshot {
  models: { id: string; state: "loading" | "ready"; active: number; queued: number; slots: number; memoryBytes: number; lastUsed: number }[];
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

interface Resident {
  spec: ModelSpec;
  state: "loading" | "ready" | "failed";
  ready: Promise<LoadedModel>;
  model: LoadedModel | null;
  memoryBytes: number;
  active: number;
  queue: Waiter[];
  lastUsed: number;
}

/**
 * Decides what runs: loads a model on first use and keeps it while used, evicts the least recently
 * used idle model when the memory budget would be exceeded, admits at most `slots` requests per
 * model at once (they share one context as parallel sequences, which llama.cpp batches), and keeps a
 * bounded FIFO of waiters — a full queue is refused at once rather than piling up.
 */
export class Scheduler {
  private readonly residents = new Map<string, Resident>();
  /** Admissions of models not yet resident: concurrent first requests share one estimate and load. */
  private readonly arriving = new Map<string, Promise<Resident>>();
  private readonly now: () => number;
  private closing = false;
  /** Wakes close() when a request releases its slot. */
  private drained: (() => void) | null = null;

  constructor(private readonly options: SchedulerOptions) {
    this.now = options.now ?? Date.now;
  }

  /**
   * Runs `fn` with the model once a slot is free. `signal` carries the request's deadline and the
   * client's disconnect; waiting ends with it. The slot is released when `fn` settles.
   */
  async run<T>(info: ModelInfo, signal: AbortSignal, fn: (model: LoadedModel, signal: AbortSignal) => Promise<T>): Promise<T> {
    if (!info.path) throw new BordeError("NoSuchModel", `Model ${info.id} is not installed`);
    throwIfAborted(signal);
    const resident = await this.acquire(specOf(info, info.path), signal);
    try {
      const model = await abortable(resident.ready, signal);
      return await fn(model, signal);
    } finally {
      this.release(resident);
    }
  }

  /** Loads a model ahead of traffic (`--preload`). */
  async preload(info: ModelInfo): Promise<void> {
    if (!info.path) throw new BordeError("NoSuchModel", `Model ${info.id} is not installed`);
    const r = await this.residentFor(specOf(info, info.path));
    await r.ready;
  }

  snapshot(): SchedulerSnapshot {
    return {
      models: [...this.residents.values()].map((r) => ({
        id: r.spec.id,
        state: r.state === "ready" ? "ready" : "loading",
        active: r.active,
        queued: r.queue.length,
        slots: r.model?.slots ?? 0,
        memoryBytes: r.memoryBytes,
        lastUsed: r.lastUsed,
      })),
    };
  }

  /**
   * Shutdown: refuses new work and queued waiters, lets running requests finish (up to `drainMs`),
   * waits for loads in progress, then unloads every model.
   */
  async close(): Promise<void> {
    this.closing = true;
    for (const r of this.residents.values())
      for (const w of r.queue.splice(0)) {
        w.signal.removeEventListener("abort", w.onAbort);
        w.reject(new BordeError("OutOfCapacity", "Node is shutting down", { retryAfter: 1 }));
      }
    await Promise.allSettled([...this.arriving.values()]);
    const deadline = this.now() + (this.options.drainMs ?? 10_000);
    while ([...this.residents.values()].some((r) => r.active > 0) && this.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.drained = resolve;
        setTimeout(resolve, 50);
      });
    }
    const all = [...this.residents.values()];
    this.residents.clear();
    await Promise.allSettled(all.map(async (r) => (await r.ready.catch(() => null))?.dispose()));
    this.changed();
  }

  private async acquire(spec: ModelSpec, signal: AbortSignal): Promise<Resident> {
    if (this.closing) throw new BordeError("OutOfCapacity", "Node is shutting down", { retryAfter: 1 });
    const r = await this.residentFor(spec);
    // The deadline may have passed while the model was estimated or room was made: an already-aborted
    // signal never fires its abort event, so check before queueing on it.
    throwIfAborted(signal);
    // The load may have failed before this request got here: report that failure, don't queue on it.
    if (r.state === "failed") await r.ready;
    const slots = r.model?.slots ?? Infinity; // while loading, admission is decided by the queue bound alone
    if (r.active < slots && r.queue.length === 0 && r.state === "ready") {
      r.active++;
      r.lastUsed = this.now();
      this.changed();
      return r;
    }
    // While a model loads, the requests that will take its first slots wait in the queue too.
    const bound = this.options.maxQueue + (r.state === "loading" ? this.options.engine.slotsFor(spec) : 0);
    if (r.queue.length >= bound) {
      throw new BordeError("OutOfCapacity", `Out of capacity: ${r.queue.length} requests already queued for ${spec.id}`, { retryAfter: 1 });
    }
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = r.queue.indexOf(waiter);
          if (i >= 0) r.queue.splice(i, 1);
          this.changed();
          reject(signal.reason);
        },
      };
      signal.addEventListener("abort", waiter.onAbort, { once: true });
      r.queue.push(waiter);
      this.changed();
      if (r.state === "ready") this.dispatch(r);
    });
    return r;
  }

  private release(r: Resident): void {
    r.active--;
    r.lastUsed = this.now();
    this.dispatch(r);
    this.changed();
    this.drained?.();
  }

  /** Hands free slots to waiters in arrival order. */
  private dispatch(r: Resident): void {
    const slots = r.model?.slots ?? 0;
    while (r.active < slots && r.queue.length > 0) {
      const w = r.queue.shift()!;
      w.signal.removeEventListener("abort", w.onAbort);
      r.active++;
      w.resolve();
    }
  }

  private residentFor(spec: ModelSpec): Promise<Resident> {
    const existing = this.residents.get(spec.id);
    if (existing && existing.spec.path === spec.path) {
      existing.lastUsed = this.now();
      return Promise.resolve(existing);
    }
    let arriving = this.arriving.get(spec.id);
    if (!arriving) {
      arriving = this.admitModel(spec);
      this.arriving.set(spec.id, arriving);
      const clear = () => this.arriving.delete(spec.id);
      arriving.then(clear, clear);
    }
    return arriving;
  }

  private async admitModel(spec: ModelSpec): Promise<Resident> {
    const memoryBytes = await this.options.engine.estimateMemory(spec).catch((cause) => {
      // The cause (with server paths) is logged by the error mapper, not sent to the client.
      throw new BordeError("ModelLoadFailed", `Model ${spec.id} could not be read by the ${spec.engine} engine`, { cause });
    });
    if (memoryBytes > this.options.memoryBudgetBytes) {
      throw new BordeError(
        "ModelTooLarge",
        `Model ${spec.id} needs ~${mib(memoryBytes)} MiB; the memory budget is ${mib(this.options.memoryBudgetBytes)} MiB (BORDE_MEMORY_BUDGET_MB)`,
      );
    }
    await this.makeRoom(memoryBytes, spec.id);
    const resident: Resident = {
      spec,
      state: "loading",
      ready: undefined as never,
      model: null,
      memoryBytes,
      active: 0,
      queue: [],
      lastUsed: this.now(),
    };
    const started = this.now();
    resident.ready = this.options.engine.load(spec).then(
      (model) => {
        resident.model = model;
        resident.state = "ready";
        resident.memoryBytes = model.memoryBytes;
        this.options.log?.info({ model: spec.id, ms: this.now() - started, memoryBytes: model.memoryBytes, slots: model.slots }, "model loaded");
        this.dispatch(resident);
        this.changed();
        return model;
      },
      (e) => {
        resident.state = "failed";
        if (this.residents.get(spec.id) === resident) this.residents.delete(spec.id);
        for (const w of resident.queue.splice(0)) {
          w.signal.removeEventListener("abort", w.onAbort);
          resident.active++; // balanced by the waiter's release
          w.resolve(); // the waiter then awaits `ready` and receives this error
        }
        this.changed();
        throw e;
      },
    );
    resident.ready.catch(() => undefined);
    this.residents.set(spec.id, resident);
    this.changed();
    return resident;
  }

  /** Evicts idle models, least recently used first, until `bytes` more fit in the budget. */
  private async makeRoom(bytes: number, forId: string): Promise<void> {
    const used = () => [...this.residents.values()].reduce((s, r) => s + r.memoryBytes, 0);
    while (used() + bytes > this.options.memoryBudgetBytes) {
      const idle = [...this.residents.values()]
        .filter((r) => r.state === "ready" && r.active === 0 && r.queue.length === 0)
        .sort((a, b) => a.lastUsed - b.lastUsed)[0];
      if (!idle) {
        throw new BordeError("OutOfCapacity", `Out of capacity: no memory free for ${forId} while other models are busy`, { retryAfter: 5 });
      }
      this.residents.delete(idle.spec.id);
      this.options.log?.info({ model: idle.spec.id, memoryBytes: idle.memoryBytes, for: forId }, "model evicted");
      await idle.model?.dispose();
      this.changed();
    }
  }

  private changed(): void {
    this.options.onChange?.(this.snapshot());
  }
}

function specOf(info: ModelInfo, path: string): ModelSpec {
  return { id: info.id, task: info.task, engine: info.engine, path, options: info.options };
}

function mib(b: number): number {
  return Math.ceil(b / 2 ** 20);
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason;
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
