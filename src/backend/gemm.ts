/**
 * The matrix product the full-sequence passes (src/model/train-*.ts) are written against, on
 * float offsets into one wasm memory, and a plain JavaScript reference implementation of it.
 *
 *   C[m×n] (+)= op(A)[m×k] · op(B)[k×n]
 *
 * Row-major with leading dimensions: element (i, p) of op(A) is heap[a + i·lda + p], or with
 * transA heap[a + p·lda + i]; likewise B with ldb and transB; C's (i, j) is heap[c + i·ldc + j].
 * `accumulate` adds the product to C; without it C is overwritten (what it held does not matter,
 * NaN included). No alpha/beta: every scale the passes need is folded into an elementwise step.
 *
 * What a fast kernel must provide (src/backend/wasm-gemm.ts, plugged in by the caller):
 *   - every combination of transA/transB, any strides ≥ the row width, any m, n, k ≥ 0 (widths
 *     not multiples of 4 included: the attention products are k = head size, n = key count);
 *     offsets up to 2³⁰ floats (the whole 4 GiB memory; a byte offset above 2³¹ arrives as a
 *     negative i32, which wasm addresses as unsigned);
 *   - synchronous: when gemm returns, C is written (helper threads, if any, are done);
 *   - deterministic for fixed arguments and thread count (a fixed summation order per element);
 *   - A, B and C never overlap in what is written (the passes guarantee that; the kernel may
 *     pack A and B before writing C);
 *   - float32 products with sums in at least float32; the passes' tolerances against PyTorch
 *     (test/model/train-pass.test.ts) are what it is held to.
 * The products it sees, for GPT-2 124M at 1024 positions: the four weight products per block
 * (nn), their transposes in the backward (nt for the input gradient, tn for the weight gradient,
 * k = the row count), attention blocks of 64 query rows against up to 1024 keys (k = 64), and
 * the LM head over chunks of rows: logits = h·wteᵀ (nt, n = 50257), dh = dlogits·wte (nn, k =
 * 50257), dwte += dlogitsᵀ·h (tn, m = 50257).
 */
import type { WasmMemory } from './wasm-asm.js';

export interface GemmArgs {
  m: number;
  n: number;
  k: number;
  a: number;
  lda: number;
  transA?: boolean;
  b: number;
  ldb: number;
  transB?: boolean;
  c: number;
  ldc: number;
  accumulate?: boolean;
}

export interface Gemm {
  gemm(args: GemmArgs): void;
  /** Stops helper threads, if the kernel has any. */
  close(): void;
}

/** Makes a kernel over a memory (the memory exists first: it is sized for the whole pass). */
export type GemmFactory = (memory: WasmMemory) => Gemm;

/**
 * The reference: float64 sums, one output element at a time, straight from the definition. Slow
 * (~0.3 GFLOPS): for tests and tiny models, and the oracle a fast kernel is tested against.
 */
export const referenceGemm: GemmFactory = (memory) => {
  let heap = new Float32Array(memory.buffer);
  return {
    gemm({ m, n, k, a, lda, transA = false, b, ldb, transB = false, c, ldc, accumulate = false }: GemmArgs): void {
      if (heap.buffer !== memory.buffer) heap = new Float32Array(memory.buffer); // grown since
      // Strides of op(A) and op(B) along their two axes.
      const [ai, ap] = transA ? [1, lda] : [lda, 1];
      const [bp, bj] = transB ? [1, ldb] : [ldb, 1];
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let sum = 0;
          for (let p = 0, x = a + i * ai, y = b + j * bj; p < k; p++, x += ap, y += bp) sum += heap[x] * heap[y];
          const at = c + i * ldc + j;
          heap[at] = accumulate ? heap[at] + sum : sum;
        }
      }
    },
    close() {},
  };
};
