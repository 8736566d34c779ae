import assert from "node:assert/strict";
import { test } from "node:test";
import type { LoadSample } from "../../src/network/sim/loadgen.js";
import { medianOf, percentile, renderSvgChart, renderTable, summarize } from "../../src/network/sim/report.js";

function sample(city: string, mode: string, task: string, ms: number, ok = true): LoadSample {
  return { city, mode, task, ok, status: ok ? 200 : 500, ms, bytesIn: 100, bytesOut: 10, servedBy: null, entryPop: null, startedAt: 0 };
}

/** Edge answers in 10–19 ms, central in 100–109 ms; Tokyo's central also has two 500s. */
function samples(): LoadSample[] {
  const out: LoadSample[] = [];
  for (const city of ["Lisbon", "São Paulo & <Co>", "Tokyo"]) {
    for (const task of ["classify", "embed"]) {
      for (let i = 0; i < 10; i++) {
        out.push(sample(city, "edge", task, 10 + i));
        out.push(sample(city, "central", task, 100 + i));
      }
    }
  }
  out.push(sample("Tokyo", "central", "embed", 1, false), sample("Tokyo", "central", "embed", 2, false));
  return out;
}

test("percentile interpolates between ranks; medianOf is the usual median", () => {
  assert.equal(percentile([4, 1, 3, 2], 50), 2.5);
  assert.equal(medianOf([5, 1, 3]), 3);
  assert.equal(percentile([1, 2, 3, 4], 0), 1);
  assert.equal(percentile([1, 2, 3, 4], 100), 4);
  assert.equal(percentile([10, 20], 90), 19);
  assert.ok(Number.isNaN(percentile([], 50)), "NaN for no values");
});

test("summarize: per mode × task × city, per mode × city and per mode", () => {
  const s = summarize(samples());
  assert.deepEqual(s.modes, ["edge", "central"]);
  assert.deepEqual(s.tasks, ["classify", "embed"]);
  assert.deepEqual(s.cities, ["Lisbon", "São Paulo & <Co>", "Tokyo"]);
  assert.equal(s.cells.length, 2 * 2 * 3);

  const edgeLisbon = s.cells.find((c) => c.mode === "edge" && c.task === "classify" && c.city === "Lisbon")!;
  assert.deepEqual([edgeLisbon.count, edgeLisbon.okPct, edgeLisbon.p50, edgeLisbon.bytesIn, edgeLisbon.bytesOut], [10, 100, 14.5, 1000, 100]);
  assert.ok(Math.abs(edgeLisbon.p90 - 18.1) < 1e-9, `p90 ${edgeLisbon.p90}`);

  // Failures count against ok % but stay out of the latency figures.
  const tokyo = s.cells.find((c) => c.mode === "central" && c.task === "embed" && c.city === "Tokyo")!;
  assert.equal(tokyo.count, 12);
  assert.equal(tokyo.okCount, 10);
  assert.ok(Math.abs(tokyo.okPct - 83.333) < 0.001, `ok% ${tokyo.okPct}`);
  assert.equal(tokyo.p50, 104.5);

  const tokyoAll = s.byCity.find((c) => c.mode === "central" && c.city === "Tokyo")!;
  assert.equal(tokyoAll.count, 22);
  const central = s.byMode.find((m) => m.mode === "central")!;
  assert.deepEqual([central.count, central.okCount], [62, 60]);
  assert.deepEqual([s.bytesIn, s.bytesOut], [122 * 100, 122 * 10]);
});

test("summarize of nothing is empty", () => {
  const s = summarize([]);
  assert.deepEqual([s.modes, s.cells, s.byMode], [[], [], []]);
  assert.match(renderTable(s), /city/);
  assert.match(renderSvgChart(s), /^<svg/);
});

test("renderTable: one aligned line per city × task with the modes side by side and the edge/central ratio", () => {
  const table = renderTable(summarize(samples()));
  const lines = table.split("\n");
  assert.match(lines[0]!, /^city\s+task\s+edge n\s+ok%\s+p50\s+p90\s+p99\s+central n\s+ok%\s+p50\s+p90\s+p99\s+edge\/central p50$/);
  const rows = lines.slice(1, 8);
  assert.equal(rows.length, 7); // 3 cities × 2 tasks + "all"
  const widths = new Set(rows.map((l) => l.length));
  assert.equal(widths.size, 1, "columns are aligned");
  const tokyoEmbed = rows.find((l) => l.startsWith("Tokyo") && l.includes("embed"))!;
  const cells = tokyoEmbed.trim().split(/\s{2,}/);
  assert.deepEqual(cells, ["Tokyo", "embed", "10", "100", "14.5", "18.1", "18.9", "12", "83", "105", "108", "109", "0.14"]);
  assert.match(rows[6]!, /^all\s+all/);
  assert.match(table, /bytes moved: edge 600 B out \/ 5\.9 KiB in, central 620 B out/);
});

test("renderTable leaves the ratio out when the modes are not there", () => {
  const table = renderTable(summarize(samples().filter((s) => s.mode === "edge")));
  assert.doesNotMatch(table, /ratio|edge\/central/);
});

/** A small XML well-formedness check: tags balance and attribute values are quoted. */
function assertBalanced(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)((?:\s+[a-zA-Z][\w:-]*="[^"<>]*")*)\s*(\/?)>/g)) {
    const [, close, name, , selfClose] = m;
    if (selfClose) continue;
    if (close) assert.equal(stack.pop(), name, `</${name}> closes the wrong tag`);
    else stack.push(name!);
  }
  assert.deepEqual(stack, [], "every tag is closed");
  const stripped = svg.replace(/<\/?[a-zA-Z]+(?:\s+[a-zA-Z][\w:-]*="[^"<>]*")*\s*\/?>/g, "");
  assert.doesNotMatch(stripped, /[<>]/, "no stray angle brackets outside tags");
  assert.doesNotMatch(stripped, /&(?!amp;|lt;|gt;|quot;|#39;)/, "ampersands are escaped");
}

test("renderSvgChart: a self-contained grouped bar chart with every city, bars, whiskers and a legend", () => {
  const svg = renderSvgChart(summarize(samples()), { title: "p50 <edge> & central" });
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>$/);
  assertBalanced(svg);
  for (const city of ["Lisbon", "São Paulo &amp; &lt;Co&gt;", "Tokyo"]) assert.ok(svg.includes(`>${city}</text>`), city);
  assert.ok(svg.includes("p50 &lt;edge&gt; &amp; central"), "the title is escaped");
  assert.equal((svg.match(/<rect [^>]*><title>/g) ?? []).length, 6, "3 cities × 2 modes");
  assert.ok(svg.includes(">edge</text>") && svg.includes(">central</text>"), "legend");
  assert.doesNotMatch(svg, /NaN|undefined|Infinity/);
  // Ticks reach past the tallest whisker (central p90 ≈ 108 ms).
  const ticks = [...svg.matchAll(/text-anchor="end" dominant-baseline="middle">([\d.]+)</g)].map((m) => Number(m[1]));
  assert.ok(ticks.length >= 3 && Math.max(...ticks) >= 108, `ticks ${ticks}`);
});

test("renderSvgChart for one task; a mode without successes in a city gets no bar", () => {
  const data = samples().filter((s) => !(s.city === "Lisbon" && s.mode === "central"));
  data.push(sample("Lisbon", "central", "embed", 5, false));
  const svg = renderSvgChart(summarize(data), { task: "embed" });
  assertBalanced(svg);
  assert.match(svg, /\(embed\)/);
  assert.equal((svg.match(/<rect [^>]*><title>/g) ?? []).length, 5);
});
