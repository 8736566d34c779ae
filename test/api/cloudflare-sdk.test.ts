import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import Cloudflare from "cloudflare";
import { ACCOUNT, startTestNode, STORIES_REFERENCE, TOKEN, type TestNode } from "../helpers.js";

describe("Workers AI API through the cloudflare SDK", () => {
  let node: TestNode;
  let cf: Cloudflare;

  before(async () => {
    node = await startTestNode();
    cf = new Cloudflare({ apiToken: TOKEN, baseURL: `${node.url}/client/v4`, maxRetries: 0 });
  });
  after(async () => {
    await node?.close();
  });

  it("ai.run: text generation (the SDK percent-encodes the model id in the path)", async () => {
    const r = (await cf.ai.run("@local/stories", { account_id: ACCOUNT, prompt: "Once upon a time", temperature: 0, max_tokens: 20 })) as { response: string };
    assert.ok(STORIES_REFERENCE.startsWith(`Once upon a time${r.response}`), r.response);
  });

  it("ai.run: embeddings", async () => {
    const r = (await cf.ai.run("@local/stories", { account_id: ACCOUNT, text: ["a", "b"] })) as { shape: number[] };
    assert.deepEqual(r.shape, [2, 64]);
  });

  it("errors surface as the SDK's typed errors", async () => {
    await assert.rejects(cf.ai.run("@cf/nobody/nothing", { account_id: ACCOUNT, prompt: "x" }), (e: unknown) => {
      assert.ok(e instanceof Cloudflare.BadRequestError, String(e));
      assert.match(String((e as Error).message), /5007|No such model/);
      return true;
    });
    const bad = new Cloudflare({ apiToken: "wrong-token-123", baseURL: `${node.url}/client/v4`, maxRetries: 0 });
    await assert.rejects(bad.ai.run("@local/stories", { account_id: ACCOUNT, prompt: "x" }), Cloudflare.AuthenticationError);
  });

  it("ai.models.list reads the catalog", async () => {
    const names: string[] = [];
    for await (const m of cf.ai.models.list({ account_id: ACCOUNT })) names.push((m as { name: string }).name);
    assert.ok(names.includes("@local/stories"), names.join(","));
    assert.ok(names.includes("@cf/meta/llama-3.2-1b-instruct"));
  });
});
