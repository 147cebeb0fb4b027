/**
 * Weight matrices in a wasm memory as the decode kernels read them (wasm-gemv.ts for f32,
 * wasm-qgemv.ts for f16 and Q8_0): how many bytes each takes, writing one from float32 values or
 * from bytes already encoded as GGUF holds them, and reading rows back as float32 (embedding
 * lookups, the GEMM's panels in a prefill).
 *
 * Two shapes of matrix: a Conv1D weight [k, n] (x·W; Q8_0 blocks run down a column, along k, the
 * input — GGUF stores these transposed, [n, k], with blocks along its rows) and the embedding
 * [vocab, d] (Q8_0 blocks along a row, as GGUF's token_embd). Q8_0 keeps llama.cpp's values:
 * the int8 in a matrix of their own (a Conv1D weight's rows interleaved in pairs: pairedIndex)
 * and each block's f16 scale widened to a float32 (exact) in another, so that both are read with
 * aligned vector loads.
 */
import { f16ToF32, storageToFloat32, encodeF16 } from '../formats/dtypes.js';
import { Q8_0_BLOCK, Q8_0_BLOCK_BYTES, q8_0Bytes, quantizeQ8_0 } from '../formats/q8_0.js';
import { ToolError } from '../util/errors.js';

export type WeightDtype = 'f32' | 'f16' | 'q8_0';
export const WEIGHT_DTYPES: readonly WeightDtype[] = ['f32', 'f16', 'q8_0'];

/** Where a weight matrix lives and how it is encoded. */
export interface WeightRef {
  readonly dtype: WeightDtype;
  /** Byte offset of the values (16-byte aligned). */
  readonly offset: number;
  /** Byte offset of the Q8_0 scales (float32; 16-byte aligned), 0 otherwise. */
  readonly scales: number;
  readonly rows: number;
  readonly cols: number;
  /** Q8_0 blocks along a row (the embedding) or down a column (a Conv1D weight). */
  readonly blocks: 'row' | 'column';
}

/** A tensor as a weights file may already hold it encoded: GGUF's layout (a Conv1D weight transposed, [n, k]). */
export type EncodedTensor = { dtype: 'f16'; bits: Uint16Array } | { dtype: 'q8_0'; blocks: Uint8Array };

const align = (bytes: number) => Math.ceil(bytes / 16) * 16;

/**
 * Why a [rows, cols] matrix cannot be kept as `dtype` (undefined when it can): Q8_0 needs whole
 * blocks of 32 along its block direction, and the nn kernel 8 columns a step.
 */
export function encodingLimit(dtype: WeightDtype, rows: number, cols: number, blocks: 'row' | 'column'): string | undefined {
  if (dtype !== 'q8_0') return undefined;
  const along = blocks === 'row' ? cols : rows;
  if (along % Q8_0_BLOCK !== 0) return `${along} values along a Q8_0 block's direction are not a multiple of ${Q8_0_BLOCK}`;
  if (blocks === 'column' && cols % 8 !== 0) return `${cols} columns are not a multiple of 8`;
  return undefined;
}

/** Bytes of the values and of the scales of a [rows, cols] matrix as `dtype` (each 16-byte aligned). */
export function weightBytes(dtype: WeightDtype, rows: number, cols: number): { values: number; scales: number } {
  const n = rows * cols;
  if (dtype === 'f32') return { values: align(4 * n), scales: 0 };
  if (dtype === 'f16') return { values: align(2 * n), scales: 0 };
  return { values: align(n), scales: align((4 * n) / Q8_0_BLOCK) };
}

/** [rows, cols] → [cols, rows]. */
function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c];
  return out;
}

/** Writes `values` ([rows, cols] row-major, float32) into the memory as `ref` says. `name` names the tensor in errors. */
export function writeWeight(buffer: ArrayBufferLike, ref: WeightRef, values: Float32Array, name: string): void {
  if (ref.dtype === 'f32') return void new Float32Array(buffer, ref.offset, values.length).set(values);
  if (ref.dtype === 'f16') return writeF16(buffer, ref, encodeF16(values), name);
  const blocks = quantizeQ8_0(ref.blocks === 'row' ? values : transpose(values, ref.rows, ref.cols));
  writeQ8_0(buffer, ref, blocks, name);
}

