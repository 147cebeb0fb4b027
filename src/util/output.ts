/**
 * Output that never looks complete before it is and never loses a byte silently. A file is written
 * under a temporary name beside it and renamed into place by commit(); abort() removes it. Every
 * write is checked to the last byte: a full disk or a closed device is a one-line ToolError naming
 * the file (or <stdout>), never an exit 0 with the output cut short.
 */
import { fstatSync, statSync, writeSync, type Stats } from 'node:fs';
import { copyFile, open, rename, rm, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { isatty } from 'node:tty';
import { fsError, ToolError, UsageError } from './errors.js';
import { removeStaleStaging, tempPathFor } from './staging.js';

export interface Output {
  write(data: string | Uint8Array): Promise<void>;
  /** Flushes and, for files, renames the temporary file into place. */
  commit(): Promise<void>;
  /** Discards what was written (removes the temporary file). */
  abort(): Promise<void>;
}

export interface OutputOptions {
  /** Files this command reads: writing over one of them (same file, by any name) is refused. */
  inputs?: readonly string[];
}

interface Sink {
  write(data: string | Uint8Array): Promise<void>;
  finish(): Promise<void>;
  discard(): Promise<void>;
}

const BUFFER_BYTES = 1 << 16;

/** Gathers small writes into ~64 KiB ones. */
class BufferedOutput implements Output {
  private parts: (string | Uint8Array)[] = [];
  private size = 0;

  constructor(private readonly sink: Sink) {}

  async write(data: string | Uint8Array): Promise<void> {
    this.parts.push(data);
    this.size += data.length;
    if (this.size >= BUFFER_BYTES) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.parts.length === 0) return;
    const parts = this.parts;
    this.parts = [];
    this.size = 0;
    await this.sink.write(parts.every((p) => typeof p === 'string') ? parts.join('') : Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p))));
  }

  async commit(): Promise<void> {
    await this.flush();
    await this.sink.finish();
  }

  async abort(): Promise<void> {
    this.parts = [];
    await this.sink.discard();
  }
}

/**
 * A file written through a handle: under `temp` and renamed into place when there is one, or
 * straight into `path` (a device or a pipe, which must not be replaced by a rename).
 */
class FileSink implements Sink {
  private readonly handle: Promise<FileHandle>;
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly temp: string | undefined,
    /** The name errors give (default: path). */
    private readonly shownAs = path,
  ) {
    // Opened at once, so the temporary exists (and is tidied if this process dies) from the start.
    this.handle = open(temp ?? path, temp ? 'wx' : 'w');
    this.handle.catch(() => {}); // reported where it is awaited
  }

  private async run(step: (handle: FileHandle) => Promise<void>): Promise<void> {
    try {
      await step(await this.handle);
    } catch (err) {
      throw fsError(err, this.shownAs);
    }
  }

  write(data: string | Uint8Array): Promise<void> {
    // FileHandle.writeFile writes at the current position and retries short writes, so a full
    // disk surfaces as ENOSPC; FileHandle.write would return a short count and carry on.
    return this.run((h) => h.writeFile(data));
  }

  finish(): Promise<void> {
    return this.run(async (h) => {
      if (this.temp) await h.sync(); // ENOSPC/EDQUOT that the file system defers to here
      this.closed = true;
      await h.close();
      if (this.temp) await rename(this.temp, this.path);
    });
  }

  async discard(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.handle.then((h) => h.close()).catch(() => {});
    }
    if (this.temp) await rm(this.temp, { force: true });
  }
}

let stdoutChecked = false;

/**
 * Node writes stdout that is a file or a device (not a pipe or a terminal) with one writeSync per
 * chunk and ignores its count, so a short write on a full disk drops the rest without an error.
 * This makes such writes go on to the last byte, so the next attempt reports ENOSPC through the
 * stream (to writeStdout's callback, or as its 'error' event). Every tool calls it at start.
 */
