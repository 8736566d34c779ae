import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, describe, it } from "node:test";
import type { ModelInfo } from "../../src/catalog/types.js";
import type { Engine, LoadedModel, ModelSpec } from "../../src/engines/contract.js";
import { BordeError } from "../../src/errors.js";
import { Scheduler } from "../../src/scheduler/index.js";
import { chooseThreads } from "../../src/util/threads.js";
import { ACCOUNT, startTestNode, STORIES, type TestNode } from "../helpers.js";

/** Reads an SSE response until its first event; returns the reader so the caller controls the rest. */
async function firstEvent(res: Response) {
  const reader = res.body!.getReader();
  const { value } = await reader.read();
  return { reader, first: new TextDecoder().decode(value) };
}

async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setImmediate(r));
  }
}

describe("scheduler with the real engine", () => {
  const nodes: TestNode[] = [];
  after(async () => {
    for (const n of nodes) await n.close();
  });
  const run = (node: TestNode, model: string, body: unknown, init?: RequestInit) => node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/${model}`, body, init);
  const active = (node: TestNode) => node.scheduler.snapshot().models.reduce((s, m) => s + m.active + m.queued, 0);

  it("concurrent streams to one model run together as sequences of one context", async () => {
    const node = await startTestNode({ parallel: 4 });
    nodes.push(node);
    const body = { prompt: "Once upon a time", max_tokens: 1500, temperature: 1, seed: 1, stream: true };
    const responses = await Promise.all([1, 2, 3, 4].map(() => run(node, "@local/stories", body)));
    const streams = await Promise.all(responses.map(firstEvent));
    // All four produced text before any finished: they were not served one after another.
    const snap = node.scheduler.snapshot().models.find((m) => m.id === "@local/stories")!;
    assert.equal(snap.active, 4);
    assert.equal(snap.queued, 0);
    for (const s of streams) assert.match(s.first, /^data: \{"response":/);
    for (const s of streams) await s.reader.cancel();
    await until(() => active(node) === 0);
  });

  it("a full queue answers 429/3040 with Retry-After; a client that disconnects frees its slot at once", async () => {
    const node = await startTestNode({ parallel: 1, maxQueue: 1 });
    nodes.push(node);
    const long = { prompt: "Once upon a time", max_tokens: 1900, temperature: 1, seed: 2, stream: true };
    const a = await firstEvent(await run(node, "@local/stories", long));
    const ac = new AbortController();
    const queued = run(node, "@local/stories", { ...long, stream: false }, { signal: ac.signal }).catch(() => null);
    await until(() => node.scheduler.snapshot().models.some((m) => m.queued === 1));
    const refused = await run(node, "@local/stories", { prompt: "x", max_tokens: 1 });
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers.get("retry-after")) >= 1);
    assert.deepEqual(((await refused.json()) as { errors: { code: number }[] }).errors.map((e) => e.code), [3040]);

    // The queued client gives up: its place is freed. Then the streaming client disconnects: its slot is freed.
    ac.abort();
    await queued;
    await until(() => node.scheduler.snapshot().models.every((m) => m.queued === 0));
    const t0 = performance.now();
    await a.reader.cancel();
    await until(() => active(node) === 0, 2000);
    const freedMs = performance.now() - t0;
    assert.ok(freedMs < 500, `slot freed after ${freedMs} ms`);
    const next = await run(node, "@local/stories", { prompt: "Once upon a time", max_tokens: 3, temperature: 0 });
    assert.equal(next.status, 200);
  });

  it("a request past its deadline answers 408/3007, queued or running", async () => {
    const node = await startTestNode({ parallel: 1, requestTimeoutMs: 150 });
    nodes.push(node);
    const r = await run(node, "@local/stories", { prompt: "Once upon a time", max_tokens: 1900, temperature: 1, seed: 3 });
    assert.equal(r.status, 408);
    assert.deepEqual(((await r.json()) as { errors: { code: number }[] }).errors.map((e) => e.code), [3007]);
    await until(() => active(node) === 0);
    const ok = await run(node, "@local/stories", { prompt: "Once upon a time", max_tokens: 3 });
    assert.equal(ok.status, 200);
  });

  it("evicts the least recently used idle model when the memory budget would be exceeded", async () => {
    const probe = await startTestNode();
    nodes.push(probe);
    await run(probe, "@local/stories", { prompt: "a", max_tokens: 1 });
    const one = probe.scheduler.snapshot().models[0]!.memoryBytes;
    // Room for two models, not three.
    const node = await startTestNode({ memoryBudgetMb: Math.max(16, Math.ceil((2.5 * one) / 2 ** 20)) });
    nodes.push(node);
    if (2.5 * one < 16 * 2 ** 20) {
      // The model is tiny; pad the budget arithmetic with copies instead of asserting nothing.
      assert.fail(`stories260K estimate ${one} bytes is too small for a 16 MiB budget test; adjust the test`);
    }
    for (const name of ["b", "c"]) await fs.copyFile(STORIES, path.join(node.modelsDir, `${name}.gguf`));
    const ids = () => node.scheduler.snapshot().models.map((m) => m.id).sort();
    for (const id of ["@local/stories", "@local/b"]) assert.equal((await run(node, id, { prompt: "a", max_tokens: 1 })).status, 200);
    assert.deepEqual(ids(), ["@local/b", "@local/stories"]);
    await run(node, "@local/stories", { prompt: "a", max_tokens: 1 }); // stories is now the most recent
    assert.equal((await run(node, "@local/c", { prompt: "a", max_tokens: 1 })).status, 200);
    assert.deepEqual(ids(), ["@local/c", "@local/stories"], "b was least recently used");
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    assert.match(metrics, /borde_models_loaded 2/);
  });
});

describe("scheduler admission and residency (engine injected)", () => {
  function fakeEngine(memory: number, slots = 1) {
    const loads: string[] = [];
    const disposed: string[] = [];
    const engine: Engine = {
      name: "llama",
      estimateMemory: async () => memory,
      slotsFor: () => slots,
      load: async (spec: ModelSpec): Promise<LoadedModel> => {
        loads.push(spec.id);
        return {
          id: spec.id,
          task: spec.task,
          memoryBytes: memory,
          slots,
          generate: async () => ({ text: "", toolCalls: [], usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 }, finishReason: "stop" }),
          embed: async () => ({ vectors: [], promptTokens: 0, pooling: "last" as const }),
          dispose: async () => void disposed.push(spec.id),
        };
      },
      dispose: async () => undefined,
    };
    return { engine, loads, disposed };
  }
  const info = (id: string): ModelInfo => ({ id, task: "text-generation", engine: "llama", source: "local", description: "", path: `/x/${id}`, installed: true, sizeBytes: 1, license: null, hub: null });
  const never = new AbortController().signal;

  it("loads once for concurrent first requests and serves waiters in order", async () => {
    const f = fakeEngine(10, 1);
    const s = new Scheduler({ engine: f.engine, memoryBudgetBytes: 100, maxQueue: 10 });
    const order: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = s.run(info("m"), never, async () => {
      order.push(0);
      await gate;
    });
    const rest = [1, 2, 3].map((i) => s.run(info("m"), never, async () => void order.push(i)));
    await new Promise((r) => setImmediate(r));
    release();
    await Promise.all([first, ...rest]);
    assert.deepEqual(f.loads, ["m"]);
    assert.deepEqual(order, [0, 1, 2, 3]);
  });

  it("refuses a model larger than the whole budget with 507, and busy models are never evicted", async () => {
    const big = new Scheduler({ engine: fakeEngine(200).engine, memoryBudgetBytes: 100, maxQueue: 1 });
    await assert.rejects(big.run(info("huge"), never, async () => undefined), (e: unknown) => e instanceof BordeError && e.status === 507);

    const f = fakeEngine(60);
    const s = new Scheduler({ engine: f.engine, memoryBudgetBytes: 100, maxQueue: 1 });
    let release!: () => void;
    const busy = s.run(info("a"), never, () => new Promise<void>((r) => (release = r)));
    await new Promise((r) => setImmediate(r));
    await assert.rejects(s.run(info("b"), never, async () => undefined), (e: unknown) => e instanceof BordeError && e.code === 3040 && e.retryAfter! > 0);
    release();
    await busy;
    await s.run(info("b"), never, async () => undefined);
    assert.deepEqual(f.disposed, ["a"]);
  });

  it("a deadline that passes while a model is being admitted is honoured at once, not after the load", async () => {
    const f = fakeEngine(10);
    let releaseEstimate!: () => void;
    const estimated = new Promise<void>((r) => (releaseEstimate = r));
    f.engine.estimateMemory = async () => {
      await estimated;
      return 10;
    };
    const s = new Scheduler({ engine: f.engine, memoryBudgetBytes: 100, maxQueue: 5 });
    const ac = new AbortController();
    const p = s.run(info("m"), ac.signal, async () => "ran");
    ac.abort(new BordeError("Timeout"));
    releaseEstimate();
    await assert.rejects(p, (e: unknown) => e instanceof BordeError && e.code === 3007);
    assert.equal(s.snapshot().models[0]?.queued ?? 0, 0);
  });

  it("close() lets a running request finish before unloading, and refuses new ones", async () => {
    const f = fakeEngine(10);
    const s = new Scheduler({ engine: f.engine, memoryBudgetBytes: 100, maxQueue: 5 });
    let release!: () => void;
    const running = s.run(info("m"), never, () => new Promise<string>((r) => (release = () => r("done"))));
    await new Promise((r) => setImmediate(r));
    const closing = s.close();
    await assert.rejects(s.run(info("m"), never, async () => "late"), (e: unknown) => e instanceof BordeError && e.code === 3040);
    assert.deepEqual(f.disposed, [], "not unloaded under a running request");
    release();
    assert.equal(await running, "done");
    await closing;
    assert.deepEqual(f.disposed, ["m"]);
  });

  it("a load failure reaches every waiter and leaves no slot taken", async () => {
    const f = fakeEngine(10);
    let fail = true;
    const load = f.engine.load;
    f.engine.load = async (spec) => {
      if (fail) throw new BordeError("ModelLoadFailed");
      return load(spec);
    };
    const s = new Scheduler({ engine: f.engine, memoryBudgetBytes: 100, maxQueue: 5 });
    const results = await Promise.allSettled([1, 2, 3].map(() => s.run(info("m"), never, async () => "ran")));
    assert.ok(results.every((r) => r.status === "rejected"));
    fail = false;
    assert.equal(await s.run(info("m"), never, async () => "ran"), "ran");
    assert.equal(s.snapshot().models[0]!.active, 0);
  });
});

describe("thread choice", () => {
  it("never exceeds free cores and keeps one for the event loop", () => {
    assert.equal(chooseThreads(0, 2, 0), 1);
    assert.equal(chooseThreads(0, 8, 0), 7);
    assert.equal(chooseThreads(0, 8, 5.2), 2);
    assert.equal(chooseThreads(0, 2, 3), 1);
    assert.equal(chooseThreads(3, 2, 0), 3, "an explicit setting wins");
  });
});
