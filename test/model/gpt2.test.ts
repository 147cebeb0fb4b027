/**
 * The model against the PyTorch reference (fixtures/models, made by test/oracle/make_model_fixtures.py
 * in float64): logits within 1e-4 on wasm and cpu for every activation and storage dtype, padded
 * batches, incremental decoding equal to a full pass, and no leaked tensors.
 */
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { presetConfig } from '../../src/model/config.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { initialParameters } from '../../src/model/params.js';
import { fixture } from '../helpers.js';

interface Expected {
  ids: number[][];
  logits: number[][][];
  padded: { ids: number[][]; attention_mask: number[][]; position_ids: number[][]; logits: number[][][] };
}

const expected = (name: string) => JSON.parse(readFileSync(fixture('models', name, 'expected.json'), 'utf8')) as Expected;

function maxAbsDiff(got: number[][][], want: number[][][], mask?: number[][]): number {
  let max = 0;
  got.forEach((row, b) =>
    row.forEach((logits, t) => {
      if (mask && !mask[b][t]) return;
      logits.forEach((v, k) => (max = Math.max(max, Math.abs(v - want[b][t][k]))));
    }),
  );
  return max;
}

async function model(tf: Tf, dir: string): Promise<GPT2> {
  const ck = await loadCheckpoint(fixture('models', dir));
  return GPT2.fromValues(tf, ck.config, ck.values);
}

for (const backendName of ['wasm', 'cpu'] as const) {
  describe(`GPT-2 on ${backendName}`, () => {
    let tf: Tf;
    beforeAll(async () => {
      tf = (await selectBackend(backendName)).tf;
    });

    it.each([
      ['tiny', 'tiny'],
      ['tiny-gelu', 'tiny-gelu'],
      ['tiny-fastgelu', 'tiny-fastgelu'],
      ['tiny-ninner', 'tiny-ninner'],
      ['tiny-f16', 'tiny-f16'],
      ['tiny-bf16', 'tiny-bf16'],
      ['tiny-noprefix', 'tiny'],
      ['tiny-legacy', 'tiny'],
      ['tiny-strided', 'tiny'],
    ])('%s: logits equal the PyTorch reference within 1e-4', async (dir, reference) => {
      const m = await model(tf, dir);
      const want = expected(reference);
      const { logits } = m.forward(want.ids);
      expect(maxAbsDiff((await logits.array()) as number[][][], want.logits)).toBeLessThan(1e-4);
      const p = want.padded;
      const padded = m.forward(p.ids, { attentionMask: p.attention_mask, positionIds: p.position_ids });
      expect(maxAbsDiff((await padded.logits.array()) as number[][][], p.logits, p.attention_mask)).toBeLessThan(1e-4);
      tf.dispose([logits, padded.logits]);
      m.dispose();
    });

    it('decodes incrementally with a KV cache exactly as a full pass', async () => {
      const m = await model(tf, 'tiny');
      const ids = expected('tiny').ids;
      const full = (await m.forward(ids).logits.array()) as number[][][];
      const prefill = m.forward(ids.map((r) => r.slice(0, 5)), { useCache: true });
      let cache = prefill.cache!;
      const steps: number[][][][] = [(await prefill.logits.array()) as number[][][]];
      for (let t = 5; t < ids[0].length; t++) {
        const step = m.forward(ids.map((r) => [r[t]]), { past: cache, useCache: true });
        tf.dispose(cache.layers.flatMap((l) => [l.k, l.v]));
        cache = step.cache!;
        steps.push((await step.logits.array()) as number[][][]);
      }
      const stitched = ids.map((_, b) => steps.flatMap((s) => s[b]));
      expect(maxAbsDiff(stitched, full)).toBeLessThan(1e-5);
      // the next greedy token agrees everywhere
      stitched.forEach((row, b) => row.forEach((l, t) => expect(l.indexOf(Math.max(...l))).toBe(full[b][t].indexOf(Math.max(...full[b][t])))));
      tf.dispose(cache.layers.flatMap((l) => [l.k, l.v]));
      m.dispose();
    });

    it('leaks no tensors', async () => {
      const m = await model(tf, 'tiny');
      const ids = expected('tiny').ids;
      m.forward(ids).logits.dispose(); // warm-up allocations
      const before = tf.memory().numTensors;
      for (let k = 0; k < 3; k++) m.forward(ids).logits.dispose();
      const { logits, cache } = m.forward(ids, { useCache: true });
      tf.dispose([logits, ...cache!.layers.flatMap((l) => [l.k, l.v])]);
      expect(tf.memory().numTensors).toBe(before);
      m.dispose();
    });

    it('refuses ids outside the vocabulary and positions beyond the context', async () => {
      const m = await model(tf, 'tiny');
      expect(() => m.forward([[1, 320]])).toThrow(/token id 320 is outside the vocabulary/);
      expect(() => m.forward([Array(33).fill(1)])).toThrow(/position 32 is beyond the model's context of 32/);
      m.dispose();
    });
  });
}

describe('presets', () => {
  it('initialise deterministically with HF statistics', () => {
    const c = presetConfig('gpt2-tiny');
    const a = initialParameters(c, 1);
    const b = initialParameters(c, 1);
    const wte = a.get('transformer.wte.weight')!.data;
    expect(Array.from(wte.subarray(0, 8))).toEqual(Array.from(b.get('transformer.wte.weight')!.data.subarray(0, 8)));
    const mean = wte.reduce((s, v) => s + v, 0) / wte.length;
    const std = Math.sqrt(wte.reduce((s, v) => s + (v - mean) ** 2, 0) / wte.length);
    expect(Math.abs(mean)).toBeLessThan(1e-3);
    expect(std).toBeCloseTo(0.02, 3);
    const proj = a.get('transformer.h.0.attn.c_proj.weight')!.data;
    const projStd = Math.sqrt(proj.reduce((s, v) => s + v * v, 0) / proj.length);
    expect(projStd).toBeCloseTo(0.02 / Math.sqrt(2 * c.n_layer), 3);
    expect(a.get('transformer.h.1.ln_2.weight')!.data.every((v) => v === 1)).toBe(true);
    expect(a.get('transformer.h.1.mlp.c_fc.bias')!.data.every((v) => v === 0)).toBe(true);
  });
});
