// Cloudflare's documented Workers AI examples, deployed to a real node and run against the real
// engine through the node's own env.AI binding: inference service, limits and meter included.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import { bundleProject, deployBody } from "../../src/workers/deploy/bundle.js";
import { ACCOUNT, sseEvents, startTestNode, TOKEN, type TestNode } from "../helpers.js";

const PROJECTS = path.resolve(import.meta.dirname, "../fixtures/workers/projects");

describe("Workers AI examples on a real node", () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode();
    for (const project of ["text-generation", "streaming", "embeddings"]) {
      const b = await bundleProject(path.join(PROJECTS, project), { name: `ex-${project}` });
      const res = await fetch(`${node.url}/client/v4/accounts/${ACCOUNT}/workers/scripts/ex-${project}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify(deployBody(b.modules, b.settings)),
      });
      assert.equal(res.status, 200, await res.text());
    }
  });
  after(() => node.close());

  test("text generation: the worker answers what the REST API answers", async () => {
    const viaWorker = await fetch(`${node.url}/workers/ex-text-generation/`, { headers: { "x-request-id": "ex-text-1" } });
    assert.equal(viaWorker.status, 200);
    const body = (await viaWorker.json()) as { response: string; usage: { completion_tokens: number } };
    assert.ok(body.response.length > 0);
    assert.ok(body.usage.completion_tokens > 0);
  });

  test("streaming: the worker returns the binding's SSE stream, ending in [DONE]", async () => {
    // By Host header (fetch() will not set Host, so node:http does).
    const res = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port: node.port, path: "/", headers: { host: `ex-streaming.workers.localhost:${node.port}` } }, (r) => {
          let body = "";
          r.setEncoding("utf8");
          r.on("data", (d: string) => (body += d));
          r.on("end", () => resolve({ status: r.statusCode ?? 0, type: String(r.headers["content-type"]), body }));
        })
        .on("error", reject);
    });
    assert.equal(res.status, 200, res.body);
    assert.match(res.type, /text\/event-stream/);
    const events = sseEvents(res.body);
    assert.equal(events.at(-1), "[DONE]");
    const text = events
      .slice(0, -1)
      .map((e) => (JSON.parse(e) as { response?: string }).response ?? "")
      .join("");
    assert.ok(text.length > 0);
  });

  test("embeddings: one vector per story", async () => {
    const res = await fetch(`${node.url}/workers/ex-embeddings/`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { shape: number[]; data: number[][] };
    assert.equal(body.data.length, 3);
    assert.equal(body.shape[0], 3);
  });

  test("the Wasm model example deploys like any worker and classifies digits inside the worker", async () => {
    const dir = path.resolve(import.meta.dirname, "../../examples/wasm-model-worker");
    const b = await bundleProject(dir);
    const put = await fetch(`${node.url}/client/v4/accounts/${ACCOUNT}/workers/scripts/${b.name}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(deployBody(b.modules, b.settings)),
    });
    assert.equal(put.status, 200, await put.text());
    const expected = JSON.parse(await fs.readFile(path.join(dir, "model/expected.json"), "utf8")) as { cases: { pixels: number[]; predicted: number }[] };
    for (const c of expected.cases.slice(0, 8)) {
      const res = await fetch(`${node.url}/workers/${b.name}/`, { method: "POST", body: JSON.stringify({ pixels: c.pixels }) });
      const text = await res.text();
      assert.equal(res.status, 200, text);
      const body = JSON.parse(text) as { backend: string; predictions: { digit: number }[] };
      assert.equal(body.backend, "wasm");
      assert.equal(body.predictions[0]!.digit, c.predicted);
    }
  });

  test("every env.AI call is one usage record of the worker's account, keyed by the request id", () => {
    const db = new Database(path.join(node.dataDir, "borde.db"), { readonly: true });
    try {
      const rows = db.prepare("SELECT request_id, account_id, token_id, task, neurons FROM usage WHERE token_id LIKE 'worker:%' ORDER BY ts").all() as {
        request_id: string;
        account_id: string;
        token_id: string;
        task: string;
        neurons: number;
      }[];
      assert.equal(rows.length, 3, JSON.stringify(rows));
      assert.deepEqual(
        rows.map((r) => r.token_id),
        ["worker:ex-text-generation", "worker:ex-streaming", "worker:ex-embeddings"],
      );
      assert.equal(rows[0]!.request_id, "ex-text-1:ai:1");
      for (const r of rows) {
        assert.equal(r.account_id, ACCOUNT);
        assert.ok(r.neurons > 0);
      }
      assert.deepEqual(
        rows.map((r) => r.task),
        ["text-generation", "text-generation", "text-embeddings"],
      );
    } finally {
      db.close();
    }
  });
});
