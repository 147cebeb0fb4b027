/**
 * The encoded decode kernels (src/backend/wasm-qgemv.ts) and the layouts they read
 * (src/backend/encoded-weights.ts): every finite half widened exactly (against the IEEE formula,
 * subnormals included), Q8_0 values equal to the format's own decoder (src/formats/q8_0.ts), and
 * each kernel giving the bits of the f32 kernel over the decoded weights, whose own tests hold it
 * to a float64 product.
 */
import { describe, expect, it } from 'vitest';
import { wasmApi } from '../../src/backend/wasm-asm.js';
import { smallMatMul } from '../../src/backend/wasm-gemv.js';
import { quantizeActivations } from '../../src/backend/wasm-qgemv.js';
import { readRows, weightBytes, writeEncoded, writeWeight, type WeightDtype, type WeightRef } from '../../src/backend/encoded-weights.js';
import { dequantizeQ8_0, quantizeQ8_0 } from '../../src/formats/q8_0.js';
import { encodeF16 } from '../../src/formats/dtypes.js';
import { makeRng, normals } from './compare.js';

const rng = makeRng(23);
const memory = new wasmApi.Memory({ initial: 256 });
const kernels = smallMatMul(memory);
const heap = new Float32Array(memory.buffer);

/** IEEE half → value, from the definition. */
function halfValue(h: number): number {
  const [s, e, m] = [h >> 15 ? -1 : 1, (h >> 10) & 31, h & 1023];
  return s * (e === 0 ? 2 ** -14 * (m / 1024) : 2 ** (e - 15) * (1 + m / 1024));
}

/** A weight at byte `at` (16-aligned), its scales after it. */
function place(dtype: WeightDtype, rows: number, cols: number, blocks: 'row' | 'column', at: number): WeightRef {
  const bytes = weightBytes(dtype, rows, cols);
  return { dtype, offset: at, scales: dtype === 'q8_0' ? at + bytes.values : 0, rows, cols, blocks };
}

/** Weights with a spread of magnitudes (some f16 subnormals, some zero blocks). */
function weights(n: number): Float32Array {
  const w = Float32Array.from(normals(rng, n), (x, i) => (i % 97 === 0 ? x * 1e-6 : x * 0.1));
  w.fill(0, 32, 64); // an all-zero Q8_0 block (scale 0)
  return w;
}

describe('encoded weights', () => {
  it('every finite half is widened to its exact value, subnormals and signed zeros included', () => {
    const halves = Array.from({ length: 65536 }, (_, h) => h).filter((h) => (h & 0x7c00) !== 0x7c00);
    const ref = place('f16', 1, halves.length, 'column', 0);
    new Uint16Array(memory.buffer, 0, halves.length).set(halves);
    const [x, out] = [2 * halves.length + 64, 2 * halves.length + 128];
    heap[x / 4] = 1;
    kernels.nn_f16(x, ref.offset, out, 1, 1, halves.length, halves.length, 0);
    const got = heap.subarray(out / 4, out / 4 + halves.length);
    halves.forEach((h, i) => expect(got[i], `half 0x${h.toString(16)}`).toBe(halfValue(h) + 0)); // 0 + 1·w turns -0 into 0
  });

  it('Q8_0 in the decoder holds the format decoder’s values, blocked down columns or along rows, from floats or GGUF bytes', () => {
    const [k, n] = [64, 24];
    const w = weights(k * n);
    // Column blocks: GGUF's transposed [n, k] blocks.
    const transposed = new Float32Array(k * n);
    for (let r = 0; r < k; r++) for (let c = 0; c < n; c++) transposed[c * k + r] = w[r * n + c];
    const blocks = quantizeQ8_0(transposed);
    const want = dequantizeQ8_0(blocks, k * n);
    for (const via of ['floats', 'bytes'] as const) {
      const ref = place('q8_0', k, n, 'column', 1024);
      if (via === 'floats') writeWeight(memory.buffer, ref, w, 'w');
      else writeEncoded(memory.buffer, ref, { dtype: 'q8_0', blocks }, 'w');
      const got = new Float32Array(k * n);
      readRows(memory.buffer, ref, 0, k, got);
      for (let r = 0; r < k; r++) for (let c = 0; c < n; c++) expect(got[r * n + c], `${via} [${r}, ${c}]`).toBe(want[c * k + r]);
    }
    const ref = place('q8_0', n, k, 'row', 1024);
    writeWeight(memory.buffer, ref, w, 'w');
    const got = new Float32Array(k * n);
    readRows(memory.buffer, ref, 0, n, got);
    expect(Array.from(got)).toEqual(Array.from(dequantizeQ8_0(quantizeQ8_0(w), k * n)));
  });

  it('f16 from GGUF bytes (transposed) or from floats is the same matrix', () => {
    const [k, n] = [12, 8];
    const w = weights(k * n);
    const bits = new Uint16Array(k * n);
    const f16 = encodeF16(w);
    for (let r = 0; r < k; r++) for (let c = 0; c < n; c++) bits[c * k + r] = f16[r * n + c];
    const [a, b] = [place('f16', k, n, 'column', 0), place('f16', k, n, 'column', 1024)];
    writeWeight(memory.buffer, a, w, 'w');
    writeEncoded(memory.buffer, b, { dtype: 'f16', bits }, 'w');
    expect(Array.from(new Uint16Array(memory.buffer, 1024, k * n))).toEqual(Array.from(new Uint16Array(memory.buffer, 0, k * n)));
    const got = new Float32Array(k * n);
    readRows(memory.buffer, a, 0, k, got);
    got.forEach((v, i) => expect(v).toBe(halfValue(f16[i])));
  });

  it('weights beyond a format’s range are refused, naming the tensor', () => {
    const big = new Float32Array(32).fill(1e6);
    expect(() => writeWeight(memory.buffer, place('f16', 1, 32, 'row', 0), big, 'h.0.mlp.c_fc.weight')).toThrow(/h\.0\.mlp\.c_fc\.weight has values beyond f16/);
    big[3] = NaN;
    expect(() => writeWeight(memory.buffer, place('q8_0', 1, 32, 'row', 0), big, 'wte.weight')).toThrow(/wte\.weight has values beyond Q8_0/);
  });
});

