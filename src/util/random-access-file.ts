/**
 * Positioned reads from a file that never run past its end: checkpoints are read piece by piece
 * (a header, a central directory, one storage at a time) so a 6 GB file never sits in memory as a
 * whole, and every read that would cross the end says what was cut off.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { fsError, ToolError } from './errors.js';

/** Reads larger than this are split, so progress callbacks come at a steady pace. */
const CHUNK = 16 << 20;

export class RandomAccessFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  static async open(path: string): Promise<RandomAccessFile> {
    let handle: FileHandle | undefined;
    try {
      handle = await open(path, 'r');
      const stats = await handle.stat();
      if (stats.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
      return new RandomAccessFile(path, handle, stats.size);
    } catch (err) {
      await handle?.close();
      throw fsError(err, path);
    }
  }

  close(): Promise<void> {
    return this.handle.close();
  }

  /** Fails unless [pos, pos + length) lies inside the file; `what` names the piece for the message. */
  check(pos: number, length: number, what: string): void {
    if (!Number.isSafeInteger(pos) || !Number.isSafeInteger(length) || pos < 0 || length < 0) {
      throw new ToolError(`${this.path}: damaged checkpoint: ${what} has an impossible position or size`);
    }
    if (pos + length > this.size) {
      throw new ToolError(`${this.path}: truncated file: ${what} ends at byte ${pos + length}, past the end of the file (${this.size} bytes)`);
    }
  }

  /** `length` bytes at `pos`, into a fresh buffer. */
  async read(pos: number, length: number, what: string): Promise<Buffer> {
    const out = Buffer.alloc(length);
    await this.readInto(pos, out, what);
    return out;
  }

  /** Fills `target` with the bytes at `pos`, calling onChunk(bytes) as pieces arrive. */
  async readInto(pos: number, target: Uint8Array, what: string, onChunk?: (bytes: number) => void): Promise<void> {
    this.check(pos, target.length, what);
    let done = 0;
    while (done < target.length) {
      const want = Math.min(CHUNK, target.length - done);
      let got: number;
      try {
        ({ bytesRead: got } = await this.handle.read(target, done, want, pos + done));
      } catch (err) {
        throw fsError(err, this.path);
      }
      // The file shrank after we sized it (being rewritten?): report it as truncated, never spin.
      if (got === 0) throw new ToolError(`${this.path}: truncated file: ${what} ends at byte ${pos + target.length}, but reading stopped at byte ${pos + done}`);
      done += got;
      onChunk?.(got);
    }
  }
}
