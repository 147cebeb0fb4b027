/**
 * A token stream as a flat file of little-endian ids in the data set's dtype (2 bytes a token for
 * GPT-2): a part's ids.bin, and the spool a single run writes when --num-shards needs the record
 * count before the first shard. Written and read in 4 MiB pieces, hashed on the way, so neither
 * side ever holds the stream: WikiText-103's 120 M tokens pass through in constant memory.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { fsError, ToolError } from '../util/errors.js';
import { HashedFileWriter, type HashedFile } from '../util/hashed-file-writer.js';
import type { IdDtype } from './manifest.js';

const PIECE_BYTES = 1 << 22;

/** Ids as they come: a worker's Uint32Array, or a stored stream's dtype. */
export type TokenIds = Uint32Array | Uint16Array | Int32Array;

export const idWidth = (dtype: IdDtype) => (dtype === 'uint16' ? 2 : 4);

export interface IdsFileSummary extends HashedFile {
  tokens: number;
}

/** Appends ids to a new file; close() returns its size and sha256. */
export class IdsFileWriter {
  /** Ids in the file's dtype, on their way to the file. */
  private readonly piece: Uint16Array | Int32Array;
  private used = 0;

  private constructor(
    private readonly file: HashedFileWriter,
    readonly dtype: IdDtype,
  ) {
    this.piece = dtype === 'uint16' ? new Uint16Array(PIECE_BYTES / 2) : new Int32Array(PIECE_BYTES / 4);
  }

  /** Creates `path` (which must not exist); `shownAs` names it in errors. */
  static async create(path: string, dtype: IdDtype, shownAs = path): Promise<IdsFileWriter> {
    return new IdsFileWriter(await HashedFileWriter.create(path, shownAs), dtype);
  }

  /** Appends ids (the caller keeps them below 2^16 for uint16: the vocabulary chose the dtype). */
  async append(ids: TokenIds): Promise<void> {
    for (let at = 0; at < ids.length; ) {
      const n = Math.min(ids.length - at, this.piece.length - this.used);
      this.piece.set(ids.subarray(at, at + n), this.used);
      this.used += n;
      at += n;
      if (this.used === this.piece.length) await this.flush();
    }
  }

  private async flush(): Promise<void> {
    await this.file.write(new Uint8Array(this.piece.buffer, 0, this.used * this.piece.BYTES_PER_ELEMENT)); // the host is little-endian (x86, arm64)
    this.used = 0;
  }

  async close(): Promise<IdsFileSummary> {
    await this.flush();
    const file = await this.file.close();
    return { ...file, tokens: file.bytes / idWidth(this.dtype) };
  }

  /** Closes without a summary, after a failure (the caller removes the file). */
  discard(): Promise<void> {
    return this.file.discard();
  }
}

/**
 * The ids of a file in pieces (each a fresh array the caller may keep). With `expect`, the file's
 * size is checked before the first piece and its sha256 after the last: a mismatch throws, so a
 * consumer writing into a staged directory aborts and nothing is left that looks complete.
 */
export async function* readIdsFile(path: string, dtype: IdDtype, expect?: { bytes: number; sha256: string; what: string }): AsyncGenerator<Uint16Array | Int32Array> {
  const handle = await open(path, 'r').catch((err) => {
    throw fsError(err, path);
  });
  const altered = () => new ToolError(expect ? `${path}: size or sha256 is not what ${expect.what} says (altered or incomplete)` : `${path}: changed while being read`);
  try {
    const size = (await handle.stat()).size;
    if (expect && size !== expect.bytes) throw altered();
    const width = idWidth(dtype);
    if (size % width !== 0) throw new ToolError(`${path}: ${size} bytes is not a whole number of ${dtype} ids`);
    const hash = createHash('sha256');
    for (let pos = 0; pos < size; ) {
      const buffer = new ArrayBuffer(Math.min(PIECE_BYTES, size - pos));
      const bytes = new Uint8Array(buffer);
      for (let got = 0; got < bytes.length; ) {
        const { bytesRead } = await handle.read(bytes, got, bytes.length - got, pos + got).catch((err) => {
          throw fsError(err, path);
        });
        if (bytesRead === 0) throw altered();
        got += bytesRead;
      }
      pos += bytes.length;
      hash.update(bytes);
      yield width === 2 ? new Uint16Array(buffer) : new Int32Array(buffer);
    }
    if (expect && hash.digest('hex') !== expect.sha256) throw altered();
  } finally {
    await handle.close();
  }
}
