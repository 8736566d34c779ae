/**
 * `borde accounts`, `borde tokens` and `borde usage`: the real CLI (a child process, from source)
 * against a real node. Scripts get exactly one line to capture (an id, a token), JSON when asked,
 * tables for people, never a secret in a listing, and one `borde:` line with exit 1 (API refusal)
 * or 2 (bad usage) when something is wrong.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ACCOUNT, startTestNode, TOKEN, type TestNode } from "../helpers.js";
import { borde, cleanup, tmpDir, type Result } from "./helpers.js";

const TOKEN_RE = /^bd_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const MODEL = "@local/stories";

let node: TestNode;
let home: string;
after(async () => {
  await cleanup();
  await node?.close();
});
before(async () => {
  node = await startTestNode();
  home = await tmpDir("borde-cli-admin-home-");
});

function show(r: Result): string {
  return `exit ${r.code ?? r.signal}\n--- stdout\n${r.stdout.slice(0, 3000)}\n--- stderr\n${r.stderr.slice(-3000)}`;
}

/** `borde ARGS --url <node> --token <token>` with an empty HOME and no BORDE_* variables. */
function cli(args: string[], token = TOKEN): Promise<Result> {
  return borde([...args, "--url", node.url, "--token", token], { home });
}

function assertOk(r: Result): void {
  assert.equal(r.code, 0, show(r));
  assert.equal(r.stderr, "", show(r));
}

/** Exactly one line on stdout. */
function oneLine(r: Result): string {
  assertOk(r);
  assert.match(r.stdout, /^[^\n]+\n$/, show(r));
  return r.stdout.trimEnd();
}

function assertOneLineError(r: Result, code: number, pattern?: RegExp): void {
  assert.equal(r.code, code, show(r));
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, show(r));
  assert.match(lines[0]!, /^borde: \S/, show(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, show(r));
  if (pattern) assert.match(lines[0]!, pattern, show(r));
  assert.equal(r.stdout, "", show(r));
}

