/**
 * A sub-millisecond timer for the delay proxies. Node's `setTimeout` cannot do it: libuv timers
 * count whole milliseconds of a cached loop time, so `setTimeout(f, 7.3)` fires anywhere from
 * ~1.5 ms early to ~0.2 ms late (measured on the 2-core dev box; a fractional delay is truncated).
 * Spinning on `setImmediate` from ~1 ms before the deadline fixes the precision but burns ~1.4 ms
 * of CPU per wake-up, which at 50 busy connections is most of a core.
 *
 * So a worker thread keeps the time: it sleeps in `Atomics.wait` (a condition variable with a
 * nanosecond timeout, no ms rounding) until LEAD_MS before the earliest deadline, then posts a
 * message; the main thread finishes the last LEAD_MS with `setImmediate` checks against
 * `performance.now()` and runs the callbacks. Measured (same loaded box, 300 wake-ups each):
 * lateness p50 0.006 ms with ~0.1 ms of spinning per wake-up, against p50 0.22 ms for the worker
 * alone (thread wake-up + message hop) and 1.4 ms of spinning for setTimeout + spin. Tails follow
 * the load of the box (p90 0.1–1.6 ms at load average 3–10 on 2 cores).
 *
 * One worker serves every proxy of the process (reference counted: started by the first
 * `acquireClock`, terminated by the last `release`). It is unref'd: pending deadlines never keep
 * the process alive by themselves (the sockets whose data they carry do).
 */
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";

/** How long before a deadline the worker wakes the main thread, which spins the rest. */
const LEAD_MS = 0.3;

/**
 * Where this thread's `performance.now()` starts, on the hrtime clock (ms). The first calls of
 * either clock are slow (~0.4 ms of lazy set-up, measured), and a preemption between the two
 * reads makes the result too small, so: warm up, then take the largest of a few readings.
 */
const originOfNow = (): number => {
  let best = -Infinity;
  for (let i = 0; i < 8; i++) best = Math.max(best, Number(process.hrtime.bigint()) / 1e6 - performance.now());
  return best;
};

/**
 * The worker's loop. Shared memory: Int32 [0] = generation (bumped by every re-arm; -1 = stop),
 * Float64 [1] = when to wake, in the main thread's `performance.now()` time. Node 20 gives a
 * worker the process's time origin, but that is not promised, so `originShift` converts through
 * the one monotonic hrtime clock both threads share (see originOfNow; its source is copied into the worker).
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const gen = new Int32Array(workerData.shared, 0, 1);
const wakeAt = new Float64Array(workerData.shared, 8, 1);
const originShift = (${originOfNow.toString()})() - workerData.mainOrigin;
let fired = -2;
for (;;) {
  const g = Atomics.load(gen, 0);
  if (g < 0) break;
  if (g === fired) { Atomics.wait(gen, 0, g); continue; }
  const wait = wakeAt[0] - (performance.now() + originShift);
  if (wait > 0) { Atomics.wait(gen, 0, g, wait); continue; }
  fired = g;
  parentPort.postMessage(g);
}
`;

interface Entry {
  due: number;
  fn: () => void;
}

/** Min-heap on `due`; equal deadlines keep no particular order (callers never share one). */
class Heap {
  private readonly items: Entry[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): Entry | undefined {
    return this.items[0];
  }

  push(e: Entry): void {
    const a = this.items;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]!.due <= e.due) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = e;
  }

  pop(): Entry | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const c = r < a.length && a[r]!.due < a[l]!.due ? r : l;
      if (a[c]!.due >= last.due) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

export interface Clock {
  /** Runs `fn` on this thread as soon as `performance.now() >= due` (typically within 0.01 ms). */
  at(due: number, fn: () => void): void;
  /** Drops this user's hold; the last one stops the worker (pending callbacks are dropped then). */
  release(): Promise<void>;
}

class SharedClock {
  private readonly heap = new Heap();
  private readonly gen: Int32Array;
  private readonly wakeAt: Float64Array;
  private readonly worker: Worker;
  /** The deadline the worker is armed for (Infinity: none). */
  private armedFor = Infinity;
  private spinning = false;
  users = 0;
  readonly ready: Promise<void>;

  constructor() {
    const shared = new SharedArrayBuffer(16);
    this.gen = new Int32Array(shared, 0, 1);
    this.wakeAt = new Float64Array(shared, 8, 1);
    this.wakeAt[0] = Infinity;
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { shared, mainOrigin: originOfNow() } });
    this.worker.unref();
    this.worker.on("message", () => this.startSpin());
    this.ready = new Promise((resolve, reject) => {
      this.worker.once("online", resolve);
      this.worker.once("error", reject);
    });
  }

  at(due: number, fn: () => void): void {
    this.heap.push({ due, fn });
    if (!this.spinning && due < this.armedFor) this.arm(due);
  }

  async stop(): Promise<void> {
    Atomics.store(this.gen, 0, -1);
    Atomics.notify(this.gen, 0);
    await this.worker.terminate();
  }

  private arm(due: number): void {
    this.armedFor = due;
    if (due - performance.now() <= LEAD_MS) {
      this.startSpin();
      return;
    }
    this.wakeAt[0] = due - LEAD_MS;
    Atomics.add(this.gen, 0, 1);
    Atomics.notify(this.gen, 0);
  }

  private startSpin(): void {
    if (this.spinning) return;
    this.spinning = true;
    setImmediate(this.spin);
  }

  private readonly spin = (): void => {
    const now = performance.now();
    while ((this.heap.peek()?.due ?? Infinity) <= now) this.heap.pop()!.fn();
    const next = this.heap.peek();
    if (next && next.due - performance.now() <= LEAD_MS) {
      setImmediate(this.spin);
      return;
    }
    this.spinning = false;
    this.armedFor = Infinity;
    if (next) this.arm(next.due);
  };
}

let shared: SharedClock | undefined;

/** Takes a hold on the process-wide clock, starting its worker if this is the first hold. */
export async function acquireClock(): Promise<Clock> {
  const clock = (shared ??= new SharedClock());
  clock.users++;
  try {
    await clock.ready;
  } catch (e) {
    if (shared === clock) shared = undefined;
    throw e;
  }
  let held = true;
  return {
    at: (due, fn) => clock.at(due, fn),
    release: async () => {
      if (!held) return;
      held = false;
      if (--clock.users > 0) return;
      if (shared === clock) shared = undefined;
      await clock.stop();
    },
  };
}
