/**
 * The tied LM head fused with the masked cross-entropy, over chunks of rows so that the [rows,
 * vocab] logits never exist whole (206 MB for 1024 rows of GPT-2's vocabulary; a chunk is ≤ 32 MiB,
 * train-memory.ts). Per chunk: logits = h·wteᵀ; each row's log-sum-exp and −log p(label) (row
 * kernels, one exp a logit); in training the logits become their gradient in place,
 * coef·(softmax − one-hot), and two products
 * finish the chunk: dh = dlogits·wte and dwte += dlogitsᵀ·h (not when wte is frozen, as under
 * LoRA: a third of the head's products). wte is read where it is, never transposed.
 */
import type { Gemm } from '../backend/gemm.js';
import type { RowKernels } from '../backend/wasm-rows.js';

export interface Head {
  heap: Float32Array;
  gemm: Gemm;
  rows: RowKernels;
  C: number;
  V: number;
  /** Rows per chunk, and the chunk's [rows, V] buffer. */
  chunkRows: number;
  logits: number;
  /** ln_f's output [rows, C] and the tied embedding [V, C]. */
  hidden: number;
  wte: number;
}

export interface HeadGradient {
  /** Gradient coefficient of each row: its loss weight / the micro-batch's weight total / micro-batches. */
  coef: Float64Array;
  /** Where dh [rows, C] goes (overwritten) and dwte [V, C] (added to; none when wte is frozen). */
  dhidden: number;
  dwte?: number;
}

/**
 * Σ over rows with weight 1 of −log softmax(h·wteᵀ)[label] (float64), and with `grad` the
 * gradients of Σ coef·CE. Chunks without a weighted row are skipped (their dh is zero).
 */
export function headLoss(h: Head, labels: Int32Array, weights: ArrayLike<number>, grad?: HeadGradient): number {
  const { heap, gemm, rows: kernels, C, V, logits } = h;
  const rows = labels.length;
  let sum = 0;
  for (let r0 = 0; r0 < rows; r0 += h.chunkRows) {
    const n = Math.min(h.chunkRows, rows - r0);
    let any = false;
    for (let r = r0; r < r0 + n; r++) any ||= weights[r] !== 0 || (grad !== undefined && grad.coef[r] !== 0);
    if (!any) {
      if (grad) heap.fill(0, grad.dhidden + r0 * C, grad.dhidden + (r0 + n) * C);
      continue;
    }
    const hidden = h.hidden + r0 * C;
    gemm.gemm({ m: n, n: V, k: C, a: hidden, lda: C, b: h.wte, ldb: C, transB: true, c: logits, ldc: V });
    for (let i = 0; i < n; i++) {
      const row = logits + i * V;
      const label = labels[r0 + i];
      const picked = weights[r0 + i] !== 0 ? heap[row + label] : 0; // read before the row is overwritten
      const c = grad?.coef[r0 + i] ?? 0;
      const max = kernels.rowMax(row, V);
      const total = kernels.expSum(row, V, 1, -max, c !== 0); // the row becomes exp(logit − max) if it has a gradient
      if (weights[r0 + i] !== 0) sum += max + Math.log(total) - picked;
      if (!grad) continue;
      if (c === 0) heap.fill(0, row, row + V);
      else {
        kernels.scale(row, V, c / total); // coef·softmax
        heap[row + label] -= c;
      }
    }
    if (!grad) continue;
    gemm.gemm({ m: n, n: C, k: V, a: logits, lda: V, b: h.wte, ldb: C, c: grad.dhidden + r0 * C, ldc: C });
    if (grad.dwte !== undefined) gemm.gemm({ m: V, n: C, k: n, a: logits, lda: V, transA: true, b: hidden, ldb: C, c: grad.dwte, ldc: C, accumulate: true });
  }
  return sum;
}
