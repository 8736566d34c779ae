import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { ERRORS } from "../src/errors.js";
import { ConfigError, ENV_VARS, loadConfig } from "../src/config/index.js";

const readme = fs.readFileSync(path.resolve(import.meta.dirname, "../README.md"), "utf8");

describe("error catalog", () => {
  it("every code is documented in the README with its HTTP status, and nothing else is", () => {
    const documented = new Map([...readme.matchAll(/^\| (\d{4,5}) \| (\d{3}) \|/gm)].map((m) => [Number(m[1]), Number(m[2])]));
    for (const [name, e] of Object.entries(ERRORS)) assert.equal(documented.get(e.code), e.status, `${name} (${e.code})`);
    assert.equal(documented.size, Object.keys(ERRORS).length);
  });

  it("codes are unique", () => {
    const codes = Object.values(ERRORS).map((e) => e.code);
    assert.equal(new Set(codes).size, codes.length);
  });
});

describe("config", () => {
  it("every environment variable is documented in the README", () => {
    for (const [envName] of Object.values(ENV_VARS)) assert.ok(readme.includes(`\`${envName}\``), envName);
  });

  it("option > env > default, validated and frozen", () => {
    const c = loadConfig({ port: 1234 }, { BORDE_PORT: "999", BORDE_PARALLEL: "3", BORDE_AUTO_PULL: "yes", BORDE_PRELOAD: "@a/b, @c/d" });
    assert.equal(c.port, 1234);
    assert.equal(c.parallel, 3);
    assert.equal(c.autoPull, true);
    assert.deepEqual(c.preload, ["@a/b", "@c/d"]);
    assert.equal(loadConfig({}, {}).port, 8787);
    assert.ok(Object.isFrozen(c));
    assert.throws(() => loadConfig({}, { BORDE_PORT: "http", BORDE_PARALLEL: "0" }), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /port \(BORDE_PORT\)/);
      assert.match(e.message, /parallel \(BORDE_PARALLEL\)/);
      return true;
    });
  });
});
