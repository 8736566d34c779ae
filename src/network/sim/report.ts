/**
 * Summaries of a `borde sim` run: latency percentiles per mode × task × city, a plain-text table
 * with the modes side by side, and a self-contained SVG bar chart.
 *
 * Latency percentiles are over successful samples only: a fast 429 or 500 would otherwise pull
 * the figures down. Counts, ok % and bytes are over all samples. Modes, cities and tasks keep the
 * order in which they first appear in the samples.
 */
import type { LoadSample } from "./loadgen.js";

/**
 * The p-th percentile (0–100) of `xs` by linear interpolation between closest ranks (numpy's
 * default), so percentile(xs, 50) is the usual median. NaN for no values.
 */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(s.length - 1, lo + 1);
  return s[lo]! + (s[hi]! - s[lo]!) * (rank - lo);
}

export function medianOf(xs: readonly number[]): number {
  return percentile(xs, 50);
}

export interface Stat {
  count: number;
  okCount: number;
  /** 0–100. */
  okPct: number;
  /** Latency of successful samples, ms (NaN when none succeeded). */
  p50: number;
  p90: number;
  p99: number;
  bytesIn: number;
  bytesOut: number;
}

export interface Summary {
  modes: string[];
  tasks: string[];
  cities: string[];
  /** One per mode × task × city that has samples. */
  cells: Array<{ mode: string; task: string; city: string } & Stat>;
  /** One per mode × city, all tasks together. */
  byCity: Array<{ mode: string; city: string } & Stat>;
  /** One per mode, everything together. */
  byMode: Array<{ mode: string } & Stat>;
  /** Bytes moved, all samples. */
  bytesIn: number;
  bytesOut: number;
}

function stat(samples: readonly LoadSample[]): Stat {
  const ok = samples.filter((s) => s.ok);
  const ms = ok.map((s) => s.ms);
  let bytesIn = 0;
  let bytesOut = 0;
  for (const s of samples) {
    bytesIn += s.bytesIn;
    bytesOut += s.bytesOut;
  }
  return {
    count: samples.length,
    okCount: ok.length,
    okPct: samples.length === 0 ? 0 : (100 * ok.length) / samples.length,
    p50: percentile(ms, 50),
    p90: percentile(ms, 90),
    p99: percentile(ms, 99),
    bytesIn,
    bytesOut,
  };
}

function groupBy(samples: readonly LoadSample[], key: (s: LoadSample) => string): Map<string, LoadSample[]> {
  const groups = new Map<string, LoadSample[]>();
  for (const s of samples) {
    const k = key(s);
    const g = groups.get(k);
    if (g) g.push(s);
    else groups.set(k, [s]);
  }
  return groups;
}

const unique = (xs: readonly string[]): string[] => [...new Set(xs)];
/** Joins key parts with a character that never appears in city, task or mode names. */
const key = (...parts: string[]): string => parts.join("\u0000");

export function summarize(samples: readonly LoadSample[]): Summary {
  const modes = unique(samples.map((s) => s.mode));
  const tasks = unique(samples.map((s) => s.task));
  const cities = unique(samples.map((s) => s.city));
  const byCell = groupBy(samples, (s) => key(s.mode, s.task, s.city));
  const byModeCity = groupBy(samples, (s) => key(s.mode, s.city));
  const byModeOnly = groupBy(samples, (s) => s.mode);
  const summary: Summary = { modes, tasks, cities, cells: [], byCity: [], byMode: [], bytesIn: 0, bytesOut: 0 };
  for (const mode of modes) {
    summary.byMode.push({ mode, ...stat(byModeOnly.get(mode)!) });
    for (const city of cities) {
      const g = byModeCity.get(key(mode, city));
      if (g) summary.byCity.push({ mode, city, ...stat(g) });
      for (const task of tasks) {
        const c = byCell.get(key(mode, task, city));
        if (c) summary.cells.push({ mode, task, city, ...stat(c) });
      }
    }
  }
  for (const m of summary.byMode) {
    summary.bytesIn += m.bytesIn;
    summary.bytesOut += m.bytesOut;
  }
  return summary;
}

