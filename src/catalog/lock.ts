/**
 * One pull per destination at a time, across processes: `borde models pull` and a node auto-pulling
 * the same model must not write the same partial files at once. The lock is `<dest>.lock`, created
 * exclusively and holding the owner's pid; one whose process is gone (a killed pull) is taken over.
 */
import { mkdir, open, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const POLL_MS = 200;
/** A lock file without a readable pid (its writer died between create and write) counts as stale after this. */
const UNREADABLE_STALE_MS = 10_000;

/** Runs `fn` holding the lock of `dest`, waiting (abortably) while another pull holds it. */
export async function withPullLock<T>(dest: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
  const lock = `${dest}.lock`;
  await mkdir(path.dirname(lock), { recursive: true });
  while (!(await tryCreate(lock))) {
    const holder = await readFile(lock, "utf8").catch(() => null);
    if (holder !== null && (await isStale(lock, holder))) {
      // Re-read just before removing: a lock another waiter has meanwhile re-taken is left alone.
      if ((await readFile(lock, "utf8").catch(() => null)) === holder) await rm(lock, { force: true });
      continue;
    }
    try {
      await sleep(POLL_MS, undefined, { signal });
    } catch (e) {
      throw signal?.reason ?? e;
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { force: true });
  }
}

async function tryCreate(lock: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(lock, "wx");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
  try {
    await fh.writeFile(String(process.pid));
  } finally {
    await fh.close();
  }
  return true;
}

async function isStale(lock: string, holder: string): Promise<boolean> {
  const pid = /^\d+$/.test(holder) ? Number(holder) : null;
  if (pid !== null && pid > 0) return !alive(pid);
  const st = await stat(lock).catch(() => null);
  return st !== null && Date.now() - st.mtimeMs > UNREADABLE_STALE_MS;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to another user.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
