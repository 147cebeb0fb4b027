/**
 * The decode-time products (wasm-gemv.ts's nn and nt) over weights kept as f16 or as Q8_0 in the
 * wasm memory: a token of f16 weights is half the bytes of f32, of Q8_0 ~0.28×.
 *
 * f16: each weight becomes its exact float32 value in registers and is multiplied and added in
 * the f32 kernels' order, so a product gives the bits the f32 kernel (and the GEMM) gives over
 * the decoded weights.
 *
 * Q8_0: integer dot products, as llama.cpp's (ggml_vec_dot_q8_0_q8_0), but with the activations
 * rounded to int16 per block of 32 (quantizeActivations; llama.cpp rounds them to int8):
 * i32x4.dot_i16x8_s sums pairs of int8·int16 products exactly, a block's 32 in i32 lanes, and
 * only then float(sum)·(d_w·s_x) joins the float32 total. Each output is still one sum in a fixed
 * order (results do not depend on threads), but no longer the f32 path's over the decoded
 * weights: the activations' rounding costs up to s_x/2·Σ|w| a block (s_x = max|x|/32767, about
 * 2⁻¹⁶ of the block's magnitude; test/backend/wasm-qgemv.test.ts holds the kernels to that bound
 * against float64), and prompts of ≥ 10 rows still take the GEMM over decoded panels, so a prompt
 * at once and token by token differ by about that much (logits within 1e-4 relative on the
 * fixtures, greedy continuations unchanged).
 *
 * Measured (29 Nov 2026, a shared 2-core EPYC). One thread, one 768×3072 weight over and over
 * (so partly cached), G weights/s: nn f32 1.9, f16 1.9, Q8_0 11.0; nt f32 4.8, f16 2.9, Q8_0
 * 7.8. The float-widening Q8_0 kernels this replaced (weights out of cache: nt 1.4, nn 2.1
 * against f32's 2.1 and 3.0) were bound by the 4–5 widening instructions per four weights.
 * bench:generate, GPT-2 124M decode on two threads: q8_0 39.9 tokens/s, f32 17.5, f16 18.6,
 * PyTorch fp32 8.1 (q8_0 4.94×; the widening kernels gave 19.2 against f32's 18.6).
 *
 * Layouts (all rows 16-byte aligned where the model puts them):
 * - nn over a Conv1D weight [k, n]: f16 rows of n halves; Q8_0 int8 rows interleaved in pairs,
 *   (k, c), (k+1, c), (k, c+1), … (encoded-weights.ts: pairedIndex) so that one load8x8_s gives
 *   the pairs i32x4.dot_i16x8_s multiplies by a splatted (x_k, x_k+1), plus scales [k/32, n]
 *   f32, one per column and block of 32 rows (Q8_0's blocks run along k, the input, as llama.cpp
 *   blocks a GGUF [out, in] tensor's rows).
 * - nt over wte [vocab, d] (the LM head): f16 rows of d halves; Q8_0 rows of d int8 plus scales
 *   [vocab, d/32].
 * - quantised activations [m, k]: int16 rows, then scales [m, k/32] f32.
 *
 * f16 → f32: the half sign-extended to 32 bits and shifted left 13 puts its exponent and
 * mantissa where float32's low exponent bits and mantissa are and its sign in bit 31; masking
 * bits 28–30 leaves the float32 whose value is the half's times 2^-112 (a subnormal half becomes
 * a subnormal float, scaled the same), and a multiply by 2^112 restores it exactly. Four
 * operations for four halves. Infinities and NaN would come out as finite values ≥ 65536:
 * DecodeModel refuses weights that hold them (a finite GPT-2 never does).
 */
import { Code, type FunctionDef, I32, V128 } from './wasm-asm.js';

const uleb = (n: number): number[] => (n < 0x80 ? [n] : [(n & 0x7f) | 0x80, n >> 7]);

