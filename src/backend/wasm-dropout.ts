/**
 * Dropout in the row kernels of the full-sequence pass (wasm-rows.ts binds them; train-dropout.ts
 * says where the pass applies it). The masks are counter-based, with no state: element j of row r
 * of a mask with key k is kept iff
 *
 *   lowbias32(rk ^ j·φ) ≥ threshold (unsigned),   rk = lowbias32(k ^ lowbias32(r)),   φ = 0x9e3779b9,
 *
 * so a kernel regenerates any part of a mask from (key, row, column) alone: the attention backward
 * draws the probabilities' mask again while it recomputes them, and a resumed run draws what the
 * uninterrupted one did. It runs on the calling thread, so the thread count cannot change it. A row
 * key is one scalar hash a row; an element costs one hash over i32x4 (three multiplies, three
 * shift-xors), the column counter j·φ advancing by an add. φ spreads the column over all 32 bits
 * before the hash, so two rows whose keys differ by little do not draw shifted copies of one mask.
 *
 * Kept elements are multiplied by a factor (1/(1−p); in the attention forward also the softmax's
 * 1/Σ), dropped ones become +0 (an and with the mask). Any length: the tail runs the vector code on
 * a splatted element with the counter advanced by φ, so it draws exactly what a vector would.
 */
import { I32, V128, type FunctionDef } from './wasm-asm.js';
import { kernel, limits, loadAt, rowsOf, splatArg, storeAt, upTo, type SimdCode } from './wasm-simd.js';

/** What a dropout mask needs: its key and the threshold round(p·2³²) (both as i32 bits). */
export interface KeepMask {
  key: number;
  threshold: number;
}

const PHI = 0x9e3779b9 | 0;

/**
 * For each element of a row of n floats: body(vector, i, keep) with i its byte offset and keep a
 * v128 local of all-ones lanes where the mask of (key, row) keeps it. thr: the threshold splatted.
 */
function maskedRow(c: SimdCode, p: Record<string, number>, local: (type: number) => number, n: number, row: number, thr: number, body: (vector: boolean, i: number, keep: number) => void): void {
  const [t, rk, column, h, keep] = [local(I32), local(V128), local(V128), local(V128), local(V128)];
  c.get(row).mix32(t).get(p.key).i32Xor().mix32(t).i32x4Splat().set(rk);
  c.i4s([0, PHI, 2 * PHI, 3 * PHI]).set(column);
  const { i, vec, all } = limits(c, n, local);
  const step = (vector: boolean) => {
    c.get(rk).get(column).v128Xor().mix32(h, true).get(thr).i32x4GeU().set(keep);
    body(vector, i, keep);
    c.get(column).i4(vector ? 4 * PHI : PHI).i32x4Add().set(column);
  };
  upTo(c, i, vec, 16, () => step(true));
  upTo(c, i, all, 4, () => step(false));
}

/** The vector on the stack times f (a v128 local) where `keep`, else 0. */
const kept = (c: SimdCode, f: number, keep: number) => c.get(f).f32x4Mul().get(keep).v128And();

/** The threshold argument in every lane. */
function splatThreshold(c: SimdCode, p: Record<string, number>, local: (type: number) => number): number {
  const v = local(V128);
  c.get(p.threshold).i32x4Splat().set(v);
  return v;
}

export const DROPOUT_KERNELS: FunctionDef[] = [
  // out = x·factor where kept, else 0, over rows `row`, `row` + 1, … of `width` floats
  kernel('dropout', ['x', 'out', 'rows', 'width', 'row', 'key', 'threshold', 'factor'], (c, p, local) => {
    const [f] = splatArg(c, p.factor, local);
    const thr = splatThreshold(c, p, local);
    rowsOf(c, p, ['x', 'out'], ['row', 'row'], local, () => {
      maskedRow(c, p, local, p.width, p.row, thr, (vector, i, keep) => storeAt(c, p.out, i, vector, () => kept(loadAt(c, p.x, i, vector), f, keep)));
      c.inc(p.row, 1);
    });
  }),
  // out[r] = res[r] + (out[r] + bias)·factor where kept (rows 0, 1, …), else res[r]
  kernel('addBiasDropout', ['out', 'res', 'bias', 'rows', 'width', 'key', 'threshold', 'factor'], (c, p, local) => {
    const [f] = splatArg(c, p.factor, local);
    const thr = splatThreshold(c, p, local);
    const row = local(I32);
    c.i32(0).set(row);
    rowsOf(c, p, ['out', 'res'], ['row', 'row'], local, () => {
      maskedRow(c, p, local, p.width, row, thr, (vector, i, keep) =>
        storeAt(c, p.out, i, vector, () => {
          loadAt(c, p.res, i, vector);
          loadAt(c, p.out, i, vector);
          kept(loadAt(c, p.bias, i, vector).f32x4Add(), f, keep).f32x4Add();
        }),
      );
      c.inc(row, 1);
    });
  }),
  // Softmax's backward for one row of probabilities p with dropout after the softmax, dp the
  // gradient of the dropped probabilities: dp ← p·(drop(dp) − d)·scale, then p ← drop(p)
  kernel('softmaxGradDropout', ['p', 'dp', 'n', 'd', 'scale', 'key', 'row', 'threshold', 'factor'], (c, p, local) => {
    const [dv] = splatArg(c, p.d, local);
    const [sv] = splatArg(c, p.scale, local);
    const [f] = splatArg(c, p.factor, local);
    const thr = splatThreshold(c, p, local);
    const pv = local(V128);
    maskedRow(c, p, local, p.n, p.row, thr, (vector, i, keep) => {
      loadAt(c, p.p, i, vector).set(pv);
      storeAt(c, p.dp, i, vector, () => {
        c.get(pv);
        kept(loadAt(c, p.dp, i, vector), f, keep).get(dv).f32x4Sub().f32x4Mul().get(sv).f32x4Mul();
      });
      storeAt(c, p.p, i, vector, () => kept(c.get(pv), f, keep));
    });
  }),
];
