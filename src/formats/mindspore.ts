/**
 * MindSpore checkpoints (.ckpt), read and written as mindspore.save_checkpoint / load_checkpoint do
 * (mindspore/python/mindspore/train/serialization.py), with protobufjs and MindSpore's own
 * checkpoint.proto:
 *  - a file is one Checkpoint message; save_checkpoint appends one serialised Checkpoint per
 *    parameter, which concatenate into one (its only field, `value`, is repeated);
 *  - tensor_type is str(mstype) ("Float32", "Float16", "BFloat16", "Int64", "Bool", "str", …),
 *    tensor_content the raw little-endian elements, dims the full shape; a scalar has dims [0];
 *  - a parameter over 512 MB is cut along its first axis (np.array_split) into slices that follow
 *    each other under the same tag, each with the full dims; load_checkpoint joins them;
 *  - with crc_check the file ends with "crc_num" and the CRC-32 of the rest (10 bytes, big-endian);
 *  - an encrypted file (enc_key) starts with a little-endian magic number and is refused.
 *
 * Memory: the file is read one value (one parameter, or one slice of ≤ 512 MB) at a time, so
 * reading holds the float32 tensors plus the largest value (wte: 154 MB for GPT-2 124M), and
 * gpt2-xl's 6.2 GB file never has to fit one buffer (fs.readFile stops at 2 GiB). Every length is
 * checked against what is left of the file before anything is allocated for it. Measured on GPT-2
 * 124M (498 MB .ckpt, 2 cores): convert-weights .ckpt → HF 4.5 s, peak RSS 775 MB (HF → HF: 5.5 s,
 * 543 MB); HF → .ckpt 12 s, 1.09 GB, as protobufjs copies each value while encoding it (1.65 s of
 * the 12 for 500 MB) and the encoded value is written whole.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import type * as Protobuf from 'protobufjs';
import { fsError, ToolError } from '../util/errors.js';
import { openOutput } from '../util/output.js';
import { encodeF16, HOST_IS_LITTLE_ENDIAN, storageToFloat32, type SourceDtype } from './dtypes.js';
import type { Tensor32, TensorToWrite } from './safetensors.js';

/**
 * mindspore/ccsrc/utils/checkpoint.proto of mindspore-ai/mindspore (2.x, commit 7836767c; Apache-2.0,
 * Huawei). 1.x files have `required TensorProto tensor = 2` instead of the oneof: the same bytes.
 */
const CHECKPOINT_PROTO = `
syntax = "proto2";
message Checkpoint {
  message Value {
    required string tag = 1;
    oneof value {
      TensorProto tensor = 2;
      MapTensorProto maptensor = 3;
    }
  }
  repeated Value value = 1;
}
message TensorProto {
  repeated int64 dims = 1;
  required string tensor_type = 2;
  required bytes tensor_content = 3;
}
message MapTensorProto {
  repeated TensorProto tensor = 1;
}`;

interface Types {
  pb: typeof Protobuf.default;
  checkpoint: Protobuf.Type;
  value: Protobuf.Type;
}
let types: Promise<Types> | undefined;

/** protobufjs and the message types, on first use: ~60 ms that tools which never see a .ckpt do not pay. */
function loadTypes(): Promise<Types> {
  return (types ??= import('protobufjs').then(({ default: pb }) => {
    const root = pb.parse(CHECKPOINT_PROTO, { keepCase: true }).root;
    return { pb, checkpoint: root.lookupType('Checkpoint'), value: root.lookupType('Checkpoint.Value') };
  }));
}

interface TensorMessage {
  dims: (number | Protobuf.Long)[];
  tensor_type: string;
  tensor_content: Uint8Array;
}
interface ValueMessage {
  tag: string;
  tensor?: TensorMessage;
  maptensor?: unknown;
}

/**
 * Every tensor_type load_checkpoint knows (its tensor_to_np_type, plus BFloat16 of 2.x), with our
 * element type; those without one (unsigned wider than a byte, strings) are never GPT-2 weights and
 * are skipped, not converted.
 */
const TENSOR_TYPES: Record<string, { dtype?: SourceDtype; bytes: number }> = {
  Float32: { dtype: 'F32', bytes: 4 },
  Float16: { dtype: 'F16', bytes: 2 },
  BFloat16: { dtype: 'BF16', bytes: 2 },
  Float64: { dtype: 'F64', bytes: 8 },
  Int64: { dtype: 'I64', bytes: 8 },
  Int32: { dtype: 'I32', bytes: 4 },
  Int16: { dtype: 'I16', bytes: 2 },
  Int8: { dtype: 'I8', bytes: 1 },
  UInt8: { dtype: 'U8', bytes: 1 },
  Bool: { dtype: 'BOOL', bytes: 1 },
  UInt16: { bytes: 2 },
  UInt32: { bytes: 4 },
  UInt64: { bytes: 8 },
  str: { bytes: 4 }, // numpy's UTF-32 strings
};

