import assert from "node:assert/strict";
import crypto from "node:crypto";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { after, before, test } from "node:test";
import { startDelayProxy, type DelayProxy } from "../../src/network/sim/delay-proxy.js";
import { medianOf, percentile } from "../../src/network/sim/report.js";

const DELAY = 20;
let echo: net.Server;
let echoPort: number;
const serverSockets = new Set<net.Socket>();

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)));
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: "127.0.0.1", noDelay: true }, () => resolve(s));
    s.once("error", reject);
  });
}

/** Reads from `s` until `n` bytes came. */
function readBytes(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (b: Buffer) => {
      parts.push(b);
      got += b.length;
      if (got >= n) {
        s.off("data", onData);
        s.off("error", reject);
        resolve(Buffer.concat(parts));
      }
    };
    s.on("data", onData);
    s.once("error", reject);
  });
}

const closed = (s: net.Socket): Promise<void> => new Promise((resolve) => (s.closed ? resolve() : s.once("close", () => resolve())));

/** Sequential 64-byte pings on one connection; round-trip times in ms (after one warm-up). */
async function pings(port: number, n: number, gapMs = 0): Promise<number[]> {
  const s = await connect(port);
  const msg = Buffer.alloc(64, 7);
  const rtts: number[] = [];
  for (let i = 0; i <= n; i++) {
    const t = performance.now();
    s.write(msg);
    await readBytes(s, msg.length);
    if (i > 0) rtts.push(performance.now() - t);
    if (gapMs > 0) await new Promise((r) => setTimeout(r, Math.random() * gapMs));
  }
  s.destroy();
  await closed(s);
  return rtts;
}

const fmt = (xs: number[]) => `p50 +${(medianOf(xs) - 2 * DELAY).toFixed(3)} ms, p99 +${(percentile(xs, 99) - 2 * DELAY).toFixed(3)} ms`;

before(async () => {
  // An echo server that also echoes after the client's FIN, then ends (half-close friendly).
  echo = net.createServer({ noDelay: true, allowHalfOpen: true }, (s) => {
    serverSockets.add(s);
    s.on("close", () => serverSockets.delete(s));
    s.on("error", () => {});
    s.pipe(s);
  });
  echoPort = await listen(echo);
});

after(async () => {
  for (const s of serverSockets) s.destroy();
  await new Promise((r) => echo.close(r));
});

async function withProxy<T>(fn: (p: DelayProxy) => Promise<T>, delayMs = DELAY): Promise<T> {
  const p = await startDelayProxy({ target: { host: "127.0.0.1", port: echoPort }, delayMs });
  try {
    return await fn(p);
  } finally {
    await p.close();
  }
}

test("a round trip pays 2 × delay and little more", async (t) => {
  await withProxy(async (p) => {
    const rtts = await pings(p.port, 50);
    const median = medianOf(rtts);
    t.diagnostic(`1 connection: ${fmt(rtts)}`);
    assert.ok(median >= 2 * DELAY && median <= 2 * DELAY + 3, `median round trip ${median.toFixed(3)} ms, want within [40, 43]`);
    assert.ok(Math.min(...rtts) >= 2 * DELAY, "no exchange may be faster than 2 × delay");
  });
});

test("50 concurrent connections keep the delay", async (t) => {
  await withProxy(async (p) => {
    const rtts = (await Promise.all(Array.from({ length: 50 }, () => pings(p.port, 20, 5)))).flat();
    t.diagnostic(`50 connections: ${fmt(rtts)}`);
    assert.ok(Math.min(...rtts) >= 2 * DELAY, "no exchange may be faster than 2 × delay");
    // Looser than for one connection: 50 pingers and the echo server share this thread with the proxy.
    assert.ok(medianOf(rtts) <= 2 * DELAY + 5, `median ${medianOf(rtts).toFixed(3)} ms`);
    assert.equal(p.stats().connections, 50);
  });
});

test("1 MiB is echoed intact and in order", async () => {
  await withProxy(async (p) => {
    const data = crypto.randomBytes(1024 * 1024);
    const s = await connect(p.port);
    const back = readBytes(s, data.length);
    s.write(data);
    const got = await back;
    assert.equal(got.length, data.length);
    assert.ok(got.equals(data), "the bytes came back unchanged");
    assert.equal(p.stats().bytes, 2 * data.length);
    s.destroy();
    await closed(s);
  });
});

