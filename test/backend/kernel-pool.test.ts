/**
 * KernelPool: products split across threads over a shared memory give the same bits as on one
 * thread, for splits that do not divide evenly and column blocks of wider matrices; and both equal
 * the product computed here in float64.
 */
import { describe, expect, it } from 'vitest';
import { MAX_PAGES, wasmApi } from '../../src/backend/wasm-asm.js';
import { KernelPool } from '../../src/backend/kernel-pool.js';
import { smallMatMul, type SmallMatMul } from '../../src/backend/wasm-gemv.js';
import { gemm as gemmOneThread, type GemmArgs } from '../../src/backend/wasm-gemm.js';
import { makeRng, normals } from './compare.js';

const rng = makeRng(5);

describe('KernelPool', () => {
  const memory = new wasmApi.Memory({ initial: 256, maximum: MAX_PAGES, shared: true });
  const heap = new Float32Array(memory.buffer);
  const single = smallMatMul(memory);

  it('runs on the threads asked for with a shared memory, on one without', () => {
    const pool = new KernelPool(memory, 3);
    expect(pool.threads).toBe(3);
    pool.close();
    const unshared = new KernelPool(new wasmApi.Memory({ initial: 1 }), 4);
    expect(unshared.threads).toBe(1);
  });

  for (const threads of [2, 3]) {
    it(`nn and nt on ${threads} threads equal one thread bit for bit, and the product in float64`, () => {
      const pool = new KernelPool(memory, threads);
      const cases: [string, number, number, number, number][] = [
        ['nn', 2, 768, 300, 300], // columns split 152 + 148 (or 100 + 100 + 100)
        ['nn', 1, 512, 1028, 2048], // a block of 1028 columns of a 2048-wide matrix
        ['nt', 2001, 256, 1, 1], // rows split unevenly
        ['nt', 1025, 128, 3, 3],
      ];
      for (const [kind, m, k, n, ld] of cases) {
        const bRows = kind === 'nn' ? k : n;
        const bCols = kind === 'nn' ? ld : k;
        const [a, b] = [Float32Array.from(normals(rng, m * k)), Float32Array.from(normals(rng, bRows * bCols))]; // float32, as in the heap
        const [aAt, bAt] = [0, m * k];
        const outAt = bAt + bRows * bCols;
        const outLen = kind === 'nn' ? m * ld : m * n;
        heap.set(a, aAt);
        heap.set(b, bAt);
        const run = (kernels: { nn: KernelPool['nn']; nt: KernelPool['nt'] }) => {
          heap.fill(-7, outAt, outAt + outLen); // columns outside the block keep this
          if (kind === 'nn') kernels.nn(aAt * 4, bAt * 4, outAt * 4, m, k, n, ld);
          else kernels.nt(aAt * 4, bAt * 4, outAt * 4, m, k, n);
          return Array.from(heap.subarray(outAt, outAt + outLen));
        };
        const want = run(single);
        const got = run(pool);
        expect(got, `${kind} ${m}×${k}×${n}`).toEqual(want);
        // One thread against the product in float64: within float32 rounding of Σ|a·b|, and the
        // columns of out beyond the block (nn with n < ld) untouched.
        let worst = 0;
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < (kind === 'nn' ? ld : n); j++) {
            const at = i * (kind === 'nn' ? ld : n) + j;
            if (j >= n) {
              expect(want[at], `out[${i}, ${j}] is outside the block`).toBe(-7);
              continue;
            }
            let sum = 0;
            let scale = 0;
            for (let p = 0; p < k; p++) {
              const term = a[i * k + p] * (kind === 'nn' ? b[p * ld + j] : b[j * k + p]);
              sum += term;
              scale += Math.abs(term);
            }
            worst = Math.max(worst, Math.abs(want[at] - sum) / (scale + 1e-30));
          }
        }
        expect(worst, `${kind} ${m}×${k}×${n} against float64`).toBeLessThan(1e-5);
      }
      pool.close();
    });
  }

  it('nnThen hands every block of columns to `then` once, the calling thread\'s own first', () => {
    for (const [threads, m, k, n] of [[2, 1, 768, 300], [3, 1, 512, 1028], [2, 1, 4, 8]]) {
      const pool = new KernelPool(memory, threads);
      const blocks: [number, number][] = [];
      heap.set(normals(rng, m * k + k * n), 0);
      pool.nnThen(0, m * k * 4, (m * k + k * n) * 4, m, k, n, n, (from, to) => blocks.push([from, to]));
      const covered = blocks.filter(([f, t]) => t > f).sort((x, y) => x[0] - y[0]);
      expect(covered[0][0]).toBe(0);
      for (let i = 1; i < covered.length; i++) expect(covered[i][0]).toBe(covered[i - 1][1]);
      expect(covered.at(-1)![1]).toBe(n);
      expect(blocks[0][0]).toBe(0); // own block first
      expect(covered.length).toBe(m * k * n < 1 << 18 ? 1 : threads);
      pool.close();
    }
  });
});

describe('KernelPool: decode kernels and the GEMM on the same threads', () => {
  it('interleaved nn, gemm and nt calls each equal their one-thread results', () => {
    const memory = new wasmApi.Memory({ initial: 256, maximum: MAX_PAGES, shared: true });
    const heap = new Float32Array(memory.buffer);
    const single = smallMatMul(memory);
    const pool = new KernelPool(memory, 2);
    const [m, k, n] = [3, 512, 1024]; // large enough to be split
    heap.set(normals(rng, m * k + k * n + n * k), 0);
    const [a, b, bt, out] = [0, m * k, m * k + k * n, m * k + 2 * k * n];
    const scratch = (out + m * n) * 4 + 64;
    const gemmArgs: GemmArgs = { m, n, k, a: a * 4, lda: k, b: bt * 4, ldb: k, transB: true, c: out * 4, ldc: n };
    const result = () => Array.from(heap.subarray(out, out + m * n));
    const runAll = (kernels: SmallMatMul, gemm: (g: GemmArgs) => void) => [
      (kernels.nn(a * 4, b * 4, out * 4, m, k, n, n), result()),
      (gemm(gemmArgs), result()),
      (kernels.nt(a * 4, bt * 4, out * 4, m, k, n), result()),
      (gemm({ ...gemmArgs, accumulate: true }), result()),
    ];
    try {
      const want = runAll(single, (g) => gemmOneThread(memory, g, scratch));
      expect(runAll(pool, (g) => pool.gemm(g, scratch))).toEqual(want);
    } finally {
      pool.close();
    }
  });
});
