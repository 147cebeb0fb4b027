/**
 * GGUF (llama.cpp's weights file, ggml's docs/gguf.md), read: the header's key/value metadata and
 * tensor infos parsed whole, each tensor's bytes read from disk when asked (raw, or as float32).
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 key/value count; each key a
 * string (u64 length + UTF-8), a u32 value type and the value (arrays: u32 item type, u64 count,
 * items); each tensor info a name, u32 n_dims, n_dims × u64 dims (ggml order: the fastest-varying
 * first, so numpy's shape reversed), u32 ggml type and u64 offset into the data section; the data
 * section starts at the next multiple of general.alignment (default 32).
 *
 * Versions 2 and 3 share this layout and llama.cpp reads both (v3 only marked big-endian files);
 * version 1 (u32 counts) it no longer reads, nor do we. A hand parser rather than
 * @huggingface/gguf: that package parses the same header but not tensor data, and every count and
 * length here is checked against the file's size before anything is allocated, so a damaged
 * header is one line naming the file rather than a RangeError or gigabytes of allocation.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { fsError, ToolError } from '../util/errors.js';
import { storageToFloat32 } from './dtypes.js';
import { dequantizeQ8_0, Q8_0_BLOCK, Q8_0_BLOCK_BYTES } from './q8_0.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** More header than this is refused: GPT-2's (50257 tokens, 50000 merges) is ~1.7 MB, a 256k-token vocabulary ~10 MB. */
export const MAX_HEADER_BYTES = 256 * 1024 * 1024;

export enum ValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** A metadata value; u64/i64 as number when exact, else bigint; arrays of arrays nest. */
export type GgufData = number | bigint | boolean | string | GgufData[];
export interface GgufValue {
  type: ValueType;
  /** For arrays: the items' type. */
  itemType?: ValueType;
  value: GgufData;
}

/** The ggml tensor types this toolchain reads (and F32/F16/Q8_0 it writes), with their block geometry. */
export const GGML_TYPES = {
  F32: { id: 0, block: 1, bytes: 4 },
  F16: { id: 1, block: 1, bytes: 2 },
  Q8_0: { id: 8, block: Q8_0_BLOCK, bytes: Q8_0_BLOCK_BYTES },
  BF16: { id: 30, block: 1, bytes: 2 },
} as const;
export type GgmlType = keyof typeof GGML_TYPES;

/** Names of the other ggml types, for the message that refuses them. */
const OTHER_GGML_TYPES: Record<number, string> = {
  2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K', 12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K',
  16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16',
  26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M', 34: 'TQ1_0', 35: 'TQ2_0',
};
const typeById = new Map(Object.entries(GGML_TYPES).map(([name, t]) => [t.id as number, name as GgmlType]));

/** Bytes of a tensor of `count` values stored as `type` (count a whole number of blocks). */
export const tensorBytes = (type: GgmlType, count: number) => (count / GGML_TYPES[type].block) * GGML_TYPES[type].bytes;

export interface GgufTensor {
  name: string;
  type: GgmlType;
  /** numpy order (the slowest-varying dimension first): ggml's dims reversed. */
  shape: number[];
  /** Absolute position of its bytes in the file, and how many. */
  offset: number;
  byteLength: number;
  /** The stored bytes, as they are (Q8_0 blocks, f16 halves, …). */
  read(): Promise<Uint8Array>;
  /** The values as float32: F32 as stored, F16/BF16 exactly, Q8_0 dequantised (d·q). */
  toFloat32(): Promise<Float32Array>;
}

export interface GgufFile {
  path: string;
  version: number;
  metadata: Map<string, GgufValue>;
  /** In the file's order. */
  tensors: Map<string, GgufTensor>;
  alignment: number;
  dataOffset: number;
  close(): Promise<void>;
}

/** Thrown while parsing when the bytes read so far end before the header does. */
class NeedMore extends Error {}

const VALUE_SIZES: Partial<Record<ValueType, number>> = {
  [ValueType.UINT8]: 1, [ValueType.INT8]: 1, [ValueType.BOOL]: 1, [ValueType.UINT16]: 2, [ValueType.INT16]: 2,
  [ValueType.UINT32]: 4, [ValueType.INT32]: 4, [ValueType.FLOAT32]: 4, [ValueType.UINT64]: 8, [ValueType.INT64]: 8, [ValueType.FLOAT64]: 8,
};

