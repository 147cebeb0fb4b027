/**
 * The piece cache changes speed, never ids: against js-tiktoken (an independent oracle) with the
 * cache full, shared, seeded into a table of another size, and shared by threads at once.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { describe, expect, it } from 'vitest';
import { IdBuffer } from '../../src/tokenizer/id-buffer.js';
import { hashRange, MAX_SLOTS, PieceCache } from '../../src/tokenizer/piece-cache.js';
import { loadTokenizer, Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { ROOT } from '../helpers.js';

const tiktoken = new Tiktoken(gpt2Ranks);
const oracle = (text: string) => tiktoken.encode(text, [], []);
const tokenizer = loadTokenizer();
const tables = tokenizer.tables;

const put = (cache: PieceCache, text: string, ids: number[]) => {
  const bytes = Buffer.from(text);
  cache.insert(bytes, 0, bytes.length, hashRange(bytes, 0, bytes.length), Uint32Array.from(ids), 0, ids.length);
};

/** Text with many distinct pieces, most of them several tokens (made-up words, numbers, accents). */
function manyPieces(n: number, seed: number): string {
  let x = seed;
  const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const syllables = ['qua', 'zor', 'blin', 'ék', 'thr', 'ôm', 'vix', 'ulp', 'grä', 'dden'];
  const words: string[] = [];
  for (let k = 0; k < n; k++) {
    const len = 1 + (next() % 4);
    let w = '';
    for (let s = 0; s < len; s++) w += syllables[next() % syllables.length];
    words.push(k % 7 === 0 ? `${w}${next() % 100000}` : k % 11 === 0 ? `'${w}!?` : w);
  }
  return words.join(' ');
}

const lookup = (cache: PieceCache, text: string): number[] | null => {
  const out = new IdBuffer();
  const bytes = Buffer.from(text);
  return cache.emit(bytes, 0, bytes.length, hashRange(bytes, 0, bytes.length), out) ? out.toArray() : null;
};

describe('piece cache', () => {
  it('a full cache stops taking entries and ids stay right', () => {
    const cache = PieceCache.create({ slots: 64 }); // ≤ 32 entries, fewer if their keys fill the key space
    const tok = new Tokenizer(tables, 'gpt2', cache);
    const text = manyPieces(400, 1);
    expect(tok.encode(text)).toEqual(oracle(text));
    const full = cache.count;
    expect(full).toBeGreaterThan(8);
    expect(full).toBeLessThanOrEqual(32);
    expect(tok.encode(text)).toEqual(oracle(text)); // hits for what it holds, merges for the rest
    expect(cache.count).toBe(full);
    put(cache, 'zz', [3019]);
    expect(lookup(cache, 'zz')).toBeNull();
  });

  it('hits give back exactly what was inserted, one id or many', () => {
    for (const shared of [false, true]) {
      const cache = PieceCache.create({ slots: 16, shared });
      put(cache, ' the', [262]);
      put(cache, ' Valkyria', [569, 18354, 7496]);
      expect(lookup(cache, ' the')).toEqual([262]);
      expect(lookup(cache, ' Valkyria')).toEqual([569, 18354, 7496]);
      expect(lookup(cache, ' th')).toBeNull();
      put(cache, 'x'.repeat(49), [1]); // over MAX_CACHED_PIECE: not taken
      expect(lookup(cache, 'x'.repeat(49))).toBeNull();
      expect(cache.count).toBe(2);
    }
  });

  it('the seed goes into a table of any size', () => {
    const seed = tokenizer.seedPieceCache();
    expect(seed.count).toBeGreaterThan(40_000);
    for (const slots of [seed.table.length / 4, seed.table.length / 2]) {
      const cache = PieceCache.create({ slots, seed, shared: true });
      expect(cache.count).toBe(seed.count);
      for (const piece of [' the', ',', ' 1999', 'ing', ' Hello']) expect(lookup(cache, piece)).toEqual(oracle(piece));
      expect(lookup(cache, ' Valkyria')).toBeNull(); // several tokens: not in the seed
    }
    expect(() => PieceCache.create({ slots: 1 << 16, seed })).toThrow(RangeError); // 32k entries < seed
  });

  it('its replacement holds what it held, or at MAX_SLOTS starts over from the seed', () => {
    for (const shared of [false, true]) {
      const cache = PieceCache.create({ slots: 64, shared });
      const text = manyPieces(400, 2);
      expect(new Tokenizer(tables, 'gpt2', cache).encode(text)).toEqual(oracle(text));
      expect(cache.needsReplacing()).toBe(true);
      const next = cache.replacement();
      expect(next.count).toBe(cache.count);
      expect(next.shared).toBe(shared);
      const pieces = text.split(' ').slice(0, 20).map((w) => ` ${w}`);
      for (const p of pieces) expect(lookup(next, p)).toEqual(lookup(cache, p));
      expect(new Tokenizer(tables, 'gpt2', next).encode(text)).toEqual(oracle(text));
    }
    const seed = tokenizer.seedPieceCache();
    const full = PieceCache.create({ slots: MAX_SLOTS });
    put(full, ' Valkyria', [569, 18354, 7496]);
    const fresh = full.replacement(seed);
    expect(fresh.count).toBe(seed.count);
    expect(lookup(fresh, ' the')).toEqual([262]);
    expect(lookup(fresh, ' Valkyria')).toBeNull();
  });

  it('threads sharing one cache get the oracle ids while they fill it', async () => {
    const cache = PieceCache.create({ slots: 1 << 10, shared: true }); // fills up during the run
    const texts = Array.from({ length: 12 }, (_, k) => manyPieces(300, 1 + (k % 6))); // each text twice
    const dist = (file: string) => JSON.stringify(join(ROOT, 'dist', 'tokenizer', file));
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      Promise.all([import(${dist('tokenizer.js')}), import(${dist('piece-cache.js')})]).then(([{ loadTokenizer }, { PieceCache }]) => {
        const tok = loadTokenizer(undefined, PieceCache.attach(workerData.cache));
        parentPort.postMessage(workerData.texts.map((t) => tok.encode(t)));
      });`;
    const runs = await Promise.all(
      [0, 1, 2].map((k) => {
        const order = texts.map((_, i) => (i + 5 * k) % texts.length); // each thread its own order
        return new Promise<[number[], number[][]]>((resolve, reject) => {
          const w = new Worker(code, { eval: true, workerData: { cache: cache.buffer, texts: order.map((i) => texts[i]) } });
          w.once('message', (ids: number[][]) => resolve([order, ids]));
          w.once('error', reject);
        });
      }),
    );
    for (const [order, ids] of runs) order.forEach((i, j) => expect(ids[j]).toEqual(oracle(texts[i])));
    put(cache, 'zz', [3019]); // full
    expect(lookup(cache, 'zz')).toBeNull();
    const here = new Tokenizer(tables, 'gpt2', cache); // this thread reads what the threads added
    for (const text of texts) expect(here.encode(text)).toEqual(oracle(text));
  });
});
