/**
 * A download progress bar for the terminal. On a TTY it redraws one line with `\r`; elsewhere
 * (CI logs, pipes) it prints a plain line at most every two seconds, plus a final one.
 */
import type { PullProgress } from "./pull.js";

const LOG_INTERVAL_MS = 2000;

/** Decimal units, as the hub shows sizes: 807.7 MB, 4.92 GB. */
export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const digits = unit === 0 ? 0 : value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** `45s`, `3m05s`, `1h02m`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function describe(p: PullProgress): { percent: string; ratio: number | null; text: string } {
  const ratio = p.total !== null && p.total > 0 ? Math.min(1, p.received / p.total) : null;
  const percent = ratio === null ? "" : `${(ratio * 100).toFixed(0).padStart(3)}%`;
  const bytes = p.total !== null ? `${formatBytes(p.received)} / ${formatBytes(p.total)}` : formatBytes(p.received);
  const speed = `${formatBytes(p.bytesPerSec)}/s`;
  const eta = p.etaSec === null ? "ETA --" : `ETA ${formatDuration(p.etaSec)}`;
  const resumed = p.resumedFrom > 0 ? ` (resumed at ${formatBytes(p.resumedFrom)})` : "";
  return { percent, ratio, text: `${bytes}  ${speed}  ${eta}${resumed}` };
}

export function createProgressBar(stream: NodeJS.WriteStream, label: string): { update(p: PullProgress): void; done(): void } {
  const tty = Boolean(stream.isTTY);
  let last: PullProgress | null = null;
  let lastLog = 0;
  let logged: PullProgress | null = null;
  let finished = false;
  let drawnWidth = 0;

  const line = (p: PullProgress): string => {
    const { percent, ratio, text } = describe(p);
    if (!tty) return `${label} ${percent ? `${percent.trim()} ` : ""}${text}`;
    const columns = stream.columns && stream.columns > 0 ? stream.columns : 80;
    const head = `${label} `;
    const tail = ` ${percent} ${text}`;
    const barWidth = Math.max(0, Math.min(30, columns - head.length - tail.length - 3));
    let bar = "";
    if (barWidth >= 5) {
      const filled = ratio === null ? 0 : Math.round(ratio * barWidth);
      bar = `[${"#".repeat(filled)}${"-".repeat(barWidth - filled)}]`;
    }
    return `${head}${bar}${tail}`.slice(0, columns - 1);
  };

  const draw = (p: PullProgress): void => {
    const text = line(p);
    // Pad over leftovers of a longer previous line instead of relying on terminal escape codes.
    stream.write(`\r${text}${" ".repeat(Math.max(0, drawnWidth - text.length))}`);
    drawnWidth = text.length;
  };

  return {
    update(p: PullProgress): void {
      if (finished) return;
      last = p;
      if (tty) {
        draw(p);
        return;
      }
      const now = Date.now();
      if (now - lastLog >= LOG_INTERVAL_MS) {
        lastLog = now;
        logged = p;
        stream.write(`${line(p)}\n`);
      }
    },
    done(): void {
      if (finished) return;
      finished = true;
      if (tty) {
        if (last) draw(last);
        stream.write(last ? "\n" : `${label} done\n`);
        return;
      }
      if (last === null) stream.write(`${label} done\n`);
      else if (last !== logged) stream.write(`${line(last)}\n`);
    },
  };
}
