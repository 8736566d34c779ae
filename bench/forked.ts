/**
 * Bench clients run in a child process, so that the load they generate never shares an event loop
 * with the node under test. Both ends of that IPC protocol, in one place: the parent sends a job
 * `{type, id, …}`, the child answers `{type: "result", id, …}`; `{type: "ready"}` when it started,
 * `{type: "exit"}` to end it.
 */
import { fork, type ChildProcess } from "node:child_process";

type WithoutId<T> = T extends unknown ? Omit<T, "id"> : never;

/** The parent's side: one child, any number of jobs in flight. */
export class Forked<Job extends { id: number }, Result extends { type: "result"; id: number }> {
  private nextId = 1;
  private readonly waiting = new Map<number, (r: Result) => void>();

  private constructor(private readonly child: ChildProcess) {
    child.on("message", (m: Result | { type: "ready" }) => {
      if (m.type !== "result") return;
      this.waiting.get(m.id)?.(m);
      this.waiting.delete(m.id);
    });
  }

  /** Forks `script` (a module path or file URL) and waits until it says it is ready. */
  static async start<J extends { id: number }, R extends { type: "result"; id: number }>(script: string | URL, what: string): Promise<Forked<J, R>> {
    const child = fork(script, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    await new Promise<void>((resolve, reject) => {
      child.once("message", () => resolve());
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`${what} exited (${code})`)));
    });
    return new Forked<J, R>(child);
  }

  request(job: WithoutId<Job>): Promise<Result> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.child.send({ ...job, id });
    });
  }

  /** Asks the child to exit; kills it if it has not within 2 s. */
  async close(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.send({ type: "exit" });
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    if (this.child.exitCode === null) this.child.kill();
  }
}

/**
 * The child's side: runs each job with `run`, answers its result (or `failed(job, error)` when it
 * throws), says ready, and on exit runs `onExit` (close keep-alive agents) and disconnects.
 */
export function serveJobs<Job extends { type: string; id: number }, Result>(run: (job: Job) => Promise<Result>, failed: (job: Job, e: unknown) => Result, onExit: () => void): void {
  process.on("message", (msg: Job | { type: "exit" }) => {
    if (msg.type === "exit") {
      onExit();
      process.disconnect?.();
      return;
    }
    const job = msg as Job;
    run(job).then(
      (res) => process.send?.(res),
      (e: unknown) => process.send?.(failed(job, e)),
    );
  });
  process.send?.({ type: "ready" });
}
