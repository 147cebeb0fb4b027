/**
 * The row kernels (src/backend/wasm-rows.ts) against float64 references computed here from the
 * definitions, on random rows at odd offsets, lengths with and without a scalar tail. Tolerances:
 * a few float32 ulps (relative 1e-6) where the kernel rounds a handful of times, 1e-5 for
 * LayerNorm's backward (differences of nearly equal float32 sums), 4e-6 for the activations'
 * derivative (see there). The dropout kernels against wasm-dropout.ts's definition of the mask
 * (lowbias32 written out here again) and float32 arithmetic, exactly.
 */
import { describe, expect, it } from 'vitest';
import { MAX_PAGES, wasmApi } from '../../src/backend/wasm-asm.js';
import type { KeepMask } from '../../src/backend/wasm-dropout.js';
import { RowKernels } from '../../src/backend/wasm-rows.js';
import { Rng } from '../../src/util/rng.js';

const memory = new wasmApi.Memory({ initial: 16, maximum: MAX_PAGES, shared: true });
const heap = new Float32Array(memory.buffer);
const OUT = 16;
const k = new RowKernels(memory, OUT);
const rng = new Rng(5, 9);
const random = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rng.nextFloat() * 2 - 1) * scale);
let next = 64;
/** Floats placed at a fresh offset that is not 16-byte aligned. */
function put(values: Float32Array): number {
  const at = next + 1;
  heap.set(values, at);
  next = at + values.length + 7;
  return at;
}
const read = (at: number, n: number) => Array.from(heap.subarray(at, at + n));

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, rel: number, what: string): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i]), `${what}[${i}]: ${got[i]} vs ${want[i]}`).toBeLessThanOrEqual(rel * Math.max(1, Math.abs(want[i])));
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GATES = [
  { name: 'gelu_new', a: 2 * SQRT_2_OVER_PI, b: 2 * SQRT_2_OVER_PI * 0.044715, f: (x: number) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))) },
  { name: 'fast_gelu', a: 1.702, b: 0, f: (x: number) => x / (1 + Math.exp(-1.702 * x)) },
];

