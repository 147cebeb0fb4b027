/**
 * safetensors in TypeScript. Reading checks the header before trusting it: size limit, JSON
 * shape, known dtypes, offsets inside the file, byte counts that match the shape, no overlaps.
 * F32 tensors are views into the file buffer when aligned (no copy); F16/BF16 and the integer
 * dtypes are converted to F32. Writing produces what HF's save_file produces: u64 header length,
 * JSON header padded with spaces to 8 bytes, tensors back to back.
 */
import { open, readFile } from 'node:fs/promises';
import { fsError, ToolError } from '../util/errors.js';
import { encodeF16, storageToFloat32, type SourceDtype } from './dtypes.js';

export type StoredDtype = SourceDtype;
const DTYPE_BYTES: Record<StoredDtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface Tensor32 {
  shape: number[];
  /** Always float32, row-major. */
  data: Float32Array;
  /** The dtype it was stored as. */
  dtype: StoredDtype;
}

export interface SafetensorsFile {
  tensors: Map<string, Tensor32>;
  metadata: Record<string, string>;
}

/** Largest header we accept: real ones are a few KB per hundred tensors. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    throw fsError(err, path);
  }
  return parseSafetensors(buf, path);
}

export function parseSafetensors(buf: Uint8Array, where: string): SafetensorsFile {
  const fail = (what: string) => new ToolError(`${where}: ${what}`);
  if (buf.length < 8) throw fail(`too short for a safetensors file (${buf.length} bytes)`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES) throw fail(`header length ${headerLength} is absurd (limit ${MAX_HEADER_BYTES}); not a safetensors file?`);
  if (8 + headerLength > buf.length) throw fail(`header length ${headerLength} runs past the end of the file (${buf.length} bytes): truncated?`);
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + 8, headerLength).toString('utf8'));
  } catch (err) {
    throw fail(`header is not valid JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw fail('header is not a JSON object');
  const dataStart = 8 + headerLength;
  const dataLength = buf.length - dataStart;
  const tensors = new Map<string, Tensor32>();
  let metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = e?.dtype as StoredDtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) throw fail(`tensor ${name}: unsupported dtype ${JSON.stringify(e?.dtype)}`);
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw fail(`tensor ${name}: bad shape ${JSON.stringify(shape)}`);
    const offsets = e.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw fail(`tensor ${name}: bad data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataLength) throw fail(`tensor ${name}: data_offsets [${begin}, ${end}] lie outside the ${dataLength} data bytes: truncated or corrupt`);
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end - begin !== count * DTYPE_BYTES[dtype]) throw fail(`tensor ${name}: ${end - begin} bytes for shape [${shape.join(', ')}] of ${dtype} (expected ${count * DTYPE_BYTES[dtype]})`);
    spans.push([begin, end, name]);
    tensors.set(name, { shape: shape as number[], dtype, data: decode(buf, dataStart + begin, count, dtype) });
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let k = 1; k < spans.length; k++) {
    if (spans[k][0] < spans[k - 1][1]) throw fail(`tensors ${spans[k - 1][2]} and ${spans[k][2]} overlap in the data section`);
  }
  return { tensors, metadata };
}

/** A tensor's bytes as float32; a view (no copy) for aligned F32, as loading weights is mostly that. */
function decode(buf: Uint8Array, offset: number, count: number, dtype: StoredDtype): Float32Array {
  const size = DTYPE_BYTES[dtype];
  const bytes = buf.subarray(offset, offset + count * size);
  return storageToFloat32(bytes.byteOffset % size === 0 ? bytes : bytes.slice(), dtype);
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

interface WriteOptions {
  dtype?: 'F32' | 'F16';
  metadata?: Record<string, string>;
}

/** The 8-byte length and the padded JSON header for tensors laid out in the given order. */
function headerFor(tensors: TensorToWrite[], options: WriteOptions): Buffer {
  const dtype = options.dtype ?? 'F32';
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', ...options.metadata } };
  let offset = 0;
  for (const t of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new Error(`tensor ${t.name}: ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + count * DTYPE_BYTES[dtype]] };
    offset += count * DTYPE_BYTES[dtype];
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(padded.length));
  return Buffer.concat([length, padded]);
}

const bytesOf = (t: TensorToWrite, dtype: 'F32' | 'F16'): Uint8Array =>
  dtype === 'F32' ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) : new Uint8Array(encodeF16(t.data).buffer);

/** The whole file in memory (small models, tests). */
export function encodeSafetensors(tensors: TensorToWrite[], options: WriteOptions = {}): Buffer {
  return Buffer.concat([headerFor(tensors, options), ...tensors.map((t) => bytesOf(t, options.dtype ?? 'F32'))]);
}

/** Writes tensor by tensor, so a large model is never copied whole into one buffer. */
export async function writeSafetensors(path: string, tensors: TensorToWrite[], options: WriteOptions = {}): Promise<void> {
  let file;
  try {
    file = await open(path, 'w');
    await file.write(headerFor(tensors, options));
    for (const t of tensors) await file.write(bytesOf(t, options.dtype ?? 'F32'));
    await file.sync();
  } catch (err) {
    throw fsError(err, path);
  } finally {
    await file?.close();
  }
}
