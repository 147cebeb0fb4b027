/**
 * Loss curves as a standalone SVG (no dependencies): axes with round tick values, grid, title,
 * legend, one polyline per series and point markers for evaluations. Also reads the trainer's
 * metrics.jsonl into the train and eval series.
 */
import { ToolError } from '../util/errors.js';

export interface Point {
  x: number;
  y: number;
}

export interface Series {
  name: string;
  points: Point[];
  color?: string;
  /** Draw a circle at every point; default: true for a series named eval/valid/validation/test. */
  markers?: boolean;
}

export interface PlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  logY?: boolean;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
/** Polylines longer than this are reduced to min/max per pixel column (spikes stay visible). */
const MAX_POLYLINE_POINTS = 2000;
/** Beyond this many points a series' markers would be a smear; the line alone shows it. */
const MAX_MARKERS = 500;
const MARGIN = { left: 72, right: 32, top: 44, bottom: 52 };

export function lossPlotSvg(series: Series[], options: PlotOptions = {}): string {
  const width = options.width ?? 800;
  const height = options.height ?? 480;
  const logY = options.logY ?? false;
  const plot = { x0: MARGIN.left, y0: MARGIN.top, x1: width - MARGIN.right, y1: height - MARGIN.bottom };
  // Non-finite values (and, on a log axis, non-positive ones) are skipped, never plotted.
  const usable = (p: Point) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!logY || p.y > 0);
  const data = series.map((s, i) => ({
    name: s.name,
    color: s.color ?? PALETTE[i % PALETTE.length],
    markers: s.markers ?? /^(eval|valid|validation|test)\b/i.test(s.name),
    points: s.points.filter(usable),
  }));
  const all = data.flatMap((s) => s.points);

  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  // Steps are integers: no ticks between them when the range is short.
  const xAxis = linearAxis(range(xs, 0, 1), xs.every(Number.isInteger));
  const yAxis = logY ? logAxis(range(ys, 1, 10)) : linearAxis(range(ys, 0, 1));
  const sx = (x: number) => plot.x0 + ((x - xAxis.lo) / (xAxis.hi - xAxis.lo)) * (plot.x1 - plot.x0);
  const ty = logY ? Math.log10 : (y: number) => y;
  const [tLo, tHi] = [ty(yAxis.lo), ty(yAxis.hi)];
  const sy = (y: number) => plot.y1 - ((ty(y) - tLo) / (tHi - tLo)) * (plot.y1 - plot.y0);

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text class="title" x="${f((plot.x0 + plot.x1) / 2)}" y="26" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(options.title ?? 'loss')}</text>`,
  );

  // Grid, tick marks, tick labels.
  const grid: string[] = [];
  const marks: string[] = [];
  const labels: string[] = [];
  const xLabels = formatTicks(xAxis.ticks, xAxis.step);
  const yLabels = formatTicks(yAxis.ticks, yAxis.step);
  xAxis.ticks.forEach((t, i) => {
    const x = f(sx(t));
    grid.push(`<line x1="${x}" y1="${plot.y0}" x2="${x}" y2="${plot.y1}"/>`);
    marks.push(`<line x1="${x}" y1="${plot.y1}" x2="${x}" y2="${plot.y1 + 5}"/>`);
    labels.push(`<text class="tick-x" x="${x}" y="${plot.y1 + 18}" text-anchor="middle">${xLabels[i]}</text>`);
  });
  yAxis.ticks.forEach((t, i) => {
    const y = f(sy(t));
    grid.push(`<line x1="${plot.x0}" y1="${y}" x2="${plot.x1}" y2="${y}"/>`);
    marks.push(`<line x1="${plot.x0 - 5}" y1="${y}" x2="${plot.x0}" y2="${y}"/>`);
    labels.push(`<text class="tick-y" x="${plot.x0 - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${yLabels[i]}</text>`);
  });
  out.push(`<g class="grid" stroke="#e6e6e6" stroke-width="1">`, ...grid, `</g>`);
  out.push(`<g class="tick-marks" stroke="#333333">`, ...marks, `</g>`);
  out.push(`<g class="tick-labels" fill="#333333">`, ...labels, `</g>`);
  out.push(
    `<rect class="frame" x="${plot.x0}" y="${plot.y0}" width="${plot.x1 - plot.x0}" height="${plot.y1 - plot.y0}" fill="none" stroke="#333333"/>`,
    `<text class="axis-title" x="${f((plot.x0 + plot.x1) / 2)}" y="${height - 12}" text-anchor="middle" font-size="13">${escapeXml(options.xLabel ?? 'step')}</text>`,
    `<text class="axis-title" transform="translate(18 ${f((plot.y0 + plot.y1) / 2)}) rotate(-90)" text-anchor="middle" font-size="13">${escapeXml(options.yLabel ?? 'loss')}</text>`,
  );

  // Series: lines first, then markers on top of every line.
  const pixels = Math.max(1, Math.round(plot.x1 - plot.x0));
  const markers: string[] = [];
  for (const s of data) {
    if (s.points.length === 0) continue;
    const shown = s.points.length > MAX_POLYLINE_POINTS ? minMaxPerColumn(s.points, (p) => Math.floor(((sx(p.x) - plot.x0) / (plot.x1 - plot.x0)) * (pixels - 1))) : s.points;
    const coords = shown.map((p) => `${f(sx(p.x))},${f(sy(p.y))}`).join(' ');
    out.push(`<polyline class="series" data-name="${escapeXml(s.name)}" fill="none" stroke="${escapeXml(s.color)}" stroke-width="1.5" stroke-linejoin="round" stroke-linecap="round" points="${coords}"/>`);
    // A one-point polyline draws nothing: such a series always gets its marker.
    if ((s.markers && s.points.length <= MAX_MARKERS) || s.points.length === 1) {
      for (const p of s.points) markers.push(`<circle class="marker" cx="${f(sx(p.x))}" cy="${f(sy(p.y))}" r="3.5" fill="${escapeXml(s.color)}" stroke="#ffffff" stroke-width="1"/>`);
    }
  }
  out.push(...markers);
  if (all.length === 0) {
    out.push(`<text class="no-data" x="${f((plot.x0 + plot.x1) / 2)}" y="${f((plot.y0 + plot.y1) / 2)}" text-anchor="middle" fill="#888888">no data</text>`);
  }
  out.push(...legend(data, plot.x1));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Legend box in the plot's top-right corner, where a falling loss curve leaves room. */
