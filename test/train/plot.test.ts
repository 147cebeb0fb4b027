/**
 * The loss plot: well-formed standalone SVG (a small XML checker below), one polyline per
 * non-empty series, eval markers, nice tick labels for known ranges, NaN/Infinity skipped, long
 * series reduced with spikes kept, text escaped; and readMetrics on metrics.jsonl lines.
 */
import { describe, expect, it } from 'vitest';
import { formatTicks, linearAxis, logAxis, lossPlotSvg, niceStep, readMetrics, type Point } from '../../src/train/plot.js';
import { ToolError } from '../../src/util/errors.js';

interface Element {
  name: string;
  attrs: Record<string, string>;
  text: string;
}

/**
 * Checks well-formedness (one root, balanced tags, quoted unique attributes, no raw `<` or bare `&`
 * in text or attributes) and returns every element with its attributes and direct text.
 */
function parseXml(xml: string): Element[] {
  const elements: Element[] = [];
  const stack: Element[] = [];
  let roots = 0;
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/y;
  const attr = /\s+([\w:-]+)="([^"<]*)"/g;
  const entityOk = (s: string) => !/&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+);)/i.test(s);
  let i = 0;
  while (i < xml.length) {
    if (xml[i] !== '<') {
      const end = xml.indexOf('<', i);
      const text = xml.slice(i, end < 0 ? xml.length : end);
      if (!entityOk(text) || text.includes('>')) throw new Error(`bad text ${JSON.stringify(text)}`);
      if (stack.length === 0 && text.trim() !== '') throw new Error('text outside the root');
      if (stack.length > 0) stack[stack.length - 1].text += text;
      i += text.length;
      continue;
    }
    tag.lastIndex = i;
    const m = tag.exec(xml);
    if (!m) throw new Error(`malformed tag at ${i}: ${xml.slice(i, i + 40)}`);
    const [all, closing, name, attrText, selfClosing] = m;
    if (closing) {
      const open = stack.pop();
      if (open?.name !== name) throw new Error(`</${name}> closes <${open?.name}>`);
    } else {
      const attrs: Record<string, string> = {};
      for (const [, k, v] of attrText.matchAll(attr)) {
        if (k in attrs) throw new Error(`duplicate attribute ${k}`);
        if (!entityOk(v)) throw new Error(`bad attribute value ${v}`);
        attrs[k] = v;
      }
      const el = { name, attrs, text: '' };
      elements.push(el);
      if (stack.length === 0 && ++roots > 1) throw new Error('more than one root');
      if (!selfClosing) stack.push(el);
    }
    i += all.length;
  }
  if (stack.length !== 0) throw new Error(`unclosed <${stack[stack.length - 1].name}>`);
  return elements;
}

const unescape = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
const polylines = (els: Element[]) => els.filter((e) => e.name === 'polyline');
const coords = (e: Element) => e.attrs.points.split(' ').map((p) => p.split(',').map(Number));
const markers = (els: Element[]) => els.filter((e) => e.name === 'circle' && e.attrs.class === 'marker');
const tickLabels = (els: Element[], axis: 'x' | 'y') => els.filter((e) => e.attrs.class === `tick-${axis}`).map((e) => e.text);
const line = (n: number, from: number, to: number, f: (x: number) => number): Point[] =>
  Array.from({ length: n }, (_, i) => from + ((to - from) * i) / (n - 1)).map((x) => ({ x, y: f(x) }));

