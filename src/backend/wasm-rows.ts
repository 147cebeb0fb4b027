/**
 * The elementwise and row-wise steps of the full-sequence pass (src/model/train-*.ts) and of
 * AdamW as SIMD kernels over one wasm memory: softmax pieces (row max, exp-and-sum, the softmax
 * gradient), LayerNorm and its backward, biases, the sigmoid-gated activations (gelu_new,
 * fast_gelu), sums of squares, scaling. In JavaScript these loops cost more than the products
 * around them: exp alone is ~10 ns an element (Math.exp), and the LM head takes one per logit
 * (51M for 1024 rows of GPT-2's vocabulary); here a lane of f32x4 does the same.
 *
 * Arithmetic is float32 lane by lane except where noted (row sums of squares and of
 * exponentials accumulate in float64). AdamW's update is optimizer.ts's sequence of float32
 * operations, so its results are bit-identical to the tfjs path's. exp is Cephes' expf (~1 ulp,
 * wasm-simd.ts). Row widths in LayerNorm and the bias kernels and lengths of the activations are
 * multiples of 4; the softmax kernels, AdamW and the sums take any length (a scalar tail).
 */
import { assemble, F32, I32, isShared, V128, wasmApi, type FunctionDef, type WasmMemory } from './wasm-asm.js';
import { DROPOUT_KERNELS, type KeepMask } from './wasm-dropout.js';
import { at, F64, kernel, limits, load, loadAt, rowsOf, splatArg, storeAt, upTo } from './wasm-simd.js';

