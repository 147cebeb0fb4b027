/**
 * A new file written in the background and hashed on the way (record shards, a part's ids.bin):
 * bytes are copied into one of two 4 MiB buffers; a full one goes to the file system while the
 * other fills, so the caller (bpe-encode's main thread, which also encodes) does not wait on the
 * disk. Awaiting each 4 MiB write, and each 64 MiB shard's fsync (~130 ms on our machines),
 * stalled that thread, and a thread queued only a few parts deep behind it, ~4% of a -j2 run.
 *
 * Errors of a write in flight are kept and thrown by the next call; close() ends with fsync, so
 * what the file system defers (ENOSPC, EDQUOT) is an error there, not silently lost.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { fsError } from './errors.js';

const BUFFER_BYTES = 1 << 22;

export interface HashedFile {
  bytes: number;
  sha256: string;
}

export class HashedFileWriter {
  private readonly hash = createHash('sha256');
  private readonly buffers = [Buffer.allocUnsafe(BUFFER_BYTES), Buffer.allocUnsafe(BUFFER_BYTES)];
  private current = 0;
  private used = 0;
  private bytes = 0;
  /** The write of the other buffer, if one is in flight (awaiting it throws its error). */
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly handle: FileHandle,
    /** The name errors give (the file's final place, not its staged one). */
    private readonly shownAs: string,
  ) {}

  /** Creates `path`, which must not exist. */
  static async create(path: string, shownAs = path): Promise<HashedFileWriter> {
    const handle = await open(path, 'wx').catch((err) => {
      throw fsError(err, shownAs);
    });
    return new HashedFileWriter(handle, shownAs);
  }

  /** Appends a copy of bytes; the caller may reuse them at once. */
  async write(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length; ) {
      const n = Math.min(bytes.length - at, BUFFER_BYTES - this.used);
      this.buffers[this.current].set(bytes.subarray(at, at + n), this.used);
      this.used += n;
      at += n;
      if (this.used === BUFFER_BYTES) await this.flush();
    }
  }

  /** Starts writing the filled buffer, once the other one's write is done (order, and it is reused next). */
  private async flush(): Promise<void> {
    await this.writing;
    const full = this.buffers[this.current].subarray(0, this.used);
    this.hash.update(full);
    this.bytes += full.length;
    // writeFile goes on after a short write (a full disk then reports ENOSPC); write would not.
    this.writing = this.handle.writeFile(full).catch((err) => {
      throw fsError(err, this.shownAs);
    });
    this.writing.catch(() => {}); // not unhandled while nobody awaits it yet
    this.current ^= 1;
    this.used = 0;
  }

  /** Writes the rest, syncs and closes; returns the file's size and sha256. */
  async close(): Promise<HashedFile> {
    try {
      if (this.used > 0) await this.flush();
      await this.writing;
      await this.handle.sync().catch((err) => {
        throw fsError(err, this.shownAs); // what the file system defers to here (ENOSPC, EDQUOT)
      });
    } finally {
      await this.handle.close();
    }
    return { bytes: this.bytes, sha256: this.hash.digest('hex') };
  }

  /** Closes without a summary, after a failure (the caller removes the file). */
  async discard(): Promise<void> {
    await this.writing.catch(() => {});
    await this.handle.close().catch(() => {});
  }
}
