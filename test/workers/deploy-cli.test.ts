/**
 * `borde deploy`, `secret`, `rollback`, `tail`, `workers` end to end: the real CLI as a child process
 * against a node. That node is `borde dev` when it serves the deployments API (node.ts wires
 * workers); until then, the test server of deploy-helpers.ts (the real app and Workers facade with a
 * Miniflare runtime), said in the test's diagnostics.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { LogEvent } from "../../src/workers/types.js";
import { childEnv, cleanup, ROOT, startDev, tmpDir, type DevNode } from "../cli/helpers.js";
import { PROJECTS, startWorkersServer, TOKEN, type WorkersServer } from "./deploy-helpers.js";

const TSX = import.meta.resolve("tsx");
const WRAPPER = path.join(ROOT, "test/cli/borde.ts");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();

/** Runs the CLI from source in `cwd` (a project folder, so the worker name comes from its config). */
function spawnCli(args: string[], opts: { cwd: string; home: string; env: Record<string, string> }): ChildProcess {
  const child = spawn(process.execPath, ["--import", TSX, WRAPPER, ...args], { cwd: opts.cwd, env: childEnv(opts.home, opts.env), stdio: ["pipe", "pipe", "pipe"] });
  children.add(child);
  child.once("close", () => children.delete(child));
  return child;
}

function run(args: string[], opts: { cwd: string; home: string; env: Record<string, string>; stdin?: string }): Promise<Run> {
  const child = spawnCli(args, opts);
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdin!.end(opts.stdin ?? "");
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

function get(port: number, host: string, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path: p, headers: { host } }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode!, body }));
      })
      .on("error", reject);
  });
}

