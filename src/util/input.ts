/**
 * Reading text inputs the way every tool does: files or stdin ("-" or none), validated as UTF-8
 * with the byte offset and line of the first bad byte, in chunks of whole lines so that a 500 MB
 * WikiText-103 never sits in memory as one string.
 */
import { createReadStream, statSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { isUtf8 } from 'node:buffer';
import { Readable } from 'node:stream';
import { findInvalidUtf8 } from '../tokenizer/utf8.js';
import { fsError, ToolError } from './errors.js';

export class TextChunk {
  private decoded: string | undefined;
  constructor(
    /** File name for messages ("<stdin>" for standard input). */
    readonly source: string,
    /** Whole lines as valid UTF-8 (with --lossy, after replacing bad bytes with U+FFFD). */
    readonly bytes: Buffer,
    /** 1-based number of the chunk's first line within its source. */
    readonly firstLine: number,
    /** True for the last chunk of the last input. */
    readonly final: boolean,
    decoded?: string,
  ) {
    this.decoded = decoded;
  }

  /** The lines as text, each ending in "\n" except possibly the input's last (decoded on first use). */
  get text(): string {
    return (this.decoded ??= this.bytes.toString('utf8'));
  }
}

export interface ReadOptions {
  /** Replace invalid UTF-8 with U+FFFD (and report it through onWarning) instead of failing. */
  lossy?: boolean;
  onWarning?: (message: string) => void;
  /** Target chunk size in bytes (default 1 MiB). */
  chunkBytes?: number;
  /** Called with the bytes read so far, for progress bars. */
  onBytes?: (bytes: number) => void;
  /** One file's lines from byte start to byte end (lineRange's), not all of it. */
  range?: { start: number; end: number };
}

export const STDIN = '-';
export const sourceName = (file: string) => (file === STDIN ? '<stdin>' : file);

/** Stat the inputs up front, so a missing file fails before any work; returns total bytes (or undefined for stdin). */
export function checkInputs(files: readonly string[]): number | undefined {
  let total: number | undefined = 0;
  for (const file of files) {
    if (file === STDIN) {
      total = undefined;
      continue;
    }
    let stats;
    try {
      stats = statSync(file);
    } catch (err) {
      throw fsError(err, file);
    }
    if (stats.isDirectory()) throw new ToolError(`${file}: is a directory, expected a file`);
    if (total !== undefined) total += stats.size;
  }
  return total;
}

function open(file: string, range?: { start: number; end: number }): Readable {
  if (file === STDIN) return process.stdin;
  if (range && range.start >= range.end) return Readable.from([]); // a slice with no line of its own
  return createReadStream(file, { highWaterMark: 1 << 20, ...(range ? { start: range.start, end: range.end - 1 } : {}) });
}

/**
 * The bytes [start, end) of the lines whose first byte lies in [from, to) of a file: a line
 * belongs to the slice its first byte falls in, so slices that tile a file split it at line
 * boundaries into parts that tile its lines (bpe-encode --part).
 */
export async function lineRange(file: string, from: number, to: number): Promise<{ start: number; end: number }> {
  const handle = await openFile(file, 'r').catch((err) => {
    throw fsError(err, file);
  });
  try {
    const size = (await handle.stat()).size;
    // The first line starting at or after `at`: at itself if a line ends just before it.
    const lineStart = async (at: number): Promise<number> => {
      if (at <= 0) return 0;
      if (at >= size) return size;
      const buf = Buffer.alloc(1 << 16);
      for (let pos = at - 1; pos < size; pos += buf.length) {
        const { bytesRead } = await handle.read(buf, 0, buf.length, pos);
        const nl = buf.subarray(0, bytesRead).indexOf(0x0a);
        if (nl >= 0) return pos + nl + 1;
      }
      return size;
    };
    return { start: await lineStart(from), end: await lineStart(to) };
  } finally {
    await handle.close();
  }
}

/** Yields each input's text in chunks of whole lines. */
export async function* readTextChunks(files: readonly string[], options: ReadOptions = {}): AsyncGenerator<TextChunk> {
  const chunkBytes = options.chunkBytes ?? 1 << 20;
  let bytesRead = 0;
  const inputs = files.length === 0 ? [STDIN] : files;
  for (const [index, file] of inputs.entries()) {
    const lastInput = index === inputs.length - 1;
    // A slice's lines are counted from its start: the name says where that is.
    const source = options.range ? `${sourceName(file)} (from byte ${options.range.start})` : sourceName(file);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let line = 1;
    let offset = options.range?.start ?? 0; // byte offset of pending[0] in the source
    let warned = false;
    let threshold = chunkBytes;
    const emit = (buf: Buffer, final: boolean): TextChunk => {
      let chunk: TextChunk;
      if (isUtf8(buf)) {
        chunk = new TextChunk(source, buf, line, final);
      } else {
        const at = findInvalidUtf8(buf);
        const badLine = line + countNewlines(buf, 0, at);
        if (!options.lossy) {
          throw new ToolError(`${source}: invalid UTF-8 at byte ${offset + at} (line ${badLine}); use --lossy to replace bad bytes with U+FFFD`);
        }
        if (!warned) options.onWarning?.(`${source}: invalid UTF-8 at byte ${offset + at} (line ${badLine}) and any later bad bytes replaced with U+FFFD`);
        warned = true;
        const text = buf.toString('utf8');
        chunk = new TextChunk(source, Buffer.from(text, 'utf8'), line, final, text);
      }
      line += countNewlines(buf, 0, buf.length);
      offset += buf.length;
      return chunk;
    };
    const stream = open(file, options.range);
    try {
      for await (const data of stream as AsyncIterable<Buffer>) {
        bytesRead += data.length;
        options.onBytes?.(bytesRead);
        pending.push(data);
        pendingBytes += data.length;
        if (pendingBytes < threshold) continue;
        const buf = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
        const cut = buf.lastIndexOf(0x0a) + 1;
        if (cut === 0) {
          pending = [buf];
          threshold = 2 * pendingBytes; // one very long line: read on until it ends
          continue;
        }
        threshold = chunkBytes;
        yield emit(buf.subarray(0, cut), false);
        const rest = buf.subarray(cut);
        pending = rest.length > 0 ? [rest] : [];
        pendingBytes = rest.length;
      }
    } catch (err) {
      if (err instanceof ToolError) throw err;
      throw fsError(err, source);
    } finally {
      if (file !== STDIN) stream.destroy();
    }
    if (pendingBytes > 0) yield emit(pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes), lastInput);
  }
}

function countNewlines(buf: Buffer, start: number, end: number): number {
  let n = 0;
  for (let i = buf.indexOf(0x0a, start); i >= 0 && i < end; i = buf.indexOf(0x0a, i + 1)) n++;
  return n;
}

/** Splits a chunk's text into lines without their "\n" (a trailing "\n" does not add an empty line). */
export function chunkLines(text: string): string[] {
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}
