import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decode, encode, modelToken, runSubject } from "../../src/network/protocol.js";

describe("network protocol", () => {
  it("carries bytes and samples as base64, and user keys that look like markers unchanged", () => {
    const value = {
      image: { data: new Uint8Array([0, 1, 254, 255]), width: 2, height: 2 },
      audio: { samples: new Float32Array([0.5, -1, 0.25]), sampleRate: 16000 },
      // A tool schema from a user: `$ref`, and keys forged to look like the markers.
      tools: [{ parameters: { $ref: "#/defs/x", $u8: "AAAA", nested: { $$weird: 1, list: [{ $f32: "xyz" }] } } }],
    };
    const back = decode<typeof value>(encode(value));
    assert.deepEqual([...back.image.data], [0, 1, 254, 255]);
    assert.deepEqual([...back.audio.samples], [0.5, -1, 0.25]);
    assert.deepEqual(back.tools, value.tools, "user data is never turned into bytes");
  });

  it("makes subject-safe tokens of model ids", () => {
    for (const id of ["@cf/meta/llama-3.2-1b-instruct", "@local/a.b", "@borde/x*y>z"]) {
      assert.match(modelToken(id), /^[A-Za-z0-9_-]+$/);
      assert.equal(Buffer.from(modelToken(id), "base64url").toString(), id);
    }
    assert.equal(runSubject("madrid", "@local/a.b").split(".").length, 4);
  });
});
