/**
 * The elementwise and row-wise steps of the full-sequence pass (train-forward.ts,
 * train-backward.ts) and their gradients, over [rows, width] row-major buffers at float offsets
 * in one heap. They compute what src/model/gpt2.ts computes (same formulas; sums and the
 * transcendental functions in float64, each stored value rounded to float32 once).
 */
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

/**
 * LayerNorm of each row of x into out, keeping the row's mean and 1/σ in stats [rows, 2]. The
 * output is computed from the stored (float32) statistics, so `normalize` recomputes it exactly.
 */
export function layerNorm(heap: Float32Array, x: number, stats: number, gamma: number, beta: number, out: number, rows: number, C: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const row = heap.subarray(x + r * C, x + (r + 1) * C);
    let mean = 0;
    for (const v of row) mean += v;
    mean /= C;
    let variance = 0;
    for (const v of row) variance += (v - mean) * (v - mean);
    heap[stats + 2 * r] = mean;
    heap[stats + 2 * r + 1] = 1 / Math.sqrt(variance / C + eps);
  }
  normalize(heap, x, stats, gamma, beta, out, rows, C);
}

/** (x − mean)·(1/σ)·γ + β from saved row statistics. */
export function normalize(heap: Float32Array, x: number, stats: number, gamma: number, beta: number, out: number, rows: number, C: number): void {
  for (let r = 0; r < rows; r++) {
    const [s, o] = [x + r * C, out + r * C];
    const mean = heap[stats + 2 * r];
    const rstd = heap[stats + 2 * r + 1];
    for (let j = 0; j < C; j++) heap[o + j] = (heap[s + j] - mean) * rstd * heap[gamma + j] + heap[beta + j];
  }
}

/**
 * LayerNorm's backward: with x̂ = (x − mean)/σ and g = dy·γ,
 *   dx += (1/σ)·(g − mean(g) − x̂·mean(g·x̂)),  dγ += Σ_rows dy·x̂,  dβ += Σ_rows dy.
 * dx may be dy (then it is overwritten, not added to).
 */
export function layerNormBackward(
  heap: Float32Array,
  dy: number,
  x: number,
  stats: number,
  gamma: number,
  dx: number,
  dgamma: number,
  dbeta: number,
  rows: number,
  C: number,
): void {
  const inPlace = dx === dy;
  const dg = new Float64Array(C);
  const db = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    const [s, d, o] = [x + r * C, dy + r * C, dx + r * C];
    const mean = heap[stats + 2 * r];
    const rstd = heap[stats + 2 * r + 1];
    let gSum = 0;
    let gxSum = 0;
    for (let j = 0; j < C; j++) {
      const xhat = (heap[s + j] - mean) * rstd;
      const g = heap[d + j] * heap[gamma + j];
      gSum += g;
      gxSum += g * xhat;
      dg[j] += heap[d + j] * xhat;
      db[j] += heap[d + j];
    }
    const [gMean, gxMean] = [gSum / C, gxSum / C];
    for (let j = 0; j < C; j++) {
      const xhat = (heap[s + j] - mean) * rstd;
      const v = rstd * (heap[d + j] * heap[gamma + j] - gMean - xhat * gxMean);
      heap[o + j] = inPlace ? v : heap[o + j] + v;
    }
  }
  for (let j = 0; j < C; j++) {
    heap[dgamma + j] += dg[j];
    heap[dbeta + j] += db[j];
  }
}

/** out[r] += bias (and += res[r] when given): a Conv1D's bias, and the residual connection. */
export function addBias(heap: Float32Array, out: number, bias: number, rows: number, W: number, res?: number): void {
  for (let r = 0; r < rows; r++) {
    const o = out + r * W;
    if (res === undefined) for (let j = 0; j < W; j++) heap[o + j] += heap[bias + j];
    else for (let j = 0; j < W; j++) heap[o + j] += heap[res + r * W + j] + heap[bias + j];
  }
}

/** dbias += Σ_rows dy. */
export function biasBackward(heap: Float32Array, dy: number, dbias: number, rows: number, W: number): void {
  const sum = new Float64Array(W);
  for (let r = 0; r < rows; r++) for (let j = 0; j < W; j++) sum[j] += heap[dy + r * W + j];
  for (let j = 0; j < W; j++) heap[dbias + j] += sum[j];
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** dst[i] = act(src[i]) for `count` floats (gpt2.ts's three activations). */
export function activate(heap: Float32Array, src: number, dst: number, count: number, fn: Activation): void {
  for (let i = 0; i < count; i++) {
    const x = heap[src + i];
    // ½x(1 + tanh z) as x·σ(2z), as gpt2.ts computes it
    if (fn === 'gelu_new') heap[dst + i] = x / (1 + Math.exp(-2 * SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
    else if (fn === 'fast_gelu') heap[dst + i] = x / (1 + Math.exp(-1.702 * x));
    else heap[dst + i] = 0.5 * x * erfc(-x * Math.SQRT1_2);
  }
}

/** grad[i] *= act′(pre[i]): the activation's backward from its saved input. */
export function activateBackward(heap: Float32Array, pre: number, grad: number, count: number, fn: Activation): void {
  for (let i = 0; i < count; i++) {
    const x = heap[pre + i];
    let d: number;
    if (fn === 'gelu_new') {
      const s = 1 / (1 + Math.exp(-2 * SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
      d = s + x * s * (1 - s) * 2 * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
    } else if (fn === 'fast_gelu') {
      const s = 1 / (1 + Math.exp(-1.702 * x));
      d = s + 1.702 * x * s * (1 - s);
    } else {
      d = 0.5 * erfc(-x * Math.SQRT1_2) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    }
    heap[grad + i] *= d;
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
