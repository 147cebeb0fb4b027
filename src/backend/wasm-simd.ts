/**
 * More of wasm's SIMD and scalar instructions for Code (wasm-asm.ts), as the row kernels of the
 * full-sequence pass (wasm-rows.ts, wasm-dropout.ts) need them: f32x4 arithmetic, rounding and
 * conversions, splat constants, lane access, f64x2 sums, scalar f32/f64 arithmetic, exp over
 * f32x4, the integer hash of the dropout masks; and the loops those kernels are written with.
 */
import { Code, F32, I32, V128, type FunctionDef } from './wasm-asm.js';

export const F64 = 0x7c;

/** LEB128 of an opcode below 2¹⁴. */
const opcode = (n: number) => (n < 0x80 ? [n] : [(n & 0x7f) | 0x80, n >> 7]);
const bytesOf = (x: Float32Array | Int32Array) => [...new Uint8Array(x.buffer)];

// exp over f32x4 as Cephes' expf: x = k·ln2 + r with |r| ≤ ln2/2, e^r by a degree-7 polynomial
// (~1 ulp), 2^k built in the exponent bits. Inputs are clamped to [-87.33, 88]: a result stays a
// normal float (e^−∞ gives 1.2e-38, not 0; e^+∞ 1.7e38), and NaN stays NaN. k is rounded by
// adding 1.5·2²³ (the sum's low mantissa bits are k, the float minus it is k exactly), and the
// clamp uses pmin/pmax: x86 has single instructions for those, while f32x4.min/max (IEEE NaN and
// ±0 rules) and nearest/trunc_sat take several each (expSum took 1.4× as long with them, measured).
const EXP_LO = -87.3365478515625;
const EXP_HI = 88;
const LN2_HI = 0.693359375;
const LN2_LO = -2.12194440e-4;
const ROUND = 12582912; // 1.5·2²³
const MIX = [0x7feb352d | 0, 0x846ca68b | 0];
const EXP_POLY = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];

export class SimdCode extends Code {
  private raw(...b: number[]): this {
    this.bytes.push(...b);
    return this;
  }
  private simd(op: number, ...immediates: number[]): this {
    return this.raw(0xfd, ...opcode(op), ...immediates);
  }

  /** v128.const: x in every f32 lane. */
  f4(x: number) { return this.simd(12, ...bytesOf(new Float32Array(4).fill(x))); }
  /** v128.const: x in every i32 lane. */
  i4(x: number) { return this.simd(12, ...bytesOf(new Int32Array(4).fill(x))); }
  f32x4ReplaceLane(lane: number) { return this.simd(32, lane); }
  f32x4Sub() { return this.simd(229); }
  f32x4Div() { return this.simd(231); }
  /** b < a ? b : a (x86's minps; a NaN in a stays). */
  f32x4Pmin() { return this.simd(234); }
  /** a < b ? b : a (x86's maxps; a NaN in a stays). */
  f32x4Pmax() { return this.simd(235); }
  f32x4Sqrt() { return this.simd(227); }
  i32x4Add() { return this.simd(174); }
  /** v128, i32 shift → v128. */
  i32x4Shl() { return this.simd(171); }
  /** f64x2 of lanes 0 and 1. */
  f64x2PromoteLow() { return this.simd(95); }
  f64x2Add() { return this.simd(240); }
  f64x2Mul() { return this.simd(242); }
  f64x2Lane(lane: number) { return this.simd(33, lane); }
  /** Lanes 2, 3 of an f32x4 moved to 0, 1 (i8x16.shuffle of the vector with itself). */
  highHalf() { return this.simd(13, ...[8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]); }

  i32x4Splat() { return this.simd(17); }
  i32x4Mul() { return this.simd(181); }
  /** v128, i32 shift → v128 (logical). */
  i32x4ShrU() { return this.simd(173); }
  /** All ones in a lane where a ≥ b as unsigned integers. */
  i32x4GeU() { return this.simd(64); }
  v128And() { return this.simd(78); }
  v128Xor() { return this.simd(81); }
  /** v128.const of four i32 lanes. */
  i4s(lanes: [number, number, number, number]) { return this.simd(12, ...bytesOf(Int32Array.from(lanes))); }

  i32Xor() { return this.raw(0x73); }
  i32ShrU() { return this.raw(0x76); }
  f32Sub() { return this.raw(0x93); }
  f32Mul() { return this.raw(0x94); }
  f32Div() { return this.raw(0x95); }
  f32Max() { return this.raw(0x97); }
  f32Sqrt() { return this.raw(0x91); }
  /** The i32 on the stack as the float with those bits (how float arguments arrive). */
  f32FromBits() { return this.raw(0xbe); }
  /** An unsigned i32 as f32. */
  f32FromU32() { return this.raw(0xb3); }
  f64FromF32() { return this.raw(0xbb); }
  f64Add() { return this.raw(0xa0); }
  f64Mul() { return this.raw(0xa2); }
  f64Store(offset = 0) { return this.raw(0x39, 3, ...opcode(offset)); }
  /** if (i32 on the stack) { then() } */
  ifThen(then: () => void) {
    this.raw(0x04, 0x40);
    then();
    return this.end();
  }

  /** Sum of the four lanes of the f32x4 on the stack, as an f32: (l0 + l1) + (l2 + l3). */
  hsum(v: number) {
    this.get(v).f32x4Lane(0).get(v).f32x4Lane(1).f32Add();
    return this.get(v).f32x4Lane(2).get(v).f32x4Lane(3).f32Add().f32Add();
  }

