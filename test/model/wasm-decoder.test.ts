/**
 * WasmDecoder (inference outside the tfjs engine, over DecodeModel's shared memory) step by step
 * against PyTorch's logits (greedy.json, float64) and against GPT2.forward over the whole sequence,
 * for each activation and an MLP of n_inner ≠ 4 × n_embd, with products on one and two threads.
 * Rows are computed alone, so a batch with left padding, a prompt taken in one call, and one or two
 * threads all give the same bits.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { DecodeModel } from '../../src/model/decode-model.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { initialParameters, sourcesOf } from '../../src/model/params.js';
import { decoderLimit } from '../../src/model/wasm-decoder.js';
import { fixture, fixtureDecodeModel, fixtureModel, greedyReference, maxAbsDiff } from '../helpers.js';

let tf: Tf;
beforeAll(async () => {
  tf = (await selectBackend('wasm')).tf;
});

/** A float32 pass is within ~2e-6 of PyTorch's float64 logits; a wrong formula is off by far more. */
const PYTORCH_TOLERANCE = 2e-5;

/** Logits of the last position, through the whole-sequence forward pass. */
function lastLogits(m: GPT2, ids: number[]): Float32Array {
  const { logits } = m.forward([ids]);
  const last = tf.tidy(() => tf.slice(logits, [0, ids.length - 1, 0], [1, 1, -1]).dataSync() as Float32Array);
  logits.dispose();
  return last;
}

const padded = (prompts: number[][]) => {
  const width = Math.max(...prompts.map((p) => p.length));
  const pad = prompts.map((p) => width - p.length);
  return {
    width,
    pad,
    rows: prompts.map((p, b) => [...Array<number>(pad[b]).fill(0), ...p]),
    positions: prompts.map((_, b) => Array.from({ length: width }, (_, t) => Math.max(0, t - pad[b]))),
  };
};

/**
 * The prompts in one call (or token by token), then steps[b][s]: the logits after the prompt and
 * after each step, [steps + 1][B · vocab].
 */
function decodeOnModel(dm: DecodeModel, prompts: number[][], steps: number[][], promptAtOnce = true): Float32Array[] {
  const { width, pad, rows, positions } = padded(prompts);
  const decoder = dm.decoder(prompts.length, width + steps[0].length, pad, promptAtOnce ? width : 1);
  let first: Float32Array;
  if (promptAtOnce) first = decoder.forward(rows, positions);
  else for (let t = 0; t < width; t++) first = decoder.step(rows.map((r) => r[t]), positions.map((p) => p[t]));
  const out = [first!, ...steps[0].map((_, s) => decoder.step(steps.map((row) => row[s]), prompts.map((p) => p.length + s)))];
  decoder.dispose();
  return out;
}

describe.each(['tiny', 'tiny-gelu', 'tiny-fastgelu', 'tiny-ninner'])('WasmDecoder on %s', (dir) => {
  it("gives PyTorch's logits at every step, and those of a forward pass over the whole sequence", async () => {
    const ref = greedyReference(dir);
    const [prompt, next] = [ref.prompts[0], ref.continuations[0].slice(0, -1)];
    const m = await fixtureModel(tf, dir);
    for (const threads of [1, 2]) {
      const dm = await fixtureDecodeModel(dir, threads);
      const steps = decodeOnModel(dm, [prompt], [next]);
      expect(steps).toHaveLength(ref.first_prompt_step_logits.length);
      for (const [s, logits] of steps.entries()) {
        expect(maxAbsDiff(logits, ref.first_prompt_step_logits[s]), `step ${s}, ${threads} threads: PyTorch`).toBeLessThan(PYTORCH_TOLERANCE);
        expect(maxAbsDiff(logits, lastLogits(m, [...prompt, ...next.slice(0, s)])), `step ${s}: GPT2.forward`).toBeLessThan(1e-4);
      }
      dm.dispose();
    }
    m.dispose();
  });

  it('on two threads gives the same logits, bit for bit, as on one', async () => {
    const prompt = [5, 17, 200, 3, 99];
    const next = [42, 7, 311, 0, 128, 64];
    const [one, two] = [await fixtureDecodeModel(dir, 1), await fixtureDecodeModel(dir, 2)];
    expect([one.threads, two.threads]).toEqual([1, 2]);
    const a = decodeOnModel(one, [prompt], [next]);
    const b = decodeOnModel(two, [prompt], [next]);
    for (const [s, logits] of a.entries()) expect(Array.from(b[s]), `step ${s}`).toEqual(Array.from(logits));
    one.dispose();
    two.dispose();
  });
});