describe('row kernels', () => {
  it('expSum: Σ exp(a·x + b) within 1e-6, the exponentials within 2 ulps, for every length 1…9 and a row of 50257', () => {
    for (const n of [1, 2, 3, 4, 5, 7, 8, 9, 50257]) {
      const x = random(n, 30);
      const at = put(x);
      const [a, b] = [0.125, -3.5];
      const want = Array.from(x, (v) => Math.exp(a * v + b));
      const sum = k.expSum(at, n, a, b, false);
      expect(read(at, n)).toEqual(Array.from(x)); // not stored
      expect(Math.abs(sum - want.reduce((s, v) => s + v, 0)) / want.reduce((s, v) => s + v, 0)).toBeLessThan(1e-6);
      k.expSum(at, n, a, b, true);
      expectClose(read(at, n), want, 2.4e-7, `exp n=${n}`);
    }
  });

  it('exp keeps its range: 0 and large arguments, −∞ to the smallest normal, NaN stays NaN', () => {
    const at = put(Float32Array.of(0, -87, 87, 88.5, -Infinity, NaN, -1e-8, 1e-8));
    k.expSum(at, 8, 1, 0, true);
    const got = read(at, 8);
    expectClose(got.slice(0, 3), [1, Math.exp(-87), Math.exp(87)], 2.4e-7, 'exp');
    expectClose([got[3] / 1e38], [Math.exp(88) / 1e38], 2.4e-7, 'clamped to e^88, finite');
    expect(got[4]).toBeGreaterThan(0);
    expect(got[4]).toBeLessThan(1.2e-38);
    expect(got[5]).toBeNaN();
    expect(got.slice(6)).toEqual([1, 1]);
  });

  it('rowMax, scale and softmaxGrad, with tails', () => {
    for (const n of [1, 6, 13]) {
      const x = random(n, 5);
      const at = put(x);
      expect(k.rowMax(at, n)).toBe(Math.max(...x));
      k.scale(at, n, 0.3);
      expect(read(at, n)).toEqual(Array.from(x, (v) => Math.fround(v * Math.fround(0.3))));
      const [p, dp] = [random(n), random(n)];
      const [pa, da] = [put(p), put(dp)];
      k.softmaxGrad(pa, da, n, 0.25, 0.125);
      expectClose(read(da, n), Array.from(p, (v, i) => v * (dp[i] - 0.25) * 0.125), 1e-7, 'dS');
    }
    expect(k.expSum(put(Float32Array.of(1, 2, 3, 4, 5, NaN)), 6, 1, 0, false)).toBeNaN(); // a NaN logit makes the loss NaN
  });

  it('sumSquares in float64', () => {
    for (const n of [4096, 7]) {
      const x = random(n);
      expect(k.sumSquares(put(x), n)).toBeCloseTo(x.reduce((s, v) => s + v * v, 0), 9);
    }
  });

  it('layerNorm, normalize and layerNormBackward against float64 LayerNorm', () => {
    const [rows, C, eps] = [3, 12, 1e-5];
    const [x, gamma, beta, dy] = [random(rows * C, 2), random(C), random(C), random(rows * C)];
    const [xa, ga, ba, dya] = [put(x), put(gamma), put(beta), put(dy)];
    const [stats, out, dg, db] = [put(new Float32Array(2 * rows)), put(new Float32Array(rows * C)), put(new Float32Array(C).fill(1)), put(new Float32Array(C).fill(2))];
    const dx0 = random(rows * C);
    const dx = put(dx0);
    k.layerNorm(xa, stats, ga, ba, out, rows, C, eps);
    k.layerNormBackward(dya, xa, stats, ga, dx, dg, db, rows, C);
    const wantOut: number[] = [];
    const wantDx: number[] = [];
    const [wantDg, wantDb] = [new Array<number>(C).fill(1), new Array<number>(C).fill(2)];
    for (let r = 0; r < rows; r++) {
      const row = Array.from(x.subarray(r * C, (r + 1) * C));
      const mean = row.reduce((s, v) => s + v, 0) / C;
      const rstd = 1 / Math.sqrt(row.reduce((s, v) => s + (v - mean) ** 2, 0) / C + eps);
      expectClose(read(stats + 2 * r, 2), [mean, rstd], 1e-6, 'stats');
      const xhat = row.map((v) => (v - mean) * rstd);
      wantOut.push(...xhat.map((v, j) => v * gamma[j] + beta[j]));
      const g = xhat.map((_, j) => dy[r * C + j] * gamma[j]);
      const [gm, gxm] = [g.reduce((s, v) => s + v, 0) / C, g.reduce((s, v, j) => s + v * xhat[j], 0) / C];
      wantDx.push(...xhat.map((v, j) => dx0[r * C + j] + rstd * (g[j] - gm - v * gxm)));
      xhat.forEach((v, j) => {
        wantDg[j] += dy[r * C + j] * v;
        wantDb[j] += dy[r * C + j];
      });
    }
    expectClose(read(out, rows * C), wantOut, 2e-6, 'out');
    expectClose(read(dx, rows * C), wantDx, 1e-5, 'dx');
    expectClose(read(dg, C), wantDg, 1e-6, 'dγ');
    expectClose(read(db, C), wantDb, 1e-6, 'dβ');
    const normalized = put(new Float32Array(rows * C));
    k.normalize(xa, stats, ga, ba, normalized, rows, C);
    expect(read(normalized, rows * C)).toEqual(read(out, rows * C)); // the recomputation gives the forward's bits
    k.layerNormBackward(dya, xa, stats, ga, dya, dg, db, rows, C); // in place: dx = LN′(dy), not added
    expectClose(read(dya, rows * C), wantDx.map((v, i) => v - dx0[i]), 1e-5, 'dx in place');
  });

  it('addBias (with and without the residual) and biasBackward', () => {
    const [rows, W] = [3, 8];
    const [o, res, bias] = [random(rows * W), random(rows * W), random(W)];
    const [oa, ra, ba] = [put(o), put(res), put(bias)];
    k.addBias(oa, ba, rows, W);
    expect(read(oa, rows * W)).toEqual(Array.from(o, (v, i) => Math.fround(v + bias[i % W])));
    k.addBias(oa, ba, rows, W, ra);
    expect(read(oa, rows * W)).toEqual(Array.from(o, (v, i) => Math.fround(Math.fround(v + bias[i % W]) + Math.fround(res[i] + bias[i % W]))));
    const db = put(new Float32Array(W).fill(0.5));
    k.biasBackward(ra, db, rows, W);
    expectClose(read(db, W), Array.from({ length: W }, (_, j) => 0.5 + res[j] + res[W + j] + res[2 * W + j]), 1e-6, 'db');
  });

  it.each(GATES)('gate and gateBackward compute $name and its derivative', ({ a, b, f }) => {
    const n = 64;
    const x = random(n, 6);
    const [xa, ya, ga] = [put(x), put(new Float32Array(n)), put(new Float32Array(n).fill(1.5))];
    k.gate(xa, ya, n, a, b);
    expectClose(read(ya, n), Array.from(x, f), 1e-6, 'y');
    k.gateBackward(xa, ga, n, a, b);
    // Central differences in float64 (error ~1e-10); float32 loses ~|x|·ulp(1)·(a + 3b·x²) to 1 − s.
    const h = 1e-5;
    expectClose(read(ga, n), Array.from(x, (v) => (1.5 * (f(v + h) - f(v - h))) / (2 * h)), 4e-6, 'dy');
  });

  it('adamw: optimizer.ts’s float32 sequence, tail included', () => {
    const n = 11;
    const [p, g, m, v] = [random(n), random(n, 0.1), random(n, 0.01), random(n, 1e-4).map(Math.abs)];
    const at = [p, g, m, v].map(put);
    const consts = [0.9, 0.95, 0.1, 0.05, 0.3, 1e-8, -2e-3, 0.9999].map(Math.fround);
    k.adamw(at[0], at[1], at[2], at[3], n, consts);
    const f = Math.fround;
    const [b1, b2, omb1, omb2, bc2, eps, step, decay] = consts;
    for (let i = 0; i < n; i++) {
      const mi = f(f(m[i] * b1) + f(g[i] * omb1));
      const vi = f(f(v[i] * b2) + f(f(g[i] * omb2) * g[i]));
      const pi = f(f(p[i] * decay) + f(f(mi * step) / f(f(f(Math.sqrt(vi)) / bc2) + eps)));
      expect([heap[at[0] + i], heap[at[2] + i], heap[at[3] + i]]).toEqual([pi, mi, vi]);
    }
  });
});

