/**
 * The encoding pool (built: its threads run dist/) gives the ids of the whole input in order for
 * any number of threads, with or without this thread taking a share, however chunks are cut into
 * parts; against js-tiktoken.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { describe, expect, it } from 'vitest';
import { fixture, ROOT } from '../helpers.js';

type Pool = typeof import('../../src/tokenizer/pool.js');
const { createEncoderPool } = (await import(join(ROOT, 'dist', 'tokenizer', 'pool.js'))) as Pool;

const tiktoken = new Tiktoken(gpt2Ranks);
const EOT = 50256;
const text = readFileSync(fixture('wikitext', 'wikitext2-sample.docs.txt'), 'utf8');
const docs = text.split('\n').filter((d) => d.length > 0);
const expected = docs.flatMap((d) => [...tiktoken.encode(d, [], []), EOT]);

/** The input as the reader hands it over: chunks of whole lines (cut after the given lines). */
function chunks(cuts: number[]): { bytes: Uint8Array; text: string; final: boolean }[] {
  const lines = text.split(/(?<=\n)/);
  const bounds = [0, ...cuts, lines.length];
  return bounds.slice(1).map((end, k) => {
    const part = lines.slice(bounds[k], end).join('');
    return { bytes: Buffer.from(part, 'utf8'), text: part, final: k === bounds.length - 2 };
  });
}

describe('encoder pool', () => {
  it.each([
    [1, false, 2000, undefined],
    [2, false, 3000, undefined],
    [2, true, 2000, undefined],
    [3, true, 700, undefined], // parts smaller than some documents: a part is then one whole line
    [3, true, 2000, 64], // a shared cache replaced by bigger ones while the threads work
    [2, false, 2000, 16],
  ])('%i encoder(s), this thread sharing: %s, parts of %i bytes, cache slots %s', async (workers, mainShare, chunkBytes, cacheSlots) => {
    const pool = createEncoderPool(workers, { docSeparator: 'eos', allowSpecial: false }, { eager: true, mainShare, chunkBytes, cacheSlots });
    const ids: number[] = [];
    let documents = 0;
    const take = (results: { ids: Uint32Array; documents: number }[]) => {
      for (const r of results) {
        ids.push(...r.ids);
        documents += r.documents;
      }
    };
    try {
      for (const chunk of chunks([3, 40, 41])) {
        await pool.submit(chunk);
        take(pool.drain());
      }
      take(await pool.finish());
    } finally {
      await pool.close();
    }
    expect(documents).toBe(docs.length);
    expect(ids).toEqual(expected);
  });

  it('a thread that cannot start fails the pool instead of hanging it', async () => {
    const pool = createEncoderPool(2, { tokenizerDir: join(ROOT, 'no-such-tokenizer'), docSeparator: 'eos', allowSpecial: false }, { eager: true, chunkBytes: 2000 });
    const run = async () => {
      for (const chunk of chunks([10])) await pool.submit(chunk);
      await pool.finish();
    };
    await expect(run()).rejects.toThrow(/no-such-tokenizer/);
    await pool.close();
  });
});
