/**
 * The decode-time products (wasm-gemv.ts's nn and nt) over weights kept as f16 or as Q8_0 in the
 * wasm memory, widened to f32 in registers as they stream: a token of f16 weights is half the
 * bytes of f32, of Q8_0 ~0.28×, and decoding is bound by the bytes.
 *
 * Each weight becomes its exact float32 value before it is used (f16: bit operations; Q8_0: d·q,
 * 19 significant bits, exact in float32) and is then multiplied and added in the same order as
 * the f32 kernels, so a product over encoded weights gives the bits the f32 kernel (and the GEMM)
 * gives over the decoded ones: a prompt through the GEMM over a decoded panel and its steps here
 * agree, threads split outputs as for f32, and the tests compare against the f32 path exactly.
 * Applying a block's scale once to the block's sum (llama.cpp's order) would save one multiply in
 * five but lose that.
 *
 * Measured (one thread, 29 Nov 2026, a shared 2-core EPYC, weights out of cache, G weights/s):
 * nt f32 2.1, f16 2.0, Q8_0 1.4; nn f32 3.0, f16 2.5, Q8_0 2.1. Widening costs 4–5 vector
 * instructions per four weights where f32 needs none, so these kernels are bound by arithmetic,
 * not by bytes: on two threads a decode step runs at about the f32 speed (bench:generate), in
 * far less memory. Beating that needs llama.cpp's integer dot products (activations quantised
 * too, i32x4.dot_i16x8_s), at the cost of this exactness.
 *
 * Layouts (all rows 16-byte aligned where the model puts them):
 * - nn over a Conv1D weight [k, n]: f16 rows of n halves; Q8_0 rows of n int8 plus scales
 *   [k/32, n] f32, one per column and block of 32 rows (Q8_0's blocks run along k, the input, as
 *   llama.cpp blocks a GGUF [out, in] tensor's rows).
 * - nt over wte [vocab, d] (the LM head): f16 rows of d halves; Q8_0 rows of d int8 plus scales
 *   [vocab, d/32].
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
  load32Splat() { return this.op(0x09, 2, 0); }
  i16x8ToI32Low() { return this.op(0xa7); }
  f32x4FromI32() { return this.op(0xfa); }
  i32x4Shl() { return this.op(0xab); }
  v128And() { return this.op(0x4e); }
  /** v128.const: four i32 lanes of x. */
  i4(x: number) { return this.op(0x0c, ...new Uint8Array(Int32Array.of(x, x, x, x).buffer)); }
  f4(x: number) { return this.op(0x0c, ...new Uint8Array(Float32Array.of(x, x, x, x).buffer)); }
  shrU() { this.bytes.push(0x76); return this; }

  /**
   * The four int8 at the address on the stack (+ offset) as float32: loaded widened to i16 (8 of
   * them, the upper 4 unused), widened again, converted. A second load for the next four is
   * cheaper than widening the upper half (two instructions on x64 where the lower takes one).
   */
  q8x4(offset = 0) {
    return this.load8x8S(offset).i16x8ToI32Low().f32x4FromI32();
  }

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
 * out[m, n] = a[m, k] · w[k, n] with w encoded (rows `ld` columns apart, out's rows ld floats),
 * as wasm-gemv.ts's nn: eight rows of w streamed at a time, applied to every row of a, each
 * output element ((out + a₀·w₀) + a₁·w₁) + … in k order. f16: 4 columns a step, n a multiple of
 * 4, any k. Q8_0: 8 columns a step (n a multiple of 8), k a multiple of 32 (8-row groups never
 * straddle a block, so the group's scales are loaded once a step).
 */
function nnEncoded(dtype: EncodedDtype): Code {
  const q8 = dtype === 'q8_0';
  const [NB, KK, I, O, J, SB, AP, WB, SR] = [8, 9, 10, 11, 12, 13, 14, 15, 16];
  const R = [17, 18, 19, 20, 21, 22, 23, 24];
  const X = [25, 26, 27, 28, 29, 30, 31, 32]; // v128
  const [ACC0, ACC1, D0, D1] = [33, 34, 35, 36]; // v128
  const [JW, WA] = [37, 38]; // i32
  const c = new QCode();
  const step = q8 ? 32 : 16; // bytes of out a step
  const shift = q8 ? 2 : 1; // out bytes → weight bytes
  c.get(N).i32(2).shl().set(NB);
  c.get(LD).i32(2).shl().set(SB);
  c.get(LD).i32(q8 ? 0 : 1).shl().set(WB);
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
        c.get(J).i32(shift).shrU().set(JW);
        const w = (t: number) => c.get(R[t]).get(JW).add();
        if (!q8) {
          c.get(O).get(J).add();
          c.get(O).get(J).add().v128Load();
          for (let t = 0; t < width; t++) w(t).f16x4().get(X[t]).f32x4Mul().f32x4Add();
          c.v128Store();
        } else {
          c.get(SR).get(J).add().v128Load().set(D0);
          c.get(SR).get(J).add().v128Load(16).set(D1);
          c.get(O).get(J).add().v128Load().set(ACC0);
          c.get(O).get(J).add().v128Load(16).set(ACC1);
          for (let t = 0; t < width; t++) {
            w(t).set(WA);
            c.get(ACC0).get(WA).q8x4().get(D0).f32x4Mul().get(X[t]).f32x4Mul().f32x4Add().set(ACC0);
            c.get(ACC1).get(WA).q8x4(4).get(D1).f32x4Mul().get(X[t]).f32x4Mul().f32x4Add().set(ACC1);
          }
          c.get(O).get(J).add().get(ACC0).v128Store();
          c.get(O).get(J).add().get(ACC1).v128Store(16);
        }
        c.inc(J, step);
      });
      c.inc(I, 1);
    });
  };
  c.i32(0).set(KK);
  c.whileNot(() => c.get(KK).i32(ROWS).add().get(K).gtU(), () => {
    c.get(B).get(KK).get(WB).mul().add().set(R[0]);
    for (let t = 1; t < ROWS; t++) c.get(R[t - 1]).get(WB).add().set(R[t]);
    if (q8) c.get(S).get(KK).i32(5).shrU().get(SB).mul().add().set(SR); // scales of the block
    rowsOf(ROWS);
    c.inc(KK, ROWS);
  });
  if (!q8) {
    c.whileNot(() => c.get(KK).get(K).geU(), () => {
      c.get(B).get(KK).get(WB).mul().add().set(R[0]);
      rowsOf(1);
      c.inc(KK, 1);
    });
  }
  return c;
}