async function api(method: string, pathname: string, token = TOKEN, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${node.url}${pathname}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

describe("borde accounts / tokens / usage", { timeout: 90_000 }, () => {
  let account: string;
  let token: string;
  let tokenId: string;

  test("accounts create prints only the new id; --json prints the account", async () => {
    const [plain, json] = await Promise.all([cli(["accounts", "create", "acme"]), cli(["accounts", "create", "acme two", "--plan", "paid", "--daily-budget", "5000", "--json"])]);
    account = oneLine(plain);
    assert.match(account, /^[0-9a-f]{32}$/);
    assertOk(json);
    const a = JSON.parse(json.stdout) as { id: string; name: string; plan: string; daily_neuron_budget: number };
    assert.deepEqual([a.name, a.plan, a.daily_neuron_budget], ["acme two", "paid", 5000]);
    const got = await api("GET", `/client/v4/admin/accounts/${account}`);
    assert.equal(got.status, 200);
    assert.deepEqual([got.json.result.name, got.json.result.plan], ["acme", "free"]);
    // `accounts list` shows both, as a table and as JSON.
    const [list, listJson] = await Promise.all([cli(["accounts", "list"]), cli(["accounts", "list", "--json"])]);
    assertOk(list);
    assert.match(list.stdout.split("\n")[0]!, /^ID\s+NAME\s+PLAN\s+DAILY BUDGET$/);
    assert.ok(list.stdout.includes(account) && list.stdout.includes(a.id), show(list));
    assertOk(listJson);
    assert.ok((JSON.parse(listJson.stdout) as { id: string }[]).some((x) => x.id === a.id));
  });

  test("tokens create prints only the token, and the token works against the API", async () => {
    token = oneLine(await cli(["tokens", "create", "--account", account, "--scopes", "ai:run,usage:read", "--name", "ci"]));
    const m = TOKEN_RE.exec(token);
    assert.ok(m, token);
    tokenId = m[1]!;
    await api("PATCH", `/client/v4/admin/accounts/${account}`, TOKEN, { plan: "paid" });
    const res = await fetch(`${node.url}/client/v4/accounts/${account}/ai/run/${MODEL}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 4 }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await api("GET", `/client/v4/accounts/${account}/ai/usage`, token)).status, 200);
    // The CLI itself works with it too (finding the account from the token); every option, as JSON;
    // an ISO expiry, taken as given.
    const before = Date.now();
    const [ran, full, iso] = await Promise.all([
      cli(["ai", "run", MODEL, "--prompt", "Once upon a time", "--max-tokens", "4"], token),
      cli([
        "tokens",
        "create",
        "--account",
        account,
        "--scopes",
        "ai:run",
        "--models",
        "@local/*,@cf/meta/llama-3.2-1b-instruct",
        "--jurisdictions",
        "eu,us",
        "--expires",
        "30d",
        "--daily-budget",
        "100",
        "--json",
      ]),
      cli(["tokens", "create", "--account", account, "--scopes", "ai:run", "--expires", "2099-01-02T03:04:05Z", "--json"]),
    ]);
    assertOk(ran);
    assertOk(full);
    const info = JSON.parse(full.stdout) as Record<string, any>;
    assert.match(info.token, TOKEN_RE);
    assert.deepEqual(info.models, ["@local/*", "@cf/meta/llama-3.2-1b-instruct"]);
    assert.deepEqual(info.jurisdictions, ["eu", "us"]);
    assert.equal(info.daily_neuron_budget, 100);
    assert.equal(info.status, "active");
    const expires = Date.parse(info.expires_at);
    assert.ok(Math.abs(expires - (before + 30 * 86_400_000)) < 60_000, info.expires_at);
    assertOk(iso);
    assert.equal(JSON.parse(iso.stdout).expires_at, "2099-01-02T03:04:05.000Z");
  });

  test("tokens list shows every token and its status, never a secret", async () => {
    const secret = TOKEN_RE.exec(token)![2]!;
    const [table, json, filtered] = await Promise.all([cli(["tokens", "list"]), cli(["tokens", "list", "--json"]), cli(["tokens", "list", "--account", account])]);
    for (const r of [table, json, filtered]) {
      assertOk(r);
      assert.ok(!r.stdout.includes(secret) && !r.stdout.includes(token), `a secret in the listing:\n${show(r)}`);
      assert.ok(!r.stdout.includes(TOKEN), `the dev token in the listing:\n${show(r)}`);
      assert.ok(r.stdout.includes(tokenId), show(r));
    }
    assert.match(table.stdout.split("\n")[0]!, /^ID\s+ACCOUNT\s+SCOPES\s+STATUS\s+EXPIRES\s+NAME$/);
    const line = table.stdout.split("\n").find((l) => l.startsWith(tokenId))!;
    assert.match(line, new RegExp(`^${tokenId}\\s+${account}\\s+ai:run,usage:read\\s+active\\s+-\\s+ci$`));
    const list = JSON.parse(json.stdout) as Record<string, unknown>[];
    for (const t of list) assert.ok(!("token" in t) && !("hash" in t), JSON.stringify(t));
    assert.ok(list.some((t) => t.id === `dev-${ACCOUNT}`));
    // --account lists that account's tokens only.
    const rows = filtered.stdout.trimEnd().split("\n").slice(1);
    assert.ok(rows.length >= 3);
    for (const r of rows) assert.match(r, new RegExp(`^[0-9a-f]{16}\\s+${account}\\s`));
  });

  test("usage prints a table with a TOTAL line; --json parses; --all / --by group across accounts", async () => {
    // Some usage on the dev account too.
    const r = await node.post(`/client/v4/accounts/${ACCOUNT}/ai/run/${MODEL}`, { prompt: "Once", max_tokens: 3 });
    assert.equal(r.status, 200);
    const [mine, mineJson, all, other] = await Promise.all([
      cli(["usage"]),
      cli(["usage", "--json"]),
      cli(["usage", "--all", "--by", "account,model"]),
      cli(["usage", "--by", "model"], token),
    ]);
    for (const x of [mine, mineJson, all, other]) assertOk(x);
    const lines = mine.stdout.trimEnd().split("\n");
    assert.match(lines[0]!, /^DAY\s+MODEL\s+REQUESTS\s+IN\s+OUT\s+NEURONS\s+COST USD$/);
    assert.match(lines.at(-1)!, /^TOTAL\s+\d+\s+\d+\.\d{2}\s+\d+\.\d{6}$/);
    assert.ok(lines.some((l) => l.includes(MODEL)), show(mine));
    const report = JSON.parse(mineJson.stdout) as { totals: { requests: number }; rows: { model: string }[] };
    assert.ok(report.totals.requests >= 1);
    assert.ok(report.rows.every((x) => x.model === MODEL));
    const allLines = all.stdout.trimEnd().split("\n");
    // Columns come in a fixed order (day, model, account), whatever order --by names them.
    assert.match(allLines[0]!, /^MODEL\s+ACCOUNT\s+REQUESTS/);
    assert.ok(allLines.some((l) => new RegExp(`^${MODEL}\\s+${ACCOUNT}\\s`).test(l)), show(all));
    assert.ok(allLines.some((l) => new RegExp(`^${MODEL}\\s+${account}\\s`).test(l)), show(all));
    assert.match(allLines.at(-1)!, /^TOTAL\s/);
    // The new account's usage:read token sees its own account only.
    const otherLines = other.stdout.trimEnd().split("\n");
    assert.match(otherLines.at(-1)!, /^TOTAL\s+2\s/, show(other));
  });

  test("tokens revoke: the token is refused at once (401) and listed as revoked", async () => {
    const r = await cli(["tokens", "revoke", tokenId]);
    assert.equal(oneLine(r), `revoked ${tokenId}`);
    const res = await api("GET", `/client/v4/accounts/${account}/ai/usage`, token);
    assert.equal(res.status, 401);
    assert.equal(res.json.errors[0].code, 10000);
    const list = await cli(["tokens", "list", "--account", account]);
    assert.match(list.stdout.split("\n").find((l) => l.startsWith(tokenId))!, /\srevoked\s/);
    // The CLI with the revoked token: exit 1, one line.
    assertOneLineError(await cli(["usage"], token), 1, /^borde: 401: .*revoked/);
  });

  test("a token without the admin scope: exit 1 with one `borde: 403: ...` line", async () => {
    const runOnly = oneLine(await cli(["tokens", "create", "--account", account, "--scopes", "ai:run"]));
    const results = await Promise.all([
      cli(["accounts", "create", "sneaky"], runOnly),
      cli(["tokens", "create", "--account", account, "--scopes", "admin"], runOnly),
      cli(["tokens", "list"], runOnly),
      cli(["usage", "--all"], runOnly),
    ]);
    for (const r of results) assertOneLineError(r, 1, /^borde: 403: Forbidden: .*\(code 10001\)$/);
    const accounts = await api("GET", "/client/v4/admin/accounts");
    assert.ok(!accounts.json.result.some((a: { name: string }) => a.name === "sneaky"));
  });

  test("API refusals of bad values: exit 1 with the API's message", async () => {
    const [scope, missing, revokeUnknown, name] = await Promise.all([
      cli(["tokens", "create", "--account", account, "--scopes", "root"]),
      cli(["tokens", "create", "--account", "f".repeat(32), "--scopes", "ai:run"]),
      cli(["tokens", "revoke", "f".repeat(16)]),
      cli(["accounts", "create", "<script>"]),
    ]);
    assertOneLineError(scope, 1, /^borde: 400: .*scopes/);
    assertOneLineError(missing, 1, /^borde: 404: /);
    assertOneLineError(revokeUnknown, 1, /^borde: 404: /);
    assertOneLineError(name, 1, /^borde: 400: .*name/);
  });

  test("bad flags and arguments: exit 2 with one `borde:` line, nothing on stdout, nothing sent", async () => {
    const before = (await api("GET", "/client/v4/admin/audit?limit=10000")).json.result.length;
    const cases: [string[], RegExp][] = [
      [["accounts", "create"], /exactly one account name/],
      [["accounts", "create", "x", "--plan", "gold"], /--plan must be free or paid/],
      [["accounts", "create", "x", "--daily-budget=-5"], /--daily-budget must be a positive number/],
      [["accounts", "create", "x", "--bogus"], /--bogus/],
      [["accounts", "frob"], /unknown subcommand "accounts frob"/],
      [["tokens", "create", "--scopes", "ai:run"], /--account ID is required/],
      [["tokens", "create", "--account", "x"], /--scopes is required/],
      [["tokens", "create", "--account", "x", "--scopes", "ai:run", "--expires", "tomorrow"], /--expires must be like 30d/],
      [["tokens", "revoke"], /exactly one token id/],
      [["usage", "extra"], /unexpected argument "extra"/],
      [["usage", "--bogus"], /--bogus/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    results.forEach((r, i) => assertOneLineError(r, 2, cases[i]![1]));
    // Bare commands print their help and exit 2; --help exits 0.
    const [accounts, tokens, help] = await Promise.all([borde(["accounts"], { home }), borde(["tokens"], { home }), borde(["usage", "--help"], { home })]);
    assert.equal(accounts.code, 2, show(accounts));
    assert.match(accounts.stdout, /Usage: borde accounts/);
    assert.equal(tokens.code, 2, show(tokens));
    assert.match(tokens.stdout, /Usage: borde tokens/);
    assert.equal(help.code, 0, show(help));
    assert.match(help.stdout, /Usage: borde usage/);
    // No token anywhere (empty HOME, no flag): a usage error too.
    assertOneLineError(await borde(["accounts", "list", "--url", node.url], { home }), 2, /no API token/);
    assert.equal((await api("GET", "/client/v4/admin/audit?limit=10000")).json.result.length, before, "a refused command changed something");
  });
});