/** wasm SIMD instructions the f32 kernels do not use. */
class QCode extends Code {
  private op(code: number, ...immediates: number[]): this {
    this.bytes.push(0xfd, ...(code < 0x80 ? [code] : [(code & 0x7f) | 0x80, code >> 7]), ...immediates);
    return this;
  }
  /** v128.load8x8_s: 8 int8 → i16x8. */
  load8x8S(offset = 0) { return this.op(0x01, 3, ...uleb(offset)); }
  /** v128.load16x4_s: 4 int16 → i32x4. */
  load16x4S() { return this.op(0x03, 3, 0); }
  f32x4FromI32() { return this.op(0xfa); }
  i32x4Shl() { return this.op(0xab); }
  v128And() { return this.op(0x4e); }
  /** v128.const: four i32 lanes of x. */
  i4(x: number) { return this.op(0x0c, ...new Uint8Array(Int32Array.of(x, x, x, x).buffer)); }
  f4(x: number) { return this.op(0x0c, ...new Uint8Array(Float32Array.of(x, x, x, x).buffer)); }
  shrU() { this.bytes.push(0x76); return this; }
  /** i32x4.dot_i16x8_s: lane i = a[2i]·b[2i] + a[2i+1]·b[2i+1]. */
  dotI16() { return this.op(0xba); }
  i32x4Add() { return this.op(0xae); }

  /** The four halves at the address on the stack as their float32 values. */
  f16x4() {
    return this.load16x4S().i32(13).i32x4Shl().i4(0x8fffe000 | 0).v128And().f4(2 ** 112).f32x4Mul();
  }
}

export type EncodedDtype = 'f16' | 'q8_0';

// Parameters: a, b, out, m, k, n, ld (as nn's), s (scales, byte offset; unused for f16).
const [A, B, OUT, M, K, N, LD, S] = [0, 1, 2, 3, 4, 5, 6, 7];
const ROWS = 8;

/**
 * out[m, n] = a[m, k] · w[k, n] with w f16 (rows `ld` columns apart, out's rows ld floats), as
 * wasm-gemv.ts's nn: eight rows of w streamed at a time, applied to every row of a, each output
 * element ((out + a₀·w₀) + a₁·w₁) + … in k order; 4 columns a step, n a multiple of 4, any k.
 */
function nnF16(): Code {
  const [NB, KK, I, O, J, SB, AP, WB] = [8, 9, 10, 11, 12, 13, 14, 15];
  const R = [17, 18, 19, 20, 21, 22, 23, 24];
  const X = [25, 26, 27, 28, 29, 30, 31, 32]; // v128
  const JW = 37; // i32
  const c = new QCode();
  c.get(N).i32(2).shl().set(NB);
  c.get(LD).i32(2).shl().set(SB);
  c.get(LD).i32(1).shl().set(WB);
  c.i32(0).set(I);
  c.whileNot(() => c.get(I).get(M).geU(), () => {
    c.get(OUT).get(I).get(SB).mul().add().set(O);
    c.i32(0).set(J);
    c.whileNot(() => c.get(J).get(NB).geU(), () => c.get(O).get(J).add().v128Zero().v128Store().inc(J, 16));
    c.inc(I, 1);
  });
  const rowsOf = (width: number) => {
    c.i32(0).set(I);
    c.whileNot(() => c.get(I).get(M).geU(), () => {
      c.get(A).get(I).get(K).mul().get(KK).add().i32(2).shl().add().set(AP);
      for (let t = 0; t < width; t++) c.get(AP).f32Load(4 * t).f32x4Splat().set(X[t]);
      c.get(OUT).get(I).get(SB).mul().add().set(O);
      c.i32(0).set(J);
      c.whileNot(() => c.get(J).get(NB).geU(), () => {
        c.get(J).i32(1).shrU().set(JW);
        c.get(O).get(J).add();
        c.get(O).get(J).add().v128Load();
        for (let t = 0; t < width; t++) c.get(R[t]).get(JW).add().f16x4().get(X[t]).f32x4Mul().f32x4Add();
        c.v128Store();
        c.inc(J, 16);
      });
      c.inc(I, 1);
    });
  };
  c.i32(0).set(KK);
  c.whileNot(() => c.get(KK).i32(ROWS).add().get(K).gtU(), () => {
    c.get(B).get(KK).get(WB).mul().add().set(R[0]);
    for (let t = 1; t < ROWS; t++) c.get(R[t - 1]).get(WB).add().set(R[t]);
    rowsOf(ROWS);
    c.inc(KK, ROWS);
  });
  c.whileNot(() => c.get(KK).get(K).geU(), () => {
    c.get(B).get(KK).get(WB).mul().add().set(R[0]);
    rowsOf(1);
    c.inc(KK, 1);
  });
  return c;
}

