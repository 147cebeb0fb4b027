/**
 * The one place that decides how generation runs: the wasm decoder on wasm when its kernels take
 * the model's widths, GPT2 on tfjs otherwise; said on stderr with the reason. The models it opens
 * give PyTorch's greedy ids.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chooseEngine, openGenerationModel } from '../../src/generate/choose.js';
import { generate } from '../../src/generate/generate.js';
import type { GenerationModel } from '../../src/generate/model.js';
import { loadCheckpoint, saveCheckpoint } from '../../src/formats/checkpoint.js';
import { initialParameters } from '../../src/model/params.js';
import { fixture, greedyReference, tempDir } from '../helpers.js';

const dir = tempDir();

async function greedy(m: GenerationModel, prompts: number[][], maxNewTokens: number): Promise<number[][]> {
  const ids: number[][] = [];
  for await (const e of generate(m, undefined, prompts, { maxNewTokens, batchSize: 3 })) if (e.type === 'end') ids[e.sequence] = e.ids;
  return ids;
}

async function open(source: string, backend: string, cache = true) {
  const lines: string[] = [];
  const opened = await openGenerationModel(source, { backend, cache, threads: 2, log: (m) => lines.push(m) });
  return { model: opened.model, lines: lines.filter((l) => l.startsWith('generation: ')) };
}

describe('chooseEngine', () => {
  it('takes the wasm decoder on wasm when its kernels take the widths, tfjs otherwise, and says why', async () => {
    const c = (await loadCheckpoint(fixture('models', 'tiny'))).config;
    expect(chooseEngine(c, 'wasm')).toEqual({ engine: 'wasm-decoder', why: 'backend wasm' });
    expect(chooseEngine({ ...c, n_inner: 52 }, 'wasm')).toEqual({ engine: 'wasm-decoder', why: 'backend wasm' });
    expect(chooseEngine({ ...c, n_inner: 50 }, 'wasm')).toEqual({ engine: 'tfjs', why: 'the wasm decoder needs multiples of 4, and n_inner is 50' });
    expect(chooseEngine({ ...c, n_embd: 12, n_head: 4 }, 'wasm')).toEqual({ engine: 'tfjs', why: 'the wasm decoder needs multiples of 4, and the head size is 3' });
    for (const backend of ['cpu', 'tensorflow', 'tensorflow-gpu']) expect(chooseEngine(c, backend)).toEqual({ engine: 'tfjs', why: `backend ${backend}` });
  });
});

describe('openGenerationModel', () => {
  it.each([
    ['tiny-ninner', 'wasm', true, 'wasm decoder of our own (SIMD, 2 threads), key/value cache (backend wasm)'],
    ['tiny-ninner', 'wasm', false, 'wasm decoder of our own (SIMD, 2 threads), whole context every step (backend wasm)'],
    ['tiny', 'cpu', true, 'GPT2 on tfjs (cpu), key/value cache (backend cpu)'],
    ['tiny-gelu', 'cpu', false, 'GPT2 on tfjs (cpu), whole context every step (backend cpu)'],
  ] as const)('%s on %s (cache %s): one line on stderr, and PyTorch\'s greedy ids', async (name, backend, cache, line) => {
    const { model, lines } = await open(fixture('models', name), backend, cache);
    expect(lines).toEqual([`generation: ${line}`]);
    expect(model.backend).toBe(backend);
    const ref = greedyReference(name);
    expect(await greedy(model, ref.prompts, 12)).toEqual(ref.continuations);
    model.dispose();
  });

  it('runs a model whose n_inner the wasm decoder cannot take on tfjs (wasm), naming why', async () => {
    const config = { ...(await loadCheckpoint(fixture('models', 'tiny'))).config, n_inner: 50 };
    const path = join(dir, 'ninner50');
    await saveCheckpoint(path, config, initialParameters(config, 4));
    const cached = await open(path, 'wasm');
    expect(cached.lines).toEqual(['generation: GPT2 on tfjs (wasm), key/value cache (the wasm decoder needs multiples of 4, and n_inner is 50)']);
    const uncached = await open(path, 'wasm', false);
    const prompts = [[5, 17, 250, 31], [1], [318, 2, 160, 45, 9, 280, 77]];
    expect(await greedy(cached.model, prompts, 8)).toEqual(await greedy(uncached.model, prompts, 8));
    cached.model.dispose();
    uncached.model.dispose();
  });
});
