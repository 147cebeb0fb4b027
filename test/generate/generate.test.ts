/**
 * Generation against the PyTorch reference (greedy continuations of fixtures/models/<model>/greedy.json,
 * computed in float64), cache vs no cache, batches vs alone, seeded sampling, stop and eos.
 */
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { generate, processorsFor, type GenerateOptions, type GenerationEvent } from '../../src/generate/generate.js';
import { applyProcessors } from '../../src/generate/processors.js';
import { sample } from '../../src/generate/sampling.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { DecodeModel } from '../../src/model/decode-model.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { initialParameters } from '../../src/model/params.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { Rng } from '../../src/util/rng.js';
import { fixture, fixtureModel } from '../helpers.js';

const tokenizer = loadTokenizer();
let tf: Tf;
beforeAll(async () => {
  tf = (await selectBackend('wasm')).tf;
});

const model = (dir: string): Promise<GPT2> => fixtureModel(tf, dir);
const decodeModel = async (dir: string): Promise<DecodeModel> => {
  const ck = await loadCheckpoint(fixture('models', dir));
  return DecodeModel.fromValues(ck.config, ck.values, 2);
};

async function collect(m: GPT2 | DecodeModel, prompts: number[][], options: GenerateOptions): Promise<(GenerationEvent & { type: 'end' })[]> {
  const ends: (GenerationEvent & { type: 'end' })[] = [];
  for await (const e of generate(m, tokenizer, prompts, options)) if (e.type === 'end') ends.push(e);
  return ends.sort((a, b) => a.sequence - b.sequence);
}

describe.each(['tiny', 'tiny-gelu', 'tiny-fastgelu'])('greedy decoding of %s equals the PyTorch reference', (dir) => {
  const ref = JSON.parse(readFileSync(fixture('models', dir, 'greedy.json'), 'utf8')) as { prompts: number[][]; continuations: number[][] };
  it.each([
    ['GPT2 with the cache, decode steps by WasmDecoder on the tfjs heap', { useCache: true }, false],
    ['GPT2 with the cache, decode steps through the tfjs engine', { useCache: true, fastDecode: false }, false],
    ['GPT2 without the cache', { useCache: false }, false],
    ['DecodeModel (shared memory, two threads) with the cache', { useCache: true }, true],
    ['DecodeModel without the cache', { useCache: false }, true],
  ] as const)('%s', async (_, flags, shared) => {
    const m = shared ? await decodeModel(dir) : await model(dir);
    const ends = await collect(m, ref.prompts, { maxNewTokens: 12, ...flags });
    expect(ends.map((e) => e.ids)).toEqual(ref.continuations);
    expect(ends.every((e) => e.reason === 'length')).toBe(true);
    m.dispose();
  });
});

describe('generation', () => {
  const prompts = [[5, 17, 250, 31], [1], [318, 2, 160, 45, 9, 280, 77]];
  const sampling: GenerateOptions = { maxNewTokens: 10, doSample: true, temperature: 0.9, topK: 50, topP: 0.95, seed: 42 };

  it.each([false, true])('gives each prompt of a left-padded batch what it gets alone (greedy and sampled; DecodeModel %s)', async (shared) => {
    const m = shared ? await decodeModel('tiny') : await model('tiny');
    for (const options of [{ maxNewTokens: 10 }, sampling]) {
      const batched = await collect(m, prompts, { ...options, batchSize: 3 });
      const oneByOne = await collect(m, prompts, { ...options, batchSize: 1 });
      expect(batched.map((e) => e.ids)).toEqual(oneByOne.map((e) => e.ids));
    }
    m.dispose();
  });

  it('samples the same with and without the cache, and the same for the same seed', async () => {
    const m = await model('tiny-gelu');
    const a = await collect(m, prompts, { ...sampling, useCache: true });
    const b = await collect(m, prompts, { ...sampling, useCache: false });
    const c = await collect(m, prompts, { ...sampling });
    const d = await collect(m, prompts, { ...sampling, seed: 43 });
    const shared = await decodeModel('tiny-gelu');
    const e = await collect(shared, prompts, { ...sampling });
    shared.dispose();
    expect(b.map((e) => e.ids)).toEqual(a.map((e) => e.ids));
    expect(e.map((e) => e.ids)).toEqual(a.map((e) => e.ids));
    expect(c.map((e) => e.ids)).toEqual(a.map((e) => e.ids));
    expect(d.map((e) => e.ids)).not.toEqual(a.map((e) => e.ids));
    m.dispose();
  });

  it("draws the first token from the model's processed distribution with the sequence's RNG", async () => {
    const m = await model('tiny');
    const prompt = [5, 17, 250, 31];
    const { logits } = m.forward([prompt]);
    const last = (await logits.data()).slice((prompt.length - 1) * 320, prompt.length * 320) as Float32Array;
    logits.dispose();
    const options: GenerateOptions = { maxNewTokens: 1, doSample: true, temperature: 0.7, topK: 20, topP: 0.9 };
    applyProcessors(processorsFor(options), last, { tokens: prompt, generated: 0 });
    for (const seed of [1, 2, 3, 4, 5]) {
      const [end] = await collect(m, [prompt], { ...options, seed });
      expect(end.ids[0]).toBe(sample(Float32Array.from(last), new Rng(seed, 0)));
    }
    m.dispose();
  });

  it('ends at end-of-text (not printed), at stop strings, or at the length', async () => {
    const m = await model('tiny');
    const greedyFirst = (await collect(m, [[5, 17, 250, 31]], { maxNewTokens: 3 }))[0].ids; // 73 73 73
    const eos = await collect(m, [[5, 17, 250, 31]], { maxNewTokens: 10, eosIds: [greedyFirst[0]] });
    expect(eos[0]).toMatchObject({ reason: 'eos', ids: [] });
    const held = await collect(m, [[5, 17, 250, 31]], { maxNewTokens: 10, eosIds: [greedyFirst[0]], minNewTokens: 2 });
    expect(held[0].ids.length).toBeGreaterThanOrEqual(2);
    expect(held[0].ids.slice(0, 2)).not.toContain(greedyFirst[0]);
    const text = tokenizer.decode(greedyFirst); // the same character three times
    const stop = await collect(m, [[5, 17, 250, 31]], { maxNewTokens: 10, stop: [text.slice(0, 2)] });
    expect(stop[0]).toMatchObject({ reason: 'stop', text: '' }); // stopped at the second token, the stop string not kept
    expect(stop[0].ids).toHaveLength(2);
    const length = await collect(m, [[5, 17, 250, 31]], { maxNewTokens: 3, stop: ['not there'] });
    expect(length[0]).toMatchObject({ reason: 'length', text });
    m.dispose();
  });

  it('refuses a prompt that does not fit the context', async () => {
    const m = await model('tiny');
    await expect(collect(m, [Array(30).fill(1)], { maxNewTokens: 5 })).rejects.toThrow(/exceeds the model's 32 positions/);
    m.dispose();
  });

  it('runs models whose head size the wasm decoder cannot take through the tfjs engine', async () => {
    // head size 3: WasmDecoder needs multiples of 4, so decode steps stay in GPT2.hidden
    const config = { ...(await loadCheckpoint(fixture('models', 'tiny'))).config, n_embd: 12, n_head: 4 };
    const m = GPT2.fromValues(tf, config, initialParameters(config, 3));
    const cached = await collect(m, prompts, { maxNewTokens: 6 });
    const uncached = await collect(m, prompts, { maxNewTokens: 6, useCache: false });
    expect(cached.map((e) => e.ids)).toEqual(uncached.map((e) => e.ids));
    m.dispose();
  });
});
