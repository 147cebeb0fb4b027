/**
 * Writes what torch.save writes, for plain data and float32 tensors: a zip archive (stored, not
 * deflated) of `archive/data.pkl` (pickle protocol 2, the default torch.save uses), one
 * `archive/data/<key>` record per storage (aligned to 64 bytes as torch aligns them, so torch can
 * map them), `archive/version` and `archive/byteorder`. Storages are named by persistent ids
 * (`('storage', torch.FloatStorage, key, 'cpu', numel)`) and tensors rebuilt by
 * torch._utils._rebuild_tensor_v2 — the only two globals the pickle names besides
 * collections.OrderedDict, all three of which our restricted unpickler accepts.
 *
 * The output is deterministic (fixed timestamps, keys in first-use order), so a file checked by
 * nanoGPT's own code once can be recognised again by its hash. Archives past 4 GiB (gpt2-large
 * and up in float32) get zip64 records, as torch's writer (miniz) does.
 */
import { open, rename, rm } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { fsError, outOfSpace, ToolError } from '../util/errors.js';
import { tempPathFor } from '../util/staging.js';

/** A Python float (a JS number is written as an int when it is one). */
export class PyFloat {
  constructor(readonly value: number) {}
}
/** A Python tuple (arrays are lists). */
export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}
/** A collections.OrderedDict (a Map is a plain dict). */
export class PyOrderedDict {
  constructor(readonly entries: Array<[PyValue, PyValue]>) {}
}
/** A contiguous float32 tensor; tensors with the same `data` object share one storage (tied weights). */
export class TorchTensor {
  constructor(
    readonly data: Float32Array,
    readonly shape: number[],
  ) {}
}
export type PyValue = null | boolean | number | string | PyFloat | PyTuple | PyOrderedDict | TorchTensor | PyValue[] | Map<PyValue, PyValue>;

const ALIGN = 64;
const ZIP64_LIMIT = 0xffffffff;

/** Pickle protocol 2 bytes for `value`; storages are collected in first-use order. */
export function pickleTorch(value: PyValue): { pickle: Buffer; storages: Float32Array[] } {
  const out: Buffer[] = [];
  const storages = new Map<Float32Array, number>();
  const op = (...bytes: number[]) => out.push(Buffer.from(bytes));
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    out.push(b);
  };
  const global = (module: string, name: string) => out.push(Buffer.from(`c${module}\n${name}\n`, 'latin1'));
  const str = (s: string) => {
    const bytes = Buffer.from(s, 'utf8');
    op(0x58); // BINUNICODE
    u32(bytes.length);
    out.push(bytes);
  };
  // What a GPT-2 checkpoint holds: counts, sizes and indices, all below 2^31.
  const int = (n: number) => {
    if (n < 0 || n >= 0x80000000) throw new ToolError(`cannot pickle ${n}: only integers in [0, 2^31) are written`);
    if (n < 0x100) op(0x4b, n); // BININT1
    else if (n < 0x10000) op(0x4d, n & 0xff, n >> 8); // BININT2
    else {
      op(0x4a); // BININT
      u32(n);
    }
  };
  const float = (x: number) => {
    const b = Buffer.alloc(9);
    b[0] = 0x47; // BINFLOAT, big-endian
    b.writeDoubleBE(x, 1);
    out.push(b);
  };
  const tuple = (items: PyValue[]) => {
    if (items.length === 0) return op(0x29); // EMPTY_TUPLE
    if (items.length > 3) op(0x28); // MARK
    items.forEach(put);
    op(items.length > 3 ? 0x74 : 0x84 + items.length); // TUPLE or TUPLE1–3
  };
  const setItems = (entries: Iterable<[PyValue, PyValue]>) => {
    const list = [...entries];
    if (list.length === 0) return;
    op(0x28);
    for (const [k, v] of list) {
      put(k);
      put(v);
    }
    op(0x75); // SETITEMS
  };
  const tensor = (t: TorchTensor) => {
    let key = storages.get(t.data);
    if (key === undefined) storages.set(t.data, (key = storages.size));
    const stride = t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    global('torch._utils', '_rebuild_tensor_v2');
    op(0x28);
    op(0x28);
    str('storage');
    global('torch', 'FloatStorage');
    str(String(key));
    str('cpu');
    int(t.data.length);
    op(0x74, 0x51); // TUPLE, BINPERSID
    int(0); // storage offset
    tuple(t.shape);
    tuple(stride);
    op(0x89); // requires_grad False
    orderedDict([]); // backward hooks
    op(0x74, 0x52); // TUPLE, REDUCE
  };
  const orderedDict = (entries: Array<[PyValue, PyValue]>) => {
    global('collections', 'OrderedDict');
    op(0x29, 0x52); // EMPTY_TUPLE, REDUCE: OrderedDict()
    setItems(entries);
  };
  function put(v: PyValue): void {
    if (v === null) op(0x4e);
    else if (v === true) op(0x88);
    else if (v === false) op(0x89);
    else if (typeof v === 'number') {
      if (Number.isSafeInteger(v)) int(v);
      else float(v);
    } else if (typeof v === 'string') str(v);
    else if (v instanceof PyFloat) float(v.value);
    else if (v instanceof PyTuple) tuple(v.items);
    else if (v instanceof PyOrderedDict) orderedDict(v.entries);
    else if (v instanceof TorchTensor) tensor(v);
    else if (Array.isArray(v)) {
      op(0x5d); // EMPTY_LIST
      if (v.length) {
        op(0x28);
        v.forEach(put);
        op(0x65); // APPENDS
      }
    } else {
      op(0x7d); // EMPTY_DICT
      setItems(v);
    }
  }
  op(0x80, 2); // PROTO 2
  put(value);
  op(0x2e); // STOP
  return { pickle: Buffer.concat(out), storages: [...storages.keys()] };
}