/**
 * out[m, n] = w[m, k] · b[n, k]ᵀ with w encoded, as wasm-gemv.ts's nt: eight rows of w against
 * one row of b, a sum over k in four lanes then across them. f16: k a multiple of 4; Q8_0: k a
 * multiple of 32, two vectors a step, each row's block scale splatted when its block begins.
 */
function ntEncoded(dtype: EncodedDtype): Code {
  const q8 = dtype === 'q8_0';
  const [KB, I, J, P, RB, OP, WK, SK] = [8, 9, 10, 11, 12, 13, 14, 15];
  const RA = [16, 17, 18, 19, 20, 21, 22, 23];
  const SA = [24, 25, 26, 27, 28, 29, 30, 31];
  const ACC = [32, 33, 34, 35, 36, 37, 38, 39]; // v128
  const [BV0, D] = [40, 41]; // v128
  const [XP, QP, DP, WP] = [42, 43, 44, 45]; // i32
  const c = new QCode();
  c.get(K).i32(2).shl().set(KB);
  c.get(K).i32(q8 ? 0 : 1).shl().set(WK); // bytes of a row of w
  c.get(K).i32(3).shrU().set(SK); // bytes of a row of scales (k/32 floats)
  const rows = (count: number) => {
    c.get(A).get(I).get(WK).mul().add().set(RA[0]);
    for (let t = 1; t < count; t++) c.get(RA[t - 1]).get(WK).add().set(RA[t]);
    if (q8) {
      c.get(S).get(I).get(SK).mul().add().set(SA[0]);
      for (let t = 1; t < count; t++) c.get(SA[t - 1]).get(SK).add().set(SA[t]);
    }
    c.i32(0).set(J);
    c.whileNot(() => c.get(J).get(N).geU(), () => {
      c.get(B).get(J).get(KB).mul().add().set(RB);
      for (let t = 0; t < count; t++) c.v128Zero().set(ACC[t]);
      c.i32(0).set(P);
      c.whileNot(() => c.get(P).get(KB).geU(), () => {
        if (!q8) {
          c.get(RB).get(P).add().v128Load().set(BV0);
          for (let t = 0; t < count; t++) {
            c.get(ACC[t]).get(RA[t]).get(P).i32(1).shrU().add().f16x4().get(BV0).f32x4Mul().f32x4Add().set(ACC[t]);
          }
          c.inc(P, 16);
          return;
        }
        // A whole block a step: each row's scale splatted once, its 32 int8 and b's 32 floats at
        // constant offsets from one address each.
        c.get(RB).get(P).add().set(XP);
        c.get(P).i32(2).shrU().set(QP);
        c.get(P).i32(5).shrU().set(DP);
        for (let t = 0; t < count; t++) {
          c.get(SA[t]).get(DP).add().load32Splat().set(D);
          c.get(RA[t]).get(QP).add().set(WP);
          c.get(ACC[t]);
          for (let v = 0; v < 4; v++) {
            c.get(WP).q8x4(8 * v).get(D).f32x4Mul().get(XP).v128Load(32 * v).f32x4Mul().f32x4Add();
            c.get(WP).q8x4(8 * v + 4).get(D).f32x4Mul().get(XP).v128Load(32 * v + 16).f32x4Mul().f32x4Add();
          }
          c.set(ACC[t]);
        }
        c.inc(P, 128);
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
  const nn = (dtype: EncodedDtype): FunctionDef => ({ name: `nn_${dtype}`, params: 8, locals: [{ count: 17, type: I32 }, { count: 12, type: V128 }, { count: 2, type: I32 }], code: nnEncoded(dtype) });
  const nt = (dtype: EncodedDtype): FunctionDef => ({ name: `nt_${dtype}`, params: 8, locals: [{ count: 24, type: I32 }, { count: 10, type: V128 }, { count: 4, type: I32 }], code: ntEncoded(dtype) });
  return [nn('f16'), nn('q8_0'), nt('f16'), nt('q8_0')];
}
