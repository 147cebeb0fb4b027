/**
 * Generation on every path (the wasm decoder and GPT2 on tfjs, each with and without the cache)
 * against the PyTorch reference (fixtures/models/<model>/greedy.json, float64): the logits of every
 * step and the greedy continuations; batches vs alone; sampled frequencies against a float64
 * softmax computed here; stop and eos.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { generate, processorsFor, type GenerateOptions, type GenerationEvent } from '../../src/generate/generate.js';
import { decoderModel, tfjsModel, type GenerationModel } from '../../src/generate/model.js';
import { applyProcessors } from '../../src/generate/processors.js';
import { sample } from '../../src/generate/sampling.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { initialParameters } from '../../src/model/params.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { Rng } from '../../src/util/rng.js';
import { fixture, fixtureDecodeModel, fixtureModel, greedyReference, maxAbsDiff } from '../helpers.js';

const tokenizer = loadTokenizer();
let tf: Tf;
beforeAll(async () => {
  tf = (await selectBackend('wasm')).tf;
});

/** Every way generation can run (src/generate/choose.ts picks one of them). */
const PATHS: [string, (dir: string) => Promise<GenerationModel>][] = [
  ['wasm decoder (shared memory, two threads) with the cache', async (dir) => decoderModel(await fixtureDecodeModel(dir, 2), true)],
  ['wasm decoder without the cache', async (dir) => decoderModel(await fixtureDecodeModel(dir, 1), false)],
  ['GPT2 on tfjs with the cache', async (dir) => tfjsModel(await fixtureModel(tf, dir), true)],
  ['GPT2 on tfjs without the cache', async (dir) => tfjsModel(await fixtureModel(tf, dir), false)],
];
const MODELS = ['tiny', 'tiny-gelu', 'tiny-fastgelu', 'tiny-ninner'];

/** A float32 pass is within ~2e-6 of PyTorch's float64 logits; a wrong formula is off by far more. */
const PYTORCH_TOLERANCE = 2e-5;

async function collect(m: GenerationModel, prompts: number[][], options: GenerateOptions): Promise<(GenerationEvent & { type: 'end' })[]> {
  const ends: (GenerationEvent & { type: 'end' })[] = [];
  for await (const e of generate(m, tokenizer, prompts, options)) if (e.type === 'end') ends.push(e);
  return ends.sort((a, b) => a.sequence - b.sequence);
}

describe.each(MODELS)('%s against PyTorch', (dir) => {
  const ref = greedyReference(dir);

  it.each(PATHS)('%s: the logits of every step of a left-padded batch', async (_, open) => {
    const m = await open(dir);
    const width = Math.max(...ref.prompts.map((p) => p.length));
    const steps = ref.first_prompt_step_logits.length;
    const batch = { width, capacity: width + steps, padOf: (b: number) => width - ref.prompts[b].length, rows: () => rows };
    let rows = ref.prompts.map((p, b) => [...Array<number>(batch.padOf(b)).fill(0), ...p]);
    const decoding = m.start(batch);
    const vocab = m.config.vocab_size;
    for (let s = 0; s < steps; s++) {
      const logits = await decoding.logits();
      expect(maxAbsDiff(logits.subarray(0, vocab), ref.first_prompt_step_logits[s]), `step ${s}`).toBeLessThan(PYTORCH_TOLERANCE);
      rows = rows.map((r, b) => [...r, ref.continuations[b][s]]); // PyTorch's tokens, whatever we would pick
    }
    decoding.dispose();
    m.dispose();
  });

  it.each(PATHS)('%s: greedy continuations', async (_, open) => {
    const m = await open(dir);
    const ends = await collect(m, ref.prompts, { maxNewTokens: 12 });
    expect(ends.map((e) => e.ids)).toEqual(ref.continuations);
    expect(ends.every((e) => e.reason === 'length')).toBe(true);
    m.dispose();
  });
});

