/**
 * llama.cpp's Q8_0: a row cut into blocks of 32 values, each stored as one f16 scale d and 32 int8
 * q with x ≈ d·q, 34 bytes a block (8.5 bits a weight, ~3.8× fewer bytes than f32). Quantising is
 * ggml's reference quantize_row_q8_0_ref, which gguf-py's quants.py repeats in numpy: d = amax/127
 * and q = roundf(x · (1/d)) (ties away from zero) in float32, d = 0 for an all-zero block. Each
 * step is rounded to float32 here (a float64 division or product rounded once to float32 is the
 * float32 operation's result), so the bytes are llama.cpp's.
 */
import { f16ToF32, f32ToF16 } from './dtypes.js';

export const Q8_0_BLOCK = 32;
export const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK;

/** Bytes of `n` values (a multiple of 32) in Q8_0. */
export function q8_0Bytes(n: number): number {
  if (n % Q8_0_BLOCK !== 0) throw new RangeError(`Q8_0 quantises rows in blocks of ${Q8_0_BLOCK}; ${n} values are not`);
  return (n / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
}

const roundf = (v: number) => Math.sign(v) * Math.floor(Math.abs(v) + 0.5);

/** Values (a multiple of 32) → Q8_0 blocks, llama.cpp's bytes: per block the scale (f16, little-endian), then 32 int8. */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  const out = new Uint8Array(q8_0Bytes(values.length));
  const view = new DataView(out.buffer);
  for (let b = 0, at = 0; b < values.length; b += Q8_0_BLOCK, at += Q8_0_BLOCK_BYTES) {
    let amax = 0;
    for (let k = 0; k < Q8_0_BLOCK; k++) amax = Math.max(amax, Math.abs(values[b + k]));
    const d = Math.fround(amax / 127);
    const id = d === 0 ? 0 : Math.fround(1 / d);
    view.setUint16(at, f32ToF16(d), true);
    for (let k = 0; k < Q8_0_BLOCK; k++) view.setInt8(at + 2 + k, roundf(Math.fround(values[b + k] * id)));
  }
  return out;
}

/** Q8_0 blocks → float32 values (d·q, exact in float32). */
export function dequantizeQ8_0(blocks: Uint8Array, count: number): Float32Array {
  if (blocks.length !== q8_0Bytes(count)) throw new RangeError(`${count} Q8_0 values take ${q8_0Bytes(count)} bytes, got ${blocks.length}`);
  const out = new Float32Array(count);
  const view = new DataView(blocks.buffer, blocks.byteOffset, blocks.byteLength);
  for (let b = 0, at = 0; b < count; b += Q8_0_BLOCK, at += Q8_0_BLOCK_BYTES) {
    const d = f16ToF32(view.getUint16(at, true));
    for (let k = 0; k < Q8_0_BLOCK; k++) out[b + k] = d * view.getInt8(at + 2 + k);
  }
  return out;
}