describe("borde deploy / secret / rollback / tail / workers", () => {
  let url: string;
  let port: number;
  let token: string;
  let home: string;
  let dir: string;
  let env: Record<string, string>;
  let dev: DevNode | null = null;
  let server: WorkersServer | null = null;
  const cli = (args: string[], extra: { stdin?: string; cwd?: string; env?: Record<string, string> } = {}) => run(args, { cwd: extra.cwd ?? dir, home, env: { ...env, ...extra.env }, stdin: extra.stdin });
  const greeting = async () => JSON.parse((await get(port, `127.0.0.1:${port}`, "/workers/hello/")).body) as { greeting: string; api_key: string | null };

  before(async () => {
    home = await tmpDir("borde-deploy-cli-");
    dir = path.join(home, "hello");
    await fs.cp(path.join(PROJECTS, "hello"), dir, { recursive: true });
    const node = await startDev(["--port", "0"], { home }).catch(() => null);
    const probe = node && (await fetch(`${node.url}/client/v4/accounts/${node.account}/workers/scripts`, { headers: { authorization: `Bearer ${node.token}` } }));
    if (node && probe?.status === 200) {
      dev = node;
      ({ url, token } = node);
    } else {
      await node?.stop();
      server = await startWorkersServer();
      url = server.url;
      token = TOKEN;
    }
    port = Number(new URL(url).port);
    env = { BORDE_URL: url, BORDE_TOKEN: token };
  });

  after(async () => {
    for (const c of children) c.kill("SIGKILL");
    await dev?.stop();
    await server?.close();
    if (server) await fs.rm(server.dataDir, { recursive: true, force: true });
    await cleanup();
  });

  it("deploys from the project folder, prints the version and both URLs", async (t) => {
    t.diagnostic(dev ? "against borde dev" : "borde dev has no workers API yet (node.ts does not wire workers): against the in-process test server");
    const r = await cli(["deploy"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines[0], "deployed hello version 1");
    assert.deepEqual(
      lines.slice(1).map((l) => l.trim()),
      [`http://hello.workers.localhost:${port}/`, `${url}/workers/hello/`],
    );
    assert.match(r.stderr, /^borde: warning: kv_namespaces: /m);
    assert.equal((await greeting()).greeting, "hello");
    const byHost = await get(port, `hello.workers.localhost:${port}`, "/x");
    assert.equal(JSON.parse(byHost.body).path, "/x");
  });

  it("a second deploy is version 2; `borde rollback` restores version 1", async () => {
    const toml = path.join(dir, "wrangler.toml");
    await fs.writeFile(toml, (await fs.readFile(toml, "utf8")).replace('GREETING = "hello"', 'GREETING = "second"'));
    const r = await cli(["deploy", dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^deployed hello version 2$/m);
    assert.equal((await greeting()).greeting, "second");
    const rb = await cli(["rollback"]);
    assert.equal(rb.code, 0, rb.stderr);
    assert.equal(rb.stdout.trim(), "rolled back hello from version 2 to version 1");
    assert.equal((await greeting()).greeting, "hello");
    const again = await cli(["rollback", "--name", "hello"]);
    assert.equal(again.code, 1);
    assert.equal(again.stderr.trim().split("\n").length, 1);
    assert.match(again.stderr, /^borde: 409: .*\(code 7122\)$/m);
  });

  it("secret put reads stdin; list shows names only; the worker sees it at once; delete removes it", async () => {
    const put = await cli(["secret", "put", "API_KEY"], { stdin: "cli-secret-value\n" });
    assert.equal(put.code, 0, put.stderr);
    assert.equal(put.stdout.trim(), "stored secret API_KEY on hello");
    assert.ok(!put.stdout.includes("cli-secret-value") && !put.stderr.includes("cli-secret-value"));
    assert.equal((await greeting()).api_key, "cli-secret-value");
    const list = await cli(["secret", "list"]);
    assert.match(list.stdout, /^API_KEY {2}\d{4}-/m);
    assert.ok(!list.stdout.includes("cli-secret-value"));
    const empty = await cli(["secret", "put", "EMPTY"], { stdin: "" });
    assert.equal(empty.code, 2);
    const del = await cli(["secret", "delete", "API_KEY", "--name", "hello"]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal((await greeting()).api_key, null);
  });

  for (const format of ["json", "pretty"] as const) {
    it(`tail --format ${format} prints the worker's console lines until Ctrl-C`, async () => {
      const child = spawnCli(["tail", "--format", format], { cwd: dir, home, env });
      child.stdin!.end();
      let stdout = "";
      let stderr = "";
      child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const closed = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
      const until = async (pred: () => boolean, what: string) => {
        const deadline = Date.now() + 20_000;
        while (!pred()) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stdout ${JSON.stringify(stdout)} stderr ${JSON.stringify(stderr)}`);
          await new Promise((r) => setTimeout(r, 25));
        }
      };
      await until(() => stderr.includes("tailing hello"), "the tail to connect");
      assert.equal((await get(port, `127.0.0.1:${port}`, `/workers/hello/from-cli-${format}`)).status, 200);
      await until(() => stdout.includes(`from-cli-${format}`), "the event");
      const line = stdout.split("\n").find((l) => l.includes(`from-cli-${format}`))!;
      if (format === "json") {
        const e = JSON.parse(line) as LogEvent;
        assert.equal(e.worker, "hello");
        assert.equal(e.message, `hello GET /from-cli-${format}`);
      } else assert.match(line, new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z log +hello GET /from-cli-pretty`));
      child.kill("SIGINT");
      assert.equal(await closed, 0);
    });
  }

  it("wasm project; workers list, versions and delete", async () => {
    const r = await cli(["deploy", path.join(PROJECTS, "wasm"), "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout) as { id: string; version: number; modules: { type: string }[] };
    assert.deepEqual([result.id, result.version, result.modules.map((m) => m.type)], ["wasm-add", 1, ["esm", "wasm"]]);
    assert.equal((await get(port, `wasm-add.workers.localhost:${port}`, "/?a=5&b=6")).body, "11");
    const list = await cli(["workers", "list"]);
    assert.match(list.stdout, /^hello +1 /m);
    assert.match(list.stdout, /^wasm-add +1 /m);
    const versions = await cli(["workers", "versions", "hello"]);
    assert.match(versions.stdout, /^1 \* /m);
    assert.match(versions.stdout, /^2 {3}/m);
    const del = await cli(["workers", "delete", "wasm-add"]);
    assert.equal(del.stdout.trim(), "deleted wasm-add");
    assert.equal((await get(port, `127.0.0.1:${port}`, "/workers/wasm-add/")).status, 404);
  });

  it("errors are one line: missing scope, no project, no name, bad options", async () => {
    const other = path.join(home, "empty");
    await fs.mkdir(other, { recursive: true });
    const noProject = await cli(["deploy"], { cwd: other });
    assert.equal(noProject.code, 1);
    assert.match(noProject.stderr, /^borde: no wrangler\.json, wrangler\.jsonc or wrangler\.toml in /);
    const noName = await cli(["rollback"], { cwd: other });
    assert.equal(noName.code, 2);
    assert.match(noName.stderr, /^borde: pass --name WORKER/);
    assert.equal((await cli(["tail", "--format", "xml"])).code, 2);
    assert.equal((await cli(["deploy", "--name", "Bad_Name"])).code, 2);
    if (server) {
      const runOnly = server.token(["ai:run"]);
      const refused = await cli(["deploy"], { env: { BORDE_TOKEN: runOnly } });
      assert.equal(refused.code, 1);
      assert.equal(refused.stderr.trim().split("\n").filter((l) => !l.includes("warning")).length, 1);
      assert.match(refused.stderr, /^borde: 403: Forbidden: this token lacks the workers:deploy scope \(code 10001\)$/m);
    }
    const unreachable = await cli(["workers", "list"], { env: { BORDE_URL: "http://127.0.0.1:1" } });
    assert.equal(unreachable.code, 2);
    assert.match(unreachable.stderr, /^borde: cannot reach http:\/\/127\.0\.0\.1:1/);
  });
});