/**
 * HF's processing (temperature, then top-k, then top-p) of logits in float64, written out here
 * independently of src/generate: the distribution a sampler must draw from. Also how far the
 * top-k and top-p cuts are from flipping (a float32 model's logits differ from PyTorch's by ~1e-6).
 */
function expectedDistribution(logits: number[], o: { temperature: number; topK: number; topP: number }): { probs: Map<number, number>; margin: number } {
  const order = logits.map((l, i) => ({ i, z: l / o.temperature })).sort((a, b) => b.z - a.z);
  const k = o.topK > 0 ? o.topK : order.length;
  let margin = k < order.length ? order[k - 1].z - order[k].z : Infinity;
  const head = order.slice(0, k);
  const weights = head.map((e) => Math.exp(e.z - head[0].z));
  const total = weights.reduce((a, b) => a + b, 0);
  let mass = 0;
  let keep = 0;
  while (keep < head.length && (keep === 0 || mass < o.topP)) mass += weights[keep++] / total;
  if (keep < head.length) margin = Math.min(margin, mass - o.topP, o.topP - (mass - weights[keep - 1] / total));
  const kept = weights.slice(0, keep).reduce((a, b) => a + b, 0);
  return { probs: new Map(head.slice(0, keep).map((e, r) => [e.i, weights[r] / kept])), margin };
}

/** The chi-squared value with `df` degrees of freedom exceeded with probability 0.001 (Wilson–Hilferty). */
const chi2Critical = (df: number) => df * (1 - 2 / (9 * df) + 3.0902 * Math.sqrt(2 / (9 * df))) ** 3;

describe('sampling against a float64 softmax of PyTorch logits', () => {
  const ref = greedyReference('tiny');
  const prompt = ref.prompts[0];
  const logits = ref.first_prompt_step_logits[0]; // PyTorch's next-token logits after the prompt
  const draws = 2000;

  it.each([
    ['top-k binding', { temperature: 0.8, topK: 6, topP: 1 }],
    ['top-p binding', { temperature: 1.3, topK: 0, topP: 0.6 }],
    ['temperature, top-k and top-p together', { temperature: 0.7, topK: 12, topP: 0.9 }],
  ] as const)('first tokens drawn by generate() follow the processed distribution (%s)', async (_, o) => {
    const { probs, margin } = expectedDistribution(logits, o);
    expect(margin, 'the cuts are far from flipping').toBeGreaterThan(1e-3);
    expect(probs.size).toBeGreaterThan(2);
    const m = decoderModel(await fixtureDecodeModel('tiny', 2), true);
    // Sequence i draws with Rng(seed, i): `draws` copies of one prompt are that many independent draws.
    const ends = await collect(m, Array.from({ length: draws }, () => prompt), { maxNewTokens: 1, doSample: true, seed: 5, batchSize: 1000, ...o });
    m.dispose();
    const counts = new Map<number, number>();
    for (const e of ends) counts.set(e.ids[0], (counts.get(e.ids[0]) ?? 0) + 1);
    expect([...counts.keys()].filter((id) => !probs.has(id)), 'tokens the processors remove').toEqual([]);
    // Bins with expected counts ≥ 5; the rest pooled.
    const bins: [number, number][] = []; // [observed, expected]
    let pooled: [number, number] = [0, 0];
    for (const [id, p] of probs) {
      const bin: [number, number] = [counts.get(id) ?? 0, p * draws];
      if (bin[1] >= 5) bins.push(bin);
      else pooled = [pooled[0] + bin[0], pooled[1] + bin[1]];
    }
    if (pooled[1] > 0) bins.push(pooled);
    const chi2 = bins.reduce((sum, [obs, exp]) => sum + (obs - exp) ** 2 / exp, 0);
    expect(chi2, JSON.stringify(bins)).toBeLessThan(chi2Critical(bins.length - 1));
  });
});

