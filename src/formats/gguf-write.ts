/**
 * GGUF v3, written as gguf-py's GGUFWriter writes it (so llama.cpp and gguf-py's GGUFReader read
 * it): the header, the key/value metadata in the order given, the tensor infos (offsets padded to
 * the alignment), padding to the alignment, then each tensor's bytes, each padded to the
 * alignment. Tensors are encoded one at a time while the file is written, so a model is never
 * held twice. The file appears complete or not at all (written beside it, renamed into place).
 */
import { open, rename, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fsError, outOfSpace, ToolError, UsageError } from '../util/errors.js';
import { removeStaleStaging, tempPathFor } from '../util/staging.js';
import { GGML_TYPES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, openGguf, tensorBytes, ValueType, type GgmlType, type GgufData, type GgufValue } from './gguf.js';

export interface GgufTensorToWrite {
  name: string;
  type: GgmlType;
  /** numpy order (written reversed, as ggml's dims). */
  shape: number[];
  /** The tensor's stored bytes (byteLength = tensorBytes(type, count)), made when it is written. */
  encode(): Uint8Array;
}

/** Little-endian bytes, grown as needed. */
class Bytes {
  private buf = Buffer.alloc(1 << 16);
  length = 0;
  /** Reserves n bytes and says where; it may replace this.buf, so callers name this.buf only after it. */
  private room(n: number): number {
    if (this.length + n > this.buf.length) {
      const bigger = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
      this.buf.copy(bigger, 0, 0, this.length);
      this.buf = bigger;
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  u8(v: number) { const at = this.room(1); this.buf.writeUInt8(v, at); }
  i8(v: number) { const at = this.room(1); this.buf.writeInt8(v, at); }
  u16(v: number) { const at = this.room(2); this.buf.writeUInt16LE(v, at); }
  i16(v: number) { const at = this.room(2); this.buf.writeInt16LE(v, at); }
  u32(v: number) { const at = this.room(4); this.buf.writeUInt32LE(v, at); }
  i32(v: number) { const at = this.room(4); this.buf.writeInt32LE(v, at); }
  f32(v: number) { const at = this.room(4); this.buf.writeFloatLE(v, at); }
  f64(v: number) { const at = this.room(8); this.buf.writeDoubleLE(v, at); }
  u64(v: number | bigint) { const at = this.room(8); this.buf.writeBigUInt64LE(BigInt(v), at); }
  i64(v: number | bigint) { const at = this.room(8); this.buf.writeBigInt64LE(BigInt(v), at); }
  string(s: string) {
    const utf8 = Buffer.from(s, 'utf8');
    this.u64(utf8.length);
    const at = this.room(utf8.length); // before naming this.buf: room() may replace it
    utf8.copy(this.buf, at);
  }
  zeros(n: number) { this.room(n); } // Buffer.alloc zero-fills
  bytes(): Buffer { return this.buf.subarray(0, this.length); }
}

function writeValue(out: Bytes, type: ValueType, value: GgufData, key: string, itemType?: ValueType): void {
  const num = (v: GgufData) => {
    if (typeof v !== 'number') throw new TypeError(`GGUF metadata ${key}: ${String(v)} is not a number`);
    return v;
  };
  switch (type) {
    case ValueType.UINT8: return out.u8(num(value));
    case ValueType.INT8: return out.i8(num(value));
    case ValueType.UINT16: return out.u16(num(value));
    case ValueType.INT16: return out.i16(num(value));
    case ValueType.UINT32: return out.u32(num(value));
    case ValueType.INT32: return out.i32(num(value));
    case ValueType.FLOAT32: return out.f32(num(value));
    case ValueType.FLOAT64: return out.f64(num(value));
    case ValueType.BOOL: return out.u8(value ? 1 : 0);
    case ValueType.UINT64: return out.u64(value as number | bigint);
    case ValueType.INT64: return out.i64(value as number | bigint);
    case ValueType.STRING: return out.string(String(value));
    case ValueType.ARRAY: {
      if (!Array.isArray(value) || itemType === undefined || itemType === ValueType.ARRAY) throw new TypeError(`GGUF metadata ${key}: arrays are written flat, with an item type`);
      out.u32(itemType);
      out.u64(value.length);
      for (const item of value) writeValue(out, itemType, item, key);
    }
  }
}

const pad = (n: number, align: number) => Math.ceil(n / align) * align;

/** The header, metadata and tensor infos (padded to the alignment), and each tensor's offset in the data section. */
export function encodeGgufHeader(metadata: [string, GgufValue][], tensors: GgufTensorToWrite[], alignment = GGUF_DEFAULT_ALIGNMENT): { header: Buffer; offsets: number[] } {
  const out = new Bytes();
  out.u32(GGUF_MAGIC);
  out.u32(GGUF_VERSION);
  out.u64(tensors.length);
  out.u64(metadata.length);
  for (const [key, v] of metadata) {
    out.string(key);
    out.u32(v.type);
    writeValue(out, v.type, v.value, key, v.itemType);
  }
  const offsets: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    out.string(t.name);
    out.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) out.u64(t.shape[d]);
    out.u32(GGML_TYPES[t.type].id);
    out.u64(offset);
    offsets.push(offset);
    offset += pad(tensorBytes(t.type, t.shape.reduce((a, b) => a * b, 1)), alignment);
  }
  out.zeros(pad(out.length, alignment) - out.length);
  return { header: out.bytes(), offsets };
}