/**
 * out[m, n] = w[m, k] · b[n, k]ᵀ with w f16, as wasm-gemv.ts's nt: eight rows of w against one
 * row of b, a sum over k in four lanes then across them; k a multiple of 4.
 */
function ntF16(): Code {
  const [KB, I, J, P, RB, OP] = [8, 9, 10, 11, 12, 13];
  const RA = [16, 17, 18, 19, 20, 21, 22, 23];
  const ACC = [32, 33, 34, 35, 36, 37, 38, 39]; // v128
  const BV0 = 40; // v128
  const c = new QCode();
  c.get(K).i32(2).shl().set(KB);
  c.get(K).i32(1).shl().set(14); // bytes of a row of w
  const rows = (count: number) => {
    c.get(A).get(I).get(14).mul().add().set(RA[0]);
    for (let t = 1; t < count; t++) c.get(RA[t - 1]).get(14).add().set(RA[t]);
    c.i32(0).set(J);
    c.whileNot(() => c.get(J).get(N).geU(), () => {
      c.get(B).get(J).get(KB).mul().add().set(RB);
      for (let t = 0; t < count; t++) c.v128Zero().set(ACC[t]);
      c.i32(0).set(P);
      c.whileNot(() => c.get(P).get(KB).geU(), () => {
        c.get(RB).get(P).add().v128Load().set(BV0);
        for (let t = 0; t < count; t++) {
          c.get(ACC[t]).get(RA[t]).get(P).i32(1).shrU().add().f16x4().get(BV0).f32x4Mul().f32x4Add().set(ACC[t]);
        }
        c.inc(P, 16);
      });
      storeLaneSums(c, { out: OUT, i: I, j: J, n: N, op: OP }, ACC.slice(0, count));
      c.inc(J, 1);
    });
  };
  inRowGroups(c, I, M, ROWS, rows);
  return c;
}

/**
 * The activations of a Q8_0 product as the integer kernels read them: x [m, k] float32 (at byte
 * `from`) → int16 [m, k] at byte `to`, then the scales [m, k/32] float32, one per row and block
 * of 32 along k: s = max|x_block| / 32767 (float32), q = round(x / s), so |x − q·s| ≤ s/2.
 */
export function quantizeActivations(buffer: ArrayBufferLike, from: number, m: number, k: number, to: number): void {
  const x = new Float32Array(buffer, from, m * k);
  const q = new Int16Array(buffer, to, m * k);
  const scales = new Float32Array(buffer, to + 2 * m * k, (m * k) / 32);
  for (let b = 0; b < scales.length; b++) {
    let max = 0;
    for (let i = 32 * b; i < 32 * b + 32; i++) max = Math.max(max, Math.abs(x[i]));
    const s = Math.fround(max / 32767);
    scales[b] = s;
    for (let i = 32 * b; i < 32 * b + 32; i++) q[i] = s === 0 ? 0 : Math.round(x[i] / s);
  }
}

/** Bytes quantizeActivations writes for [m, k]. */
export const quantizedActivationBytes = (m: number, k: number): number => 2 * m * k + (m * k) / 8;

/**
 * out[m, n] = x[m, k] · w[k, n] with w Q8_0 and x quantised (quantizeActivations, at `a`): per
 * block of 32 rows of w, per row of x and 8 columns, the 32 products summed exactly in i32 lanes
 * (i32x4.dot_i16x8_s over pairs of rows k, k+1, which the layout puts side by side: w's rows are
 * interleaved in pairs, rows `ld` columns wide), then out += float(sum)·(d_w·s_x), block after
 * block in k order. n a multiple of 8, k of 32.
 */
