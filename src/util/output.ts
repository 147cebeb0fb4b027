/**
 * Output that never looks complete before it is: files are written under a temporary name in the
 * same directory and renamed into place by commit(); abort() removes them. Standard output is
 * written with backpressure.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fsError } from './errors.js';

/** A hidden temporary name beside `path`, unique to this process. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

export interface Output {
  write(data: string | Uint8Array): Promise<void>;
  /** Flushes and, for files, renames the temporary file into place. */
  commit(): Promise<void>;
  /** Discards what was written (removes the temporary file). */
  abort(): Promise<void>;
}

const BUFFER_BYTES = 1 << 16;

class StreamOutput implements Output {
  private parts: (string | Uint8Array)[] = [];
  private size = 0;
  private failure: Error | undefined;

  constructor(
    private readonly stream: NodeJS.WritableStream,
    private readonly name: string,
    private readonly finalPath?: string,
    private readonly tempPath?: string,
  ) {
    stream.on('error', (err: Error) => (this.failure ??= err));
  }

  async write(data: string | Uint8Array): Promise<void> {
    this.parts.push(data);
    this.size += data.length;
    if (this.size >= BUFFER_BYTES) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.failure) throw fsError(this.failure, this.name);
    if (this.parts.length === 0) return;
    const parts = this.parts;
    this.parts = [];
    this.size = 0;
    const data = parts.every((p) => typeof p === 'string') ? parts.join('') : Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
    if (!this.stream.write(data)) {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error) => {
          this.stream.off('drain', done);
          this.stream.off('error', done);
          if (err) reject(fsError(err, this.name));
          else resolve();
        };
        this.stream.on('drain', done);
        this.stream.on('error', done);
      });
    }
    if (this.failure) throw fsError(this.failure, this.name);
  }

  async commit(): Promise<void> {
    await this.flush();
    if (!this.finalPath || !this.tempPath) return;
    const file = this.stream as unknown as WriteStream;
    await new Promise<void>((resolve, reject) => {
      file.end((err?: Error | null) => (err ? reject(fsError(err, this.name)) : resolve()));
    });
    if (this.failure) throw fsError(this.failure, this.name);
    try {
      await rename(this.tempPath, this.finalPath);
    } catch (err) {
      throw fsError(err, this.finalPath);
    }
  }

  async abort(): Promise<void> {
    if (!this.tempPath) return;
    (this.stream as unknown as WriteStream).destroy();
    await rm(this.tempPath, { force: true });
  }
}

/**
 * Writes to standard output and resolves once the data is handed to the OS; a failure (ENOSPC on a
 * redirected file, …) rejects with a one-line ToolError. A closed pipe (`tool | head`) ends the
 * process quietly with status 0, as every tool does.
 */
export function writeStdout(data: string | Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(data, (err) => {
      if (!err) return resolve();
      if ((err as NodeJS.ErrnoException).code === 'EPIPE') process.exit(0);
      reject(fsError(err, '<stdout>'));
    });
  });
}

/** Output to `path`, or to standard output for undefined or "-". */
export function openOutput(path?: string): Output {
  if (path === undefined || path === '-') return new StreamOutput(process.stdout, '<stdout>');
  const temp = tempPathFor(path);
  return new StreamOutput(createWriteStream(temp) as NodeJS.WritableStream, path, path, temp);
}
