/**
 * A minimal zip reader for checkpoints: the central directory (zip64 too, which torch writes past
 * 4 GiB), STORED and DEFLATE entries. It reads only what it is asked for, so a storage can go
 * straight from the file into its typed array. Whether a file is a zip at all is decided where every
 * weights format is sniffed (formats/weights-file.ts).
 */
import { inflateRawSync } from 'node:zlib';
import { ToolError } from './errors.js';
import type { RandomAccessFile } from './random-access-file.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const EOCD = 0x06054b50;
const EOCD64 = 0x06064b50;
const EOCD64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const EOCD_SIZE = 22;

/** A 64-bit little-endian field as a number; archives we can address never need more than 2^53. */
function u64(buf: Buffer, pos: number): number {
  const v = buf.readBigUInt64LE(pos);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v);
}

export class ZipArchive {
  private constructor(
    private readonly file: RandomAccessFile,
    readonly entries: Map<string, ZipEntry>,
  ) {}

  private static fail(file: RandomAccessFile, what: string): never {
    throw new ToolError(`${file.path}: truncated or damaged zip archive: ${what}`);
  }

  static async open(file: RandomAccessFile): Promise<ZipArchive> {
    // The end record sits in the last 22 + 65535 (comment) bytes; the match must end the file
    // exactly, so a stray signature inside storage data of a cut file is never taken for it.
    const tailLength = Math.min(file.size, EOCD_SIZE + 0xffff);
    const tailStart = file.size - tailLength;
    const tail = await file.read(tailStart, tailLength, 'the zip end record');
    let eocd = -1;
    for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
      if (tail.readUInt32LE(i) === EOCD && i + EOCD_SIZE + tail.readUInt16LE(i + 20) === tailLength) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) ZipArchive.fail(file, 'no end-of-central-directory record (the file is cut short?)');
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    let cdLimit = tailStart + eocd;
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      const loc = eocd - 20;
      if (loc < 0 || tail.readUInt32LE(loc) !== EOCD64_LOCATOR) ZipArchive.fail(file, 'zip64 end record locator missing');
      const at = u64(tail, loc + 8);
      if (at < 0 || at + 56 > tailStart + loc) ZipArchive.fail(file, 'zip64 end record out of place');
      const rec = await file.read(at, 56, 'the zip64 end record');
      if (rec.readUInt32LE(0) !== EOCD64) ZipArchive.fail(file, 'bad zip64 end record signature');
      count = u64(rec, 32);
      cdSize = u64(rec, 40);
      cdOffset = u64(rec, 48);
      cdLimit = at;
    }
    if (count < 0 || cdSize < 0 || cdOffset < 0 || cdOffset + cdSize > cdLimit) ZipArchive.fail(file, 'central directory out of place');
    const cd = await file.read(cdOffset, cdSize, 'the zip central directory');
    const entries = new Map<string, ZipEntry>();
    let p = 0;
    for (let n = 0; n < count; n++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== CENTRAL) ZipArchive.fail(file, `central directory entry ${n} is damaged`);
      const flags = cd.readUInt16LE(p + 8);
      const method = cd.readUInt16LE(p + 10);
      let compressedSize = cd.readUInt32LE(p + 20);
      let size = cd.readUInt32LE(p + 24);
      const nameLength = cd.readUInt16LE(p + 28);
      const extraLength = cd.readUInt16LE(p + 30);
      const commentLength = cd.readUInt16LE(p + 32);
      let localHeaderOffset = cd.readUInt32LE(p + 42);
      const end = p + 46 + nameLength + extraLength + commentLength;
      if (end > cd.length) ZipArchive.fail(file, `central directory entry ${n} is damaged`);
      const name = cd.toString('utf8', p + 46, p + 46 + nameLength);
      // Zip64 extended information: 8-byte values, present only for the fields saturated above.
      for (let q = p + 46 + nameLength; q + 4 <= p + 46 + nameLength + extraLength; ) {
        const id = cd.readUInt16LE(q);
        const len = cd.readUInt16LE(q + 2);
        if (id === 1) {
          let r = q + 4;
          const take = (): number => {
            if (r + 8 > q + 4 + len) ZipArchive.fail(file, `zip64 field of ${name} is damaged`);
            const v = u64(cd, r);
            r += 8;
            return v;
          };
          if (size === 0xffffffff) size = take();
          if (compressedSize === 0xffffffff) compressedSize = take();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = take();
        }
        q += 4 + len;
      }
      if (flags & 1) throw new ToolError(`${file.path}: ${name} is encrypted; checkpoints never are`);
      if (size < 0 || compressedSize < 0 || localHeaderOffset < 0) ZipArchive.fail(file, `sizes of ${name} are out of range`);
      entries.set(name, { name, method, compressedSize, size, localHeaderOffset });
      p = end;
    }
    return new ZipArchive(file, entries);
  }

  /** Where the entry's data starts: after its local header, whose name and extra lengths may differ from the central copy. */
  async dataOffset(entry: ZipEntry): Promise<number> {
    const header = await this.file.read(entry.localHeaderOffset, 30, `the local header of ${entry.name}`);
    if (header.readUInt32LE(0) !== LOCAL) ZipArchive.fail(this.file, `local header of ${entry.name} is damaged`);
    const start = entry.localHeaderOffset + 30 + header.readUInt16LE(26) + header.readUInt16LE(28);
    this.file.check(start, entry.compressedSize, entry.name);
    return start;
  }

  /** The entry's whole content, inflated if need be, into `target` when given (it must be entry.size long). */
  async read(entry: ZipEntry, target?: Uint8Array, onChunk?: (bytes: number) => void): Promise<Uint8Array> {
    const out = target ?? new Uint8Array(entry.size);
    if (out.length !== entry.size) throw new Error('zip read: target size mismatch');
    const start = await this.dataOffset(entry);
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) ZipArchive.fail(this.file, `stored entry ${entry.name} has two different sizes`);
      await this.file.readInto(start, out, entry.name, onChunk);
    } else if (entry.method === 8) {
      const packed = await this.file.read(start, entry.compressedSize, entry.name);
      let raw: Buffer;
      try {
        raw = inflateRawSync(packed, { maxOutputLength: Math.max(1, entry.size) });
      } catch {
        ZipArchive.fail(this.file, `${entry.name} does not inflate`);
      }
      if (raw.length !== entry.size) ZipArchive.fail(this.file, `${entry.name} inflates to ${raw.length} bytes, expected ${entry.size}`);
      out.set(raw);
      onChunk?.(entry.size);
    } else {
      throw new ToolError(`${this.file.path}: ${entry.name} uses zip compression method ${entry.method}; only stored and deflate are supported`);
    }
    return out;
  }
}
