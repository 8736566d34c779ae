/**
 * A TCP proxy that adds a fixed one-way delay to every byte in both directions: the user-space
 * stand-in for `tc netem` (not available here) when `borde sim` places clients and PoPs around
 * the globe on one machine. A request/response exchange through it pays 2 × delayMs.
 *
 * Each direction of a connection is a FIFO of (due time, chunk); one process-wide precise clock
 * (clock.ts) delivers chunks when due, so order is kept and a burst costs one wake-up.
 * Half-close (FIN) and close travel through the same FIFO, behind the data sent before them;
 * a reset or error on one side destroys the other side when it arrives.
 *
 * Flow control: the source socket is paused while the destination's write buffer is full
 * (resumed on 'drain') or while more than MAX_IN_FLIGHT_BYTES wait in the delay line. The latter
 * acts like a TCP window: throughput is capped at about MAX_IN_FLIGHT_BYTES / delayMs
 * (4 MiB / 20 ms = 200 MiB/s), far above what the simulated AI traffic needs.
 *
 * Not emulated: connection set-up. A client's connect completes at once; a real TCP handshake
 * costs one more round trip (TLS one or two more). Clients that keep connections alive (the load
 * generator does) pay it once anyway.
 *
 * Measured overhead over 2 × delayMs (delay 20 ms; echo server, client and proxy in one process;
 * 2-core box shared with other jobs, load average 2–10, so tails vary from run to run):
 *   1 connection, sequential 64-byte pings:          p50 +0.45..0.55 ms, p99 +1.7..5 ms
 *   50 connections, each pinging with 0–5 ms pauses: p50 +0.1..0.4 ms,  p99 +2.4..12 ms (74 at worst)
 * Chunks leave the delay line 0.03–0.04 ms after their due time (p50). Most of the rest is the
 * event loop waking from idle for each of the 4 loopback hops: a bare loopback echo (no proxy)
 * after 40 ms idle takes 0.2–0.28 ms, against 0.02 ms back to back.
 */
import net from "node:net";
import { performance } from "node:perf_hooks";
import { acquireClock, type Clock } from "./clock.js";

const MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024;

export interface DelayProxy {
  host: string;
  port: number;
  /** Stops listening and destroys every open connection (both sides). */
  close(): Promise<void>;
  /** Connections accepted and payload bytes delivered (both directions), since the start. */
  stats(): { connections: number; bytes: number };
}

export interface DelayProxyOptions {
  target: { host: string; port: number };
  /** One-way delay added to each direction, ms (fractions allowed). */
  delayMs: number;
  /** Default 127.0.0.1. */
  listenHost?: string;
  /** Default 0 (any free port). */
  listenPort?: number;
}

/** What the FIFO carries besides data: the source's FIN, or its close (after an error or not). */
type Item = { due: number; chunk: Buffer } | { due: number; fin: true } | { due: number; closed: "clean" | "error" };

/** One direction of one connection: bytes read from `src`, written `delayMs` later to `dst`. */
class Pipe {
  /** Delivered entries are cleared at once so their chunks can be collected. */
  private readonly items: (Item | undefined)[] = [];
  private head = 0;
  private inFlight = 0;
  private dstFull = false;
  private scheduled = false;

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    delayMs: number,
    private readonly clock: Clock,
    private readonly proxy: { closed: boolean; bytes: number },
  ) {
    src.on("data", (chunk: Buffer) => {
      this.inFlight += chunk.length;
      this.push({ due: performance.now() + delayMs, chunk });
      this.flow();
    });
    src.on("end", () => this.push({ due: performance.now() + delayMs, fin: true }));
    src.on("close", (hadError) => this.push({ due: performance.now() + delayMs, closed: hadError ? "error" : "clean" }));
    dst.on("drain", () => {
      this.dstFull = false;
      this.flow();
    });
  }

  private push(item: Item): void {
    if (this.proxy.closed) return;
    this.items.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      this.clock.at(item.due, this.deliver);
    }
  }

  /** Pauses the source while the destination or the delay line is full. */
  private flow(): void {
    if (this.src.destroyed) return;
    if (this.dstFull || this.inFlight > MAX_IN_FLIGHT_BYTES) this.src.pause();
    else this.src.resume();
  }

  private readonly deliver = (): void => {
    this.scheduled = false;
    const now = performance.now();
    const dst = this.dst;
    dst.cork();
    let item: Item | undefined;
    while ((item = this.items[this.head]) !== undefined && item.due <= now) {
      this.items[this.head++] = undefined;
      if (dst.destroyed) continue;
      if ("chunk" in item) {
        this.inFlight -= item.chunk.length;
        this.proxy.bytes += item.chunk.length;
        if (!dst.write(item.chunk)) this.dstFull = true;
      } else if ("fin" in item) {
        dst.end();
      } else if (item.closed === "error") {
        dst.destroy();
      } else {
        // The source is gone for good: whatever the destination still sends has nowhere to go.
        dst.end(() => dst.destroy());
      }
    }
    if (!dst.destroyed) dst.uncork();
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else {
      if (this.head > 1024) {
        this.items.splice(0, this.head);
        this.head = 0;
      }
      this.scheduled = true;
      this.clock.at(this.items[this.head]!.due, this.deliver);
    }
    this.flow();
  };
}

/** Starts a delay proxy in front of `target`; resolves once it listens. */
export async function startDelayProxy(o: DelayProxyOptions): Promise<DelayProxy> {
  if (!(Number.isFinite(o.delayMs) && o.delayMs >= 0)) throw new RangeError(`startDelayProxy: delayMs must be a finite number >= 0, got ${o.delayMs}`);
  const clock = await acquireClock();
  const sockets = new Set<net.Socket>();
  const state = { closed: false, bytes: 0, connections: 0 };
  const track = (s: net.Socket): void => {
    sockets.add(s);
    // Errors close the socket; the 'close' travels to the other side as a reset.
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
  };

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    state.connections++;
    const upstream = net.connect({ host: o.target.host, port: o.target.port, allowHalfOpen: true, noDelay: true });
    track(client);
    track(upstream);
    new Pipe(client, upstream, o.delayMs, clock, state);
    new Pipe(upstream, client, o.delayMs, clock, state);
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(o.listenPort ?? 0, o.listenHost ?? "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    await clock.release();
    throw e;
  }
  const address = server.address() as net.AddressInfo;

  let closing: Promise<void> | undefined;
  return {
    host: address.address,
    port: address.port,
    stats: () => ({ connections: state.connections, bytes: state.bytes }),
    close: () =>
      (closing ??= (async () => {
        state.closed = true;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        const gone = [...sockets].map((s) => new Promise<void>((resolve) => (s.closed ? resolve() : s.once("close", () => resolve()))));
        for (const s of sockets) s.destroy();
        await Promise.all([stopped, ...gone]);
        await clock.release();
      })()),
  };
}