/** Writes a tensor given in GGUF's encoding (see EncodedTensor), which must be ref's dtype. */
export function writeEncoded(buffer: ArrayBufferLike, ref: WeightRef, tensor: EncodedTensor, name: string): void {
  if (tensor.dtype !== ref.dtype) throw new Error(`internal error: ${name} is ${tensor.dtype}, the model keeps ${ref.dtype}`);
  const n = ref.rows * ref.cols;
  if (tensor.dtype === 'f16') {
    if (tensor.bits.length !== n) throw new ToolError(`tensor ${name}: ${tensor.bits.length} f16 values, expected ${n}`);
    let bits = tensor.bits;
    if (ref.blocks === 'column') {
      bits = new Uint16Array(n); // GGUF's [n, k] → our [k, n]
      for (let c = 0; c < ref.cols; c++) for (let r = 0; r < ref.rows; r++) bits[r * ref.cols + c] = tensor.bits[c * ref.rows + r];
    }
    return writeF16(buffer, ref, bits, name);
  }
  if (tensor.blocks.length !== q8_0Bytes(n)) throw new ToolError(`tensor ${name}: ${tensor.blocks.length} bytes of Q8_0, expected ${q8_0Bytes(n)}`);
  writeQ8_0(buffer, ref, tensor.blocks, name);
}

function writeF16(buffer: ArrayBufferLike, ref: WeightRef, bits: Uint16Array, name: string): void {
  // The kernels' conversion is exact for every finite half (wasm-qgemv.ts), not for inf or NaN.
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & 0x7c00) === 0x7c00) throw new ToolError(`tensor ${name} has values beyond f16's range (or NaN); keep it as f32 (--weights-dtype f32)`);
  }
  new Uint16Array(buffer, ref.offset, bits.length).set(bits);
}

/** Q8_0 blocks in GGUF's order (for a column-blocked matrix: column after column) into ref's two arrays. */
function writeQ8_0(buffer: ArrayBufferLike, ref: WeightRef, blocks: Uint8Array, name: string): void {
  const q = new Int8Array(buffer, ref.offset, ref.rows * ref.cols);
  const scales = new Float32Array(buffer, ref.scales, (ref.rows * ref.cols) / Q8_0_BLOCK);
  const view = new DataView(blocks.buffer, blocks.byteOffset, blocks.byteLength);
  const signed = new Int8Array(blocks.buffer, blocks.byteOffset, blocks.byteLength);
  const along = ref.blocks === 'row' ? ref.cols : ref.rows;
  const perLine = along / Q8_0_BLOCK;
  for (let b = 0; b < scales.length; b++) {
    const d = f16ToF32(view.getUint16(b * Q8_0_BLOCK_BYTES, true));
    if (!Number.isFinite(d)) throw new ToolError(`tensor ${name} has values beyond Q8_0's range (or NaN); keep it as f32 (--weights-dtype f32)`);
    const [line, block] = [Math.floor(b / perLine), b % perLine];
    const src = b * Q8_0_BLOCK_BYTES + 2;
    if (ref.blocks === 'row') {
      scales[b] = d;
      q.set(signed.subarray(src, src + Q8_0_BLOCK), line * ref.cols + block * Q8_0_BLOCK);
    } else {
      // line = column c, rows block·32 …: scales [rows/32, cols]
      scales[block * ref.cols + line] = d;
      for (let t = 0; t < Q8_0_BLOCK; t++) q[pairedIndex(block * Q8_0_BLOCK + t, line, ref.cols)] = signed[src + t];
    }
  }
}

/**
 * Where a column-blocked Q8_0 matrix [rows, cols] keeps (r, c): rows in pairs, interleaved
 * (r even, c), (r + 1, c), (r, c + 1), …, so that the integer kernel (wasm-qgemv.ts) loads the
 * pairs (k, k+1) of four columns as one i16x8 for i32x4.dot_i16x8_s.
 */
const pairedIndex = (r: number, c: number, cols: number) => (r & ~1) * cols + 2 * c + (r & 1);

/** Rows [r0, r1) of the matrix as float32 (the exact values the kernels use) into `dest`. */
export function readRows(buffer: ArrayBufferLike, ref: WeightRef, r0: number, r1: number, dest: Float32Array): void {
  const [from, count] = [r0 * ref.cols, (r1 - r0) * ref.cols];
  if (ref.dtype === 'f32') return void dest.set(new Float32Array(buffer, ref.offset + 4 * from, count));
  if (ref.dtype === 'f16') return void dest.set(storageToFloat32(new Uint8Array(buffer, ref.offset + 2 * from, 2 * count), 'F16'));
  const q = new Int8Array(buffer, ref.offset, ref.rows * ref.cols);
  const scales = new Float32Array(buffer, ref.scales, (ref.rows * ref.cols) / Q8_0_BLOCK);
  for (let r = r0; r < r1; r++) {
    for (let c = 0; c < ref.cols; c++) {
      const i = (r - r0) * ref.cols + c;
      if (ref.blocks === 'row') dest[i] = scales[(r * ref.cols + c) / Q8_0_BLOCK | 0] * q[r * ref.cols + c];
      else dest[i] = scales[(r / Q8_0_BLOCK | 0) * ref.cols + c] * q[pairedIndex(r, c, ref.cols)];
    }
  }
}