class Cursor {
  pos = 0;
  private readonly view: DataView;
  constructor(
    private readonly buf: Uint8Array,
    /** The whole file's size: a claim past it is damage, not a short read. */
    private readonly fileSize: number,
    private readonly bad: (message: string) => ToolError,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number, what: string): void {
    if (this.pos + n > this.fileSize) throw this.bad(`${what} runs past the end of the file (${this.fileSize} bytes): truncated?`);
    if (this.pos + n > MAX_HEADER_BYTES) throw this.bad(`${what} would make the header larger than ${MAX_HEADER_BYTES} bytes`);
    if (this.pos + n > this.buf.length) throw new NeedMore();
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  /** A u64 that must be a count or size: refused past 2^53. */
  u64(what: string): number {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.bad(`${what} is ${v}, more than any file holds`);
    return Number(v);
  }
  string(what: string): string {
    const length = this.u64(`the length of ${what}`);
    this.need(length, `${what} (${length} bytes)`);
    const s = Buffer.from(this.buf.buffer, this.buf.byteOffset + this.pos, length).toString('utf8');
    this.pos += length;
    return s;
  }
  scalar(type: ValueType, what: string): GgufData {
    if (type === ValueType.STRING) return this.string(what);
    const size = VALUE_SIZES[type];
    if (size === undefined) throw this.bad(`${what} has value type ${type}, which GGUF does not define`);
    this.need(size, what);
    const v = this.view;
    const at = this.pos;
    this.pos += size;
    switch (type) {
      case ValueType.UINT8: return v.getUint8(at);
      case ValueType.INT8: return v.getInt8(at);
      case ValueType.BOOL: return v.getUint8(at) !== 0;
      case ValueType.UINT16: return v.getUint16(at, true);
      case ValueType.INT16: return v.getInt16(at, true);
      case ValueType.UINT32: return v.getUint32(at, true);
      case ValueType.INT32: return v.getInt32(at, true);
      case ValueType.FLOAT32: return v.getFloat32(at, true);
      case ValueType.FLOAT64: return v.getFloat64(at, true);
      default: {
        const big = type === ValueType.UINT64 ? v.getBigUint64(at, true) : v.getBigInt64(at, true);
        return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
    }
  }
  value(type: ValueType, what: string): GgufValue {
    if (type !== ValueType.ARRAY) return { type, value: this.scalar(type, what) };
    const itemType = this.u32(`the item type of ${what}`);
    const count = this.u64(`the length of ${what}`);
    // Every item takes at least a byte (a string its 8-byte length): check the claim before looping.
    const least = itemType === ValueType.STRING || itemType === ValueType.ARRAY ? 8 : (VALUE_SIZES[itemType as ValueType] ?? 1);
    this.need(count * least, `${what} (${count} items)`);
    const items: GgufData[] = [];
    for (let i = 0; i < count; i++) items.push(this.value(itemType, `${what}[${i}]`).value);
    return { type, itemType, value: items };
  }
}

interface RawInfo {
  name: string;
  dims: number[];
  typeId: number;
  offset: number;
}

function parseHeader(buf: Uint8Array, fileSize: number, path: string) {
  const bad = (message: string) => new ToolError(`${path}: not a valid GGUF file: ${message}`);
  const c = new Cursor(buf, fileSize, bad);
  if (fileSize < 4 || c.u32('the magic') !== GGUF_MAGIC) throw new ToolError(`${path}: not a GGUF file (it does not start with "GGUF")`);
  const version = c.u32('the version');
  if (version !== 2 && version !== GGUF_VERSION) {
    const swapped = ((version & 0xff) << 24) | ((version & 0xff00) << 8) | ((version >>> 8) & 0xff00) | (version >>> 24);
    const hint = version === 1 ? ' (GGUF v1, which llama.cpp no longer reads either)' : swapped === 2 || swapped === 3 ? ' (a big-endian GGUF?)' : '';
    throw new ToolError(`${path}: GGUF version ${version}${hint}; versions 2 and 3 are supported`);
  }
  const tensorCount = c.u64('the tensor count');
  const kvCount = c.u64('the metadata count');
  // A key takes at least 12 bytes, a tensor info at least 24: claims beyond the file are damage.
  c.need(kvCount * 12 + tensorCount * 24, `${kvCount} metadata entries and ${tensorCount} tensor infos`);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key #${i}`);
    if (metadata.has(key)) throw bad(`metadata key ${key} appears twice`);
    metadata.set(key, c.value(c.u32(`the type of ${key}`), key));
  }
  const infos: RawInfo[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`tensor name #${i}`);
    const nDims = c.u32(`the dimension count of ${name}`);
    if (nDims < 1 || nDims > 4) throw bad(`tensor ${name} has ${nDims} dimensions (ggml allows 1 to 4)`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(c.u64(`dimension ${d} of ${name}`));
    infos.push({ name, dims, typeId: c.u32(`the type of ${name}`), offset: c.u64(`the offset of ${name}`) });
  }
  return { version, metadata, infos, headerEnd: c.pos };
}

/** The general.alignment a file declares (a u32 power of two), else 32. */
function alignmentOf(metadata: Map<string, GgufValue>, path: string): number {
  const a = metadata.get('general.alignment');
  if (a === undefined) return GGUF_DEFAULT_ALIGNMENT;
  const v = a.value;
  if (a.type !== ValueType.UINT32 || typeof v !== 'number' || v === 0 || (v & (v - 1)) !== 0) {
    throw new ToolError(`${path}: not a valid GGUF file: general.alignment is ${String(v)}, not a u32 power of two`);
  }
  return v;
}

async function readExactly(handle: FileHandle, bytes: Uint8Array, position: number, path: string, what: string): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesRead } = await handle.read(bytes, done, Math.min(bytes.length - done, 1 << 30), position + done);
    if (bytesRead === 0) throw new ToolError(`${path}: ${what} is cut short: truncated file?`);
    done += bytesRead;
  }
}