function nnQ8(): Code {
  const [BLK, I, J, JW, O, XP, WBLK, SBLK, NB, WA, NBLK] = [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
  const R = Array.from({ length: 16 }, (_, p) => 19 + p); // i32: the block's pairs of rows
  const XV = Array.from({ length: 16 }, (_, p) => 35 + p); // v128: x's pairs (k, k+1), splatted
  const [SXV, ACC0, ACC1] = [51, 52, 53]; // v128
  const c = new QCode();
  c.get(N).i32(2).shl().set(NB);
  c.get(K).i32(5).shrU().set(NBLK);
  c.i32(0).set(I);
  c.whileNot(() => c.get(I).get(M).geU(), () => {
    c.get(OUT).get(I).get(LD).mul().i32(2).shl().add().set(O);
    c.i32(0).set(J);
    c.whileNot(() => c.get(J).get(NB).geU(), () => c.get(O).get(J).add().v128Zero().v128Store().inc(J, 16));
    c.inc(I, 1);
  });
  c.i32(0).set(BLK);
  c.whileNot(() => c.get(BLK).get(NBLK).geU(), () => {
    c.get(B).get(BLK).get(LD).mul().i32(5).shl().add().set(WBLK);
    c.get(WBLK).set(R[0]);
    for (let p = 1; p < 16; p++) c.get(R[p - 1]).get(LD).i32(1).shl().add().set(R[p]);
    c.get(S).get(BLK).get(LD).mul().i32(2).shl().add().set(SBLK);
    c.i32(0).set(I);
    c.whileNot(() => c.get(I).get(M).geU(), () => {
      c.get(A).get(I).get(K).mul().get(BLK).i32(5).shl().add().i32(1).shl().add().set(XP);
      for (let p = 0; p < 16; p++) c.get(XP).v128Load32Splat(4 * p).set(XV[p]);
      c.get(A).get(M).get(K).mul().i32(1).shl().add().get(I).get(NBLK).mul().get(BLK).add().i32(2).shl().add().f32Load().f32x4Splat().set(SXV);
      c.get(OUT).get(I).get(LD).mul().i32(2).shl().add().set(O);
      c.i32(0).set(J);
      c.whileNot(() => c.get(J).get(NB).geU(), () => {
        c.get(J).i32(1).shrU().set(JW); // 4 bytes of out a column, 2 of w (a pair)
        for (let p = 0; p < 16; p++) {
          c.get(R[p]).get(JW).add().set(WA);
          c.get(WA).load8x8S(0).get(XV[p]).dotI16();
          if (p > 0) c.get(ACC0).i32x4Add();
          c.set(ACC0);
          c.get(WA).load8x8S(8).get(XV[p]).dotI16();
          if (p > 0) c.get(ACC1).i32x4Add();
          c.set(ACC1);
        }
        c.get(O).get(J).add();
        c.get(O).get(J).add().v128Load().get(ACC0).f32x4FromI32().get(SBLK).get(J).add().v128Load().get(SXV).f32x4Mul().f32x4Mul().f32x4Add();
        c.v128Store();
        c.get(O).get(J).add();
        c.get(O).get(J).add().v128Load(16).get(ACC1).f32x4FromI32().get(SBLK).get(J).add().v128Load(16).get(SXV).f32x4Mul().f32x4Mul().f32x4Add();
        c.v128Store(16);
        c.inc(J, 32);
      });
      c.inc(I, 1);
    });
    c.inc(BLK, 1);
  });
  return c;
}

/**
 * out[m, n] = w[m, k] · x[n, k]ᵀ with w Q8_0 (blocks along its rows) and x quantised
 * (quantizeActivations, at `b`): eight rows of w against one row of x; per block the 32 products
 * summed exactly in four i32 lanes, then acc += float(lanes)·(d_w·s_x), and the lanes summed at
 * the end as nt does. k a multiple of 32.
 */
function ntQ8(): Code {
  const [I, J, XB, XS, OP, WK, SK, Q, NBLK] = [8, 9, 10, 11, 12, 13, 14, 15, 16];
  const RA = [17, 18, 19, 20, 21, 22, 23, 24];
  const SA = [25, 26, 27, 28, 29, 30, 31, 32];
  const ACC = [33, 34, 35, 36, 37, 38, 39, 40]; // v128
  const XV = [41, 42, 43, 44]; // v128: the block of x
  const [SXV, DOT] = [45, 46]; // v128
  const XP = 47; // i32
  const c = new QCode();
  c.get(K).set(WK); // bytes of a row of w
  c.get(K).i32(3).shrU().set(SK); // bytes of a row of scales (k/32 floats)
  c.get(K).i32(5).shrU().set(NBLK);
  const rows = (count: number) => {
    c.get(A).get(I).get(WK).mul().add().set(RA[0]);
    for (let t = 1; t < count; t++) c.get(RA[t - 1]).get(WK).add().set(RA[t]);
    c.get(S).get(I).get(SK).mul().add().set(SA[0]);
    for (let t = 1; t < count; t++) c.get(SA[t - 1]).get(SK).add().set(SA[t]);
    c.i32(0).set(J);
    c.whileNot(() => c.get(J).get(N).geU(), () => {
      c.get(B).get(J).get(K).mul().i32(1).shl().add().set(XB);
      c.get(B).get(N).get(K).mul().i32(1).shl().add().get(J).get(SK).mul().add().set(XS);
      for (let t = 0; t < count; t++) c.v128Zero().set(ACC[t]);
      c.i32(0).set(Q);
      c.whileNot(() => c.get(Q).get(K).geU(), () => {
        // Q: byte of the block in a row of w; x's int16 at 2Q, the scales at Q/8.
        c.get(XB).get(Q).i32(1).shl().add().set(XP);
        for (let v = 0; v < 4; v++) c.get(XP).v128Load(16 * v).set(XV[v]);
        c.get(XS).get(Q).i32(3).shrU().add().f32Load().f32x4Splat().set(SXV);
        for (let t = 0; t < count; t++) {
          c.get(RA[t]).get(Q).add().set(OP);
          for (let v = 0; v < 4; v++) {
            c.get(OP).load8x8S(8 * v).get(XV[v]).dotI16();
            if (v > 0) c.get(DOT).i32x4Add();
            c.set(DOT);
          }
          c.get(ACC[t]).get(DOT).f32x4FromI32().get(SA[t]).get(Q).i32(3).shrU().add().v128Load32Splat().get(SXV).f32x4Mul().f32x4Mul().f32x4Add().set(ACC[t]);
        }
        c.inc(Q, 32);
      });
      storeLaneSums(c, { out: OUT, i: I, j: J, n: N, op: OP }, ACC.slice(0, count));
      c.inc(J, 1);
    });
  };
  inRowGroups(c, I, M, ROWS, rows);
  return c;
}

/** nt's results: out[i + t, j] = the sum of ACC[t]'s lanes, ((l0 + l1) + l2) + l3, for each t. */
export function storeLaneSums(c: Code, at: { out: number; i: number; j: number; n: number; op: number }, acc: number[]): void {
  c.get(at.out).get(at.i).get(at.n).mul().get(at.j).add().i32(2).shl().add().set(at.op);
  for (const [t, v] of acc.entries()) {
    c.get(at.op);
    c.get(v).f32x4Lane(0).get(v).f32x4Lane(1).f32Add().get(v).f32x4Lane(2).f32Add().get(v).f32x4Lane(3).f32Add();
    c.f32Store();
    if (t + 1 < acc.length) c.inc(at.op, () => c.get(at.n).i32(2).shl());
  }
}

/** rows(group) over rows [i, m) in groups while whole ones fit, then rows(1) over the rest. */
export function inRowGroups(c: Code, i: number, m: number, group: number, rows: (count: number) => void): void {
  c.i32(0).set(i);
  c.whileNot(() => c.get(i).i32(group).add().get(m).gtU(), () => {
    rows(group);
    c.inc(i, group);
  });
  c.whileNot(() => c.get(i).get(m).geU(), () => {
    rows(1);
    c.inc(i, 1);
  });
}

/** The encoded kernels, named nn_f16, nn_q8_0, nt_f16, nt_q8_0, each with 8 i32 parameters. */
export function encodedKernels(): FunctionDef[] {
  const def = (name: string, code: Code, i32: number, v128: number, more = 0): FunctionDef => ({ name, params: 8, locals: [{ count: i32, type: I32 }, { count: v128, type: V128 }, { count: more, type: I32 }], code });
  return [def('nn_f16', nnF16(), 17, 12, 2), def('nn_q8_0', nnQ8(), 27, 19), def('nt_f16', ntF16(), 24, 10, 4), def('nt_q8_0', ntQ8(), 25, 14, 1)];
}
