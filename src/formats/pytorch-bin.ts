/**
 * Reads PyTorch `pytorch_model.bin` state dicts in pure TypeScript, safely: the pickle goes
 * through a restricted unpickler that refuses every global a state dict does not need, so a
 * malicious checkpoint is an error, never code that runs.
 *
 * Both formats torch.save writes:
 * - zip (torch ≥ 1.6): `<root>/data.pkl` plus one `<root>/data/<key>` record per storage;
 * - legacy (the original `gpt2` weights): pickles for the magic number, protocol version,
 *   sys_info, the state dict and the storage keys, then each storage's bytes after an 8-byte
 *   little-endian element count, in key order.
 *
 * Storages are read one at a time straight into their typed arrays (a 6 GB checkpoint never sits
 * in memory twice); a float32 tensor that covers its storage contiguously is a view of it.
 */
import { ToolError } from '../util/errors.js';
import { RandomAccessFile } from '../util/random-access-file.js';
import { ZipArchive } from '../util/zip.js';
import { PickleTruncated, PyDict, unpickle } from './pickle.js';
import { collectTensors, plainDataHooks, stateDictHooks, type RootStorage, type TensorRef } from './state-dict-pickle.js';
import { HOST_IS_LITTLE_ENDIAN, storageToFloat32, type SourceDtype } from './dtypes.js';
import { LEGACY_MAGIC, SIGNATURE_BYTES, sniffFormat } from './weights-file.js';

export type { SourceDtype } from './dtypes.js';

export interface LoadedTensor {
  shape: number[];
  /** The element type in the file; `data` is always float32. */
  dtype: SourceDtype;
  /**
   * Contiguous, row-major. Tensors that share a storage (tied weights, slices of one buffer) may
   * share memory: copy before writing into one.
   */
  data: Float32Array;
}