const KERNELS: FunctionDef[] = [
  // p, m, v ← AdamW(p, g, m, v) with consts[8] = β1, β2, 1−β1, 1−β2, √(1−β2^t), eps, −step size, decay factor (1: none)
  kernel('adamw', ['p', 'g', 'm', 'v', 'n', 'consts'], (c, p, local) => {
    const k = Array.from({ length: 8 }, (_, j) => {
      const v = local(V128);
      c.get(p.consts).v128Load32Splat(4 * j).set(v);
      return v;
    });
    const [b1, b2, omb1, omb2, bc2, eps, step, decay] = k;
    const [g, m, v] = [local(V128), local(V128), local(V128)];
    const { i, vec, all } = limits(c, p.n, local);
    // The tail runs the same vector code on a splatted element: the same bits as in a vector.
    const update = (vector: boolean) => {
      const ld = (base: number) => loadAt(c, base, i, vector);
      const st = (base: number, value: () => void) => storeAt(c, base, i, vector, value);
      ld(p.g).set(g);
      ld(p.m).get(b1).f32x4Mul().get(g).get(omb1).f32x4Mul().f32x4Add().set(m);
      ld(p.v).get(b2).f32x4Mul().get(g).get(omb2).f32x4Mul().get(g).f32x4Mul().f32x4Add().set(v);
      st(p.m, () => c.get(m));
      st(p.v, () => c.get(v));
      st(p.p, () => {
        ld(p.p).get(decay).f32x4Mul();
        c.get(m).get(step).f32x4Mul().get(v).f32x4Sqrt().get(bc2).f32x4Div().get(eps).f32x4Add().f32x4Div().f32x4Add();
      });
    };
    upTo(c, i, vec, 16, () => update(true));
    upTo(c, i, all, 4, () => update(false));
  }),
  // *out (f64) = Σ x²
  kernel('sumSquares', ['x', 'n', 'out'], (c, p, local) => {
    const [lo, hi, t, h, tail, x] = [local(V128), local(V128), local(V128), local(V128), local(F64), local(F64)];
    c.v128Zero().set(lo).v128Zero().set(hi);
    const { i, vec, all } = limits(c, p.n, local);
    upTo(c, i, vec, 16, () => {
      load(c, p.x, i).set(t);
      c.get(lo).get(t).f64x2PromoteLow().tee(h).get(h).f64x2Mul().f64x2Add().set(lo);
      c.get(hi).get(t).get(t).highHalf().f64x2PromoteLow().tee(h).get(h).f64x2Mul().f64x2Add().set(hi);
    });
    upTo(c, i, all, 4, () => c.get(tail).get(p.x).get(i).add().f32Load().f64FromF32().tee(x).get(x).f64Mul().f64Add().set(tail));
    c.get(p.out).get(lo).f64x2Lane(0).get(lo).f64x2Lane(1).f64Add().get(hi).f64x2Lane(0).get(hi).f64x2Lane(1).f64Add().f64Add().get(tail).f64Add().f64Store();
  }),
  // x ← x·k
  kernel('scale', ['x', 'n', 'k'], (c, p, local) => {
    const [kv, ks] = splatArg(c, p.k, local);
    const { i, vec, all } = limits(c, p.n, local);
    upTo(c, i, vec, 16, () => at(c, p.x, i).get(p.x).get(i).add().v128Load().get(kv).f32x4Mul().v128Store());
    upTo(c, i, all, 4, () => at(c, p.x, i).get(p.x).get(i).add().f32Load().get(ks).f32Mul().f32Store());
  }),
  // *out = max x (pmax: a NaN may be passed over; expSum's sum is NaN then)
  kernel('rowMax', ['x', 'n', 'out'], (c, p, local) => {
    const [acc, s] = [local(V128), local(F32)];
    c.f4(-Infinity).set(acc).f32Const(-Infinity).set(s);
    const { i, vec, all } = limits(c, p.n, local);
    upTo(c, i, vec, 16, () => c.get(p.x).get(i).add().v128Load().get(acc).f32x4Pmax().set(acc));
    upTo(c, i, all, 4, () => c.get(s).get(p.x).get(i).add().f32Load().f32Max().set(s));
    c.get(p.out).hmax(acc).get(s).f32Max().f32Store();
  }),
  // e = exp(a·x + b), stored over x if `store`; *out (f64) = Σ e
  kernel('expSum', ['x', 'n', 'a', 'b', 'store', 'out'], (c, p, local) => {
    const [a] = splatArg(c, p.a, local);
    const [b] = splatArg(c, p.b, local);
    const [lo, hi, e, t1, t2, es, tail] = [local(V128), local(V128), local(V128), local(V128), local(V128), local(F32), local(F64)];
    c.v128Zero().set(lo).v128Zero().set(hi);
    const { i, vec, all } = limits(c, p.n, local);
    upTo(c, i, vec, 16, () => {
      load(c, p.x, i).get(a).f32x4Mul().get(b).f32x4Add().exp(t1, t2).set(e);
      c.get(p.store).ifThen(() => at(c, p.x, i).get(e).v128Store());
      c.get(lo).get(e).f64x2PromoteLow().f64x2Add().set(lo);
      c.get(hi).get(e).get(e).highHalf().f64x2PromoteLow().f64x2Add().set(hi);
    });
    upTo(c, i, all, 4, () => {
      at(c, p.x, i).f32Load().f32x4Splat().get(a).f32x4Mul().get(b).f32x4Add().exp(t1, t2).f32x4Lane(0).set(es);
      c.get(p.store).ifThen(() => at(c, p.x, i).get(es).f32Store());
      c.get(tail).get(es).f64FromF32().f64Add().set(tail);
    });
    c.get(p.out).get(lo).f64x2Lane(0).get(lo).f64x2Lane(1).f64Add().get(hi).f64x2Lane(0).get(hi).f64x2Lane(1).f64Add().f64Add().get(tail).f64Add().f64Store();
  }),
  // dp ← p·(dp − d)·scale (softmax's backward for one row, scaled)
  kernel('softmaxGrad', ['p', 'dp', 'n', 'd', 'scale'], (c, p, local) => {
    const [dv, ds] = splatArg(c, p.d, local);
    const [sv, ss] = splatArg(c, p.scale, local);
    const { i, vec, all } = limits(c, p.n, local);
    upTo(c, i, vec, 16, () => at(c, p.dp, i).get(p.p).get(i).add().v128Load().get(p.dp).get(i).add().v128Load().get(dv).f32x4Sub().f32x4Mul().get(sv).f32x4Mul().v128Store());
    upTo(c, i, all, 4, () => at(c, p.dp, i).get(p.p).get(i).add().f32Load().get(p.dp).get(i).add().f32Load().get(ds).f32Sub().f32Mul().get(ss).f32Mul().f32Store());
  }),
  // stats[r] = (mean, 1/√(var + eps)) of each row of x
  kernel('layerNormStats', ['x', 'stats', 'rows', 'width', 'eps'], (c, p, local) => {
    const [, eps] = splatArg(c, p.eps, local);
    const [acc, mean, d, j, row] = [local(V128), local(V128), local(V128), local(I32), local(I32)];
    c.get(p.width).i32(2).shl().set(row);
    /** The row's mean of what term() pushes for each vector. */
    const average = (term: () => void) => {
      c.v128Zero().set(acc).i32(0).set(j);
      upTo(c, j, row, 16, () => {
        c.get(acc);
        term();
        c.f32x4Add().set(acc);
      });
      c.hsum(acc).get(p.width).f32FromU32().f32Div();
    };
    rowsOf(c, p, ['x', 'stats'], ['row', 8], local, () => {
      c.get(p.stats);
      average(() => load(c, p.x, j));
      c.f32x4Splat().tee(mean).f32x4Lane(0).f32Store();
      c.get(p.stats).f32Const(1);
      average(() => load(c, p.x, j).get(mean).f32x4Sub().tee(d).get(d).f32x4Mul());
      c.get(eps).f32Add().f32Sqrt().f32Div().f32Store(4);
    });
  }),
  // out = (x − mean)·(1/σ)·γ + β from stats
  kernel('normalize', ['x', 'stats', 'gamma', 'beta', 'out', 'rows', 'width'], (c, p, local) => {
    const [mean, rstd, j, row] = [local(V128), local(V128), local(I32), local(I32)];
    c.get(p.width).i32(2).shl().set(row);
    rowsOf(c, p, ['x', 'out', 'stats'], ['row', 'row', 8], local, () => {
      c.get(p.stats).v128Load32Splat(0).set(mean).get(p.stats).v128Load32Splat(4).set(rstd).i32(0).set(j);
      upTo(c, j, row, 16, () => {
        at(c, p.out, j);
        load(c, p.x, j).get(mean).f32x4Sub().get(rstd).f32x4Mul();
        load(c, p.gamma, j).f32x4Mul();
        load(c, p.beta, j).f32x4Add().v128Store();
      });
    });
  }),
  // dx (+)= (1/σ)·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·γ; dγ += Σ dy·x̂, dβ += Σ dy (inPlace: dx is dy, overwritten)
  kernel('layerNormBackward', ['dy', 'x', 'stats', 'gamma', 'dx', 'dgamma', 'dbeta', 'rows', 'width', 'inPlace'], (c, p, local) => {
    const [mean, rstd, xh, d, g, gs, gx, gm, gxm, j, row] = [...Array.from({ length: 9 }, () => local(V128)), local(I32), local(I32)];
    c.get(p.width).i32(2).shl().set(row);
    const xhat = () => load(c, p.x, j).get(mean).f32x4Sub().get(rstd).f32x4Mul();
    const rowMean = (v: number) => c.hsum(v).get(p.width).f32FromU32().f32Div().f32x4Splat();
    rowsOf(c, p, ['dy', 'x', 'dx', 'stats'], ['row', 'row', 'row', 8], local, () => {
      c.get(p.stats).v128Load32Splat(0).set(mean).get(p.stats).v128Load32Splat(4).set(rstd);
      c.v128Zero().set(gs).v128Zero().set(gx).i32(0).set(j);
      upTo(c, j, row, 16, () => {
        xhat().set(xh);
        load(c, p.dy, j).tee(d);
        load(c, p.gamma, j).f32x4Mul().tee(g);
        c.get(gs).f32x4Add().set(gs);
        c.get(gx).get(g).get(xh).f32x4Mul().f32x4Add().set(gx);
        at(c, p.dgamma, j);
        load(c, p.dgamma, j).get(d).get(xh).f32x4Mul().f32x4Add().v128Store();
        at(c, p.dbeta, j);
        load(c, p.dbeta, j).get(d).f32x4Add().v128Store();
      });
      rowMean(gs).set(gm);
      rowMean(gx).set(gxm);
      c.i32(0).set(j);
      upTo(c, j, row, 16, () => {
        at(c, p.dx, j);
        c.get(rstd);
        load(c, p.dy, j);
        load(c, p.gamma, j).f32x4Mul().get(gm).f32x4Sub();
        xhat().get(gxm).f32x4Mul().f32x4Sub().f32x4Mul().tee(d);
        c.get(d);
        load(c, p.dx, j).f32x4Add().get(p.inPlace).select().v128Store();
      });
    });
  }),
  // out[r] += bias, or with `residual` out[r] += res[r] + bias
  kernel('addBias', ['out', 'res', 'bias', 'rows', 'width', 'residual'], (c, p, local) => {
    const [j, row] = [local(I32), local(I32)];
    c.get(p.width).i32(2).shl().set(row);
    rowsOf(c, p, ['out', 'res'], ['row', 'row'], local, () => {
      c.i32(0).set(j);
      upTo(c, j, row, 16, () => {
        at(c, p.out, j);
        load(c, p.out, j);
        load(c, p.res, j);
        load(c, p.bias, j).f32x4Add();
        load(c, p.bias, j).get(p.residual).select().f32x4Add().v128Store();
      });
    });
  }),
  // dbias += Σ_rows dy
  kernel('biasBackward', ['dy', 'dbias', 'rows', 'width'], (c, p, local) => {
    const [j, row] = [local(I32), local(I32)];
    c.get(p.width).i32(2).shl().set(row);
    rowsOf(c, p, ['dy'], ['row'], local, () => {
      c.i32(0).set(j);
      upTo(c, j, row, 16, () => at(c, p.dbias, j).get(p.dbias).get(j).add().v128Load().get(p.dy).get(j).add().v128Load().f32x4Add().v128Store());
    });
  }),
  // dst = x·σ(a·x + b·x³) (gelu_new: a = 2√(2/π), b = 0.044715·a; fast_gelu: a = 1.702, b = 0)
  kernel('gate', ['src', 'dst', 'n', 'a', 'b'], (c, p, local) => {
    const [, a] = splatArg(c, p.a, local);
    const [, b] = splatArg(c, p.b, local);
    const [na, nb, x, t1, t2] = [local(V128), local(V128), local(V128), local(V128), local(V128)];
    c.f32Const(0).get(a).f32Sub().f32x4Splat().set(na).f32Const(0).get(b).f32Sub().f32x4Splat().set(nb);
    const { i, vec } = limits(c, p.n, local);
    upTo(c, i, vec, 16, () => {
      at(c, p.dst, i);
      load(c, p.src, i).tee(x);
      c.get(nb).get(x).f32x4Mul().get(x).f32x4Mul().get(na).f32x4Add().get(x).f32x4Mul().exp(t1, t2).f4(1).f32x4Add().f32x4Div().v128Store();
    });
  }),
  // grad ← grad·(s + x·s·(1 − s)·(a + 3b·x²)), s = σ(a·x + b·x³): the gate's backward from its input
  kernel('gateBackward', ['pre', 'grad', 'n', 'a', 'b'], (c, p, local) => {
    const [av, a] = splatArg(c, p.a, local);
    const [, b] = splatArg(c, p.b, local);
    const [na, nb, b3, x, x2, sg, t1, t2] = Array.from({ length: 8 }, () => local(V128));
    c.f32Const(0).get(a).f32Sub().f32x4Splat().set(na).f32Const(0).get(b).f32Sub().f32x4Splat().set(nb);
    c.get(b).f32Const(3).f32Mul().f32x4Splat().set(b3);
    const { i, vec } = limits(c, p.n, local);
    upTo(c, i, vec, 16, () => {
      load(c, p.pre, i).tee(x).get(x).f32x4Mul().set(x2);
      c.f4(1).f4(1).get(nb).get(x2).f32x4Mul().get(na).f32x4Add().get(x).f32x4Mul().exp(t1, t2).f32x4Add().f32x4Div().set(sg);
      at(c, p.grad, i);
      load(c, p.grad, i);
      c.get(sg).get(x).get(sg).f32x4Mul().f4(1).get(sg).f32x4Sub().f32x4Mul();
      c.get(b3).get(x2).f32x4Mul().get(av).f32x4Add().f32x4Mul().f32x4Add().f32x4Mul().v128Store();
    });
  }),
];