  /** Largest of the four lanes of local v, as an f32. */
  hmax(v: number) {
    this.get(v).f32x4Lane(0).get(v).f32x4Lane(1).f32Max();
    return this.get(v).f32x4Lane(2).f32Max().get(v).f32x4Lane(3).f32Max();
  }

  /**
   * lowbias32 (Chris Wellons' 32-bit integer hash: two multiply-xorshift rounds) of the i32 on the
   * stack, or lane by lane of the i32x4 with `lanes`; t is a local of that type it overwrites.
   * train-dropout.ts's mix32 is the same function in JavaScript.
   */
  mix32(t: number, lanes = false) {
    const round = (shift: number, multiplier?: number) => {
      this.tee(t).get(t).i32(shift);
      if (lanes) this.i32x4ShrU().v128Xor();
      else this.i32ShrU().i32Xor();
      if (multiplier === undefined) return;
      if (lanes) this.i4(multiplier).i32x4Mul();
      else this.i32(multiplier).mul();
    };
    round(16, MIX[0]);
    round(15, MIX[1]);
    round(16);
    return this;
  }

  /** e^x lane by lane for the f32x4 on the stack; x and t are v128 locals it overwrites. */
  exp(x: number, t: number) {
    this.f4(EXP_LO).f32x4Pmax().f4(EXP_HI).f32x4Pmin().tee(x);
    this.f4(Math.LOG2E).f32x4Mul().f4(ROUND).f32x4Add().set(t); // its bits end in k
    const k = () => this.get(t).f4(ROUND).f32x4Sub();
    this.get(x);
    k().f4(LN2_HI).f32x4Mul().f32x4Sub();
    k().f4(LN2_LO).f32x4Mul().f32x4Sub().set(x); // r
    this.f4(EXP_POLY[0]);
    for (const c of EXP_POLY.slice(1)) this.get(x).f32x4Mul().f4(c).f32x4Add();
    this.get(x).get(x).f32x4Mul().f32x4Mul().get(x).f32x4Add().f4(1).f32x4Add(); // p·r² + r + 1
    return this.get(t).i4(127).i32x4Add().i32(23).i32x4Shl().f32x4Mul(); // · 2^k
  }
}

/** A kernel's body: its code, parameter indices by name, and a way to add a local of a type. */
export type Body = (c: SimdCode, p: Record<string, number>, local: (type: number) => number) => void;

export function kernel(name: string, params: readonly string[], body: Body): FunctionDef {
  const code = new SimdCode();
  const locals: { count: number; type: number }[] = [];
  const local = (type: number) => params.length + locals.push({ count: 1, type }) - 1;
  body(code, Object.fromEntries(params.map((p, i) => [p, i])), local);
  return { name, params: params.length, locals, code };
}

/** for (; i < end; i += step) body() — i and end are i32 locals (byte offsets). */
export function upTo(c: SimdCode, i: number, end: number, step: number, body: () => void): void {
  c.whileNot(() => c.get(i).get(end).geU(), () => {
    body();
    c.inc(i, step);
  });
}

/** i = 0, vec = (n & ~3)·4, all = n·4: the byte limits of a vector loop and its scalar tail. */
export function limits(c: SimdCode, n: number, local: (type: number) => number) {
  const [i, vec, all] = [local(I32), local(I32), local(I32)];
  c.i32(0).set(i);
  c.get(n).i32(~3).and().i32(2).shl().set(vec);
  c.get(n).i32(2).shl().set(all);
  return { i, vec, all };
}

/** For each of `rows` rows of `width` floats: body(j loop over the row's bytes), then advance the pointers. */
export function rowsOf(c: SimdCode, p: Record<string, number>, pointers: string[], strides: (string | number)[], local: (type: number) => number, body: () => void): void {
  const [r, rowBytes] = [local(I32), local(I32)];
  c.get(p.width).i32(2).shl().set(rowBytes);
  c.i32(0).set(r);
  upTo(c, r, p.rows, 1, () => {
    body();
    pointers.forEach((name, k) => {
      const stride = strides[k];
      c.get(p[name]);
      if (stride === 'row') c.get(rowBytes);
      else c.i32(stride as number);
      c.add().set(p[name]);
    });
  });
}

/** A v128 local holding a float argument (passed as its bits) in every lane, and the scalar. */
export function splatArg(c: SimdCode, arg: number, local: (type: number) => number): [number, number] {
  const [v, s] = [local(V128), local(F32)];
  c.get(arg).f32FromBits().tee(s).f32x4Splat().set(v);
  return [v, s];
}

export const at = (c: SimdCode, base: number, i: number) => c.get(base).get(i).add();
export const load = (c: SimdCode, base: number, i: number) => at(c, base, i).v128Load();

/** The floats at base + i: a vector, or (the tail) one float splatted, for code that works on either. */
export const loadAt = (c: SimdCode, base: number, i: number, vector: boolean) => (vector ? load(c, base, i) : at(c, base, i).f32Load().f32x4Splat());

/** Stores what value() pushes at base + i: the vector, or (the tail) its lane 0. */
export function storeAt(c: SimdCode, base: number, i: number, vector: boolean, value: () => void): void {
  at(c, base, i);
  value();
  if (vector) c.v128Store();
  else c.f32x4Lane(0).f32Store();
}
