/**
 * PEFT's adapter format against what PEFT writes and merges (fixtures/lora/peft-*, foreign/, made by
 * test/oracle/make_lora_fixtures.py from PEFT's source): tensor names, shapes and values of our
 * export with query + value fused into one rank-2r adapter on c_attn; reading it back gives the
 * separate adapters and the same merged model; PEFT adapters from elsewhere (rank_pattern, rsLoRA,
 * c_proj matching two modules) merge as PEFT merges them; the base is checked.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, type LoadedCheckpoint } from '../../src/formats/checkpoint.js';
import { ADAPTER_BASE, ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapterValues, baseRefOf, checkBase, readLoraAdapter, saveLoraAdapter, toPeft, type BaseRef } from '../../src/formats/peft.js';
import { encodeSafetensors, parseSafetensors } from '../../src/formats/safetensors.js';
import type { LoraSpec, LoraTarget } from '../../src/model/lora.js';
import { mergeInto, type LowRankUpdate } from '../../src/model/lora-merge.js';
import type { ParameterValues } from '../../src/model/params.js';
import { fixture, maxAbsDiff, tempDir } from '../helpers.js';

const tensorsOf = (path: string) => parseSafetensors(readFileSync(path), path).tensors;

const expected = JSON.parse(readFileSync(fixture('lora', 'expected.json'), 'utf8')) as Record<'qv' | 'all', { rank: number; alpha: number; targets: LoraTarget[] }>;
function adapterCase(tag: 'qv' | 'all'): { spec: LoraSpec; values: ParameterValues } {
  const c = expected[tag];
  const values: ParameterValues = new Map([...tensorsOf(fixture('lora', `${tag}.safetensors`))].map(([n, t]) => [n, { shape: t.shape, data: t.data }]));
  return { spec: { rank: c.rank, alpha: c.alpha, dropout: 0.1, targets: c.targets }, values };
}

const dir = tempDir();
let tiny: LoadedCheckpoint;
let base: BaseRef;
beforeAll(async () => {
  tiny = await loadCheckpoint(fixture('models', 'tiny'));
  base = await baseRefOf(fixture('models', 'tiny'));
});

function merged(updates: LowRankUpdate[]): ParameterValues {
  const values: ParameterValues = new Map([...tiny.values].map(([n, t]) => [n, { shape: t.shape, data: t.data.slice() }]));
  mergeInto(values, updates);
  return values;
}

function expectMergedAsPeft(values: ParameterValues, file: string): void {
  const want = tensorsOf(file);
  for (const [name, v] of values) {
    const w = want.get(name);
    if (w) expect(maxAbsDiff(v.data, w.data), name).toBeLessThan(2e-6);
    else expect(v.data, name).toEqual(tiny.values.get(name)!.data);
  }
}

describe('PEFT export', () => {
  it.each(['qv', 'all'] as const)('%s: the tensors PEFT saves for the equivalent adapter (names, shapes, values) and its config', (tag) => {
    const { spec, values } = adapterCase(tag);
    const { config, tensors } = toPeft(tiny.config, spec, values, base);
    const want = tensorsOf(fixture('lora', `peft-${tag}`, ADAPTER_WEIGHTS));
    expect(tensors.map((t) => t.name).sort()).toEqual([...want.keys()].sort());
    for (const t of tensors) {
      expect(t.shape, t.name).toEqual(want.get(t.name)!.shape);
      expect(t.data, t.name).toEqual(want.get(t.name)!.data);
    }
    const wantConfig = JSON.parse(readFileSync(fixture('lora', `peft-${tag}`, ADAPTER_CONFIG), 'utf8')) as Record<string, unknown>;
    for (const [key, value] of Object.entries(wantConfig)) expect(config[key], key).toEqual(value);
    expect(config).toMatchObject({ lora_dropout: 0.1, base_model_name_or_path: base.path, use_rslora: false, modules_to_save: null });
  });

  it('qv: one rank-8 adapter on attn.c_attn per layer, [8, 32] and [96, 8], value’s block in rows 64–95', () => {
    const { spec, values } = adapterCase('qv');
    const { config, tensors } = toPeft(tiny.config, spec, values, base);
    expect(tensors.map((t) => `${t.name} [${t.shape.join(', ')}]`)).toEqual([
      'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight [8, 32]',
      'base_model.model.transformer.h.0.attn.c_attn.lora_B.weight [96, 8]',
      'base_model.model.transformer.h.1.attn.c_attn.lora_A.weight [8, 32]',
      'base_model.model.transformer.h.1.attn.c_attn.lora_B.weight [96, 8]',
    ]);
    expect(config).toMatchObject({ r: 8, lora_alpha: 16, target_modules: ['attn.c_attn'], fan_in_fan_out: true, bias: 'none', task_type: 'CAUSAL_LM', rank_pattern: {}, alpha_pattern: {} });
    const b = tensors[1].data;
    // value's B (rank 4, width 32) transposed into rows 64–95, columns 4–7
    const vb = values.get('h.0.value.lora_B')!.data;
    expect(b[70 * 8 + 5]).toBe(vb[1 * 32 + 6]);
    expect(b[40 * 8 + 5]).toBe(0); // key rows stay zero
  });

  it('reading our export back gives the separate query/value adapters and the same merged model', async () => {
    const { spec, values } = adapterCase('qv');
    const out = join(dir, 'qv');
    await saveLoraAdapter(out, tiny.config, spec, values, base);
    const back = await readLoraAdapter(out, tiny.config);
    expect(back.base).toEqual(base);
    expect(back.spec).toEqual({ ...spec, targets: ['query', 'value'] });
    expect(back.updates.map((u) => u.blocks)).toEqual(Array(2).fill([{ offset: 0, width: 32, from: 0, count: 4 }, { offset: 64, width: 32, from: 4, count: 4 }]));
    const backValues = adapterValues(back, tiny.config)!;
    expect([...backValues.keys()].sort()).toEqual([...values.keys()].sort());
    for (const [name, v] of values) expect(backValues.get(name)!.data, name).toEqual(v.data);
    // the rank-8 c_attn adapter as PEFT sees it (no adapter_base.json): the same merged weights
    const peftOnly = join(dir, 'qv-peft-only');
    mkdirSync(peftOnly);
    for (const f of [ADAPTER_CONFIG, ADAPTER_WEIGHTS]) copyFileSync(join(out, f), join(peftOnly, f));
    const fused = await readLoraAdapter(peftOnly, tiny.config);
    expect(fused.spec).toBeUndefined();
    expect(fused.updates.map((u) => [u.param, u.rank, u.blocks])).toEqual([
      ['transformer.h.0.attn.c_attn.weight', 8, undefined],
      ['transformer.h.1.attn.c_attn.weight', 8, undefined],
    ]);
    // merged by blocks (the targets' own products) and whole (rank 8 over all 96 columns): the same bits
    const byBlocks = merged(back.updates);
    const whole = merged(fused.updates);
    for (const [name, v] of byBlocks) expect(whole.get(name)!.data, name).toEqual(v.data);
    expectMergedAsPeft(byBlocks, fixture('lora', 'merged-qv.safetensors'));
  });

  it('all targets: rank_pattern for c_attn beside rank-2 modules reads back to the same merged model', async () => {
    const { spec, values } = adapterCase('all');
    const out = join(dir, 'all');
    await saveLoraAdapter(out, tiny.config, spec, values, base);
    const back = await readLoraAdapter(out, tiny.config);
    expect(back.spec).toBeDefined();
    const backValues = adapterValues(back, tiny.config)!;
    for (const [name, v] of values) expect(backValues.get(name)!.data, name).toEqual(v.data);
    expectMergedAsPeft(merged(back.updates), fixture('lora', 'merged-all.safetensors'));
    expect(readFileSync(join(out, ADAPTER_BASE), 'utf8')).toContain(base.sha256);
  });
});

describe('PEFT adapters from elsewhere', () => {
  it('ours trained further by PEFT as one c_attn adapter (B no longer zero off its blocks) merges whole, as PEFT does', async () => {
    const { spec, values } = adapterCase('qv');
    const out = join(dir, 'qv-further');
    await saveLoraAdapter(out, tiny.config, spec, values, base);
    const file = parseSafetensors(readFileSync(join(out, ADAPTER_WEIGHTS)), out);
    const name = 'base_model.model.transformer.h.1.attn.c_attn.lora_B.weight';
    const B = file.tensors.get(name)!.data; // [96, 8]
    B[40 * 8 + 2] = 0.5; // a key row, a query rank
    writeFileSync(join(out, ADAPTER_WEIGHTS), encodeSafetensors([...file.tensors].map(([n, t]) => ({ name: n, shape: t.shape, data: t.data }))));
    const adapter = await readLoraAdapter(out, tiny.config);
    expect(adapter.spec).toBeUndefined();
    expect(adapter.description).toBe('rank 8 on attn.c_attn');
    // PEFT's merge in float64: W + scale·(B·A)ᵀ, scale = 16 / 8
    const A = file.tensors.get(name.replace('lora_B', 'lora_A'))!.data; // [8, 32]
    const W = tiny.values.get('transformer.h.1.attn.c_attn.weight')!.data; // [32, 96]
    const want = Float64Array.from(W, (w, idx) => {
      const [x, j] = [Math.floor(idx / 96), idx % 96];
      let sum = 0;
      for (let k = 0; k < 8; k++) sum += B[j * 8 + k] * A[k * 32 + x];
      return w + 2 * sum;
    });
    expect(maxAbsDiff(merged(adapter.updates).get('transformer.h.1.attn.c_attn.weight')!.data, want)).toBeLessThan(2e-6);
    expect(Math.abs(want[3 * 96 + 40] - W[3 * 96 + 40])).toBeGreaterThan(1e-3); // the key column moved
  });

  it.each([
    ['peft-qv', 'merged-qv.safetensors'],
    ['peft-all', 'merged-all.safetensors'],
    ['foreign', join('foreign', 'merged.safetensors')],
  ])('%s merges into the weights PEFT’s merge_and_unload gives', async (name, mergedFile) => {
    const adapter = await readLoraAdapter(fixture('lora', name), tiny.config);
    expect(adapter.base).toBeUndefined();
    expectMergedAsPeft(merged(adapter.updates), fixture('lora', mergedFile));
  });

  it('foreign: c_proj adapts attn.c_proj and mlp.c_proj; rank_pattern gives mlp.c_proj rank 2; rsLoRA scales by alpha/√r', async () => {
    const adapter = await readLoraAdapter(fixture('lora', 'foreign'), tiny.config);
    expect(adapter.updates.map((u) => [u.param.replace('transformer.', ''), u.rank, u.scale])).toEqual([
      ['h.0.attn.c_attn.weight', 4, 3],
      ['h.0.attn.c_proj.weight', 4, 3],
      ['h.0.mlp.c_proj.weight', 2, 6 / Math.sqrt(2)],
      ['h.1.attn.c_attn.weight', 4, 3],
      ['h.1.attn.c_proj.weight', 4, 3],
      ['h.1.mlp.c_proj.weight', 2, 6 / Math.sqrt(2)],
    ]);
  });

  it.each([
    [{ use_dora: true }, /DoRA \(use_dora\) is not supported/],
    [{ bias: 'all' }, /bias "all": only "none" is supported/],
    [{ peft_type: 'IA3' }, /peft_type "IA3": only LORA adapters are supported/],
    [{ r: 2 }, /h\.0\.attn\.c_attn has rank 8, adapter_config\.json says 2/],
  ])('refuses %j with a message', async (change, message) => {
    const d = join(dir, `bad-${Object.keys(change)[0]}`);
    mkdirSync(d);
    const config = JSON.parse(readFileSync(fixture('lora', 'peft-qv', ADAPTER_CONFIG), 'utf8')) as object;
    writeFileSync(join(d, ADAPTER_CONFIG), JSON.stringify({ ...config, ...change }));
    copyFileSync(fixture('lora', 'peft-qv', ADAPTER_WEIGHTS), join(d, ADAPTER_WEIGHTS));
    await expect(readLoraAdapter(d, tiny.config)).rejects.toThrow(message);
  });

  it('refuses tensors that do not fit the model', async () => {
    const gelu = await loadCheckpoint(fixture('models', 'tiny-ninner')); // n_inner 52: mlp shapes differ
    await expect(readLoraAdapter(fixture('lora', 'foreign'), gelu.config)).rejects.toThrow(/h\.0\.mlp\.c_proj: lora_A \[2, 128\] and lora_B \[32, 2\] do not fit a \[52, 32\] Conv1D/);
  });
});

describe('the base an adapter belongs to', () => {
  it('records the base’s path, size and sha256, accepts it, and refuses another model of the same shape and size', async () => {
    expect(base.path).toBe(fixture('models', 'tiny'));
    expect(base.weights).toBe('model.safetensors');
    expect(base.sha256).toMatch(/^[0-9a-f]{64}$/);
    await expect(checkBase('A', base, fixture('models', 'tiny', 'model.safetensors'))).resolves.toBeUndefined();
    const other = fixture('models', 'tiny-gelu', 'model.safetensors');
    expect(readFileSync(other).length).toBe(base.bytes); // same size: told apart by the hash
    await expect(checkBase('A', base, other)).rejects.toThrow(/^A: this adapter was trained on .*fixtures\/models\/tiny \(model\.safetensors: \d+ bytes, sha256 [0-9a-f]{12}…\); .*tiny-gelu\/model\.safetensors is another model \(\d+ bytes, sha256 [0-9a-f]{12}…\): refusing to apply it$/);
    await expect(checkBase('A', base, fixture('models', 'tiny-ninner', 'model.safetensors'))).rejects.toThrow(/is another model \(\d+ bytes\): refusing/);
  });
});