export interface ReadPytorchBinOptions {
  /** Called as storage bytes are read: before the first, after each chunk, and at the end. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

/** 0x1950a86a20f9469cfc6c, torch's legacy magic number (LEGACY_MAGIC is how it is pickled). */
const LEGACY_MAGIC_VALUE = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;
/** Tensors are materialised as one Float32Array. */
const MAX_ELEMENTS = 2 ** 31 - 1;

export async function readPytorchBin(path: string, options: ReadPytorchBinOptions = {}): Promise<Map<string, LoadedTensor>> {
  return withCheckpoint(path, async (file, format) => {
    if (format === 'zip') return (await readZipPickle(file)).load((value) => collectTensors(path, value), options);
    return readLegacyCheckpoint(file, options);
  });
}

/** A zip checkpoint's unpickled object (PyDicts, arrays, numbers, strings, TensorRefs) before any storage is read. */
export interface TorchPickle {
  value: unknown;
  /** Reads the storages of the tensors `select` picks from the value (only those) and gives the tensors. */
  load(select: (value: unknown) => Array<[string, TensorRef]>, options?: ReadPytorchBinOptions): Promise<Map<string, LoadedTensor>>;
}

/**
 * The object a torch.save zip archive holds, as `use` sees it: for checkpoints that wrap a state
 * dict with other things (nanoGPT's ckpt.pt: model, optimizer state, settings), so that only the
 * tensors wanted are read. Legacy (non-zip) files are refused: torch has written zip since 1.6.
 */
export async function readTorchPickle<T>(path: string, use: (pickle: TorchPickle) => Promise<T>): Promise<T> {
  return withCheckpoint(path, async (file, format) => {
    if (format !== 'zip') throw new ToolError(`${path}: a legacy (pre-zip) torch.save file; only a zip checkpoint (torch >= 1.6) holds this kind of checkpoint`);
    return use(await readZipPickle(file));
  });
}

/** Opens `path`, sniffs it as a PyTorch checkpoint and runs `read`; every failure becomes a one-line ToolError naming the file. */
async function withCheckpoint<T>(path: string, read: (file: RandomAccessFile, format: 'zip' | 'torch-legacy') => Promise<T>): Promise<T> {
  if (!HOST_IS_LITTLE_ENDIAN) throw new ToolError(`${path}: reading PyTorch checkpoints needs a little-endian machine`);
  const file = await RandomAccessFile.open(path);
  try {
    if (file.size === 0) throw new ToolError(`${path}: empty file, not a PyTorch checkpoint`);
    const head = await file.read(0, Math.min(file.size, SIGNATURE_BYTES), 'the file header');
    const format = sniffFormat(head, file.size);
    if (format === 'zip' || format === 'torch-legacy') return await read(file, format);
    const legacyStart = [0x80, 0x02, ...LEGACY_MAGIC, 0x2e];
    if (head.length < legacyStart.length && head.every((b, i) => b === legacyStart[i])) {
      throw new ToolError(`${path}: truncated file: it ends inside the header of a legacy torch.save checkpoint`);
    }
    throw new ToolError(`${path}: not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file)`);
  } catch (err) {
    // Names in messages come from the file: escape control characters so the error stays one line.
    const oneLine = (m: string) => m.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
    if (err instanceof ToolError) {
      if (!/[\x00-\x1f\x7f]/.test(err.message)) throw err;
      throw new ToolError(oneLine(err.message), { exitCode: err.exitCode, cause: err });
    }
    // A case the checks above missed must still be one line naming the file, never a crash.
    throw new ToolError(`${path}: damaged checkpoint (${oneLine(String((err as Error | undefined)?.message ?? err))})`, { cause: err });
  } finally {
    await file.close();
  }
}

/** Sums storage bytes for the progress callback and reports them as they arrive. */
function progressOf(roots: Iterable<RootStorage>, options: ReadPytorchBinOptions) {
  let total = 0;
  for (const r of roots) total += r.numel * r.type.bytes;
  let done = 0;
  options.onProgress?.(0, total);
  return (bytes: number) => {
    done = Math.min(total, done + bytes);
    options.onProgress?.(done, total);
  };
}

async function readZipPickle(file: RandomAccessFile): Promise<TorchPickle> {
  const { path } = file;
  const zip = await ZipArchive.open(file);
  // The root folder varies (`archive/`, the file's stem, …): find data.pkl at depth one.
  const pickleEntry = [...zip.entries.values()].find((e) => /^([^/]+\/)?data\.pkl$/.test(e.name));
  if (!pickleEntry) throw new ToolError(`${path}: not a PyTorch checkpoint (a zip archive without data.pkl)`);
  const root = pickleEntry.name.slice(0, -'data.pkl'.length);

  const byteorder = zip.entries.get(`${root}byteorder`);
  if (byteorder) {
    const order = Buffer.from(await zip.read(byteorder)).toString('latin1').trim();
    if (order === 'big') throw new ToolError(`${path}: saved on a big-endian machine (${root}byteorder says "big"); only little-endian checkpoints are supported`);
    if (order !== 'little') throw new ToolError(`${path}: damaged checkpoint: ${root}byteorder says "${order.slice(0, 20)}"`);
  }

  const { hooks } = stateDictHooks(path);
  const pickle = await zip.read(pickleEntry);
  const { value } = unpickle(pickle, hooks, { path, member: pickleEntry.name });

  const load = async (select: (value: unknown) => Array<[string, TensorRef]>, options: ReadPytorchBinOptions = {}) => {
    const tensors = select(value);
    const used = new Set(tensors.map(([, t]) => t.storage.root));
    const onChunk = progressOf(used, options);
    for (const storage of used) {
      if (storage.data) continue;
      const name = `${root}data/${storage.key}`;
      const entry = zip.entries.get(name);
      if (!entry) throw new ToolError(`${path}: storage ${storage.key} is referenced but missing: the archive has no ${name}`);
      const bytes = storage.numel * storage.type.bytes;
      if (entry.size !== bytes) {
        throw new ToolError(`${path}: damaged checkpoint: ${name} holds ${entry.size} bytes, but its ${storage.numel} ${storage.type.name} elements take ${bytes}`);
      }
      const target = new Uint8Array(bytes); // fresh memory: aligned for any element type
      await zip.read(entry, target, onChunk);
      storage.data = storageToFloat32(target, storage.type.dtype);
    }
    return materializeAll(path, tensors);
  };
  return { value, load };
}

interface LegacyHead {
  tensors: Array<[string, TensorRef]>;
  roots: Map<string, RootStorage>;
  keys: string[];
  /** Where the storages' bytes begin. */
  end: number;
}

async function readLegacyCheckpoint(file: RandomAccessFile, options: ReadPytorchBinOptions): Promise<Map<string, LoadedTensor>> {
  const { path } = file;
  // The pickles' length is known only by parsing them: read a piece of the file and grow it
  // until all five fit (they are small next to the storages that follow).
  let length = Math.min(file.size, 1 << 20);
  let head: LegacyHead;
  for (;;) {
    const bytes = await file.read(0, length, 'the pickles');
    try {
      head = parseLegacyHead(path, bytes);
      break;
    } catch (err) {
      if (!(err instanceof PickleTruncated) || length === file.size) throw err;
      length = Math.min(file.size, length * 4);
    }
  }
  const { tensors, roots, keys } = head;
  let pos = head.end;
  const keySet = new Set(keys);
  for (const storage of roots.values()) {
    if (!keySet.has(storage.key)) throw new ToolError(`${path}: storage ${storage.key} is referenced but missing from the checkpoint's storage list`);
  }
  const listed = keys.map((key) => roots.get(key) ?? missingRoot(path, key));
  const onChunk = progressOf(listed, options);
  for (const storage of listed) {
    const count = (await file.read(pos, 8, `the size of storage ${storage.key}`)).readBigInt64LE(0);
    if (count !== BigInt(storage.numel)) {
      throw new ToolError(`${path}: damaged checkpoint: storage ${storage.key} has ${count} elements at byte ${pos}, expected ${storage.numel}`);
    }
    pos += 8;
    file.check(pos, storage.numel * storage.type.bytes, `storage ${storage.key}`); // before allocating
    const target = new Uint8Array(storage.numel * storage.type.bytes);
    await file.readInto(pos, target, `storage ${storage.key}`, onChunk);
    storage.data = storageToFloat32(target, storage.type.dtype);
    pos += target.length;
  }
  return materializeAll(path, tensors);
}

function missingRoot(path: string, key: string): never {
  throw new ToolError(`${path}: damaged checkpoint: the storage list names ${key}, which no tensor uses`);
}

function parseLegacyHead(path: string, bytes: Uint8Array): LegacyHead {
  const plain = plainDataHooks(path);
  const src = { path };
  const magic = unpickle(bytes, plain, src, 0);
  if (magic.value !== LEGACY_MAGIC_VALUE) throw new ToolError(`${path}: not a PyTorch checkpoint (wrong legacy magic number)`);
  const version = unpickle(bytes, plain, src, magic.end);
  if (version.value !== LEGACY_PROTOCOL_VERSION) {
    throw new ToolError(`${path}: unsupported legacy checkpoint protocol version ${String(version.value)} (expected ${LEGACY_PROTOCOL_VERSION})`);
  }
  const sysInfo = unpickle(bytes, plain, src, version.end);
  if (sysInfo.value instanceof PyDict && sysInfo.value.map.get('little_endian') === false) {
    throw new ToolError(`${path}: saved on a big-endian machine; only little-endian checkpoints are supported`);
  }
  const { hooks, roots } = stateDictHooks(path);
  const state = unpickle(bytes, hooks, src, sysInfo.end);
  const tensors = collectTensors(path, state.value);
  const keys = unpickle(bytes, plain, src, state.end);
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === 'string')) {
    throw new ToolError(`${path}: damaged checkpoint: the storage key list is not a list of strings`);
  }
  return { tensors, roots, keys: keys.value as string[], end: keys.end };
}