/** Chris Wellons' lowbias32, from its published definition. */
function lowbias32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}
/** wasm-dropout.ts: element j of row r is kept iff lowbias32(rk ^ j·φ) ≥ threshold, rk = lowbias32(key ^ lowbias32(r)). */
const keeps = (mask: KeepMask, row: number, j: number) => lowbias32(lowbias32(mask.key ^ lowbias32(row)) ^ Math.imul(j, 0x9e3779b9)) >= mask.threshold >>> 0;

describe('dropout kernels', () => {
  const f = Math.fround;
  const mask: KeepMask = { key: 0x5eed1234, threshold: Math.round(0.4 * 2 ** 32) | 0 };
  const factor = 1 / 0.6;

  it('dropout: x·factor where the mask keeps (row, column), else +0, for widths with and without a tail, from any row, in place', () => {
    for (const [rows, width, row0] of [[3, 1, 0], [2, 5, 7], [4, 8, 0], [3, 13, 1000], [1, 50, 123456]]) {
      const x = random(rows * width, 3);
      const [xa, out] = [put(x), put(new Float32Array(rows * width).fill(NaN))];
      k.dropout(xa, out, rows, width, mask, factor, row0);
      const want = Array.from(x, (v, i) => (keeps(mask, row0 + Math.floor(i / width), i % width) ? f(v * f(factor)) : 0));
      expect(read(out, rows * width), `${rows}×${width} from row ${row0}`).toEqual(want);
      k.dropout(xa, xa, rows, width, mask, factor, row0);
      expect(read(xa, rows * width)).toEqual(want);
    }
  });

  it('addBiasDropout: res + (out + bias)·factor where kept, else res', () => {
    const [rows, W] = [3, 12];
    const [o, res, bias] = [random(rows * W), random(rows * W), random(W)];
    const [oa, ra, ba] = [put(o), put(res), put(bias)];
    k.addBiasDropout(oa, ba, rows, W, ra, mask, factor);
    expect(read(oa, rows * W)).toEqual(Array.from(o, (v, i) => f(res[i] + (keeps(mask, Math.floor(i / W), i % W) ? f(f(v + bias[i % W]) * f(factor)) : 0))));
  });

  it('softmaxGradDropout: dp ← p·(drop(dp) − d)·scale, then p ← drop(p), with tails', () => {
    for (const [n, row] of [[1, 0], [6, 3], [13, 77]]) {
      const [p, dp] = [random(n), random(n)];
      const [pa, da] = [put(p), put(dp)];
      const [d, scale] = [0.25, 0.125];
      k.softmaxGradDropout(pa, da, n, d, scale, mask, row, factor);
      const drop = (v: number, j: number) => (keeps(mask, row, j) ? f(v * f(factor)) : 0);
      expect(read(da, n)).toEqual(Array.from(p, (v, j) => f(f(v * f(drop(dp[j], j) - f(d))) * f(scale))));
      expect(read(pa, n)).toEqual(Array.from(p, drop));
    }
  });
});
