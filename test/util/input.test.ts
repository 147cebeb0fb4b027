/** readTextChunks: chunks of whole lines that tile the input, bad bytes located exactly. */
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lineRange, readTextChunks, type ReadOptions, type TextChunk } from '../../src/util/input.js';
import { ToolError } from '../../src/util/errors.js';
import { tempDir } from '../helpers.js';

const dir = tempDir();
let n = 0;
const file = (bytes: Buffer) => {
  const path = join(dir, `in-${n++}.txt`);
  writeFileSync(path, bytes);
  return path;
};
const read = async (files: string[], options: ReadOptions = {}) => {
  const chunks: TextChunk[] = [];
  for await (const chunk of readTextChunks(files, options)) chunks.push(chunk);
  return chunks;
};
/** ~6 MB: lines of 1 to 600 bytes and one of 2.5 MB (longer than a read: its buffer grows). */
const lines = Array.from({ length: 30_000 }, (_, k) => (k === 7777 ? 'L'.repeat(2_500_000) : `line ${k} ${'é€😀x'.repeat(k % 60)}`));
const text = Buffer.from(lines.join('\n') + '\nno newline at the end', 'utf8');

describe('readTextChunks', () => {
  it('tiles each input with whole lines, numbering them, whatever the chunk size', async () => {
    const a = file(text);
    const b = file(Buffer.from('second\ninput\n'));
    for (const chunkBytes of [1, 1000, 1 << 16, 1 << 20]) {
      const chunks = await read([a, b], { chunkBytes });
      const ofA = chunks.filter((c) => c.source === a);
      expect(Buffer.concat(ofA.map((c) => c.bytes)).equals(text)).toBe(true);
      expect(Buffer.concat(chunks.filter((c) => c.source === b).map((c) => c.bytes)).toString()).toBe('second\ninput\n');
      let line = 1;
      for (const [k, c] of ofA.entries()) {
        expect(c.firstLine).toBe(line);
        line += c.text.split('\n').length - 1;
        if (k < ofA.length - 1) expect(c.bytes[c.bytes.length - 1]).toBe(0x0a);
      }
      expect(chunks.map((c) => c.final)).toEqual(chunks.map((_, k) => k === chunks.length - 1));
      expect(ofA.length).toBeGreaterThan(3);
    }
  });

  it('reads a line range of a file, and nothing for an empty one', async () => {
    const a = file(text);
    const range = await lineRange(a, 5000, 3_000_000);
    const chunks = await read([a], { range, chunkBytes: 4096 });
    expect(Buffer.concat(chunks.map((c) => c.bytes)).equals(text.subarray(range.start, range.end))).toBe(true);
    expect(chunks[0].source).toBe(`${a} (from byte ${range.start})`);
    expect(await read([a], { range: { start: 10, end: 10 } })).toEqual([]);
  });

  it('names the byte and line of the first invalid UTF-8, in any chunk; --lossy replaces it and warns once', async () => {
    const bad = Buffer.concat([text.subarray(0, 4_000_000), Buffer.from([0xff]), text.subarray(4_000_000), Buffer.from([0xc3])]);
    const at = 4_000_000;
    const line = text.subarray(0, at).toString('latin1').split('\n').length;
    const a = file(bad);
    for (const chunkBytes of [1000, 1 << 20]) {
      await expect(read([a], { chunkBytes })).rejects.toThrow(new ToolError(`${a}: invalid UTF-8 at byte ${at} (line ${line}); use --lossy to replace bad bytes with U+FFFD`));
      const warnings: string[] = [];
      const chunks = await read([a], { chunkBytes, lossy: true, onWarning: (w) => warnings.push(w) });
      expect(warnings).toEqual([`${a}: invalid UTF-8 at byte ${at} (line ${line}) and any later bad bytes replaced with U+FFFD`]);
      expect(chunks.map((c) => c.text).join('')).toBe(bad.toString('utf8'));
    }
  });

  it('reads a pipe given by name (a FIFO, `<(…)`) to its end', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const writer = spawn('sh', ['-c', `cat "${file(text)}" > "${fifo}"`]);
    const written = new Promise((resolve) => writer.on('close', resolve));
    const chunks = await read([fifo], { chunkBytes: 1 << 16 });
    expect(Buffer.concat(chunks.map((c) => c.bytes)).equals(text)).toBe(true);
    expect(await written).toBe(0);
  });

  it('a missing file is a one-line error naming it', async () => {
    await expect(read([join(dir, 'missing.txt')])).rejects.toThrow(/missing\.txt/);
  });
});