function materializeAll(path: string, tensors: Array<[string, TensorRef]>): Map<string, LoadedTensor> {
  const out = new Map<string, LoadedTensor>();
  for (const [name, t] of tensors) {
    out.set(name, { shape: [...t.shape], dtype: t.storage.root.type.dtype, data: materialize(path, name, t) });
  }
  return out;
}

/** The tensor's elements in row-major order: a view when they lie contiguously, else a gathered copy. */
function materialize(path: string, name: string, t: TensorRef): Float32Array {
  const { shape, stride } = t;
  let numel = 1;
  for (const n of shape) numel *= n;
  if (numel > MAX_ELEMENTS) throw new ToolError(`${path}: tensor ${name} has ${numel} elements, more than the ${MAX_ELEMENTS} supported`);
  if (numel === 0) return new Float32Array(0);
  let last = t.offset;
  for (let d = 0; d < shape.length; d++) last += (shape[d] - 1) * stride[d];
  if (last >= t.storage.numel) {
    throw new ToolError(`${path}: tensor ${name} reads past its storage: it needs element ${last} of storage ${t.storage.root.key}, which has ${t.storage.numel}`);
  }
  const data = t.storage.root.data!;
  const base = t.storage.offset + t.offset;
  let contiguous = true;
  for (let d = shape.length - 1, expect = 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expect) contiguous = false;
    expect *= shape[d];
  }
  if (contiguous) return data.subarray(base, base + numel);

  // Gather: walk the indices like an odometer, the innermost dimension in a tight loop.
  const out = new Float32Array(numel);
  const rank = shape.length;
  const inner = shape[rank - 1];
  const innerStride = stride[rank - 1];
  const index = new Array<number>(rank).fill(0);
  let src = base;
  for (let o = 0; o < numel; o += inner) {
    for (let i = 0, s = src; i < inner; i++, s += innerStride) out[o + i] = data[s];
    for (let d = rank - 2; d >= 0; d--) {
      if (++index[d] < shape[d]) {
        src += stride[d];
        break;
      }
      index[d] = 0;
      src -= (shape[d] - 1) * stride[d];
    }
  }
  return out;
}