interface Entry {
  name: Buffer;
  crc: number;
  size: number;
  offset: number;
}

/** The bytes of a float32 storage, in the file's (little-endian) order. */
const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

export interface TorchWriteOptions {
  /**
   * Forces zip64 records (tests: our reader and Python's zipfile follow them). torch's miniz
   * rejects them in a small file (it bounds-checks the 0xFFFFFFFF offset placeholder against the
   * file size) but reads the real thing: a 5 GB archive of ours, torch 1.13's torch.load, by hand.
   */
  zip64?: boolean;
}

/** Writes `value` as torch.save would, atomically: staged beside `path`, renamed into place. */
export async function writeTorchFile(path: string, value: PyValue, options: TorchWriteOptions = {}): Promise<void> {
  const { pickle, storages } = pickleTorch(value);
  await writeTorchArchive(path, pickle, storages, options);
}

/** torch.save's archive around pickle bytes and the storages their persistent ids name by index. */
export async function writeTorchArchive(path: string, pickle: Buffer, storages: Float32Array[], options: TorchWriteOptions = {}): Promise<void> {
  const records: Array<[string, Buffer]> = [
    ['archive/data.pkl', pickle],
    ['archive/byteorder', Buffer.from('little')],
    ...storages.map((s, i): [string, Buffer] => [`archive/data/${i}`, bytesOf(s)]),
    ['archive/version', Buffer.from('3\n')],
  ];
  const temp = tempPathFor(path);
  let file;
  try {
    file = await open(temp, 'w');
    let offset = 0;
    const write = async (b: Buffer) => {
      await file!.writeFile(b); // retries short writes: a full disk is ENOSPC
      offset += b.length;
    };
    const entries: Entry[] = [];
    for (const [name, data] of records) {
      if (data.length >= ZIP64_LIMIT) throw new ToolError(`${path}: cannot write ${name}: a record of 4 GiB or more`);
      const nameBytes = Buffer.from(name, 'utf8');
      // torch pads the local header's extra field ("FB" + filler) so that data starts aligned.
      const headerEnd = offset + 30 + nameBytes.length + 4;
      const pad = (ALIGN - (headerEnd % ALIGN)) % ALIGN;
      const entry = { name: nameBytes, crc: crc32(data), size: data.length, offset };
      const header = Buffer.alloc(30 + nameBytes.length + 4 + pad);
      header.writeUInt32LE(0x04034b50, 0);
      header.writeUInt16LE(options.zip64 || offset > ZIP64_LIMIT ? 45 : 20, 4); // version needed
      header.writeUInt16LE(0, 6); // flags
      header.writeUInt16LE(0, 8); // stored
      header.writeUInt32LE(0, 10); // DOS time 00:00, date 0 (torch writes the same)
      header.writeUInt32LE(entry.crc, 14);
      header.writeUInt32LE(data.length, 18);
      header.writeUInt32LE(data.length, 22);
      header.writeUInt16LE(nameBytes.length, 26);
      header.writeUInt16LE(4 + pad, 28);
      nameBytes.copy(header, 30);
      header.write('FB', 30 + nameBytes.length, 'latin1');
      header.writeUInt16LE(pad, 32 + nameBytes.length);
      await write(header);
      await write(data);
      entries.push(entry);
    }
    const cdStart = offset;
    for (const e of entries) await write(centralEntry(e, options.zip64 === true));
    const cdSize = offset - cdStart;
    if (options.zip64 || cdStart > ZIP64_LIMIT || offset > ZIP64_LIMIT) {
      const eocd64At = offset;
      const eocd64 = Buffer.alloc(56);
      eocd64.writeUInt32LE(0x06064b50, 0);
      eocd64.writeBigUInt64LE(44n, 4);
      eocd64.writeUInt16LE(45, 12);
      eocd64.writeUInt16LE(45, 14);
      eocd64.writeBigUInt64LE(BigInt(entries.length), 24);
      eocd64.writeBigUInt64LE(BigInt(entries.length), 32);
      eocd64.writeBigUInt64LE(BigInt(cdSize), 40);
      eocd64.writeBigUInt64LE(BigInt(cdStart), 48);
      const locator = Buffer.alloc(20);
      locator.writeUInt32LE(0x07064b50, 0);
      locator.writeBigUInt64LE(BigInt(eocd64At), 8);
      locator.writeUInt32LE(1, 16);
      await write(Buffer.concat([eocd64, locator]));
    }
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(0x06054b50, 0);
    eocd.writeUInt16LE(entries.length, 8);
    eocd.writeUInt16LE(entries.length, 10);
    eocd.writeUInt32LE(Math.min(cdSize, ZIP64_LIMIT), 12);
    eocd.writeUInt32LE(options.zip64 ? ZIP64_LIMIT : Math.min(cdStart, ZIP64_LIMIT), 16);
    await write(eocd);
    await file.sync();
    await file.close();
    file = undefined;
    await rename(temp, path);
  } catch (err) {
    await file?.close().catch(() => {});
    await rm(temp, { force: true }).catch(() => {});
    throw outOfSpace(err, path) ?? fsError(err, path);
  }
}

function centralEntry(e: Entry, force64: boolean): Buffer {
  const far = force64 || e.offset > ZIP64_LIMIT;
  const extra = far ? Buffer.alloc(12) : Buffer.alloc(0);
  if (far) {
    extra.writeUInt16LE(0x0001, 0); // zip64 extended information: the local header's offset only
    extra.writeUInt16LE(8, 2);
    extra.writeBigUInt64LE(BigInt(e.offset), 4);
  }
  const b = Buffer.alloc(46 + e.name.length + extra.length);
  b.writeUInt32LE(0x02014b50, 0);
  b.writeUInt16LE(far ? 45 : 20, 4); // version made by
  b.writeUInt16LE(far ? 45 : 20, 6); // version needed
  b.writeUInt32LE(0, 12); // time, date
  b.writeUInt32LE(e.crc, 16);
  b.writeUInt32LE(e.size, 20);
  b.writeUInt32LE(e.size, 24);
  b.writeUInt16LE(e.name.length, 28);
  b.writeUInt16LE(extra.length, 30);
  b.writeUInt32LE(far ? ZIP64_LIMIT : e.offset, 42);
  e.name.copy(b, 46);
  extra.copy(b, 46 + e.name.length);
  return b;
}