/** crypto.h: GCM_MAGIC_NUM and CBC_MAGIC_NUM, the first 4 bytes (little-endian) of an encrypted file. */
export const CIPHER_MAGICS = [0x7f3a5ed8, 0x7f3a5ed9];
export const isEncryptedCheckpoint = (head: Uint8Array) =>
  head.length >= 4 && CIPHER_MAGICS.includes(new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true));

const CRC_MARK = 'crc_num';
const CRC_TRAILER_BYTES = CRC_MARK.length + 10;
/** Field 1 (value), wire type 2 (length-delimited): the key every entry of the file starts with. */
const VALUE_KEY = 0x0a;
/** A key and a varint length take at most 5 + 10 bytes. */
const FRAME_HEAD_BYTES = 15;
/** serialization.py's SLICE_SIZE: parameters larger than this are written in slices. */
export const SLICE_BYTES = 512 * 1024 * 1024;

/** The varint at head[pos] and the position after it; undefined past head's end or 7 bytes. */
function varint(head: Uint8Array, pos: number): [number, number] | undefined {
  let value = 0;
  for (let i = 0; i < 7 && pos + i < head.length; i++) {
    value += (head[pos + i] & 0x7f) * 2 ** (7 * i);
    if (head[pos + i] < 0x80) return [value, pos + i + 1];
  }
  return undefined;
}

/**
 * True if `head` (a file's first bytes) starts like a checkpoint: a value (key 0x0a: field 1,
 * length-delimited) whose length fits the file, opening with the key of one of Value's fields. A
 * signature only (MindSpore files have no magic number); protobufjs parses the file.
 */
export function looksLikeCheckpoint(head: Uint8Array, size: number): boolean {
  if (head[0] !== VALUE_KEY) return false;
  const length = varint(head, 1);
  if (!length || length[0] < 2 || length[1] + length[0] > size) return false;
  const inner = head[length[1]];
  const innerLength = varint(head, length[1] + 1);
  return [0x0a, 0x12, 0x1a].includes(inner) && !!innerLength && innerLength[0] <= length[0];
}

export interface MindsporeCheckpoint {
  /** Numeric tensors by tag, as float32, in file order. */
  tensors: Map<string, Tensor32>;
  /** Entries that are not numeric tensors (strings, MapTensors, wide unsigned types), described. */
  skipped: string[];
}

/** The tensor being gathered from one or more consecutive values with the same tag. */
interface Pending {
  tag: string;
  type: string;
  dims: number[];
  /** Undefined: an entry that is skipped. */
  dtype?: SourceDtype;
  bytes: Uint8Array;
  filled: number;
}

async function readAt(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await file.read(buf, 0, length, position);
  return buf.subarray(0, bytesRead);
}

export async function readMindsporeCheckpoint(path: string, onProgress?: (done: number, total: number) => void): Promise<MindsporeCheckpoint> {
  if (!HOST_IS_LITTLE_ENDIAN) throw new ToolError(`${path}: reading MindSpore checkpoints needs a little-endian machine`);
  let file: FileHandle | undefined;
  try {
    file = await open(path, 'r');
    return await readFrom(file, (await file.stat()).size, path, onProgress);
  } catch (err) {
    throw fsError(err, path);
  } finally {
    await file?.close();
  }
}

