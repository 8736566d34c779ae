import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, describe, it } from "node:test";
import { startHub, type Hub } from "../cli/helpers.js";
import { ACCOUNT, startTestNode, STORIES, type TestNode } from "../helpers.js";

describe("auto-pull and preload", () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of closers) await c();
  });

  it("with auto-pull, concurrent first requests for a catalog model share one verified download", async () => {
    const hub: Hub = await startHub(STORIES);
    closers.push(() => hub.close());
    // bge-base has no sha256 in the catalog: the pull verifies against the hub's X-Linked-Etag.
    const node: TestNode = await startTestNode({ autoPull: true, hfEndpoint: hub.endpoint });
    closers.push(() => node.close());
    const id = "@cf/baai/bge-base-en-v1.5";
    const responses = await Promise.all([1, 2, 3].map(() => node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/${id}`, { text: "hello" })));
    for (const r of responses) assert.equal(r.status, 200, await r.clone().text());
    const body = (await responses[0]!.json()) as { result: { shape: number[] } };
    assert.deepEqual(body.result.shape, [1, 64]);
    assert.equal(hub.requests.length, 1, "one download");
    const installed = path.join(node.modelsDir, "catalog", "cf__baai__bge-base-en-v1.5.gguf");
    assert.deepEqual(await fs.readFile(installed), await fs.readFile(STORIES));
  });

  it("a download that fails verification is 502/7103, and nothing is installed", async () => {
    const hub: Hub = await startHub(STORIES);
    closers.push(() => hub.close());
    hub.mode.linkedEtag = "0".repeat(64);
    const node = await startTestNode({ autoPull: true, hfEndpoint: hub.endpoint });
    closers.push(() => node.close());
    const r = await node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/@cf/baai/bge-base-en-v1.5`, { text: "hello" });
    assert.equal(r.status, 502);
    const e = ((await r.json()) as { errors: { code: number; message: string }[] }).errors[0]!;
    assert.equal(e.code, 7103);
    assert.match(e.message, /sha256/);
    await assert.rejects(fs.stat(path.join(node.modelsDir, "catalog", "cf__baai__bge-base-en-v1.5.gguf")));
  });

  it("without auto-pull the same request is 400/5007 and nothing is downloaded", async () => {
    const hub: Hub = await startHub(STORIES);
    closers.push(() => hub.close());
    const node = await startTestNode({ hfEndpoint: hub.endpoint });
    closers.push(() => node.close());
    const r = await node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/@cf/baai/bge-base-en-v1.5`, { text: "hello" });
    assert.equal(r.status, 400);
    assert.equal(hub.requests.length, 0);
  });

  it("a preload that fails stops the node: start-up rejects and nothing keeps listening", async () => {
    await assert.rejects(startTestNode({ preload: ["@cf/nobody/nothing"] }), (e: unknown) => e instanceof Error && /No such model/.test(e.message));
  });

  it("--preload loads models before the node reports ready", async () => {
    const node = await startTestNode({ preload: ["@local/stories"] });
    closers.push(() => node.close());
    assert.deepEqual(node.scheduler.snapshot().models.map((m) => [m.id, m.state]), [["@local/stories", "ready"]]);
    assert.equal((await fetch(`${node.url}/readyz`)).status, 200);
  });
});
