/**
 * The Gemm contract (src/backend/gemm.ts) that the full-sequence pass relies on, checked for each
 * kernel in KERNELS (the reference, and the wasm GEMM on one and on two threads): every transA/transB, strides
 * wider than the rows, sizes 0, 1 and not multiples of 4, overwrite versus accumulate, with and
 * without a bias row, operands at arbitrary offsets in a shared memory — against a float64 product
 * of the logical matrices built in the test, not read back through the kernel's indexing.
 */
import { describe, expect, it } from 'vitest';
import { referenceGemm, type GemmProvider } from '../../src/backend/gemm.js';
import { pooledGemm } from '../../src/backend/kernel-pool.js';
import { MAX_PAGES, wasmApi } from '../../src/backend/wasm-asm.js';
import { Rng } from '../../src/util/rng.js';

const KERNELS: [string, GemmProvider][] = [
  ['reference', referenceGemm],
  ['wasm, 1 thread', pooledGemm(1)],
  ['wasm, 2 threads', pooledGemm(2)],
];

type Matrix = number[][];
const rng = new Rng(11, 3);
const random = (rows: number, cols: number): Matrix => Array.from({ length: rows }, () => Array.from({ length: cols }, () => Math.fround(rng.nextFloat() * 2 - 1)));
const transpose = (x: Matrix, rows: number, cols: number): Matrix => Array.from({ length: cols }, (_, j) => Array.from({ length: rows }, (_, i) => x[i][j]));

/** A vector at float offset `at`. */
function put(heap: Float32Array, values: number[], at: number): { at: number; values: number[] } {
  heap.set(values, at);
  return { at, values };
}

/** Writes x row-major with leading dimension ld at float offset `at`, the gaps filled with NaN. */
function store(heap: Float32Array, x: Matrix, at: number, ld: number): void {
  x.forEach((row, i) => {
    heap.fill(NaN, at + i * ld, at + (i + 1) * ld);
    heap.set(row, at + i * ld);
  });
}

describe.each(KERNELS)('%s gemm', (_, provider) => {
  const scratch = 1 << 16; // floats: the operands below stay under it
  const memory = new wasmApi.Memory({ initial: Math.ceil(((scratch + provider.scratchFloats) * 4) / 65536), maximum: MAX_PAGES, shared: true });
  const heap = new Float32Array(memory.buffer);
  const kernel = provider.create(memory, scratch);

  const shapes: [number, number, number][] = [[1, 1, 1], [3, 5, 7], [8, 4, 16], [13, 9, 6], [4, 17, 33], [0, 3, 2], [2, 0, 3], [2, 3, 0]];
  for (const [m, n, k] of shapes) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        for (const [accumulate, withBias] of [[false, false], [true, false], [false, true], [true, true]]) {
          it(`m ${m}, n ${n}, k ${k}${transA ? ', transA' : ''}${transB ? ', transB' : ''}${accumulate ? ', accumulate' : ''}${withBias ? ', bias' : ''}`, () => {
            const [A, B, C0] = [random(m, k), random(k, n), random(m, n)];
            // Stored as op() says: transA stores Aᵀ [k, m]; leading dimensions wider than the rows.
            const [storedA, aRows, aCols] = transA ? [transpose(A, m, k), k, m] : [A, m, k];
            const [storedB, bRows, bCols] = transB ? [transpose(B, k, n), n, k] : [B, k, n];
            const [lda, ldb, ldc] = [aCols + 3, bCols + 1, n + 2];
            const [a, b, c] = [5, 7 + aRows * lda, 11 + aRows * lda + bRows * ldb];
            const bias = withBias ? put(heap, random(1, n)[0], c + m * ldc + 16) : undefined;
            store(heap, storedA, a, lda);
            store(heap, storedB, b, ldb);
            store(heap, accumulate ? C0 : C0.map((row) => row.map(() => NaN)), c, ldc); // overwrite ignores what C held
            const after = c + m * ldc;
            heap.fill(42, after, after + 8);
            kernel.gemm({ m, n, k, a, lda, transA, b, ldb, transB, c, ldc, accumulate, bias: bias?.at });
            for (let i = 0; i < m; i++) {
              for (let j = 0; j < n; j++) {
                let want = (accumulate ? C0[i][j] : 0) + (bias ? bias.values[j] : 0);
                for (let p = 0; p < k; p++) want += A[i][p] * B[p][j];
                expect(Math.abs(heap[c + i * ldc + j] - want), `(${i}, ${j})`).toBeLessThanOrEqual(1e-6 * Math.max(1, k));
              }
              for (let j = n; j < ldc; j++) expect(heap[c + i * ldc + j], `gap after row ${i}`).toBeNaN();
            }
            expect(Array.from(heap.subarray(after, after + 8))).toEqual(new Array(8).fill(42)); // nothing written past C
          });
        }
      }
    }
  }
});