async function readFrom(file: FileHandle, size: number, path: string, onProgress?: (done: number, total: number) => void): Promise<MindsporeCheckpoint> {
  const { pb, value: ValueType } = await loadTypes();
  const toNumber = (v: number | Protobuf.Long) => (typeof v === 'number' ? v : pb.util.LongBits.from(v).toNumber());
  if (isEncryptedCheckpoint(await readAt(file, 0, 4))) {
    throw new ToolError(`${path}: an encrypted MindSpore checkpoint (save_checkpoint with enc_key); decrypt it with MindSpore (load_checkpoint with dec_key, save_checkpoint without) and convert that`);
  }
  const trailer = size >= CRC_TRAILER_BYTES ? await readAt(file, size - CRC_TRAILER_BYTES, CRC_TRAILER_BYTES) : undefined;
  const hasCrc = trailer?.subarray(0, CRC_MARK.length).toString('latin1') === CRC_MARK;
  const end = hasCrc ? size - CRC_TRAILER_BYTES : size;
  const tensors = new Map<string, Tensor32>();
  const skipped: string[] = [];
  const seen = new Set<string>();
  let pending: Pending | undefined;
  let crc = 0;
  let entry = 0;

  const finish = (p: Pending) => {
    if (!p.dtype) return; // skipped
    const scalar = p.dims.length === 1 && p.dims[0] === 0;
    if (p.filled !== p.bytes.length && !(scalar && p.filled === 0)) {
      throw new ToolError(`${path}: tensor ${p.tag}: dims [${p.dims.join(', ')}] of ${p.type} take ${p.bytes.length} bytes, its tensor_content has ${p.filled}`);
    }
    const shape = scalar ? (p.filled === 0 ? [0] : []) : p.dims;
    const bytes = p.bytes.subarray(0, p.filled);
    tensors.set(p.tag, { shape, data: storageToFloat32(bytes, p.dtype), dtype: p.dtype });
  };

  for (let pos = 0; pos < end; entry++) {
    const head = await readAt(file, pos, Math.min(FRAME_HEAD_BYTES, end - pos));
    const r = pb.Reader.create(head);
    let key: number;
    let length: number;
    try {
      key = r.uint32();
      length = key === VALUE_KEY ? toNumber(r.uint64()) : 0;
    } catch {
      throw new ToolError(`${path}: entry ${entry} at byte ${pos} is cut off by the end of the file: truncated`);
    }
    if (key !== VALUE_KEY) {
      throw new ToolError(`${path}: not a MindSpore checkpoint: field ${key >>> 3} (wire type ${key & 7}) at byte ${pos}, where a Checkpoint holds only values (field 1)`);
    }
    const start = pos + r.pos;
    if (length > end - start) {
      throw new ToolError(`${path}: entry ${entry} at byte ${pos} claims ${length} bytes, only ${end - start} follow: truncated, or not a MindSpore checkpoint`);
    }
    const bytes = await readAt(file, start, length);
    if (bytes.length < length) throw new ToolError(`${path}: the file shrank while it was read`);
    if (hasCrc) crc = crc32(bytes, crc32(head.subarray(0, r.pos), crc));
    let value: ValueMessage;
    try {
      value = ValueType.decode(bytes) as unknown as ValueMessage;
    } catch (err) {
      throw new ToolError(`${path}: entry ${entry} at byte ${pos} is not a Checkpoint.Value (${(err as Error).message})`);
    }
    pos = start + length;
    onProgress?.(pos, size);

    const t = value.tensor;
    if (pending && pending.tag === value.tag) {
      // The next slice of the same parameter: it must describe the same tensor.
      if (!t || t.tensor_type !== pending.type || t.dims.map(toNumber).join(',') !== pending.dims.join(',')) {
        throw new ToolError(`${path}: tensor ${value.tag}: its slices disagree on tensor_type or dims`);
      }
      if (!pending.dtype) continue; // a slice of a skipped entry
      if (pending.filled + t.tensor_content.length > pending.bytes.length) {
        throw new ToolError(`${path}: tensor ${value.tag}: dims [${pending.dims.join(', ')}] of ${pending.type} take ${pending.bytes.length} bytes, its slices hold more`);
      }
      pending.bytes.set(t.tensor_content, pending.filled);
      pending.filled += t.tensor_content.length;
      continue;
    }
    if (pending) finish(pending);
    pending = undefined;
    if (seen.has(value.tag)) throw new ToolError(`${path}: tensor ${value.tag} appears twice`);
    seen.add(value.tag);
    if (!t) {
      skipped.push(`${value.tag} (${value.maptensor ? 'a MapTensor' : 'no tensor'})`);
      continue;
    }
    const type = TENSOR_TYPES[t.tensor_type];
    if (!type) {
      throw new ToolError(`${path}: tensor ${value.tag} has tensor_type ${JSON.stringify(t.tensor_type)}, not one MindSpore writes (${Object.keys(TENSOR_TYPES).join(', ')})`);
    }
    const dims = t.dims.map(toNumber);
    if (dims.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new ToolError(`${path}: tensor ${value.tag} has dims [${dims.join(', ')}]`);
    if (!type.dtype) {
      skipped.push(`${value.tag} (${t.tensor_type})`);
      pending = { tag: value.tag, type: t.tensor_type, dims, bytes: new Uint8Array(0), filled: 0 }; // and its slices
      continue;
    }
    const scalar = dims.length === 1 && dims[0] === 0;
    const need = (scalar ? 1 : dims.reduce((a, b) => a * b, 1)) * type.bytes;
    if (need > size) {
      throw new ToolError(`${path}: tensor ${value.tag}: dims [${dims.join(', ')}] of ${t.tensor_type} take ${need} bytes, more than the whole file (${size})`);
    }
    pending = { tag: value.tag, type: t.tensor_type, dims, dtype: type.dtype, bytes: new Uint8Array(need), filled: 0 };
    if (t.tensor_content.length > need) {
      throw new ToolError(`${path}: tensor ${value.tag}: dims [${dims.join(', ')}] of ${t.tensor_type} take ${need} bytes, its tensor_content has ${t.tensor_content.length}`);
    }
    pending.bytes.set(t.tensor_content);
    pending.filled = t.tensor_content.length;
  }
  if (pending) finish(pending);
  if (hasCrc) {
    const stored = trailer!.subarray(CRC_MARK.length).reduce((acc, b) => acc * 256 + b, 0);
    if (stored !== crc) throw new ToolError(`${path}: CRC-32 ${crc.toString(16)} of the checkpoint does not match its crc_num trailer (${stored.toString(16)}): the file is damaged`);
  }
  return { tensors, skipped };
}

/**
 * The seed's convert_weight.py (MindFormers' GPT-2 converter) names each layer's parameters in this
 * order, then OUTER_NAMES; its save_checkpoint writes them so, and so do we.
 */
const LAYER_NAMES = [
  'layernorm1.gamma', 'layernorm1.beta', 'layernorm2.gamma', 'layernorm2.beta',
  'attention.projection.weight', 'attention.projection.bias',
  'attention.dense1.weight', 'attention.dense1.bias', 'attention.dense2.weight', 'attention.dense2.bias',
  'attention.dense3.weight', 'attention.dense3.bias',
  'output.mapping.weight', 'output.mapping.bias', 'output.projection.weight', 'output.projection.bias',
];
const OUTER_NAMES = [
  'backbone.layernorm.gamma', 'backbone.layernorm.beta',
  'backbone.embedding.word_embedding.embedding_table', 'backbone.embedding.position_embedding.embedding_table',
];

/** The MindFormers GPT-2 weights of an n_layer model, in convert_weight.py's order. */
export const mindformersWeightNames = (nLayer: number): string[] => [
  ...Array.from({ length: nLayer }, (_, i) => LAYER_NAMES.map((n) => `backbone.blocks.${i}.${n}`)).flat(),
  ...OUTER_NAMES,
];

export interface WriteCheckpointOptions {
  dtype: 'F32' | 'F16';
  /** Files this command reads: never written over. */
  inputs?: readonly string[];
  /** Tensors larger than this are written in slices: MindSpore's SLICE_BYTES unless a test says. */
  sliceBytes?: number;
}

/**
 * Byte ranges of the slices save_checkpoint cuts a tensor of `bytes` into: np.array_split along
 * the first axis into ceil(bytes / sliceBytes) parts, the first (rows % parts) one row longer.
 */
export function sliceRanges(shape: number[], bytes: number, sliceBytes = SLICE_BYTES): [number, number][] {
  const rows = shape[0] ?? 1;
  if (bytes <= sliceBytes || rows < 2) return [[0, bytes]];
  const parts = Math.min(Math.ceil(bytes / sliceBytes), rows);
  const rowBytes = bytes / rows;
  const ranges: [number, number][] = [];
  let row = 0;
  for (let p = 0; p < parts; p++) {
    const n = Math.floor(rows / parts) + (p < rows % parts ? 1 : 0);
    ranges.push([row * rowBytes, (row + n) * rowBytes]);
    row += n;
  }
  return ranges;
}

/** Writes `tensors` in the given order to `path` (staged beside it, renamed into place). */
export async function writeMindsporeCheckpoint(path: string, tensors: TensorToWrite[], options: WriteCheckpointOptions): Promise<void> {
  if (!HOST_IS_LITTLE_ENDIAN) throw new ToolError(`${path}: writing MindSpore checkpoints needs a little-endian machine`);
  const { checkpoint } = await loadTypes();
  const type = options.dtype === 'F16' ? 'Float16' : 'Float32';
  // One serialised Checkpoint per value, appended, as save_checkpoint writes them.
  const encode = (tag: string, dims: number[], content: Uint8Array) =>
    checkpoint.encode({ value: [{ tag, tensor: { dims, tensor_type: type, tensor_content: content } }] }).finish();
  const out = openOutput(path, { inputs: options.inputs });
  try {
    for (const t of tensors) {
      const content = options.dtype === 'F16' ? new Uint8Array(encodeF16(t.data).buffer) : new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      const dims = t.shape.length === 0 ? [0] : t.shape;
      for (const [from, to] of sliceRanges(t.shape, content.length, options.sliceBytes)) {
        await out.write(encode(t.name, dims, content.subarray(from, to)));
      }
    }
    await out.commit();
  } catch (err) {
    await out.abort();
    throw err;
  }
}

/** MindFormers-named tensors in convert_weight.py's order (names it does not know last). */
export function inConvertWeightOrder<T extends { name: string }>(tensors: T[], nLayer: number): T[] {
  const rank = new Map(mindformersWeightNames(nLayer).map((n, i) => [n, i]));
  const at = (name: string) => rank.get(name) ?? rank.size;
  return [...tensors].sort((a, b) => at(a.name) - at(b.name));
}
