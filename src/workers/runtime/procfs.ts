import fs from "node:fs";

/**
 * CPU time and memory of a process, read from Linux's /proc. workerd enforces no per-request CPU or
 * memory limit itself, so Borde measures its processes from outside.
 *
 * CPU comes from /proc/<pid>/task/<tid>/schedstat (nanoseconds on CPU, per thread, summed over the
 * process's threads): /proc/<pid>/stat's utime+stime count 10 ms clock ticks, too coarse for a 50 ms
 * limit. Where the kernel has no schedstat, the ticks are the fallback.
 */

const TICK_NS = 1e9 / 100; // USER_HZ is 100 on every Linux Borde targets

let schedstat: boolean | undefined;

function hasSchedstat(): boolean {
  if (schedstat === undefined) {
    try {
      fs.readFileSync(`/proc/${process.pid}/schedstat`, "latin1");
      schedstat = true;
    } catch {
      schedstat = false;
    }
  }
  return schedstat;
}

/** CPU time the process has used so far, in ns; null once it is gone. */
export function processCpuNs(pid: number): number | null {
  if (hasSchedstat()) {
    let tids: string[];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      return null;
    }
    let total = 0;
    for (const tid of tids) {
      try {
        const s = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "latin1");
        total += Number(s.slice(0, s.indexOf(" ")));
      } catch {
        // the thread ended between readdir and read
      }
    }
    return total;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    // Fields after the command name, which may itself contain spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * TICK_NS;
  } catch {
    return null;
  }
}

/** Resident memory of the process in bytes; null once it is gone. */
export function processRssBytes(pid: number): number | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "latin1");
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Whether this machine can measure processes at all (Linux with /proc). */
export function procfsAvailable(): boolean {
  return processRssBytes(process.pid) !== null;
}