// The encoded weight at W, its decoded copy at F, activations at X (quantised: QX), outputs at O and P.
const [W, F, X, O, P, QX] = [0, 1 << 20, 2 << 20, 3 << 20, 4 << 20, 5 << 20];

describe.each(['f16'] as const)('%s kernels', (dtype) => {

  it('nn: the bits of nn over the decoded weights, for 1–9 rows, a block of columns, leftover rows of k (f16)', () => {
    const shapes: [number, number, number, number][] = [[1, 7, 4, 4], [3, 32, 12, 16], [9, 45, 36, 40], [2, 96, 64, 64]];
    for (const [m, k, n, ld] of shapes) {
      const ref = place(dtype, k, ld, 'column', W);
      writeWeight(memory.buffer, ref, weights(k * ld), 'w');
      const decoded = new Float32Array(k * ld);
      readRows(memory.buffer, ref, 0, k, decoded);
      heap.set(decoded, F / 4);
      heap.set(normals(rng, m * k), X / 4);
      // Columns [c0, c0 + n) of the matrix, as KernelPool hands a thread its block.
      const c0 = ld - n;
      const [encodedAt, scalesAt] = [W + c0 * 2, ref.scales + 4 * c0];
      heap.fill(NaN, O / 4, O / 4 + m * ld);
      kernels[`nn_${dtype}`](X, encodedAt, O + 4 * c0, m, k, n, ld, scalesAt);
      kernels.nn(X, F + 4 * c0, P + 4 * c0, m, k, n, ld);
      for (let i = 0; i < m; i++) {
        const row = (at: number) => Array.from(heap.subarray(at / 4 + i * ld + c0, at / 4 + i * ld + ld));
        expect(row(O), `${m}×${k}×${n} row ${i}`).toEqual(row(P));
        if (c0 > 0) expect(heap[O / 4 + i * ld + c0 - 1], 'columns outside the block untouched').toBeNaN();
      }
    }
  });

  it('nt (the LM head): the bits of nt over the decoded weights, for row counts around its 8-row blocks', () => {
    for (const [m, k, n] of [[1, 32, 1], [8, 64, 2], [13, 96, 3], [21, 32, 1]]) {
      const ref = place(dtype, m, k, 'row', W);
      writeWeight(memory.buffer, ref, weights(m * k), 'wte');
      const decoded = new Float32Array(m * k);
      readRows(memory.buffer, ref, 0, m, decoded);
      heap.set(decoded, F / 4);
      heap.set(normals(rng, n * k), X / 4);
      // Rows [r0, m) alone, as KernelPool hands a thread its block of the vocabulary.
      const r0 = Math.floor(m / 3);
      const bytesPerRow = 2 * k;
      kernels[`nt_${dtype}`](W + r0 * bytesPerRow, X, O, m - r0, k, n, 0, ref.scales + (r0 * k) / 8);
      kernels.nt(F + 4 * r0 * k, X, P, m - r0, k, n);
      expect(Array.from(heap.subarray(O / 4, O / 4 + (m - r0) * n)), `${m}×${k}·${n}`).toEqual(Array.from(heap.subarray(P / 4, P / 4 + (m - r0) * n)));
    }
  });
});