function toFloat32(bytes: Uint8Array, type: GgmlType, count: number): Float32Array {
  if (type === 'Q8_0') return dequantizeQ8_0(bytes, count);
  return storageToFloat32(bytes, type);
}

/** Opens a GGUF file: its header parsed and checked (every tensor inside the file), tensors read on demand. */
export async function openGguf(path: string): Promise<GgufFile> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
    const size = (await handle.stat()).size;
    let header: ReturnType<typeof parseHeader> | undefined;
    // Most headers fit the first read; a bigger one (a large vocabulary) is read again, larger.
    for (let chunk = Math.min(size, 4 << 20); !header; chunk = Math.min(size, chunk * 4, MAX_HEADER_BYTES)) {
      const buf = new Uint8Array(chunk);
      await readExactly(handle, buf, 0, path, 'the header');
      try {
        header = parseHeader(buf, size, path);
      } catch (err) {
        if (!(err instanceof NeedMore)) throw err;
      }
    }
    const alignment = alignmentOf(header.metadata, path);
    const dataOffset = Math.ceil(header.headerEnd / alignment) * alignment;
    const file = handle;
    const tensors = new Map<string, GgufTensor>();
    for (const info of header.infos) tensors.set(info.name, tensorOf(info, { path, size, alignment, dataOffset, file, tensors }));
    return { path, version: header.version, metadata: header.metadata, tensors, alignment, dataOffset, close: () => file.close() };
  } catch (err) {
    await handle?.close();
    throw fsError(err, path);
  }
}

function tensorOf(info: RawInfo, at: { path: string; size: number; alignment: number; dataOffset: number; file: FileHandle; tensors: Map<string, GgufTensor> }): GgufTensor {
  const { path, file } = at;
  const bad = (message: string) => new ToolError(`${path}: not a valid GGUF file: tensor ${info.name} ${message}`);
  if (at.tensors.has(info.name)) throw new ToolError(`${path}: not a valid GGUF file: tensor ${info.name} appears twice`);
  const type = typeById.get(info.typeId);
  if (!type) {
    const known = OTHER_GGML_TYPES[info.typeId];
    throw new ToolError(`${path}: tensor ${info.name} has ggml type ${known ?? 'unknown'} (${info.typeId}); this toolchain reads ${Object.keys(GGML_TYPES).join(', ')}`);
  }
  const count = info.dims.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(count)) throw bad(`claims ${info.dims.join(' × ')} values`);
  const { block } = GGML_TYPES[type];
  if (info.dims[0] % block !== 0) throw bad(`is ${type} but its rows of ${info.dims[0]} are not whole blocks of ${block}`);
  if (info.offset % at.alignment !== 0) throw bad(`starts at data offset ${info.offset}, not a multiple of the alignment ${at.alignment}`);
  const offset = at.dataOffset + info.offset;
  const byteLength = tensorBytes(type, count);
  if (offset + byteLength > at.size) throw bad(`(${byteLength} bytes at ${offset}) lies outside the file (${at.size} bytes): truncated?`);
  const read = async () => {
    const bytes = new Uint8Array(byteLength);
    await readExactly(file, bytes, offset, path, `tensor ${info.name}`);
    return bytes;
  };
  return {
    name: info.name,
    type,
    shape: [...info.dims].reverse(),
    offset,
    byteLength,
    read,
    toFloat32: async () => toFloat32(await read(), type, count),
  };
}

/** A metadata value that must be there with one of the given types; `where` is the file. */
export function metaValue(metadata: Map<string, GgufValue>, key: string, types: readonly ValueType[], where: string): GgufData {
  const v = metadata.get(key);
  if (v === undefined) throw new ToolError(`${where}: GGUF metadata ${key} is missing`);
  if (!types.includes(v.type)) throw new ToolError(`${where}: GGUF metadata ${key} has type ${ValueType[v.type]}, expected ${types.map((t) => ValueType[t]).join(' or ')}`);
  return v.value;
}
