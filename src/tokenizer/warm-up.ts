/**
 * Puts an encoding thread's V8 in the state it will run in before anything is optimized, so the
 * encoder is compiled once, not thrown away and compiled again mid-run: ~50–80 ms of compiling
 * for encodeOrdinary alone each time, on a machine whose 2 cores the encoding threads already
 * keep busy (traced with --trace-opt --trace-deopt on WikiText-2: 3 compiles of encodeOrdinary
 * a thread before, 2 after, the OSR one and the regular one).
 *
 * - Type feedback for every branch: a branch that has not run when TurboFan compiles (a DYNAMIC
 *   cache hit, a multi-id hit, a non-Latin letter, a 4-byte character) becomes a deoptimization.
 *   Encoding SAMPLE (well under a millisecond, interpreted) takes them all, in a throwaway shared
 *   cache so that the real one gets none of its pieces.
 * - The first ArrayBuffer detached in an isolate (a worker transferring its first ids) breaks the
 *   assumption that none ever is, on which all optimized typed-array code depends. Detaching one
 *   here costs the encoder nothing measurable (within noise on WikiText-2) and the recompile.
 */
import { encodeDocuments, type DocumentEncoding } from './documents.js';
import { IdBuffer } from './id-buffer.js';
import { PieceCache } from './piece-cache.js';
import type { Tokenizer } from './tokenizer.js';

const SAMPLE = [
  "The cat's 2 hats weren't there; they'll be back, I'd say... We've 1999 ideas, you're 'right' ²",
  'Ünïcödé résumé — naïve café “quoted” £300 Māori š\u2009x', // pages 0, 1 and 0x20 only: a page costs ~1 ms
  'emoji 😀😀 🤖 and tabs\t\tand   spaces \u0085 \u2009\u2009x',
  `supercalifragilisticexpialidocious ${'abcdefghij'.repeat(6)} antidisestablishmentarianism`,
  "The cat's 2 hats weren't there; Ünïcödé résumé 😀😀 supercalifragilisticexpialidocious\r",
];

/** Encodes SAMPLE twice (the second time it hits what the first cached), in a cache of its own. */
export function warmUp(tokenizer: Tokenizer, how: DocumentEncoding): void {
  const detached = new ArrayBuffer(8);
  structuredClone(detached, { transfer: [detached] });
  const cache = tokenizer.useCache(PieceCache.create({ slots: 256, shared: true }));
  const text = `${SAMPLE.join('\n')}\n\n${SAMPLE.join('\n')}\n`;
  encodeDocuments(tokenizer, Buffer.from(text, 'utf8'), how, new IdBuffer(16));
  tokenizer.useCache(cache);
}
