/**
 * LoRA against the PyTorch reference (fixtures/lora, made by test/oracle/make_lora_fixtures.py in
 * float64 from PEFT's definition): the unmerged adapter through GPT2's Conv1D hook, the merged
 * model, the merged weights against PEFT's float32 merge; PEFT's initialisation; dropout on the
 * adapter's input; ranks beyond a layer refused.
 */
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { loadCheckpoint, type LoadedCheckpoint } from '../../src/formats/checkpoint.js';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import type { GPT2Config } from '../../src/model/config.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { checkLoraSpec, initialLora, LoraAdapter, type LoraSpec, type LoraTarget } from '../../src/model/lora.js';
import { loraUpdates, mergedSources, mergeInto } from '../../src/model/lora-merge.js';
import { sourcesOf, type ParameterValues } from '../../src/model/params.js';
import { fixture, maxAbsDiff } from '../helpers.js';

const tensorsOf = (path: string) => parseSafetensors(readFileSync(path), path).tensors;

interface Case {
  rank: number;
  alpha: number;
  targets: LoraTarget[];
  logits: number[][][];
  padded?: { ids: number[][]; attention_mask: number[][]; position_ids: number[][]; logits: number[][][] };
}
const expected = JSON.parse(readFileSync(fixture('lora', 'expected.json'), 'utf8')) as { ids: number[][]; qv: Case; all: Case };

/** A case's spec and values (our layout, as the fixture stores them). */
function adapterCase(tag: 'qv' | 'all'): { spec: LoraSpec; values: ParameterValues } {
  const c = expected[tag];
  const values: ParameterValues = new Map([...tensorsOf(fixture('lora', `${tag}.safetensors`))].map(([n, t]) => [n, { shape: t.shape, data: t.data }]));
  return { spec: { rank: c.rank, alpha: c.alpha, dropout: 0, targets: c.targets }, values };
}

const copyValues = (v: ParameterValues): ParameterValues => new Map([...v].map(([n, t]) => [n, { shape: t.shape, data: t.data.slice() }]));
const flat = (x: number[][][]) => Float64Array.from(x.flat(2));

let tiny: LoadedCheckpoint;
beforeAll(async () => {
  tiny = await loadCheckpoint(fixture('models', 'tiny'));
});