/** Float offsets, counts and float arguments in; results through a small area of the memory. */
export class RowKernels {
  private readonly k: Record<string, (...args: number[]) => void>;
  private readonly bits = new Int32Array(1);
  private readonly float = new Float32Array(this.bits.buffer);
  private heap: Float32Array;

  /** `out`: float offset of 16 floats (64-byte aligned) the kernels may write results to. */
  constructor(
    private readonly memory: WasmMemory,
    private readonly out: number,
  ) {
    const module = assemble([...KERNELS, ...DROPOUT_KERNELS], isShared(memory));
    this.k = new wasmApi.Instance(module, { env: { memory } }).exports as typeof this.k;
    this.heap = new Float32Array(memory.buffer);
  }

  /** AdamW's update of n floats; consts as the adamw kernel takes them. */
  adamw(p: number, g: number, m: number, v: number, n: number, consts: number[]): void {
    this.view().set(consts, this.out);
    this.k.adamw(4 * p, 4 * g, 4 * m, 4 * v, n, 4 * this.out);
  }

  /** Σ x² over n floats, in float64. */
  sumSquares(x: number, n: number): number {
    this.k.sumSquares(4 * x, n, 4 * this.out);
    return this.f64();
  }

  scale(x: number, n: number, k: number): void {
    this.k.scale(4 * x, n, this.arg(k));
  }