function legend(data: { name: string; color: string; markers: boolean; points: Point[] }[], right: number): string[] {
  if (data.length === 0) return [];
  const labels = data.map((s) => (s.points.length === 0 ? `${s.name} (no data)` : s.name));
  const boxW = 44 + Math.max(...labels.map((l) => l.length)) * 7;
  const boxH = 10 + 18 * data.length;
  const x = right - boxW - 10;
  const y = MARGIN.top + 10;
  const out = [`<g class="legend">`, `<rect x="${f(x)}" y="${y}" width="${f(boxW)}" height="${boxH}" fill="#ffffff" fill-opacity="0.85" stroke="#bbbbbb"/>`];
  data.forEach((s, i) => {
    const cy = y + 14 + 18 * i;
    out.push(`<line x1="${f(x + 8)}" y1="${cy}" x2="${f(x + 32)}" y2="${cy}" stroke="${escapeXml(s.color)}" stroke-width="2"/>`);
    if (s.markers) out.push(`<circle class="legend-marker" cx="${f(x + 20)}" cy="${cy}" r="3.5" fill="${escapeXml(s.color)}" stroke="#ffffff" stroke-width="1"/>`);
    out.push(`<text x="${f(x + 38)}" y="${cy}" dominant-baseline="middle">${escapeXml(labels[i])}</text>`);
  });
  out.push('</g>');
  return out;
}

/**
 * Reduces a long series to the first, lowest, highest and last point of every pixel column (in
 * their original order), so the drawn line looks the same, spikes included, at a fraction of
 * the size.
 */
export function minMaxPerColumn(points: Point[], column: (p: Point) => number): Point[] {
  const out: Point[] = [];
  let start = 0;
  while (start < points.length) {
    const col = column(points[start]);
    let end = start + 1;
    while (end < points.length && column(points[end]) === col) end++;
    let lo = start;
    let hi = start;
    for (let i = start + 1; i < end; i++) {
      if (points[i].y < points[lo].y) lo = i;
      if (points[i].y > points[hi].y) hi = i;
    }
    for (const i of [...new Set([start, lo, hi, end - 1])].sort((a, b) => a - b)) out.push(points[i]);
    start = end;
  }
  return out;
}

interface Axis {
  lo: number;
  hi: number;
  ticks: number[];
  /** Tick spacing for label precision (0 on a log axis: labels use their own digits). */
  step: number;
}

/** [min, max] of the values; an empty list gives the fallback, a single value a small range round it. */
function range(values: number[], emptyLo: number, emptyHi: number): [number, number] {
  if (values.length === 0) return [emptyLo, emptyHi];
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }
  return [lo, hi];
}