describe('generation', () => {
  const prompts = [[5, 17, 250, 31], [1], [318, 2, 160, 45, 9, 280, 77]];
  const sampling: GenerateOptions = { maxNewTokens: 10, doSample: true, temperature: 0.9, topK: 50, topP: 0.95, seed: 42 };

  it.each(PATHS)('%s: each prompt of a left-padded batch gets what it gets alone (greedy and sampled)', async (_, open) => {
    const m = await open('tiny');
    for (const options of [{ maxNewTokens: 10 }, sampling]) {
      const batched = await collect(m, prompts, { ...options, batchSize: 3 });
      const oneByOne = await collect(m, prompts, { ...options, batchSize: 1 });
      expect(batched.map((e) => e.ids)).toEqual(oneByOne.map((e) => e.ids));
    }
    m.dispose();
  });

  it('samples the same on every path, and the same for the same seed', async () => {
    const results = [];
    for (const [, open] of PATHS) {
      const m = await open('tiny-gelu');
      results.push((await collect(m, prompts, sampling)).map((e) => e.ids));
      m.dispose();
    }
    for (const r of results.slice(1)) expect(r).toEqual(results[0]);
    const m = await PATHS[0][1]('tiny-gelu');
    expect((await collect(m, prompts, sampling)).map((e) => e.ids)).toEqual(results[0]);
    expect((await collect(m, prompts, { ...sampling, seed: 43 })).map((e) => e.ids)).not.toEqual(results[0]);
    m.dispose();
  });

  it("draws the first token from the model's processed distribution with the sequence's RNG", async () => {
    const tfjs = await fixtureModel(tf, 'tiny');
    const prompt = [5, 17, 250, 31];
    const { logits } = tfjs.forward([prompt]);
    const last = (await logits.data()).slice((prompt.length - 1) * 320, prompt.length * 320) as Float32Array;
    logits.dispose();
    const m = tfjsModel(tfjs, true);
    const options: GenerateOptions = { maxNewTokens: 1, doSample: true, temperature: 0.7, topK: 20, topP: 0.9 };
    applyProcessors(processorsFor(options), last, { tokens: prompt, generated: 0 });
    for (const seed of [1, 2, 3, 4, 5]) {
      const [end] = await collect(m, [prompt], { ...options, seed });
      expect(end.ids[0]).toBe(sample(Float32Array.from(last), new Rng(seed, 0)));
    }
    m.dispose();
  });

  it('ends at end-of-text (not printed), at stop strings, or at the length', async () => {
    const m = await PATHS[0][1]('tiny');
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

  it('without a tokenizer: ids only, no text; stop strings refused', async () => {
    const m = await PATHS[0][1]('tiny');
    const ends: (GenerationEvent & { type: 'end' })[] = [];
    for await (const e of generate(m, undefined, prompts, { maxNewTokens: 12 })) if (e.type === 'end') ends.push(e);
    expect(ends.sort((a, b) => a.sequence - b.sequence).map((e) => e.ids)).toEqual(greedyReference('tiny').continuations);
    expect(ends.map((e) => e.text)).toEqual(['', '', '']);
    await expect(generate(m, undefined, prompts, { maxNewTokens: 2, stop: ['x'] }).next()).rejects.toThrow(/stop strings need a tokenizer/);
    m.dispose();
  });

  it('refuses a prompt that does not fit the context', async () => {
    const m = await PATHS[0][1]('tiny');
    await expect(collect(m, [Array(30).fill(1)], { maxNewTokens: 5 })).rejects.toThrow(/exceeds the model's 32 positions/);
    m.dispose();
  });

  it('runs models whose head size the wasm decoder cannot take through the tfjs engine, cached or not', async () => {
    // head size 3: WasmDecoder needs multiples of 4, so decode steps stay in GPT2.hidden
    const config = { ...(await loadCheckpoint(fixture('models', 'tiny'))).config, n_embd: 12, n_head: 4 };
    const params = initialParameters(config, 3);
    const cached = await collect(tfjsModel(GPT2.fromValues(tf, config, params), true), prompts, { maxNewTokens: 6 });
    const uncached = await collect(tfjsModel(GPT2.fromValues(tf, config, params), false), prompts, { maxNewTokens: 6 });
    expect(cached.map((e) => e.ids)).toEqual(uncached.map((e) => e.ids));
  });
});
