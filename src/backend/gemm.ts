/**
 * The matrix product the full-sequence passes (src/model/train-*.ts) are written against, on
 * float offsets into one wasm memory, and a plain JavaScript reference implementation of it.
 *
 *   C[m×n] = (accumulate ? C : 0) + bias[n] + op(A)[m×k] · op(B)[k×n]
 *
 * Row-major with leading dimensions: element (i, p) of op(A) is heap[a + i·lda + p], or with
 * transA heap[a + p·lda + i]; likewise B with ldb and transB; C's (i, j) is heap[c + i·ldc + j].
 * Without `accumulate` C is overwritten (what it held does not matter, NaN included); `bias`, when
 * given, is added to every row. No alpha: every scale the passes need is folded into an
 * elementwise step. (This is the product of src/backend/wasm-gemm.ts in float offsets.)
 *
 * What a fast kernel must provide (src/backend/wasm-gemm.ts, plugged in by the caller):
 *   - every combination of transA/transB, any strides ≥ the row width, any m, n, k ≥ 0 (widths
 *     not multiples of 4 included: the attention products are k = head size, n = key count);
 *     offsets up to 2³⁰ floats (the whole 4 GiB memory; a byte offset above 2³¹ arrives as a
 *     negative i32, which wasm addresses as unsigned);
 *   - synchronous: when gemm returns, C is written (helper threads, if any, are done);
 *   - its scratch (packed panels, per thread) in the pass's memory: the layout reserves
 *     `scratchFloats` and hands the kernel their offset;
 *   - deterministic for fixed arguments and thread count (a fixed summation order per element);
 *   - A, B and C never overlap in what is written (the passes guarantee that; the kernel may
 *     pack A and B before writing C);
 *   - float32 products with sums in at least float32; the passes' tolerances against PyTorch
 *     (test/model/train-pass.test.ts) are what it is held to.
 * The products it sees, for GPT-2 124M at 1 × 1024 (831 GFLOP in 16,293 calls a micro-batch):
 *   - per block, forward: x·W for c_attn, c_proj, c_fc, mlp.c_proj (nn, m = 1024 rows);
 *     backward: dy·Wᵀ (nt) and W's gradient xᵀ·dy (tn, k = the row count, accumulate);
 *   - attention, per (sequence, head) and block of ≤ 64 query rows against its `keys` ≤ 1024:
 *     S = Q·Kᵀ and dP = dO·Vᵀ (nt, k = 64), O = P·V and dQ = dS·K (nn, k = keys), dK += dSᵀ·Q and
 *     dV += Pᵀ·dO (tn, k = 64, accumulate); Q, K, V are column slices of q|k|v (lda = 3·n_embd).
 *     These are 16,128 of the calls, each ~4 MFLOP: too small to split across threads one by one
 *     (a pool would rather take whole heads);
 *   - the LM head over chunks of 166 rows: logits = h·wteᵀ (nt, n = 50257), dh = dlogits·wte
 *     (nn, k = 50257), dwte += dlogitsᵀ·h (tn, m = 50257, k = 166): 29% of the flops here, 80% at
 *     the 4 × 256 benchmark shape.
 */
import type { WasmMemory } from './wasm-asm.js';
import type { GemmArgs as KernelGemmArgs } from './wasm-gemm.js';

/**
 * One product, as the wasm kernel takes it (wasm-gemm.ts's GemmArgs: C (=|+=) op(A)·op(B) + bias,
 * strides in floats) but with a, b, c and bias as float offsets, the pass's unit, not bytes.
 */
export type GemmArgs = KernelGemmArgs;

export interface Gemm {
  gemm(args: GemmArgs): void;
  /** Stops helper threads, if the kernel has any. */
  close(): void;
}

/** A kernel, and the scratch it needs in the pass's memory (sized, with everything else, up front). */
export interface GemmProvider {
  /** Floats of scratch for all its threads. */
  readonly scratchFloats: number;
  /** The kernel over `memory`, its scratch at float offset `scratch` (64-byte aligned). */
  create(memory: WasmMemory, scratch: number): Gemm;
}

/**
 * The reference: float64 sums, one output element at a time, straight from the definition. Slow
 * (~0.3 GFLOPS): for tests and tiny models, and the oracle a fast kernel is tested against.
 */
export const referenceGemm: GemmProvider = { scratchFloats: 0, create: (memory) => reference(memory) };

function reference(memory: WasmMemory): Gemm {
  let heap = new Float32Array(memory.buffer);
  return {
    gemm({ m, n, k, a, lda, transA = false, b, ldb, transB = false, c, ldc, accumulate = false, bias }: GemmArgs): void {
      if (heap.buffer !== memory.buffer) heap = new Float32Array(memory.buffer); // grown since
      // Strides of op(A) and op(B) along their two axes.
      const [ai, ap] = transA ? [1, lda] : [lda, 1];
      const [bp, bj] = transB ? [1, ldb] : [ldb, 1];
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let sum = 0;
          for (let p = 0, x = a + i * ai, y = b + j * bj; p < k; p++, x += ap, y += bp) sum += heap[x] * heap[y];
          const at = c + i * ldc + j;
          heap[at] = (accumulate ? heap[at] : 0) + (bias === undefined ? 0 : heap[bias + j]) + sum;
        }
      }
    },
    close() {},
  };
}
