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

/** A tensor's place in the file, from a validated header. */
export interface TensorEntry {
  name: string;
  dtype: StoredDtype;
  shape: number[];
  /** Absolute byte offset in the file. */
  offset: number;
  count: number;
}

/**
 * Validates the header in `head` (at least the first 8 + header-length bytes of a file of
 * fileSize bytes): size limit, JSON, known dtypes, offsets inside the file, byte counts that match
 * the shapes, no overlaps.
 */
export function parseHeader(head: Uint8Array, fileSize: number, where: string): { entries: TensorEntry[]; metadata: Record<string, string>; headerBytes: number } {
  const fail = (what: string) => new ToolError(`${where}: ${what}`);
  if (fileSize < 8 || head.length < 8) throw fail(`too short for a safetensors file (${fileSize} bytes)`);
  const headerLength = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES) throw fail(`header length ${headerLength} is absurd (limit ${MAX_HEADER_BYTES}); not a safetensors file?`);
  if (8 + headerLength > fileSize) throw fail(`header length ${headerLength} runs past the end of the file (${fileSize} bytes): truncated?`);
  if (8 + headerLength > head.length) return { entries: [], metadata: {}, headerBytes: 8 + headerLength }; // caller reads more
  const text = Buffer.from(head.buffer, head.byteOffset + 8, headerLength).toString('utf8');
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw fail(`header is not valid JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw fail('header is not a JSON object');
  // JSON.parse keeps the last of repeated keys; which tensor a file means must not be a guess.
  const repeated = repeatedKey(text);
  if (repeated) {
    const [name, ...inner] = repeated;
    const what = name === '__metadata__' ? name : `tensor ${name}`;
    throw fail(inner.length === 0 ? `${what} appears twice in the header` : `${what}: key ${inner.join('.')} appears twice in the header`);
  }
  const dataStart = 8 + headerLength;
  const dataLength = fileSize - dataStart;
  const entries: TensorEntry[] = [];
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
    entries.push({ name, dtype, shape: shape as number[], offset: dataStart + begin, count });
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let k = 1; k < spans.length; k++) {
    if (spans[k][0] < spans[k - 1][1]) throw fail(`tensors ${spans[k - 1][2]} and ${spans[k][2]} overlap in the data section`);
  }
  return { entries, metadata, headerBytes: dataStart };
}

/**
 * The path of the first key that repeats within one object of `json` (valid JSON: JSON.parse has
 * accepted it), e.g. ["a"] for {"a": 1, "a": 2}; undefined when none does.
 */
export function repeatedKey(json: string): string[] | undefined {
  // One frame per open object or array: the keys seen so far (objects) and the key that opened it.
  const frames: { keys?: Set<string>; name?: string; last?: string }[] = [];
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let end = i + 1;
      while (json[end] !== '"') end += json[end] === '\\' ? 2 : 1;
      let next = end + 1;
      while (json[next] === ' ' || json[next] === '\t' || json[next] === '\n' || json[next] === '\r') next++;
      if (json[next] === ':') {
        const frame = frames[frames.length - 1];
        const key = JSON.parse(json.slice(i, end + 1)) as string; // escapes decoded: "\u0061" is "a"
        if (frame.keys!.has(key)) return [...frames.slice(1).map((f) => f.name ?? '[]'), key];
        frame.keys!.add(key);
        frame.last = key;
      }
      i = end;
    } else if (c === '{' || c === '[') {
      frames.push({ keys: c === '{' ? new Set() : undefined, name: frames[frames.length - 1]?.last });
    } else if (c === '}' || c === ']') {
      frames.pop();
    }
  }
  return undefined;
}

export function parseSafetensors(buf: Uint8Array, where: string): SafetensorsFile {
  const { entries, metadata } = parseHeader(buf, buf.length, where);
  const tensors = new Map<string, Tensor32>();
  for (const e of entries) tensors.set(e.name, { shape: e.shape, dtype: e.dtype, data: decode(buf, e.offset, e.count, e.dtype) });
  return { tensors, metadata };
}

/** A tensor whose values are read from disk when asked for. */
export interface LazyTensor {
  shape: number[];
  dtype: StoredDtype;
  read(): Promise<Float32Array>;
  /** Reads the values into dest (F32 files straight from disk into it). */
  readInto(dest: Float32Array): Promise<void>;
}

/**
 * The tensors of a safetensors file, read one at a time on demand: loading a model this way never
 * holds the whole file in memory next to the model's own copy of the weights.
 */
export async function openSafetensors(path: string): Promise<{ tensors: Map<string, LazyTensor>; metadata: Record<string, string>; close(): Promise<void> }> {
  let file;
  try {
    file = await open(path, 'r');
    const size = (await file.stat()).size;
    const first = Buffer.alloc(Math.min(size, 8));
    await file.read(first, 0, first.length, 0);
    let head = parseHeader(first, size, path);
    const all = Buffer.alloc(head.headerBytes);
    await file.read(all, 0, all.length, 0);
    head = parseHeader(all, size, path);
    const handle = file;
    const tensors = new Map<string, LazyTensor>();
    for (const e of head.entries) {
      tensors.set(e.name, {
        shape: e.shape,
        dtype: e.dtype,
        async read() {
          const out = new Float32Array(e.count);
          await this.readInto(out);
          return out;
        },
        async readInto(dest: Float32Array) {
          if (dest.length !== e.count) throw new Error(`tensor ${e.name}: ${dest.length} slots for ${e.count} values`);
          const direct = e.dtype === 'F32';
          const bytes = direct ? new Uint8Array(dest.buffer, dest.byteOffset, dest.byteLength) : new Uint8Array(e.count * DTYPE_BYTES[e.dtype]);
          // One tensor can exceed what a single read returns (2 GiB): read until done.
          for (let done = 0; done < bytes.length; ) {
            const { bytesRead } = await handle.read(bytes, done, Math.min(bytes.length - done, 1 << 30), e.offset + done);
            if (bytesRead === 0) throw new ToolError(`${path}: tensor ${e.name} is cut short: truncated file?`);
            done += bytesRead;
          }
          if (!direct) dest.set(storageToFloat32(bytes, e.dtype));
        },
      });
    }
    return { tensors, metadata: head.metadata, close: () => handle.close() };
  } catch (err) {
    await file?.close();
    throw fsError(err, path);
  }
}

/** A tensor's bytes as float32; a view (no copy) for aligned F32, as loading weights is mostly that. */
function decode(buf: Uint8Array, offset: number, count: number, dtype: StoredDtype): Float32Array {
  const size = DTYPE_BYTES[dtype];
  const bytes = buf.subarray(offset, offset + count * size);
  // A header length that is not a multiple of the element size misaligns the data: copy it
  // (new Uint8Array copies; Buffer's slice() would be another misaligned view).
  return storageToFloat32(bytes.byteOffset % size === 0 ? bytes : new Uint8Array(bytes), dtype);
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
    // writeFile (at the current position) retries short writes, so a full disk is ENOSPC; write()
    // would return a short count that is easy to miss.
    await file.writeFile(headerFor(tensors, options));
    for (const t of tensors) await file.writeFile(bytesOf(t, options.dtype ?? 'F32'));
    await file.sync();
  } catch (err) {
    throw fsError(err, path);
  } finally {
    await file?.close();
  }
}