for (const backendName of ['wasm', 'cpu'] as const) {
  describe(`LoRA on ${backendName}`, () => {
    let tf: Tf;
    beforeAll(async () => {
      tf = (await selectBackend(backendName)).tf;
    });

    it.each(['qv', 'all'] as const)('%s: the unmerged adapter (GPT2 Conv1D hook) gives PyTorch’s logits within 1e-4', async (tag) => {
      const { spec, values } = adapterCase(tag);
      const model = GPT2.fromValues(tf, tiny.config, tiny.values);
      const base = flat((await model.forward(expected.ids).logits.array()) as number[][][]);
      const adapter = LoraAdapter.fromValues(tf, tiny.config, spec, values);
      model.adapter = adapter;
      const got = flat((await model.forward(expected.ids).logits.array()) as number[][][]);
      expect(maxAbsDiff(got, flat(expected[tag].logits))).toBeLessThan(1e-4);
      expect(maxAbsDiff(base, flat(expected[tag].logits))).toBeGreaterThan(0.1); // the adapter matters
      const p = expected[tag].padded;
      if (p) {
        const padded = (await model.forward(p.ids, { attentionMask: p.attention_mask, positionIds: p.position_ids }).logits.array()) as number[][][];
        const real = (x: number[][][]) => flat(x.map((row, b) => row.filter((_, t) => p.attention_mask[b][t] === 1)));
        expect(maxAbsDiff(real(padded), real(p.logits))).toBeLessThan(1e-4);
      }
      adapter.dispose();
      model.dispose();
    });

    it.each(['qv', 'all'] as const)('%s: merged while loading gives the unmerged logits', async (tag) => {
      const { spec, values } = adapterCase(tag);
      const merged = await GPT2.fromSources(tf, tiny.config, mergedSources(sourcesOf(tiny.values), loraUpdates(tiny.config, spec, values)));
      const got = flat((await merged.forward(expected.ids).logits.array()) as number[][][]);
      const unmerged = GPT2.fromValues(tf, tiny.config, tiny.values);
      const adapter = LoraAdapter.fromValues(tf, tiny.config, spec, values);
      unmerged.adapter = adapter;
      const want = flat((await unmerged.forward(expected.ids).logits.array()) as number[][][]);
      expect(maxAbsDiff(got, want)).toBeLessThan(1e-5);
      expect(maxAbsDiff(got, flat(expected[tag].logits))).toBeLessThan(1e-4);
      merged.dispose();
      unmerged.dispose();
      adapter.dispose();
    });

    it('a new adapter (B = 0) leaves the model exactly as it was, and leaks no tensors', async () => {
      const spec: LoraSpec = { rank: 4, alpha: 8, dropout: 0, targets: ['query', 'value', 'mlp_fc'] };
      const model = GPT2.fromValues(tf, tiny.config, tiny.values);
      const base = await model.forward(expected.ids).logits.data();
      const adapter = LoraAdapter.fromValues(tf, tiny.config, spec, initialLora(tiny.config, spec, 1));
      model.adapter = adapter;
      model.forward(expected.ids).logits.dispose();
      const before = tf.memory().numTensors;
      const logits = model.forward(expected.ids).logits;
      expect(Array.from(await logits.data())).toEqual(Array.from(base));
      logits.dispose();
      expect(tf.memory().numTensors).toBe(before);
      adapter.dispose();
      model.dispose();
    });

    it('dropout applies to the adapter’s input in training only: unbiased, one mask per layer input for query and value', async () => {
      const config: GPT2Config = { ...tiny.config, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
      const spec: LoraSpec = { rank: 4, alpha: 8, dropout: 0.5, targets: ['query', 'value'] };
      const values = adapterCase('qv').values;
      // query's A and B copied into value's: with one shared mask their slices of the delta are equal
      for (const layer of [0, 1]) for (const m of ['lora_A', 'lora_B']) values.set(`h.${layer}.value.${m}`, values.get(`h.${layer}.query.${m}`)!);
      const adapter = LoraAdapter.fromValues(tf, config, spec, values);
      const x = tf.randomNormal([64, 32], 0, 1, 'float32', 7) as import('@tensorflow/tfjs').Tensor2D;
      const evalDelta = await adapter.delta('h.0.attn.c_attn', x, {})!.array();
      const n = 200;
      const mean = new Float64Array(64 * 96);
      let differs = 0;
      for (let s = 0; s < n; s++) {
        const d = await adapter.delta('h.0.attn.c_attn', x, { training: true, seed: s })!.array();
        d.forEach((row, i) => {
          expect(row.slice(0, 32)).toEqual(row.slice(64, 96)); // query's slice = value's: the same mask
          expect(row.slice(32, 64).every((v) => v === 0)).toBe(true); // no key adapter
          row.forEach((v, j) => (mean[i * 96 + j] += v / n));
        });
        if (maxAbsDiff(d.flat(), evalDelta.flat()) > 1e-3) differs++;
      }
      expect(differs).toBe(n);
      const again = await adapter.delta('h.0.attn.c_attn', x, { training: true, seed: 3 })!.data();
      expect(Array.from(again)).toEqual(Array.from(await adapter.delta('h.0.attn.c_attn', x, { training: true, seed: 3 })!.data()));
      // E[mask/(1-p)] = 1: the mean over 200 masks is the eval delta within a few standard errors
      const scale = Math.sqrt(evalDelta.flat().reduce((a, v) => a + v * v, 0) / evalDelta.flat().length);
      expect(maxAbsDiff(mean, evalDelta.flat()) / scale).toBeLessThan(0.6);
      expect(maxAbsDiff(mean, evalDelta.flat().map((v) => 2 * v)) / scale).toBeGreaterThan(1); // not scaled twice, nor unscaled
      adapter.dispose();
      x.dispose();
    });
  });
}

describe('LoRA weights', () => {
  it.each(['qv', 'all'] as const)('%s: merged weights equal PEFT’s float32 merge, and only the targeted ones change', (tag) => {
    const { spec, values } = adapterCase(tag);
    const merged = copyValues(tiny.values);
    mergeInto(merged, loraUpdates(tiny.config, spec, values));
    const want = tensorsOf(fixture('lora', `merged-${tag}.safetensors`));
    for (const [name, v] of merged) {
      const w = want.get(name);
      if (w) expect(maxAbsDiff(v.data, w.data), name).toBeLessThan(2e-6);
      else expect(v.data, name).toEqual(tiny.values.get(name)!.data);
    }
    expect(want.size).toBe(tag === 'qv' ? 2 : 8);
  });

  it('initialises as PEFT does: A uniform in ±1/√in, B zero, from the seed', () => {
    const spec: LoraSpec = { rank: 8, alpha: 16, dropout: 0.1, targets: ['query', 'mlp_proj'] };
    const a = initialLora(tiny.config, spec, 5);
    expect([...a.keys()]).toEqual(['h.0.query.lora_A', 'h.0.query.lora_B', 'h.0.mlp_proj.lora_A', 'h.0.mlp_proj.lora_B', 'h.1.query.lora_A', 'h.1.query.lora_B', 'h.1.mlp_proj.lora_A', 'h.1.mlp_proj.lora_B']);
    expect(a.get('h.1.mlp_proj.lora_A')!.shape).toEqual([128, 8]);
    expect(a.get('h.1.mlp_proj.lora_B')!.shape).toEqual([8, 32]);
    for (const [name, { data, shape }] of a) {
      if (name.endsWith('lora_B')) {
        expect(data.every((v) => v === 0)).toBe(true);
        continue;
      }
      const bound = 1 / Math.sqrt(shape[0]);
      const mean = data.reduce((s, v) => s + v, 0) / data.length;
      const variance = data.reduce((s, v) => s + v * v, 0) / data.length;
      expect(data.every((v) => Math.abs(v) <= bound)).toBe(true);
      expect(Math.max(...data)).toBeGreaterThan(0.95 * bound);
      expect(Math.abs(mean)).toBeLessThan(0.15 * bound);
      expect(variance / (bound * bound / 3)).toBeGreaterThan(0.8); // U(−b, b) has variance b²/3
      expect(variance / (bound * bound / 3)).toBeLessThan(1.2);
    }
    expect(initialLora(tiny.config, spec, 5).get('h.0.query.lora_A')!.data).toEqual(a.get('h.0.query.lora_A')!.data);
    expect(initialLora(tiny.config, spec, 6).get('h.0.query.lora_A')!.data).not.toEqual(a.get('h.0.query.lora_A')!.data);
  });

  it('refuses a rank larger than a layer’s smaller dimension, naming the target and its sizes', () => {
    const spec = (rank: number, targets: LoraTarget[]): LoraSpec => ({ rank, alpha: 1, dropout: 0, targets });
    expect(() => checkLoraSpec(tiny.config, spec(32, ['query', 'value', 'attn_proj', 'mlp_fc', 'mlp_proj']))).not.toThrow();
    expect(() => checkLoraSpec(tiny.config, spec(33, ['value']))).toThrow(/LoRA rank 33 is larger than value's smaller dimension: value is 32 × 32 \(columns 64–95 of attn\.c_attn\), so rank ≤ 32/);
    expect(() => checkLoraSpec(tiny.config, spec(40, ['mlp_proj']))).toThrow(/mlp_proj is 128 × 32 \(mlp\.c_proj\)/);
    expect(() => checkLoraSpec(tiny.config, spec(0, ['query']))).toThrow(/rank must be a positive integer, got 0/);
    expect(() => checkLoraSpec(tiny.config, spec(2, ['query', 'query']))).toThrow(/query is listed twice/);
    expect(() => checkLoraSpec(tiny.config, spec(2, ['projection' as LoraTarget]))).toThrow(/unknown LoRA target "projection"/);
  });
});