/** 1, 2 or 5 × 10^k, the spacing that gives about `target` intervals over `span` (≥ 1 if integer). */
export function niceStep(span: number, target = 6, integer = false): number {
  const raw = integer ? Math.max(1, span / target) : span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n < 1.5 ? 1 : n < 3.5 ? 2 : n < 7.5 ? 5 : 10) * mag;
}

/** Linear axis widened to whole steps, with ticks at every multiple of the nice step. */
export function linearAxis([min, max]: [number, number], integer = false): Axis {
  const step = niceStep(max - min, 6, integer);
  const k0 = Math.floor(min / step + 1e-9);
  const k1 = Math.ceil(max / step - 1e-9);
  const ticks: number[] = [];
  for (let k = k0; k <= k1; k++) ticks.push(clean(k * step));
  return { lo: clean(k0 * step), hi: clean(k1 * step), ticks, step };
}

/**
 * Log axis: ticks at 10^k over many decades, 1-2-5 × 10^k over a few, 1…9 × 10^k within about
 * one; when fewer than two of those fall inside the data (a narrow range), linear nice ticks
 * placed on the log scale. The axis is widened to the ticks that enclose the data.
 */
export function logAxis([min, max]: [number, number]): Axis {
  const [a, b] = [Math.log10(min), Math.log10(max)];
  const decades = b - a;
  const mults = decades > 4 ? [1] : decades > 1.2 ? [1, 2, 5] : [1, 2, 3, 4, 5, 6, 7, 8, 9];
  const candidates: number[] = [];
  for (let k = Math.floor(a) - 1; k <= Math.ceil(b) + 1; k++) for (const m of mults) candidates.push(clean(m * 10 ** k));
  const lo = Math.max(...candidates.filter((c) => c <= min * (1 + 1e-12)));
  const hi = Math.min(...candidates.filter((c) => c >= max * (1 - 1e-12)));
  const inside = candidates.filter((c) => c >= min * (1 + 1e-12) && c <= max * (1 - 1e-12));
  if (inside.length >= 2) return { lo, hi, ticks: candidates.filter((c) => c >= lo && c <= hi), step: 0 };
  const linear = linearAxis([min, max]);
  const ticks = linear.ticks.filter((t) => t > 0);
  return { lo: linear.lo > 0 ? linear.lo : Math.min(min, ticks[0] ?? min), hi: linear.hi, ticks, step: linear.step };
}

/**
 * Tick labels: as many decimals as the step needs (none on a log axis: each value's own digits);
 * the whole axis in exponent form when it reaches 1e7 or goes below 1e-4.
 */
export function formatTicks(ticks: number[], step: number): string[] {
  const sizes = ticks.filter((v) => v !== 0).map(Math.abs);
  const exponent = sizes.length > 0 && (Math.max(...sizes) >= 1e7 || Math.min(...sizes) < 1e-4);
  return ticks.map((v) => {
    if (v === 0) return '0';
    if (exponent) return v.toExponential().replace('e+', 'e');
    if (step === 0) return String(clean(v));
    return v.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  });
}

/** Removes binary noise from k × step (0.30000000000000004 → 0.3). */
function clean(v: number): number {
  return Number(v.toPrecision(12));
}

/** Two decimals are well below a pixel and keep the file small. */
function f(v: number): string {
  return String(Math.round(v * 100) / 100);
}

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/**
 * Reads metrics.jsonl: {"step":…, "loss":…} lines are training points, {"step":…, "eval_loss":…}
 * evaluation points (a line may be both); other fields and blank lines are ignored; null (how JSON
 * writes a NaN) becomes NaN, which the plot skips. A line that is not a JSON object, or has a loss
 * without a numeric step, is an error naming its 1-based line number.
 */
export function readMetrics(jsonlText: string): { train: Point[]; eval: Point[] } {
  const train: Point[] = [];
  const evals: Point[] = [];
  const lines = jsonlText.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const where = `line ${i + 1}`;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (err) {
      throw new ToolError(`${where}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) throw new ToolError(`${where}: expected a JSON object`);
    const r = record as Record<string, unknown>;
    const hasLoss = 'loss' in r;
    const hasEval = 'eval_loss' in r;
    if (!hasLoss && !hasEval) return;
    if (typeof r.step !== 'number' || !Number.isFinite(r.step)) throw new ToolError(`${where}: "step" must be a number`);
    const value = (key: string): number => {
      const v = r[key];
      if (v === null) return NaN;
      if (typeof v !== 'number') throw new ToolError(`${where}: "${key}" must be a number, got ${JSON.stringify(v)}`);
      return v;
    };
    if (hasLoss) train.push({ x: r.step, y: value('loss') });
    if (hasEval) evals.push({ x: r.step, y: value('eval_loss') });
  });
  return { train, eval: evals };
}
