/**
 * The small-product kernels (src/backend/wasm-gemv.ts): hand-assembled wasm against a float64
 * loop, then through tf.matMul on wasm for the shapes decoding sends them, and the property the
 * generator relies on: a row's result does not depend on how many rows share the call.
 */
import type { Tensor, Tensor2D } from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/index.js';
import { wasmApi } from '../../src/backend/wasm-asm.js';
import { smallMatMul } from '../../src/backend/wasm-gemv.js';
import { gemm } from '../../src/backend/wasm-gemm.js';
import { expectClose, makeRng, normals, onBackend } from './compare.js';

const rng = makeRng(11);

/** Float64 reference of a[m,k] · (nt ? b[n,k]ᵀ : b[k,n]). */
function reference(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number, nt: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += a[i * k + t] * (nt ? b[j * k + t] : b[t * n + j]);
      out.push(s);
    }
  return out;
}

describe('small-product kernels on a bare wasm memory', () => {
  const memory = new wasmApi.Memory({ initial: 64 });
  const kernels = smallMatMul(memory);
  const heap = new Float32Array(memory.buffer);

  // Operands at odd (4-byte, not 16-byte) offsets, output between guard values that must survive.
  function run(kind: 'nn' | 'nt', m: number, k: number, n: number): void {
    const a = normals(rng, m * k);
    const b = normals(rng, k * n);
    const [aAt, bAt] = [1, 2 + m * k];
    const outAt = bAt + k * n + 1;
    heap.set(a, aAt);
    heap.set(b, bAt);
    heap.fill(NaN, outAt, outAt + m * n); // nn must overwrite, not accumulate into, the output
    heap[outAt - 1] = 7;
    heap[outAt + m * n] = 9;
    kernels[kind](aAt * 4, bAt * 4, outAt * 4, m, k, n, n);
    expectClose(Array.from(heap.subarray(outAt, outAt + m * n)), reference(a, b, m, k, n, kind === 'nt'), 1e-5 * Math.sqrt(k));
    expect([heap[outAt - 1], heap[outAt + m * n]]).toEqual([7, 9]);
  }

  it('nn: a[m,k]·b[k,n] for k with and without a remainder of 8-row blocks, n a multiple of 4', () => {
    for (const [m, k, n] of [[1, 1, 4], [1, 7, 8], [3, 8, 4], [5, 13, 12], [2, 64, 64], [1, 96, 36], [16, 19, 8]]) run('nn', m, k, n);
  });

  it('nt: a[m,k]·b[n,k]ᵀ for m with and without a remainder of 8-row blocks, k a multiple of 4', () => {
    for (const [m, k, n] of [[1, 4, 1], [1, 8, 5], [4, 12, 3], [8, 12, 3], [9, 64, 2], [13, 20, 1], [16, 8, 2], [2, 36, 17]]) run('nt', m, k, n);
  });

  // WasmDecoder sends a product with few rows to nn and one with many to the GEMM: a sequence's
  // logits stay the same bits only if both sum each element the same way — one float32 sum in k
  // order from 0, separate multiply and add — which Math.fround recomputes exactly here.
  it('nn gives the bits of the GEMM and of a float32 sum in k order, for random shapes and odd k', () => {
    for (let trial = 0; trial < 30; trial++) {
      const [m, k] = [1 + Math.floor(rng() * 12), 1 + 2 * Math.floor(rng() * 150)]; // k odd: 8-row blocks and leftovers
      const n = 4 * (1 + Math.floor(rng() * 24));
      const ld = n + 4 * Math.floor(rng() * 3); // a block of columns of a wider b and out
      const a = Float32Array.from(normals(rng, m * k));
      const b = Float32Array.from(normals(rng, k * ld));
      const [aAt, bAt] = [3, 4 + m * k];
      const [nnAt, gemmAt] = [bAt + k * ld, bAt + k * ld + m * ld];
      const scratch = Math.ceil((gemmAt + m * ld) / 4) * 4;
      heap.set(a, aAt);
      heap.set(b, bAt);
      kernels.nn(aAt * 4, bAt * 4, nnAt * 4, m, k, n, ld);
      gemm(memory, { m, n, k, a: aAt * 4, lda: k, b: bAt * 4, ldb: ld, c: gemmAt * 4, ldc: ld }, scratch * 4);
      const [nn, viaGemm, want]: number[][] = [[], [], []];
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let sum = 0;
          for (let p = 0; p < k; p++) sum = Math.fround(sum + Math.fround(a[i * k + p] * b[p * ld + j]));
          want.push(sum);
          nn.push(heap[nnAt + i * ld + j]);
          viaGemm.push(heap[gemmAt + i * ld + j]);
        }
      }
      expect(nn, `nn ${m}×${k}×${n} (ld ${ld})`).toEqual(want);
      expect(viaGemm, `gemm ${m}×${k}×${n} (ld ${ld})`).toEqual(want);
    }
  });

  it('a row gives the same bits alone as among other rows', () => {
    const [m, k, n] = [6, 40, 12];
    for (const kind of ['nn', 'nt'] as const) {
      const a = normals(rng, m * k);
      const b = normals(rng, k * n);
      heap.set(a, 0);
      heap.set(b, m * k);
      const outAt = m * k + k * n;
      kernels[kind](0, m * k * 4, outAt * 4, m, k, n, n);
      const together = Array.from(heap.subarray(outAt, outAt + m * n));
      for (let i = 0; i < m; i++) {
        kernels[kind](i * k * 4, m * k * 4, outAt * 4, 1, k, n, n);
        expect(Array.from(heap.subarray(outAt, outAt + n)), `${kind} row ${i}`).toEqual(together.slice(i * n, (i + 1) * n));
      }
    }
  });
});

describe('small products through tf.matMul on wasm', () => {
  let tf: Tf;
  beforeAll(async () => {
    tf = (await selectBackend('cpu')).tf;
    await selectBackend('wasm');
  });

  async function compare(aShape: number[], bShape: number[], transposeB: boolean): Promise<void> {
    const a = normals(rng, aShape.reduce((x, y) => x * y, 1));
    const b = normals(rng, bShape.reduce((x, y) => x * y, 1));
    const run = () => tf.matMul(tf.tensor(a, aShape) as Tensor as Tensor2D, tf.tensor(b, bShape) as Tensor as Tensor2D, false, transposeB);
    const want = await onBackend(tf, 'cpu', run);
    const got = await onBackend(tf, 'wasm', run);
    expect(got.shape).toEqual(want.shape);
    expectClose(got.values, want.values, 1e-4);
  }

  it('decode shapes: one row through a linear layer, the LM head as wte·hᵀ, attention per head', async () => {
    await compare([1, 96], [96, 288], false); // x·W
    await compare([2, 1, 96], [96, 384], false); // [B, 1, C] folded into rows
    await compare([1000, 96], [2, 96], true); // wte·hᵀ for two sequences
    await compare([2, 3, 1, 32], [2, 3, 9, 32], true); // q·kᵀ over a 9-token cache
    await compare([2, 3, 1, 9], [2, 3, 9, 32], false); // p·v
    await compare([1, 1, 96], [3, 96, 8], false); // broadcast a against batched b
  });

  it('shapes just outside the kernels still take the general path correctly', async () => {
    await compare([17, 32], [32, 8], false); // more rows than the small path takes
    await compare([2, 30], [30, 6], false); // n not a multiple of 4
    await compare([3, 30], [5, 30], true); // k not a multiple of 4
  });
});