describe('lossPlotSvg', () => {
  const train = line(101, 0, 1000, (x) => 3 + 7 * Math.exp(-x / 200)); // 10 → ~3.05
  const evals = [250, 500, 750, 1000].map((x) => ({ x, y: 3.2 + 7 * Math.exp(-x / 200) }));

  it('is a standalone SVG with title, axis titles, legend, grid, one polyline per series and eval markers', () => {
    const svg = lossPlotSvg([{ name: 'train', points: train }, { name: 'eval', points: evals }], { title: 'run a' });
    const els = parseXml(svg);
    const root = els[0];
    expect(root.name).toBe('svg');
    expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(root.attrs.viewBox).toBe('0 0 800 480');
    expect(polylines(els).map((p) => p.attrs['data-name'])).toEqual(['train', 'eval']);
    expect(coords(polylines(els)[0])).toHaveLength(101);
    expect(markers(els)).toHaveLength(4);
    const texts = els.filter((e) => e.name === 'text').map((e) => e.text);
    expect(texts).toEqual(expect.arrayContaining(['run a', 'step', 'loss', 'train', 'eval']));
    expect(els.filter((e) => e.name === 'g' && e.attrs.class === 'grid')).toHaveLength(1);
    // Every plotted coordinate lies inside the viewBox.
    for (const p of polylines(els)) for (const [x, y] of coords(p)) expect(x >= 0 && x <= 800 && y >= 0 && y <= 480).toBe(true);
  });

  it('labels ticks with round 1/2/5 × 10^k values', () => {
    const els = parseXml(lossPlotSvg([{ name: 'train', points: train }]));
    expect(tickLabels(els, 'x')).toEqual(['0', '200', '400', '600', '800', '1000']); // span 1000 / 6 ≈ 167 → 200
    expect(tickLabels(els, 'y')).toEqual(['3', '4', '5', '6', '7', '8', '9', '10']); // span ≈ 7 / 6 ≈ 1.2 → 1
    const narrow = parseXml(lossPlotSvg([{ name: 'train', points: line(51, 0, 50_000, (x) => 2.81 + (0.56 * x) / 50_000) }]));
    expect(tickLabels(narrow, 'x')).toEqual(['0', '10000', '20000', '30000', '40000', '50000']); // 8333 → 10000
    expect(tickLabels(narrow, 'y')).toEqual(['2.8', '2.9', '3.0', '3.1', '3.2', '3.3', '3.4']); // 0.56 / 6 ≈ 0.093 → 0.1
  });

  it('nice steps, axes and label formats', () => {
    expect([niceStep(1000), niceStep(7), niceStep(0.56), niceStep(12), niceStep(40)]).toEqual([200, 1, 0.1, 2, 5]);
    expect(niceStep(2, 6, true)).toBe(1); // integer axes never step below 1
    expect(linearAxis([0.13, 0.61])).toEqual({ lo: 0.1, hi: 0.7, ticks: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], step: 0.1 });
    expect(logAxis([0.5, 50]).ticks).toEqual([0.5, 1, 2, 5, 10, 20, 50]); // two decades: 1-2-5
    expect(logAxis([1e-3, 1e3]).ticks).toEqual([1e-3, 1e-2, 0.1, 1, 10, 100, 1000]); // six decades: powers of 10
    expect(logAxis([2.9, 12]).ticks).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 20]); // under a decade and a bit: 1…9
    expect(logAxis([3.1, 3.6]).ticks).toEqual([3.1, 3.2, 3.3, 3.4, 3.5, 3.6]); // narrow: linear ticks (0.5 / 6 → 0.1) on the log scale
    expect(formatTicks([0, 0.5, 1, 1.5], 0.5)).toEqual(['0', '0.5', '1.0', '1.5']);
    expect(formatTicks([0, 5e6, 1e7, 1.5e7], 5e6)).toEqual(['0', '5e6', '1e7', '1.5e7']);
    expect(formatTicks([1e-5, 1e-4, 1e-3], 0)).toEqual(['1e-5', '1e-4', '1e-3']); // one form per axis
    expect(formatTicks([0.001, 0.01, 0.1, 1], 0)).toEqual(['0.001', '0.01', '0.1', '1']);
    expect(formatTicks([0, 0.00005, 0.0001], 0.00005)).toEqual(['0', '5e-5', '1e-4']);
  });

  it('skips NaN and Infinity and keeps them out of the axis ranges', () => {
    const points = [...train.slice(0, 10), { x: 95, y: NaN }, { x: 96, y: Infinity }, { x: NaN, y: 4 }, { x: 97, y: -Infinity }, ...train.slice(10)];
    const els = parseXml(lossPlotSvg([{ name: 'train', points }]));
    expect(coords(polylines(els)[0])).toHaveLength(101);
    expect(tickLabels(els, 'y')).toEqual(['3', '4', '5', '6', '7', '8', '9', '10']);
    expect(parseXml(lossPlotSvg([{ name: 'train', points }])).some((e) => /NaN|Infinity/.test(Object.values(e.attrs).join(' ')))).toBe(false);
  });

  it('draws no polyline for an empty series and says "no data" when nothing is plotted', () => {
    const els = parseXml(lossPlotSvg([{ name: 'train', points: train }, { name: 'eval', points: [{ x: 1, y: NaN }] }]));
    expect(polylines(els)).toHaveLength(1);
    expect(markers(els)).toHaveLength(0);
    expect(els.some((e) => e.text === 'eval (no data)')).toBe(true);
    const empty = parseXml(lossPlotSvg([{ name: 'train', points: [] }, { name: 'eval', points: [] }]));
    expect(polylines(empty)).toHaveLength(0);
    expect(empty.some((e) => e.attrs.class === 'no-data')).toBe(true);
    expect(tickLabels(empty, 'x').length).toBeGreaterThan(1);
    expect(parseXml(lossPlotSvg([]))[0].name).toBe('svg');
  });

  it('shows a single point with a marker and integer step ticks around it', () => {
    const els = parseXml(lossPlotSvg([{ name: 'train', points: [{ x: 5, y: 3.2 }] }]));
    expect(polylines(els)).toHaveLength(1);
    expect(markers(els)).toHaveLength(1);
    expect(tickLabels(els, 'x')).toEqual(['4', '5', '6']); // 5 ± 0.5, integer steps
    expect(tickLabels(els, 'y')).toEqual(['2.8', '2.9', '3.0', '3.1', '3.2', '3.3', '3.4', '3.5', '3.6']); // 3.2 ± 0.32
  });

  it('reduces a long series to min/max per pixel column, keeping spikes and both ends', () => {
    const n = 200_000;
    const points = Array.from({ length: n }, (_, i) => ({ x: i, y: 3 + 0.1 * Math.sin(i) + (i === 123_457 ? 5 : 0) + (i === 54_321 ? -2 : 0) }));
    const svg = lossPlotSvg([{ name: 'train', points }]);
    const xy = coords(polylines(parseXml(svg))[0]);
    expect(xy.length).toBeLessThanOrEqual(4 * 696); // plot width 800 − 72 − 32 px, ≤ 4 points a column
    expect(xy.length).toBeGreaterThan(696);
    const ys = xy.map(([, y]) => y);
    const full = parseXml(lossPlotSvg([{ name: 'train', points: points.filter((_, i) => i === 0 || i === 123_457 || i === 54_321 || i === n - 1) }]));
    const want = coords(polylines(full)[0]).map(([, y]) => y);
    expect(Math.min(...ys)).toBe(Math.min(...want)); // the upward spike (smallest pixel y)
    expect(Math.max(...ys)).toBe(Math.max(...want)); // the downward one
    expect(xy[0][0]).toBe(72);
    expect(xy[xy.length - 1][0]).toBe(800 - 32);
    expect(svg.length).toBeLessThan(100_000);
  });

  it('escapes text', () => {
    const svg = lossPlotSvg([{ name: 'a<b> & "c"', points: train }], { title: 'loss <&> \'x\'', xLabel: 'step & such', yLabel: '<y>' });
    const els = parseXml(svg);
    const texts = els.filter((e) => e.name === 'text').map((e) => unescape(e.text));
    expect(texts).toEqual(expect.arrayContaining(["loss <&> 'x'", 'step & such', '<y>', 'a<b> & "c"']));
    expect(svg).toContain('loss &lt;&amp;&gt; &apos;x&apos;');
    expect(unescape(polylines(els)[0].attrs['data-name'])).toBe('a<b> & "c"');
  });

  it('logY plots only positive values, on 1/2/5 ticks', () => {
    const points = [{ x: 0, y: 0 }, { x: 1, y: -1 }, ...line(50, 2, 100, (x) => 50 / x)]; // 25 → 0.5
    const els = parseXml(lossPlotSvg([{ name: 'train', points }], { logY: true }));
    expect(coords(polylines(els)[0])).toHaveLength(50);
    expect(tickLabels(els, 'y')).toEqual(['0.5', '1', '2', '5', '10', '20', '50']);
  });

  it('honours width, height and colour', () => {
    const els = parseXml(lossPlotSvg([{ name: 'train', points: train, color: '#123456' }], { width: 640, height: 360 }));
    expect(els[0].attrs.viewBox).toBe('0 0 640 360');
    expect(polylines(els)[0].attrs.stroke).toBe('#123456');
  });
});

