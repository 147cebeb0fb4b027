/**
 * Our ids against independent oracles: js-tiktoken (tiktoken's own port, same rank files) and the
 * committed output of OpenAI's encoder.py algorithm in Python (test/oracle/gpt2_reference.py).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { fixture, SHARED } from '../helpers.js';

const tok = loadTokenizer();
const tiktoken = new Tiktoken(gpt2Ranks);
const oracle = (text: string) => tiktoken.encode(text, [], []);
// JavaScript's \s includes U+FEFF and lacks U+0085; tiktoken's (Unicode White_Space) is the
// reverse, so the JS oracle is wrong around these two and the Python reference decides.
const JS_REGEX_DIVERGES = /[\u0085\ufeff]/;
const hasLoneSurrogate = (s: string) => /\p{Surrogate}/u.test(s);

const cases = JSON.parse(readFileSync(fixture('tokenizer', 'hard-cases.json'), 'utf8')) as string[];
const reference = JSON.parse(readFileSync(fixture('tokenizer', 'reference-ids.json'), 'utf8')) as (number[] | null)[];

describe('hard cases (fixtures/tokenizer/hard-cases.json)', () => {
  it('has a reference result for every case', () => {
    expect(reference).toHaveLength(cases.length);
    expect(cases.length).toBeGreaterThan(70);
  });

  it.each(cases.map((text, i) => [i, text] as const))('case %i equals tiktoken and encoder.py', (i, text) => {
    const ours = tok.encode(text);
    if (!JS_REGEX_DIVERGES.test(text)) expect(ours).toEqual(oracle(text));
    if (reference[i] !== null) expect(ours).toEqual(reference[i]);
    else expect(hasLoneSurrogate(text)).toBe(true);
  });

  it('follows Unicode White_Space where the JavaScript oracle cannot', () => {
    const divergent = cases.filter((t, i) => reference[i] !== null && JSON.stringify(oracle(t)) !== JSON.stringify(reference[i]));
    expect(divergent.length).toBeGreaterThan(0);
    for (const text of divergent) {
      expect(JS_REGEX_DIVERGES.test(text)).toBe(true);
      expect(tok.encode(text)).toEqual(reference[cases.indexOf(text)]);
    }
  });

  it('decodes back to the text for every valid string', () => {
    for (const text of cases.filter((t) => !hasLoneSurrogate(t))) expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it('encodes lone surrogates as U+FFFD, as TextEncoder does', () => {
    for (const text of cases.filter(hasLoneSurrogate)) {
      expect(tok.encode(text)).toEqual(tok.encode(text.replace(/\p{Surrogate}/gu, '\ufffd')));
    }
  });
});

describe('equal-rank ties (fixtures/tokenizer/bpe-ties.json, test/oracle/make_bpe_tie_cases.py)', () => {
  // Runs of three or more copies of one part, where leftmost-first and rightmost-first merging part
  // ways ("aaa" → "aa|a", not "a|aa"), with encoder.py's ids: random strings and WikiText rarely meet them.
  const ties = JSON.parse(readFileSync(fixture('tokenizer', 'bpe-ties.json'), 'utf8')) as { rightmost_first_differs: number; cases: [string, number[]][] };

  it('holds cases on which a rightmost-first merge loop goes wrong', () => {
    expect(ties.cases.length).toBeGreaterThan(1000);
    expect(ties.rightmost_first_differs).toBeGreaterThan(1000);
  });

  it('encodes every case as encoder.py and tiktoken do', () => {
    const wrong = ties.cases.filter(([text, ids]) => JSON.stringify(tok.encode(text)) !== JSON.stringify(ids));
    expect(wrong.slice(0, 5).map(([text]) => text)).toEqual([]);
    expect(wrong).toHaveLength(0);
    for (const [text, ids] of ties.cases) if (!JS_REGEX_DIVERGES.test(text)) expect(oracle(text), JSON.stringify(text)).toEqual(ids);
  });
});

describe('random strings (property test, fixed seed)', () => {
  const tricky = fc.constantFrom(' ', '  ', '\n', '\t', '\r\n', "'", "'s", "'ll", 's', 'a', 'Z', '1', '42', 'é', 'e\u0301', '中', '😀', '\u200d', '!', '...', '\u00a0', '\u3000', '<|endoftext|>', '\ud800', '\udfff', '\u0000', '\u2028');
  const strings = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 60 }),
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.array(tricky, { maxLength: 30 }).map((parts) => parts.join('')),
  );

  it('equals tiktoken on any Unicode string', () => {
    fc.assert(
      fc.property(strings, (text) => {
        fc.pre(!JS_REGEX_DIVERGES.test(text));
        expect(tok.encode(text)).toEqual(oracle(text));
      }),
      { seed: 20261127, numRuns: 3000 },
    );
  });

  it('merges pieces on both sides of the rescan/heap switch (64 bytes) as tiktoken does', () => {
    const piece = fc.oneof(
      fc.string({ unit: fc.constantFrom('a', 'b', 'e', 'n', 'r', 't', 'é'), minLength: 20, maxLength: 120 }),
      fc.string({ unit: fc.constantFrom('0', '1', '9'), minLength: 40, maxLength: 160 }),
      fc.string({ unit: fc.constantFrom('!', '-', '=', '*'), minLength: 40, maxLength: 160 }),
    );
    fc.assert(
      fc.property(fc.array(piece, { minLength: 1, maxLength: 4 }), (pieces) => {
        const text = pieces.join(' ');
        expect(tok.encode(text)).toEqual(oracle(text));
      }),
      { seed: 2026112902, numRuns: 400 },
    );
  });

  it('round-trips valid text', () => {
    fc.assert(
      fc.property(strings, (text) => {
        fc.pre(!hasLoneSurrogate(text));
        expect(tok.decode(tok.encode(text))).toBe(text);
      }),
      { seed: 7, numRuns: 1000 },
    );
  });
});

const valid = join(SHARED, 'data', 'wikitext-2', 'wiki.valid.tokens');
describe.skipIf(!existsSync(valid))('WikiText-2 valid from ../shared', () => {
  it('equals tiktoken on the whole file', () => {
    const text = readFileSync(valid, 'utf8');
    const ours = tok.encode(text);
    const theirs = oracle(text);
    expect(ours.length).toBe(theirs.length);
    expect(ours).toEqual(theirs);
  });
});
if (!existsSync(valid)) console.warn(`SKIPPED: WikiText-2 oracle test (${valid} not found)`);
