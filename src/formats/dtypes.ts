/**
 * Element types of checkpoint tensors (PyTorch storages, safetensors dtypes) and their exact
 * conversion to float32: f16 and bf16 by bit manipulation (subnormals, infinities and NaN payloads
 * as torch converts them), wider types with a single correct rounding; and float32 → f16 for
 * writing half-precision checkpoints.
 */
import { endianness } from 'node:os';

/**
 * F32/F16/BF16 are the weights' types. The others appear in buffers (GPT-2's `attn.bias` is BOOL
 * or U8, `attn.masked_bias` F32 or F64) and in other models' state dicts.
 */
export type SourceDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** torch storage class name (`torch.<name>`, also `torch.cuda.<name>`) → element type and size. */
export const STORAGE_CLASSES: ReadonlyMap<string, { dtype: SourceDtype; bytes: number }> = new Map([
  ['FloatStorage', { dtype: 'F32', bytes: 4 }],
  ['HalfStorage', { dtype: 'F16', bytes: 2 }],
  ['BFloat16Storage', { dtype: 'BF16', bytes: 2 }],
  ['DoubleStorage', { dtype: 'F64', bytes: 8 }],
  ['LongStorage', { dtype: 'I64', bytes: 8 }],
  ['IntStorage', { dtype: 'I32', bytes: 4 }],
  ['ShortStorage', { dtype: 'I16', bytes: 2 }],
  ['CharStorage', { dtype: 'I8', bytes: 1 }],
  ['ByteStorage', { dtype: 'U8', bytes: 1 }],
  ['BoolStorage', { dtype: 'BOOL', bytes: 1 }],
]);

/** Typed arrays read the host's byte order and checkpoints are little-endian. */
export const HOST_IS_LITTLE_ENDIAN = endianness() === 'LE';

/** float16 bits → float32 bits. */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf, NaN (payload kept)
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal: shift the mantissa up to its leading 1, lowering the exponent to match.
  let e = 113;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** One float16 value (as bits) → its float32 value. */
export function f16ToF32(h: number): number {
  scratchBits[0] = f16BitsToF32Bits(h);
  return scratch[0];
}

/** float32 → IEEE half, rounding to nearest even (overflow → inf). */
export function f32ToF16(value: number): number {
  scratch[0] = value;
  const x = scratchBits[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let frac = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (frac ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    frac |= 0x800000; // implicit bit
    const shift = 14 - e;
    const half = frac >>> shift;
    const rest = frac & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rest > mid || (rest === mid && half & 1) ? 1 : 0));
  }
  const half = frac >>> 13;
  const rest = frac & 0x1fff;
  let out = (e << 10) | half;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) out++; // a carry into the exponent is still right
  return sign | out;
}

export function encodeF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]);
  return out;
}

let f16Table: Uint32Array | undefined;

function f16ArrayToF32(src: Uint16Array): Float32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  const table = f16Table;
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return new Float32Array(out.buffer);
}

function bf16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return new Float32Array(out.buffer);
}

/**
 * int64 → float32 with one rounding: going through a double would round twice and can miss by
 * an ulp. Beyond 2^53 the value is cut to its top 53 bits with a sticky bit for the rest, which
 * a double holds exactly and which rounds to float32 as the full value does.
 */
function i64ToF32(src: Int32Array): Float32Array {
  const out = new Float32Array(src.length / 2);
  for (let i = 0; i < out.length; i++) {
    const lo = src[2 * i] >>> 0;
    const hi = src[2 * i + 1];
    if (hi >= -0x200000 && hi < 0x200000) {
      out[i] = hi * 4294967296 + lo; // |value| < 2^53: exact as a double
      continue;
    }
    const v = (BigInt(hi) << 32n) | BigInt(lo);
    const mag = v < 0n ? -v : v;
    const shift = BigInt(mag.toString(2).length - 53);
    let top = mag >> shift;
    if (mag & ((1n << shift) - 1n)) top |= 1n;
    const r = Number(top) * 2 ** Number(shift);
    out[i] = v < 0n ? -r : r;
  }
  return out;
}

/**
 * The storage's bytes (little-endian, `bytes.byteOffset` aligned to the element size) as float32.
 * A float32 storage comes back as a view of the same memory, without a copy.
 */
export function storageToFloat32(bytes: Uint8Array, dtype: SourceDtype): Float32Array {
  const { buffer, byteOffset, byteLength } = bytes;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buffer, byteOffset, byteLength / 4);
    case 'F16':
      return f16ArrayToF32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    case 'BF16':
      return bf16ArrayToF32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    case 'F64':
      return new Float32Array(new Float64Array(buffer, byteOffset, byteLength / 8)); // one rounding each
    case 'I64':
      return i64ToF32(new Int32Array(buffer, byteOffset, byteLength / 4));
    case 'I32':
      return new Float32Array(new Int32Array(buffer, byteOffset, byteLength / 4));
    case 'I16':
      return new Float32Array(new Int16Array(buffer, byteOffset, byteLength / 2));
    case 'I8':
      return new Float32Array(new Int8Array(buffer, byteOffset, byteLength));
    case 'U8':
      return new Float32Array(bytes);
    case 'BOOL':
      return Float32Array.from(bytes, (b) => (b === 0 ? 0 : 1));
  }
}
