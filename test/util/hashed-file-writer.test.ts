/** HashedFileWriter: the bytes and sha256 of what was written, and a failed background write is an error. */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HashedFileWriter } from '../../src/util/hashed-file-writer.js';
import { Rng } from '../../src/util/rng.js';
import { tempDir, tinyDisk } from '../helpers.js';

const dir = tempDir();
/** 11 MiB in pieces of 0 to 2 MiB: buffers fill, go out while the next fills, and a piece spans both. */
const pieces = (() => {
  const rng = new Rng(13);
  const out: Uint8Array[] = [];
  for (let total = 0; total < 11 << 20; ) {
    const piece = new Uint8Array(rng.nextInt(2 << 20));
    for (let k = 0; k < piece.length; k += 4096) piece[k] = rng.nextInt(256);
    out.push(piece, new Uint8Array(0));
    total += piece.length;
  }
  return out;
})();

describe('HashedFileWriter', () => {
  it('writes the bytes in order and returns their size and sha256', async () => {
    const path = join(dir, 'out.bin');
    const writer = await HashedFileWriter.create(path);
    for (const piece of pieces) await writer.write(piece);
    const expected = Buffer.concat(pieces);
    expect(await writer.close()).toEqual({ bytes: expected.length, sha256: createHash('sha256').update(expected).digest('hex') });
    expect(readFileSync(path).equals(expected)).toBe(true);
  });

  it('refuses a file that exists, naming it as told', async () => {
    await expect(HashedFileWriter.create(join(dir, 'out.bin'), 'shown.bin')).rejects.toThrow(/shown\.bin/);
  });

  const tiny = tinyDisk('HashedFileWriter on a full disk');

  it.skipIf(!tiny)('a write that fails in the background is thrown by a later write, naming the file', async () => {
    const writer = await HashedFileWriter.create(join(tiny!, 'staged.bin'), 'final.bin');
    const writing = (async () => {
      for (const piece of pieces) await writer.write(piece);
    })();
    await expect(writing).rejects.toThrow(/final\.bin.*no space left on device/);
    await writer.discard();
    expect(existsSync(join(tiny!, 'staged.bin'))).toBe(true); // the caller removes it (its staged directory)
  });
});
