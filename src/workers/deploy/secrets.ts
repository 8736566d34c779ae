import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/**
 * Worker secrets at rest: AES-256-GCM under the node's key in `<dataDir>/secret.key` (32 random
 * bytes as hex, mode 600, created on first use and never overwritten: losing it loses the secrets).
 * Each ciphertext is bound to its account, worker and secret name (as GCM's additional data), so a
 * row copied to another worker or renamed does not decrypt. Stored as `iv (12) | tag (16) | ciphertext`.
 */
export class SecretBox {
  private key: Buffer | null = null;

  constructor(
    private readonly dataDir: string,
    private readonly onWarning: (message: string) => void = () => undefined,
    /** A key given by the operator (64 hex, `BORDE_SECRET_KEY`): the same on every PoP, so sealed secrets replicate. */
    sharedKey?: string,
  ) {
    if (sharedKey !== undefined) {
      if (!/^[0-9a-f]{64}$/.test(sharedKey)) throw new Error("BORDE_SECRET_KEY must be 64 hex digits (32 bytes)");
      this.key = Buffer.from(sharedKey, "hex");
    }
    this.shared = sharedKey !== undefined;
  }

  /** True when the key is the operator's shared one (sealed secrets are valid on every PoP). */
  readonly shared: boolean;

  get keyFile(): string {
    return path.join(this.dataDir, "secret.key");
  }

  seal(plaintext: string, context: string[]): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.loadKey(), iv);
    cipher.setAAD(aad(context));
    const ct = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), ct]);
  }

  open(sealed: Buffer, context: string[]): string {
    if (sealed.byteLength < 28) throw new Error("sealed secret is truncated");
    const decipher = createDecipheriv("aes-256-gcm", this.loadKey(), sealed.subarray(0, 12));
    decipher.setAAD(aad(context));
    decipher.setAuthTag(sealed.subarray(12, 28));
    return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]).toString("utf8");
  }

  private loadKey(): Buffer {
    if (this.key) return this.key;
    const file = this.keyFile;
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
      const mode = fs.statSync(file).mode & 0o777;
      if (mode & 0o077) this.onWarning(`${file} is readable by other users (mode ${mode.toString(8)}); chmod 600 it`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      fs.mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
      // `wx`: if another process created it in the meantime, theirs wins and is read below.
      try {
        fs.writeFileSync(file, `${randomBytes(32).toString("hex")}\n`, { mode: 0o600, flag: "wx" });
      } catch (e2) {
        if ((e2 as NodeJS.ErrnoException).code !== "EEXIST") throw e2;
      }
      text = fs.readFileSync(file, "utf8");
    }
    const hex = text.trim();
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`${file} is not a 32-byte hex key; it was not written by Borde (secrets cannot be read without the original)`);
    this.key = Buffer.from(hex, "hex");
    return this.key;
  }
}

function aad(context: string[]): Buffer {
  return Buffer.from(context.join("\0"), "utf8");
}
