/**
 * The steps of the full-sequence pass (train-forward.ts, train-backward.ts) that are not row
 * kernels (src/backend/wasm-rows.ts): the embeddings and their gradient, and the activations —
 * gelu_new and fast_gelu by the SIMD gate kernel, exact gelu (erf, which no preset uses) here in
 * float64. They compute what src/model/gpt2.ts computes.
 */
import type { RowKernels } from '../backend/wasm-rows.js';
import type { Activation } from './config.js';

/** out[r] = wte[ids[r]] + wpe[r mod T] (positions count from 0 in every sequence). */
export function embed(heap: Float32Array, out: number, wte: number, wpe: number, ids: Int32Array, T: number, C: number): void {
  for (let r = 0; r < ids.length; r++) {
    const e = wte + ids[r] * C;
    const p = wpe + (r % T) * C;
    const o = out + r * C;
    for (let j = 0; j < C; j++) heap[o + j] = heap[e + j] + heap[p + j];
  }
}

/** dwte[ids[r]] += dx[r], dwpe[r mod T] += dx[r]. */
export function embedBackward(heap: Float32Array, dx: number, dwte: number, dwpe: number, ids: Int32Array, T: number, C: number): void {
  for (let r = 0; r < ids.length; r++) {
    const e = dwte + ids[r] * C;
    const p = dwpe + (r % T) * C;
    const d = dx + r * C;
    for (let j = 0; j < C; j++) {
      heap[e + j] += heap[d + j];
      heap[p + j] += heap[d + j];
    }
  }
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** x·σ(a·x + b·x³): gelu_new's ½x(1 + tanh(√(2/π)(x + 0.044715x³))) is x·σ(2√(2/π)(x + 0.044715x³)). */
const GATES: Partial<Record<Activation, [number, number]>> = {
  gelu_new: [2 * SQRT_2_OVER_PI, 2 * SQRT_2_OVER_PI * 0.044715],
  fast_gelu: [1.702, 0],
};

/** dst[i] = act(src[i]) for `count` floats (gpt2.ts's three activations). */
export function activate(rows: RowKernels, heap: Float32Array, src: number, dst: number, count: number, fn: Activation): void {
  const gate = GATES[fn];
  if (gate) return rows.gate(src, dst, count, ...gate);
  for (let i = 0; i < count; i++) heap[dst + i] = 0.5 * heap[src + i] * erfc(-heap[src + i] * Math.SQRT1_2);
}

/** grad[i] *= act′(pre[i]): the activation's backward from its saved input. */
export function activateBackward(rows: RowKernels, heap: Float32Array, pre: number, grad: number, count: number, fn: Activation): void {
  const gate = GATES[fn];
  if (gate) return rows.gateBackward(pre, grad, count, ...gate);
  for (let i = 0; i < count; i++) {
    const x = heap[pre + i];
    heap[grad + i] *= 0.5 * erfc(-x * Math.SQRT1_2) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
  }
}

/**
 * erfc(x) with a relative error below 1.2e-7 everywhere (Numerical Recipes' erfcc, a Chebyshev
 * fit): ½x·erfc(−x/√2) keeps GELU's small negative tail accurate, which 1 + erf(…) would cancel.
 */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  const r = t * Math.exp(-z * z + poly);
  return x >= 0 ? r : 2 - r;
}