// ---------------------------------------------------------------------------------------------
// text table
// ---------------------------------------------------------------------------------------------

const ms = (x: number): string => (Number.isNaN(x) ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** Pads columns to equal widths: text columns left-aligned, the rest right-aligned. */
function align(rows: string[][], leftColumns: number): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => (i < leftColumns ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/**
 * One line per city × task with each mode's count, ok %, p50/p90/p99 side by side, then one
 * line per mode for everything. The last column is the p50 ratio `ratio[0] / ratio[1]`
 * (default edge / central, shown when both modes are present).
 */
export function renderTable(summary: Summary, o: { ratio?: [string, string] } = {}): string {
  const [num, den] = o.ratio ?? ["edge", "central"];
  const withRatio = summary.modes.includes(num) && summary.modes.includes(den);
  const header = ["city", "task"];
  for (const m of summary.modes) header.push(`${m} n`, "ok%", "p50", "p90", "p99");
  if (withRatio) header.push(`${num}/${den} p50`);
  const rows = [header];
  const cell = new Map(summary.cells.map((c) => [key(c.mode, c.task, c.city), c]));
  const line = (first: string, second: string, find: (mode: string) => Stat | undefined): string[] => {
    const r = [first, second];
    for (const m of summary.modes) {
      const s = find(m);
      if (s) r.push(String(s.count), s.okPct.toFixed(0), ms(s.p50), ms(s.p90), ms(s.p99));
      else r.push("-", "-", "-", "-", "-");
    }
    if (withRatio) {
      const ratio = (find(num)?.p50 ?? NaN) / (find(den)?.p50 ?? NaN);
      r.push(Number.isFinite(ratio) ? ratio.toFixed(2) : "-");
    }
    return r;
  };
  for (const city of summary.cities) {
    for (const task of summary.tasks) {
      if (!summary.modes.some((m) => cell.has(key(m, task, city)))) continue;
      rows.push(line(city, task, (m) => cell.get(key(m, task, city))));
    }
  }
  const byMode = new Map(summary.byMode.map((m) => [m.mode, m]));
  rows.push(line("all", "all", (m) => byMode.get(m)));
  const table = align(rows, 2);
  const moved = summary.byMode.map((m) => `${m.mode} ${bytes(m.bytesOut)} out / ${bytes(m.bytesIn)} in`).join(", ");
  return `${table}\n\nlatency in ms (successful requests); bytes moved: ${moved}`;
}

// ---------------------------------------------------------------------------------------------
// SVG chart
// ---------------------------------------------------------------------------------------------

const PALETTE = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#c53030", "#319795", "#b7791f", "#4a5568"];

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Tick step of 1, 2 or 5 × 10^k giving about five ticks up to `max`. */
function tickStep(max: number): number {
  const rough = max / 5;
  const mag = 10 ** Math.floor(Math.log10(rough));
  const f = rough / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

const n1 = (x: number): string => String(Math.round(x * 10) / 10);

/**
 * A grouped bar chart: cities on the x axis, one bar per mode at the p50 latency, a whisker up to
 * p90. All tasks together, or only `task`. A city where a mode has no successful sample gets no
 * bar for it.
 */
export function renderSvgChart(summary: Summary, o: { title?: string; task?: string } = {}): string {
  const stats = new Map<string, Stat>();
  if (o.task === undefined) for (const c of summary.byCity) stats.set(key(c.mode, c.city), c);
  else for (const c of summary.cells) if (c.task === o.task) stats.set(key(c.mode, c.city), c);
  const { modes, cities } = summary;

  const barW = 18;
  const groupGap = 24;
  const groupW = Math.max(modes.length, 1) * barW + groupGap;
  const left = 64;
  const right = 24;
  const top = 56;
  const plotH = 320;
  const bottom = 96;
  const title = o.title ?? `Latency by city${o.task === undefined ? "" : ` (${o.task})`}`;
  const note = "bars: p50, whiskers: p90 (successful requests)";
  // Text widths are estimated (no font metrics in a string builder): ~0.6 em per character.
  const legendW = modes.reduce((w, m) => w + 28 + m.length * 7, 0);
  const width = Math.ceil(Math.max(480, left + cities.length * groupW + right, 24 + title.length * 9 + 24, left + note.length * 6.6 + 16 + legendW + right));
  const height = top + plotH + bottom;

  let max = 0;
  for (const s of stats.values()) for (const v of [s.p50, s.p90]) if (Number.isFinite(v)) max = Math.max(max, v);
  const step = max > 0 ? tickStep(max) : 1;
  const yMax = max > 0 ? Math.ceil(max / step) * step : 5;
  const y = (v: number): number => top + plotH - (v / yMax) * plotH;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="24" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${left}" y="44" fill="#4a5568">${esc(note)}</text>`,
  ];
  for (let v = 0; v <= yMax + step / 2; v += step) {
    const yy = n1(y(v));
    out.push(`<line x1="${left}" y1="${yy}" x2="${width - right}" y2="${yy}" stroke="#e2e8f0"/>`);
    out.push(`<text x="${left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${esc(String(Math.round(v * 1000) / 1000))}</text>`);
  }
  out.push(`<text x="16" y="${top + plotH / 2}" text-anchor="middle" transform="rotate(-90 16 ${top + plotH / 2})">ms</text>`);
  out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#4a5568"/>`);
  out.push(`<line x1="${left}" y1="${top + plotH}" x2="${width - right}" y2="${top + plotH}" stroke="#4a5568"/>`);

  cities.forEach((city, ci) => {
    const gx = left + groupGap / 2 + ci * groupW;
    modes.forEach((mode, mi) => {
      const s = stats.get(key(mode, city));
      if (!s || !Number.isFinite(s.p50)) return;
      const x = gx + mi * barW;
      const color = PALETTE[mi % PALETTE.length]!;
      const tip = `${city} ${mode}: p50 ${ms(s.p50)} ms, p90 ${ms(s.p90)} ms, ${s.count} requests, ${s.okPct.toFixed(0)}% ok`;
      out.push(`<rect x="${n1(x + 1)}" y="${n1(y(s.p50))}" width="${barW - 2}" height="${n1(top + plotH - y(s.p50))}" fill="${color}"><title>${esc(tip)}</title></rect>`);
      const cx = n1(x + barW / 2);
      out.push(`<line x1="${cx}" y1="${n1(y(s.p50))}" x2="${cx}" y2="${n1(y(s.p90))}" stroke="#1a202c"/>`);
      out.push(`<line x1="${n1(x + barW / 2 - 4)}" y1="${n1(y(s.p90))}" x2="${n1(x + barW / 2 + 4)}" y2="${n1(y(s.p90))}" stroke="#1a202c"/>`);
    });
    const lx = n1(gx + (modes.length * barW) / 2);
    const ly = top + plotH + 14;
    out.push(`<text x="${lx}" y="${ly}" text-anchor="end" transform="rotate(-35 ${lx} ${ly})">${esc(city)}</text>`);
  });

  let lx = width - right;
  const legend: string[] = [];
  for (let mi = modes.length - 1; mi >= 0; mi--) {
    const label = modes[mi]!;
    lx -= 12 + 4 + label.length * 7 + 12;
    legend.unshift(`<rect x="${lx}" y="34" width="12" height="12" fill="${PALETTE[mi % PALETTE.length]}"/><text x="${lx + 16}" y="44">${esc(label)}</text>`);
  }
  out.push(...legend, "</svg>");
  return out.join("\n");
}