/**
 * Q8_0's integer kernels against float64 over the decoded weights and the unquantised activations.
 * Each block of 32 activations is rounded to int16 with step s = max|x|/32767, so |x − x̂| ≤ s/2
 * and a sum's rounding error is at most Σ_blocks (s/2)·Σ|w|; the integer sums are exact (|Σ| <
 * 32·128·32767 < 2³¹) and the float32 steps after them (the sum's conversion, d·s, its product,
 * one add a block, the four lanes' sum) add at most (blocks + 5)·2⁻²⁴ of Σ|w·x̂| (first order).
 */
describe('q8_0 kernels', () => {
  /** max over outputs of |got − exact| / bound; w [k, n] row-major decoded, x [m, k]. */
  function worst(got: (i: number, c: number) => number, w: Float32Array, x: Float32Array, m: number, k: number, n: number): number {
    let ratio = 0;
    for (let i = 0; i < m; i++) {
      const s = Array.from({ length: k / 32 }, (_, b) => Math.fround(Math.max(...Array.from(x.subarray(i * k + 32 * b, i * k + 32 * b + 32), Math.abs)) / 32767));
      for (let c = 0; c < n; c++) {
        let [exact, rounding, magnitude] = [0, 0, 0];
        for (let j = 0; j < k; j++) {
          const wv = w[j * n + c];
          exact += x[i * k + j] * wv;
          rounding += (s[j >> 5] / 2) * Math.abs(wv);
          magnitude += Math.abs(x[i * k + j] * wv);
        }
        const bound = rounding + (k / 32 + 5) * 2 ** -24 * (magnitude + rounding) + 1e-30;
        ratio = Math.max(ratio, Math.abs(got(i, c) - exact) / bound);
      }
    }
    return ratio;
  }

  it('nn: within the int16 rounding bound of the exact product, for 1–9 rows and a block of columns', () => {
    let ratio = 0;
    for (const [m, k, n, ld] of [[1, 32, 8, 8], [3, 64, 16, 24], [9, 96, 40, 48], [2, 768, 64, 72]]) {
      const ref = place('q8_0', k, ld, 'column', W);
      writeWeight(memory.buffer, ref, weights(k * ld), 'w');
      const decoded = new Float32Array(k * ld);
      readRows(memory.buffer, ref, 0, k, decoded);
      const x = Float32Array.from(normals(rng, m * k), (v, j) => (j % 50 === 0 ? v * 30 : v)); // some outliers widen a block's step
      heap.set(x, X / 4);
      quantizeActivations(memory.buffer, X, m, k, QX);
      const c0 = ld - n; // columns [c0, ld), as KernelPool hands a thread its block
      heap.fill(NaN, O / 4, O / 4 + m * ld);
      kernels.nn_q8_0(QX, W + 2 * c0, O + 4 * c0, m, k, n, ld, ref.scales + 4 * c0);
      const block = new Float32Array(k * n);
      for (let j = 0; j < k; j++) block.set(decoded.subarray(j * ld + c0, j * ld + ld), j * n);
      ratio = Math.max(ratio, worst((i, c) => heap[O / 4 + i * ld + c0 + c], block, x, m, k, n));
      if (c0 > 0) for (let i = 0; i < m; i++) expect(heap[O / 4 + i * ld + c0 - 1], 'columns outside the block untouched').toBeNaN();
    }
    expect(ratio).toBeLessThanOrEqual(1);
    expect(ratio, 'the bound is near what the rounding does').toBeGreaterThan(0.05);
  });

  it('nt (the LM head): within the int16 rounding bound, for row counts around its 8-row blocks', () => {
    let ratio = 0;
    for (const [m, k, n] of [[1, 32, 1], [8, 64, 2], [13, 96, 3], [21, 768, 1]]) {
      const ref = place('q8_0', m, k, 'row', W);
      writeWeight(memory.buffer, ref, weights(m * k), 'wte');
      const decoded = new Float32Array(m * k);
      readRows(memory.buffer, ref, 0, m, decoded);
      const x = Float32Array.from(normals(rng, n * k), (v, j) => (j % 50 === 0 ? v * 30 : v));
      heap.set(x, X / 4);
      quantizeActivations(memory.buffer, X, n, k, QX);
      const r0 = Math.floor(m / 3); // rows [r0, m), as KernelPool hands a thread its block
      kernels.nt_q8_0(W + r0 * k, QX, O, m - r0, k, n, 0, ref.scales + (r0 * k) / 8);
      // out[r, j] = w[r0 + r]·x[j]: as nn of x [n, k] by wᵀ [k, m − r0].
      const wt = new Float32Array(k * (m - r0));
      for (let r = r0; r < m; r++) for (let j = 0; j < k; j++) wt[j * (m - r0) + r - r0] = decoded[r * k + j];
      ratio = Math.max(ratio, worst((j, r) => heap[O / 4 + r * n + j], wt, x, n, k, m - r0));
    }
    expect(ratio).toBeLessThanOrEqual(1);
    expect(ratio, 'the bound is near what the rounding does').toBeGreaterThan(0.05);
  });
});
