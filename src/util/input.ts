/**
 * Reading text inputs the way every tool does: files or stdin ("-" or none), validated as UTF-8
 * with the byte offset and line of the first bad byte, in chunks of whole lines so that a 500 MB
 * WikiText-103 never sits in memory as one string.
 */
import { statSync } from 'node:fs';
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
    /** True for the last chunk of the last input (a stream's may lack it if it ends right after a chunk). */
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
  /** A chunk is yielded once this many bytes are in (default 1 MiB; 1: every line as it comes). */
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

/**
 * Bytes read from a file at a time. Reading (and so encoding, at -j1) in 256 KiB chunks
 * instead made bpe-encode -j1 ~10% slower on 100 MB (6 runs alternated).
 */
const READ_BYTES = 1 << 20;

/** One input's bytes, read into the caller's buffer: n bytes, 0 at its end (which a file also knows before). */
type ByteSource = { read(into: Uint8Array): Promise<number>; ended(): boolean; close(): Promise<void> };

/** A file (or its byte range) read straight into the caller's buffers. */
async function fileSource(file: string, range?: { start: number; end: number }): Promise<ByteSource> {
  const handle = await openFile(file, 'r').catch((err) => {
    throw fsError(err, file);
  });
  const stats = await handle.stat();
  // A pipe given by name (`<(…)`, a FIFO) is read as it comes, to its end; a file to the size it has now.
  const regular = stats.isFile();
  let pos = range?.start ?? 0;
  const end = range?.end ?? (regular ? stats.size : Infinity);
  return {
    async read(into) {
      const { bytesRead } = await handle.read(into, 0, Math.min(into.length, end - pos), regular ? pos : null);
      pos += bytesRead;
      return bytesRead;
    },
    ended: () => pos >= end,
    close: () => handle.close(),
  };
}

/** Standard input, its chunks copied into the caller's buffers as they come. */
function streamSource(stream: Readable): ByteSource {
  const chunks = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let rest: Buffer = Buffer.alloc(0);
  return {
    async read(into) {
      while (rest.length === 0) {
        const next = await chunks.next();
        if (next.done) return 0;
        rest = next.value;
      }
      const n = Math.min(rest.length, into.length);
      into.set(rest.subarray(0, n));
      rest = rest.subarray(n);
      return n;
    },
    ended: () => false,
    close: async () => {},
  };
}

/**
 * Yields each input's text in chunks of whole lines: bytes are read straight into a chunk's
 * buffer, and only the partial line after its last line end is copied into the next (a read
 * stream's 1 MiB pieces, re-joined with that partial line, cost ~0.1 s per 100 MB).
 */
export async function* readTextChunks(files: readonly string[], options: ReadOptions = {}): AsyncGenerator<TextChunk> {
  const chunkBytes = options.chunkBytes ?? 1 << 20;
  // Room for a read (or a chunk, if bigger) after the partial line carried over.
  const buffer = (carry: number) => Buffer.allocUnsafeSlow(carry + Math.max(chunkBytes, READ_BYTES));
  let bytesRead = 0;
  const inputs = files.length === 0 ? [STDIN] : files;
  for (const [index, file] of inputs.entries()) {
    const lastInput = index === inputs.length - 1;
    // A slice's lines are counted from its start: the name says where that is.
    const source = options.range ? `${sourceName(file)} (from byte ${options.range.start})` : sourceName(file);
    let line = 1;
    let offset = options.range?.start ?? 0; // byte offset of buf[0] in the source
    let warned = false;
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
    const input = file === STDIN ? streamSource(process.stdin) : await fileSource(file, options.range);
    try {
      let buf = buffer(0);
      let filled = 0;
      let ahead: Promise<number> | undefined; // the read started before the last chunk was handed out
      for (;;) {
        if (filled === buf.length) {
          // One very long line: read on until it ends.
          const bigger = Buffer.allocUnsafeSlow(2 * buf.length);
          buf.copy(bigger);
          buf = bigger;
        }
        const n = await (ahead ?? input.read(buf.subarray(filled)));
        ahead = undefined;
        if (n === 0) break;
        filled += n;
        bytesRead += n;
        options.onBytes?.(bytesRead);
        if (input.ended()) break; // the rest is the last chunk, saying so
        if (filled < chunkBytes) continue;
        const cut = buf.lastIndexOf(0x0a, filled - 1) + 1;
        if (cut === 0) continue;
        const chunk = emit(buf.subarray(0, cut), false);
        const next = buffer(filled - cut);
        filled = buf.copy(next, 0, cut, filled);
        buf = next;
        // Read on while the caller works on the chunk (without this, -j1 waited on every read).
        ahead = input.read(buf.subarray(filled));
        ahead.catch(() => {}); // awaited next time round, unless the caller stops first
        yield chunk;
      }
      if (filled > 0) yield emit(buf.subarray(0, filled), lastInput);
    } catch (err) {
      if (err instanceof ToolError) throw err;
      throw fsError(err, source);
    } finally {
      await input.close();
    }
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