describe('WasmDecoder batches and prompts', () => {
  const prompts = [[11, 12, 13, 14, 15, 16], [300, 1], [7, 8, 9]];
  const next = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];

  it('batch or alone, prompt in one call or token by token, the same bits; each sequence as GPT2.forward', async () => {
    const dm = await fixtureDecodeModel('tiny', 2);
    const m = await fixtureModel(tf, 'tiny');
    const vocab = dm.config.vocab_size;
    const together = decodeOnModel(dm, prompts, next);
    for (const [b, p] of prompts.entries()) {
      for (const promptAtOnce of [true, false]) {
        const alone = decodeOnModel(dm, [p], [next[b]], promptAtOnce);
        for (const [s, logits] of alone.entries()) expect(Array.from(together[s].subarray(b * vocab, (b + 1) * vocab)), `sequence ${b} step ${s}`).toEqual(Array.from(logits));
      }
      expect(maxAbsDiff(together[4].subarray(b * vocab, (b + 1) * vocab), lastLogits(m, [...p, ...next[b]])), `sequence ${b}`).toBeLessThan(1e-4);
    }
    m.dispose();
    dm.dispose();
  });

  // Long prompts take the GEMM for the products (from 10 rows) and for attention (blocks of up to
  // 128 query rows of a head); a step, or a prompt token by token, the few-row kernels. A random
  // model with a context of 300 and weights at 0.3 (sharp attention: a row's wrong keys show).
  it('long prompts through the GEMM: the bits of token by token, of alone, of one thread; as GPT2.forward', async () => {
    const base = (await loadCheckpoint(fixture('models', 'tiny'))).config;
    const config = { ...base, n_positions: 300, initializer_range: 0.3 };
    const values = initialParameters(config, 3);
    const [one, two] = [await DecodeModel.fromSources(config, sourcesOf(values), 1), await DecodeModel.fromSources(config, sourcesOf(values), 2)];
    const m = GPT2.fromValues(tf, config, values);
    const vocab = config.vocab_size;
    const ids = (n: number, seed: number) => Array.from({ length: n }, (_, t) => (seed * 31 + t * 97) % vocab);
    const long = [ids(270, 1), ids(139, 2)]; // blocks of 128, 128 and 14 rows; the second padded by 131
    const next = [[4, 5], [6, 7]];
    const together = decodeOnModel(two, long, next);
    expect(decodeOnModel(one, long, next).map((l) => Array.from(l)), 'one thread').toEqual(together.map((l) => Array.from(l)));
    for (const [b, p] of long.entries()) {
      const row = (l: Float32Array) => Array.from(l.subarray(b * vocab, (b + 1) * vocab));
      for (const promptAtOnce of [true, false]) {
        const alone = decodeOnModel(two, [p], [next[b]], promptAtOnce);
        for (const [s, logits] of alone.entries()) expect(row(together[s]), `sequence ${b} step ${s}, prompt at once: ${promptAtOnce}`).toEqual(Array.from(logits));
      }
      expect(maxAbsDiff(row(together[2]), lastLogits(m, [...p, ...next[b]])), `sequence ${b}`).toBeLessThan(1e-4);
    }
    // In chunks after a cached part: 130 rows, then 128 + 1 (the last block's one row takes nn).
    const chunked = two.decoder(1, 260, [0], 130);
    chunked.forward([long[0].slice(0, 130)], [Array.from({ length: 130 }, (_, t) => t)]);
    const logits = chunked.forward([long[0].slice(130, 259)], [Array.from({ length: 129 }, (_, t) => 130 + t)]);
    chunked.dispose();
    expect(Array.from(logits)).toEqual(Array.from(decodeOnModel(one, [long[0].slice(0, 259)], [[]], false)[0]));
    m.dispose();
    one.dispose();
    two.dispose();
  });

  it('refuses to run past its capacity', async () => {
    const dm = await fixtureDecodeModel('tiny', 1);
    const decoder = dm.decoder(1, 3, [0], 2);
    decoder.forward([[1, 2]], [[0, 1]]);
    decoder.step([3], [2]);
    expect(() => decoder.step([4], [3])).toThrow(/full/);
    expect(() => decoder.forward([[1, 2, 3]], [[0, 1, 2]])).toThrow(/1…2 tokens/);
    decoder.dispose();
    dm.dispose();
  });

  it('refuses a model whose widths its kernels cannot take, naming them', async () => {
    const base = (await loadCheckpoint(fixture('models', 'tiny'))).config;
    expect(decoderLimit(base)).toBeUndefined();
    expect(decoderLimit({ ...base, n_inner: 52 })).toBeUndefined();
    expect(decoderLimit({ ...base, n_inner: 50 })).toBe('the wasm decoder needs multiples of 4, and n_inner is 50');
    expect(decoderLimit({ ...base, n_embd: 12, n_head: 4 })).toBe('the wasm decoder needs multiples of 4, and the head size is 3');
    const odd = { ...base, n_inner: 50 };
    const dm = await DecodeModel.fromSources(odd, sourcesOf(initialParameters(odd, 1)), 1);
    expect(() => dm.decoder(1, 4, [0], 1)).toThrow('the wasm decoder needs multiples of 4, and n_inner is 50');
    dm.dispose();
  });
});