test("half-close travels behind the data: the server still answers after the client's FIN", async () => {
  await withProxy(async (p) => {
    const s = await connect(p.port);
    const ended = new Promise<void>((resolve) => s.once("end", resolve));
    const back = readBytes(s, 5);
    s.end("hello");
    assert.equal((await back).toString(), "hello");
    await ended; // the echo server ended its side after ours
    await closed(s);
  });
});

test("closing one side closes the other", async () => {
  await withProxy(async (p) => {
    // Client goes away: the server's socket closes.
    const before = new Set(serverSockets);
    const c1 = await connect(p.port);
    c1.write("x");
    await readBytes(c1, 1);
    const s1 = [...serverSockets].find((s) => !before.has(s))!;
    c1.destroy();
    await closed(s1);

    // Server goes away: the client's socket closes.
    const before2 = new Set(serverSockets);
    const c2 = await connect(p.port);
    c2.write("y");
    await readBytes(c2, 1);
    const s2 = [...serverSockets].find((s) => !before2.has(s))!;
    s2.destroy();
    await closed(c2);
  });
});

test("a refused upstream connection closes the client", async () => {
  const dead = net.createServer();
  const port = await listen(dead);
  await new Promise((r) => dead.close(r));
  const p = await startDelayProxy({ target: { host: "127.0.0.1", port }, delayMs: 5 });
  try {
    const c = await connect(p.port);
    c.on("error", () => {});
    await closed(c);
  } finally {
    await p.close();
  }
});

test("backpressure: a server that stops reading stops the client, and nothing is lost", async () => {
  const total = 48 * 1024 * 1024;
  let serverSide: net.Socket | undefined;
  const slow = net.createServer((s) => {
    serverSide = s;
    s.pause();
  });
  const port = await listen(slow);
  const p = await startDelayProxy({ target: { host: "127.0.0.1", port }, delayMs: 5 });
  try {
    const c = await connect(p.port);
    const data = crypto.randomBytes(total);
    c.write(data);
    await new Promise((r) => setTimeout(r, 500));
    const delivered = p.stats().bytes;
    // Kernel socket buffers plus the proxy's 4 MiB delay line; never the whole 48 MiB.
    assert.ok(delivered < 32 * 1024 * 1024, `proxy pulled ${delivered} bytes while the server read nothing`);
    assert.ok(c.writableLength > 0, "the client should be holding back data");
    const hash = crypto.createHash("sha256");
    let got = 0;
    const done = new Promise<void>((resolve) =>
      serverSide!.on("data", (b: Buffer) => {
        hash.update(b);
        got += b.length;
        if (got === total) resolve();
      }),
    );
    serverSide!.resume();
    await done;
    assert.equal(hash.digest("hex"), crypto.createHash("sha256").update(data).digest("hex"));
    c.destroy();
    await Promise.all([closed(c), closed(serverSide!)]);
  } finally {
    await p.close();
    await new Promise((r) => slow.close(r));
  }
});

test("close() ends every connection and leaves no handles behind", async () => {
  const count = () => {
    const kinds = new Map<string, number>();
    for (const r of process.getActiveResourcesInfo()) kinds.set(r, (kinds.get(r) ?? 0) + 1);
    return kinds;
  };
  const baseline = count();
  const p = await startDelayProxy({ target: { host: "127.0.0.1", port: echoPort }, delayMs: DELAY });
  const clients = await Promise.all([connect(p.port), connect(p.port), connect(p.port)]);
  for (const c of clients) c.on("error", () => {});
  clients[0]!.write("in flight while closing");
  clients[1]!.end("x");
  await readBytes(clients[1]!, 1);
  for (const c of clients) c.resume(); // a paused socket never sees the end of its stream
  await p.close();
  await Promise.all(clients.map(closed));
  await p.close(); // twice is fine
  await new Promise((r) => setTimeout(r, 50)); // the echo server sees its sockets close
  for (const [kind, n] of count()) assert.ok(n <= (baseline.get(kind) ?? 0), `${n} × ${kind} left, ${baseline.get(kind) ?? 0} before`);
});