  rowMax(x: number, n: number): number {
    this.k.rowMax(4 * x, n, 4 * this.out);
    return this.view()[this.out];
  }

  /** Σ exp(a·x + b) in float64, the exponentials stored over x if `store`. */
  expSum(x: number, n: number, a: number, b: number, store: boolean): number {
    this.k.expSum(4 * x, n, this.arg(a), this.arg(b), store ? 1 : 0, 4 * this.out);
    return this.f64();
  }

  softmaxGrad(p: number, dp: number, n: number, d: number, scale: number): void {
    this.k.softmaxGrad(4 * p, 4 * dp, n, this.arg(d), this.arg(scale));
  }

  layerNorm(x: number, stats: number, gamma: number, beta: number, out: number, rows: number, width: number, eps: number): void {
    this.k.layerNormStats(4 * x, 4 * stats, rows, check4(width), this.arg(eps));
    this.normalize(x, stats, gamma, beta, out, rows, width);
  }

  normalize(x: number, stats: number, gamma: number, beta: number, out: number, rows: number, width: number): void {
    this.k.normalize(4 * x, 4 * stats, 4 * gamma, 4 * beta, 4 * out, rows, check4(width));
  }

  /** dx += LayerNorm′(dy), or dx = … when dx is dy. */
  layerNormBackward(dy: number, x: number, stats: number, gamma: number, dx: number, dgamma: number, dbeta: number, rows: number, width: number): void {
    this.k.layerNormBackward(4 * dy, 4 * x, 4 * stats, 4 * gamma, 4 * dx, 4 * dgamma, 4 * dbeta, rows, check4(width), dx === dy ? 1 : 0);
  }