export function checkStdoutWrites(): void {
  if (stdoutChecked) return;
  stdoutChecked = true;
  let stats;
  try {
    stats = fstatSync(1);
  } catch {
    return;
  }
  if (stats.isFIFO() || stats.isSocket() || isatty(1)) return;
  // _write is the hook a Writable implements; replacing it on this one stream is the smallest fix.
  (process.stdout as unknown as { _write: Writable['_write'] })._write = (chunk: Buffer | string, encoding, callback) => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk;
    try {
      for (let done = 0; done < bytes.length; ) done += writeSync(1, bytes, done, bytes.length - done);
    } catch (err) {
      return callback(err as Error);
    }
    callback();
  };
}

/**
 * Writes to standard output and resolves once the data is handed to the OS; a failure (ENOSPC on a
 * redirected file, …) rejects with a one-line ToolError. A closed pipe (`tool | head`) neither
 * resolves nor rejects: the stream's 'error' event follows, and runProgram's handler for it ends
 * the process quietly with status 0, as for every other write.
 */
export function writeStdout(data: string | Uint8Array): Promise<void> {
  checkStdoutWrites();
  return new Promise((resolve, reject) => {
    process.stdout.write(data, (err) => {
      if (!err) resolve();
      else if ((err as NodeJS.ErrnoException).code !== 'EPIPE') reject(fsError(err, '<stdout>'));
    });
  });
}

const sameFile = (a: Stats, b: Stats) => a.dev === b.dev && a.ino === b.ino;

/** Refuses an output that is one of the inputs, by any name (symlink, hard link): it would be lost. */
function checkNotAnInput(output: Stats | undefined, shownAs: string, inputs: readonly string[]): void {
  if (!output?.isFile()) return; // a device or a pipe (/dev/null) may be both
  for (const input of inputs) {
    let stats;
    try {
      stats = statSync(input);
    } catch {
      continue; // `-`, or missing (reported by the reader)
    }
    if (sameFile(stats, output)) throw new ToolError(`${shownAs}: refusing to write over ${input}, an input of this command`);
  }
}

const statOrUndefined = (path: string | number) => {
  try {
    return typeof path === 'number' ? fstatSync(path) : statSync(path);
  } catch {
    return undefined;
  }
};

/** Output to `path`, or to standard output for undefined or "-". */
export function openOutput(path?: string, options: OutputOptions = {}): Output {
  const inputs = options.inputs ?? [];
  if (path === '') throw new UsageError('the output file is an empty path');
  if (path === undefined || path === '-') {
    checkNotAnInput(statOrUndefined(1), '<stdout>', inputs);
    return new BufferedOutput({ write: writeStdout, finish: async () => {}, discard: async () => {} });
  }
  const existing = statOrUndefined(path);
  if (existing?.isDirectory()) throw new ToolError(`${path}: is a directory, expected a file`);
  checkNotAnInput(existing, path, inputs);
  if (existing && !existing.isFile()) return new BufferedOutput(new FileSink(path, undefined));
  removeStaleStaging(path);
  return new BufferedOutput(new FileSink(path, tempPathFor(path)));
}

/**
 * Writes a whole file under a temporary name beside it and renames it into place. `shownAs` names
 * the file in errors when `path` is itself inside a staged directory. What a killed writer leaves
 * is for the caller to tidy (a run directory does when it is next locked; a staged one is new).
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, options: { shownAs?: string } = {}): Promise<void> {
  const file = new FileSink(path, tempPathFor(path), options.shownAs);
  try {
    await file.write(data);
    await file.finish();
  } catch (err) {
    await file.discard().catch(() => {});
    throw err;
  }
}

/** Copies `from` to `to` under a temporary name beside `to`, renamed into place (see writeFileAtomic). */
export async function copyFileAtomic(from: string, to: string): Promise<void> {
  const temp = tempPathFor(to);
  try {
    await copyFile(from, temp);
    await rename(temp, to);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => {});
    throw fsError(err, to);
  }
}