/**
 * Whether `dst` may be written: absent, or (with overwrite) a GGUF file that is not one of the
 * command's inputs. Anything else is refused before any weights are read.
 */
export async function checkGgufOutput(dst: string, options: { overwrite: boolean; inputs?: readonly string[] }): Promise<void> {
  if (dst.trim() === '') throw new UsageError('the output GGUF file is an empty path');
  removeStaleStaging(dst);
  let isFile: boolean;
  try {
    isFile = (await stat(dst)).isFile();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw fsError(err, dst);
  }
  if (!isFile) throw new ToolError(`${dst}: exists and is not a file (the GGUF output is one file)`);
  if (!options.overwrite) throw new ToolError(`${dst}: exists (use --overwrite to replace it)`);
  if ((options.inputs ?? []).some((input) => resolve(input) === resolve(dst))) throw new ToolError(`${dst}: refusing to replace it: it is an input of this command`);
  try {
    await (await openGguf(dst)).close();
  } catch {
    throw new ToolError(`${dst}: not replacing it with --overwrite: it is not a GGUF file`);
  }
}

/** Writes a GGUF file atomically: staged beside `path`, renamed into place once complete. */
export async function writeGguf(path: string, metadata: [string, GgufValue][], tensors: GgufTensorToWrite[], options: { alignment?: number } = {}): Promise<void> {
  const alignment = options.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const { header } = encodeGgufHeader(metadata, tensors, alignment);
  const staged = tempPathFor(path);
  try {
    const file = await open(staged, 'wx');
    try {
      let at = 0;
      const write = async (bytes: Uint8Array) => {
        for (let done = 0; done < bytes.length; ) done += (await file.write(bytes, done, bytes.length - done, at + done)).bytesWritten;
        at += bytes.length;
      };
      await write(header);
      const zeros = new Uint8Array(alignment);
      for (const t of tensors) {
        const bytes = t.encode();
        const expected = tensorBytes(t.type, t.shape.reduce((a, b) => a * b, 1));
        if (bytes.length !== expected) throw new Error(`GGUF tensor ${t.name}: ${bytes.length} bytes for ${expected}`);
        await write(bytes);
        await write(zeros.subarray(0, pad(bytes.length, alignment) - bytes.length));
      }
    } finally {
      await file.close();
    }
    await rename(staged, path);
  } catch (err) {
    await rm(staged, { force: true });
    throw outOfSpace(err, path) ?? fsError(err, path);
  }
}