  /** out[r] += bias, or += res[r] + bias. */
  addBias(out: number, bias: number, rows: number, width: number, res?: number): void {
    this.k.addBias(4 * out, 4 * (res ?? out), 4 * bias, rows, check4(width), res === undefined ? 0 : 1);
  }

  biasBackward(dy: number, dbias: number, rows: number, width: number): void {
    this.k.biasBackward(4 * dy, 4 * dbias, rows, check4(width));
  }

  /** dst = x·σ(a·x + b·x³) over n floats (a multiple of 4). */
  gate(src: number, dst: number, n: number, a: number, b: number): void {
    this.k.gate(4 * src, 4 * dst, check4(n), this.arg(a), this.arg(b));
  }

  gateBackward(pre: number, grad: number, n: number, a: number, b: number): void {
    this.k.gateBackward(4 * pre, 4 * grad, check4(n), this.arg(a), this.arg(b));
  }

  /** out = x·factor where `mask` keeps element j of row `row` + r of the rows × width block, else 0 (wasm-dropout.ts). */
  dropout(x: number, out: number, rows: number, width: number, mask: KeepMask, factor: number, row = 0): void {
    this.k.dropout(4 * x, 4 * out, rows, width, row, mask.key, mask.threshold, this.arg(factor));
  }

  /** out[r] = res[r] + (out[r] + bias)·factor where `mask` keeps the element, else res[r]. */
  addBiasDropout(out: number, bias: number, rows: number, width: number, res: number, mask: KeepMask, factor: number): void {
    this.k.addBiasDropout(4 * out, 4 * res, 4 * bias, rows, check4(width), mask.key, mask.threshold, this.arg(factor));
  }

  /**
   * softmaxGrad with dropout after the softmax, for row `row` of the mask: dp (the gradient of the
   * dropped probabilities) ← p·(drop(dp) − d)·scale, then p ← drop(p), drop(x) = x·factor where kept.
   */
  softmaxGradDropout(p: number, dp: number, n: number, d: number, scale: number, mask: KeepMask, row: number, factor: number): void {
    this.k.softmaxGradDropout(4 * p, 4 * dp, n, this.arg(d), this.arg(scale), mask.key, row, mask.threshold, this.arg(factor));
  }

  /** The bits of x as float32, as the kernels take float arguments. */
  private arg(x: number): number {
    this.float[0] = x;
    return this.bits[0];
  }

  private f64(): number {
    return new Float64Array(this.memory.buffer, 4 * this.out, 1)[0];
  }

  private view(): Float32Array {
    if (this.heap.buffer !== this.memory.buffer) this.heap = new Float32Array(this.memory.buffer);
    return this.heap;
  }
}

function check4(n: number): number {
  if (n % 4 !== 0) throw new Error(`row kernel: ${n} is not a multiple of 4`);
  return n;
}