describe('readMetrics', () => {
  it('splits training and evaluation points, ignoring other fields and blank lines', () => {
    const text = [
      '{"step":1,"loss":10.5,"lr":0.0001,"tokens":4096}',
      '',
      '{"step":2,"loss":9.75,"grad_norm":1.2}',
      '  ',
      '{"step":2,"eval_loss":9.9,"eval_ppl":19930}',
      '{"event":"checkpoint","path":"runs/a"}',
      '{"step":3,"loss":null}',
      '{"step":4,"loss":8.5,"eval_loss":8.7}\r',
      '',
    ].join('\n');
    expect(readMetrics(text)).toEqual({
      train: [
        { x: 1, y: 10.5 },
        { x: 2, y: 9.75 },
        { x: 3, y: NaN },
        { x: 4, y: 8.5 },
      ],
      eval: [
        { x: 2, y: 9.9 },
        { x: 4, y: 8.7 },
      ],
    });
    expect(readMetrics('')).toEqual({ train: [], eval: [] });
  });

  it('names the line of a malformed record', () => {
    const bad = (text: string, pattern: RegExp) => {
      expect(() => readMetrics(text)).toThrow(ToolError);
      expect(() => readMetrics(text)).toThrow(pattern);
    };
    bad('{"step":1,"loss":2}\n\n{"step":2,"loss":', /^line 3: not valid JSON/);
    bad('{"step":1,"loss":2}\n[1,2]', /^line 2: expected a JSON object/);
    bad('{"loss":2}', /^line 1: "step" must be a number/);
    bad('{"step":1,"loss":"2.5"}', /^line 1: "loss" must be a number, got "2.5"/);
  });

  it('feeds the plot', () => {
    const m = readMetrics('{"step":1,"loss":3}\n{"step":2,"loss":2.5}\n{"step":2,"eval_loss":2.7}\n');
    const els = parseXml(lossPlotSvg([{ name: 'train', points: m.train }, { name: 'eval', points: m.eval }]));
    expect(polylines(els)).toHaveLength(2);
    expect(markers(els)).toHaveLength(1);
  });
});
