/** Logits processors and the sampler on hand-made logits (expected values worked out by hand). */
import { describe, expect, it } from 'vitest';
import { applyProcessors, minNewTokens, noRepeatNgram, repetitionPenalty, softmax, temperature, topK, topP } from '../../src/generate/processors.js';
import { argmax, sample } from '../../src/generate/sampling.js';
import { StopStringFilter } from '../../src/generate/stop.js';
import { Rng } from '../../src/util/rng.js';

const L = (...v: number[]) => Float32Array.from(v);
const ctx = (tokens: number[] = [], generated = 0) => ({ tokens, generated });
const run = (p: (l: Float32Array, c: ReturnType<typeof ctx>) => void, logits: Float32Array, c = ctx()) => {
  p(logits, c);
  return Array.from(logits);
};

describe('processors', () => {
  it('temperature divides', () => {
    expect(run(temperature(2), L(2, -4, 0))).toEqual([1, -2, 0]);
    expect(() => temperature(0)).toThrow(/temperature must be > 0/);
  });

  it('top-k keeps the k largest, ties at the k-th included', () => {
    expect(run(topK(2), L(1, 5, 3, 4))).toEqual([-Infinity, 5, -Infinity, 4]);
    expect(run(topK(2), L(1, 5, 4, 4))).toEqual([-Infinity, 5, 4, 4]);
    expect(run(topK(0), L(1, 2))).toEqual([1, 2]);
    expect(() => topK(-1)).toThrow(/top-k must be an integer ≥ 0/);
  });

  it('top-p keeps the smallest head with mass ≥ p', () => {
    // probabilities of ln(0.5), ln(0.3), ln(0.15), ln(0.05) are exactly those numbers
    const logits = () => L(Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05));
    const kept = (p: number) => run(topP(p), logits()).map((v) => v !== -Infinity);
    expect(kept(0.5)).toEqual([true, false, false, false]); // 0.5 already reaches 0.5
    expect(kept(0.6)).toEqual([true, true, false, false]); // 0.5 < 0.6 ≤ 0.8
    expect(kept(0.9)).toEqual([true, true, true, false]); // 0.8 < 0.9 ≤ 0.95
    expect(kept(1)).toEqual([true, true, true, true]);
    expect(kept(0.01)).toEqual([true, false, false, false]); // always at least one
    expect(() => topP(0)).toThrow(/top-p must be in \(0, 1\]/);
  });

  it('top-p at an exact boundary: a head whose mass equals p is enough', () => {
    // Eight equal logits (and two removed): every probability is exactly 1/8 and every partial sum
    // k/8 exact in floating point, so mass = p is a tie that only `mass < p` resolves as HF does.
    const logits = () => L(3, 3, 3, 3, -Infinity, 3, 3, 3, 3, -Infinity);
    const kept = (p: number) => run(topP(p), logits()).map((v) => v !== -Infinity);
    expect(kept(0.375)).toEqual([true, true, true, false, false, false, false, false, false, false]); // 3/8 reaches 0.375
    expect(kept(0.5)).toEqual([true, true, true, true, false, false, false, false, false, false]);
    expect(kept(0.125)).toEqual([true, false, false, false, false, false, false, false, false, false]);
    expect(kept(0.875)).toEqual([true, true, true, true, false, true, true, true, false, false]);
    expect(() => topP(1.5)).toThrow(/top-p must be in \(0, 1\]/);
  });

  it('repetition penalty divides positive and multiplies negative logits of seen tokens', () => {
    expect(run(repetitionPenalty(2), L(4, -4, 4, -4), ctx([0, 1, 1]))).toEqual([2, -8, 4, -4]);
  });

  it('no-repeat-ngram bans completing a seen n-gram', () => {
    // tokens 1 2 3 1 2: the bigram (2, 3) was seen after 2, so after the final 2, token 3 is banned (n = 2)
    expect(run(noRepeatNgram(2), L(0, 0, 0, 0, 0), ctx([1, 2, 3, 1, 2]))).toEqual([0, 0, 0, -Infinity, 0]);
    // trigrams: (1, 2, 3) seen; ends with 1 2 → 3 banned
    expect(run(noRepeatNgram(3), L(0, 0, 0, 0), ctx([1, 2, 3, 1, 2]))).toEqual([0, 0, 0, -Infinity]);
    // unigram: every seen token banned
    expect(run(noRepeatNgram(1), L(0, 0, 0, 0), ctx([1, 3]))).toEqual([0, -Infinity, 0, -Infinity]);
  });

  it('min-new-tokens forbids end-of-text until enough tokens are out', () => {
    expect(run(minNewTokens(2, [3]), L(0, 0, 0, 9), ctx([], 1))).toEqual([0, 0, 0, -Infinity]);
    expect(run(minNewTokens(2, [3]), L(0, 0, 0, 9), ctx([], 2))).toEqual([0, 0, 0, 9]);
  });

  it('compose in order', () => {
    const logits = L(2, 4, 6);
    applyProcessors([temperature(2), topK(1)], logits, ctx());
    expect(Array.from(logits)).toEqual([-Infinity, -Infinity, 3]);
  });
});

describe('sampling', () => {
  it('argmax takes the lowest index on ties', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
  });

  it('draws with the softmax frequencies (chi-squared, fixed seed)', () => {
    const logits = L(0, Math.log(2), Math.log(3), -Infinity, Math.log(4));
    const p = softmax(logits); // 0.1 0.2 0.3 0 0.4
    expect(Array.from(p)).toEqual([0.1, 0.2, 0.3, 0, 0.4].map((x) => expect.closeTo(x, 6))); // float32 logs
    const rng = new Rng(11);
    const n = 20000;
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < n; i++) counts[sample(logits, rng)]++;
    expect(counts[3]).toBe(0);
    const chi2 = [0, 1, 2, 4].reduce((s, i) => s + (counts[i] - n * p[i]) ** 2 / (n * p[i]), 0);
    expect(chi2).toBeLessThan(16.27); // p = 0.001, 3 degrees of freedom
  });
});

describe('stop strings', () => {
  it('hold back a possible prefix and cut the stop string', () => {
    const f = new StopStringFilter(['\n\n', 'END']);
    expect(f.push('Hello')).toEqual({ release: 'Hello', stopped: false });
    expect(f.push(' world\n')).toEqual({ release: ' world', stopped: false }); // "\n" may start "\n\n"
    expect(f.push('E')).toEqual({ release: '\n', stopped: false }); // "\nE" is no prefix, "E" is
    expect(f.push('NDING')).toEqual({ release: '', stopped: true }); // "END" found: stop before it
  });
  it('flush releases what was held', () => {
    const f = new StopStringFilter(['###']);
    expect(f.push('a ##')).toEqual({ release: 'a ', stopped: false });
    expect(f.flush()).toBe('##');
  });
});
