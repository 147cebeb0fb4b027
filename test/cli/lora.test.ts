/**
 * Using a LoRA adapter from the command line: gpt2-generate --lora (and an adapter directory as
 * --model) gives PyTorch's greedy continuation of the adapted model on the wasm decoder and on tfjs;
 * convert-weights --lora writes the weights PEFT's merge gives; another base is refused.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeDataset } from '../../src/data/dataset-writer.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { initialLora } from '../../src/model/lora.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { baseRefOf, saveLoraAdapter } from '../../src/formats/peft.js';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import type { LoraSpec, LoraTarget } from '../../src/model/lora.js';
import type { ParameterValues } from '../../src/model/params.js';
import { expectOneLineError, fixture, maxAbsDiff, runCli, tempDir } from '../helpers.js';

const tensorsOf = (path: string) => parseSafetensors(readFileSync(path), path).tensors;

const dir = tempDir();
const tiny = join(dir, 'tiny');
const gelu = join(dir, 'tiny-gelu'); // the same shapes and file size, other weights
const adapter = join(dir, 'adapter');
const greedy = JSON.parse(readFileSync(fixture('lora', 'greedy.json'), 'utf8')) as { prompts: number[][]; continuations: number[][] };
const input = `${greedy.prompts.map((p) => p.join(' ')).join('\n')}\n`;
const gen = (args: string[]) => runCli('gpt2-generate', ['-q', '--input-format', 'ids', '--format', 'ids', '-n', '12', '--batch-size', '3', ...args], { input });
const ids = (stdout: string) => stdout.trim().split('\n').map((l) => l.split(' ').map(Number));

beforeAll(async () => {
  expect(runCli('convert-weights', ['-q', fixture('models', 'tiny'), tiny]).code).toBe(0);
  expect(runCli('convert-weights', ['-q', fixture('models', 'tiny-gelu'), gelu]).code).toBe(0);
  const c = (JSON.parse(readFileSync(fixture('lora', 'expected.json'), 'utf8')) as { qv: { rank: number; alpha: number; targets: LoraTarget[] } }).qv;
  const spec: LoraSpec = { rank: c.rank, alpha: c.alpha, dropout: 0.1, targets: c.targets };
  const values: ParameterValues = new Map([...tensorsOf(fixture('lora', 'qv.safetensors'))].map(([n, t]) => [n, { shape: t.shape, data: t.data }]));
  const config = (await loadCheckpoint(tiny)).config;
  await saveLoraAdapter(adapter, config, spec, values, await baseRefOf(tiny));
});

describe('gpt2-generate --lora', () => {
  it('greedy ids equal PyTorch’s for the adapted model on the wasm decoder and on tfjs', () => {
    const plain = gen(['--model', tiny, '--backend', 'wasm']);
    expect(ids(plain.stdout)).not.toEqual(greedy.continuations); // the adapter changes what is generated
    for (const path of [['--backend', 'wasm'], ['--backend', 'wasm', '--threads', '1', '--no-cache'], ['--backend', 'cpu']]) {
      const r = gen(['--model', tiny, '--lora', adapter, ...path]);
      expect(r.code, r.stderr).toBe(0);
      expect(ids(r.stdout), path.join(' ')).toEqual(greedy.continuations);
    }
  });

  it('an adapter directory as --model finds its base, and says what it merged', () => {
    const r = runCli('gpt2-generate', ['--backend', 'wasm', '--input-format', 'ids', '--format', 'ids', '-n', '12', '--model', adapter], { input });
    expect(r.code, r.stderr).toBe(0);
    expect(ids(r.stdout)).toEqual(greedy.continuations);
    expect(r.stderr).toContain(`gpt2-generate: LoRA adapter ${adapter} (rank 4, alpha 8 on query, value) merged into ${tiny} as it loaded`);
  });

  it('refuses the adapter on another base, with random weights, twice, or a directory that is no adapter', () => {
    expectOneLineError(gen(['--model', gelu, '--lora', adapter]), 'gpt2-generate', /adapter: this adapter was trained on .*\/tiny \(model\.safetensors: .*\); .*tiny-gelu\/model\.safetensors is another model .*: refusing to apply it$/);
    expectOneLineError(gen(['--model', 'gpt2-tiny', '--random-init', '--lora', adapter]), 'gpt2-generate', /--lora .*: an adapter is merged into the weights it was trained on, not into random ones/, 2);
    expectOneLineError(gen(['--model', adapter, '--lora', adapter]), 'gpt2-generate', /is a LoRA adapter too/, 2);
    expectOneLineError(gen(['--model', tiny, '--lora', tiny]), 'gpt2-generate', /--lora .*tiny: not a LoRA adapter directory \(no adapter_config\.json\)/);
  });

  it('a PEFT adapter without our record of its base needs --model, and is then applied unchecked', () => {
    expectOneLineError(gen(['--model', fixture('lora', 'peft-qv')]), 'gpt2-generate', /peft-qv: a PEFT adapter without adapter_base\.json, so its base model is not known; give it: --model BASE --lora/);
    const r = runCli('gpt2-generate', ['--backend', 'wasm', '--input-format', 'ids', '--format', 'ids', '-n', '12', '--batch-size', '3', '--model', tiny, '--lora', fixture('lora', 'peft-qv')], { input });
    expect(r.code, r.stderr).toBe(0);
    expect(ids(r.stdout)).toEqual(greedy.continuations);
    expect(r.stderr).toMatch(/peft-qv: no adapter_base\.json, so nothing says which model this adapter belongs to; applying it to .* unchecked/);
  });
});

describe('convert-weights --lora', () => {
  it('writes a plain checkpoint with the adapter merged as PEFT merges it', async () => {
    const out = join(dir, 'merged');
    const r = runCli('convert-weights', [tiny, out, '--lora', adapter]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`merged LoRA adapter ${adapter} (rank 4, alpha 8 on query, value)`);
    const got = (await loadCheckpoint(out)).values;
    const base = (await loadCheckpoint(tiny)).values;
    const want = tensorsOf(fixture('lora', 'merged-qv.safetensors'));
    for (const [name, v] of got) {
      const w = want.get(name);
      if (w) expect(maxAbsDiff(v.data, w.data), name).toBeLessThan(2e-6);
      else expect(v.data, name).toEqual(base.get(name)!.data);
    }
    // and it generates what the adapter does, without it
    const g = gen(['--model', out, '--backend', 'wasm']);
    expect(ids(g.stdout)).toEqual(greedy.continuations);
  });

  it('refuses an adapter trained on another base before reading the weights', () => {
    expectOneLineError(runCli('convert-weights', [gelu, join(dir, 'nope'), '--lora', adapter]), 'convert-weights', /this adapter was trained on .* refusing to apply it$/);
  });
});

describe('gpt2-eval --lora', () => {
  // GPT-2's vocabulary (gpt2-eval checks the shards' tokenizer against the model's): the gpt2vocab
  // fixture, an adapter on it with B drawn too (a fresh adapter changes nothing), and its records.
  const ev = JSON.parse(readFileSync(fixture('models', 'gpt2vocab', 'eval.json'), 'utf8')) as { block_size: number; blocks: number[][] };
  const [base, other, lora, merged, data] = ['gv', 'gv-other', 'gv-adapter', 'gv-merged', 'gv-data'].map((n) => join(dir, n));
  beforeAll(async () => {
    expect(runCli('convert-weights', ['-q', fixture('models', 'gpt2vocab'), base]).code).toBe(0);
    const ck = await loadCheckpoint(base);
    const spec: LoraSpec = { rank: 2, alpha: 4, dropout: 0, targets: ['query', 'value', 'mlp_fc'] };
    const values = initialLora(ck.config, spec, 1);
    const b = initialLora(ck.config, spec, 2); // B from another draw's A: nonzero
    for (const [name, v] of values) if (name.endsWith('lora_B')) v.data.set(b.get(name.replace('lora_B', 'lora_A'))!.data.subarray(0, v.data.length));
    await saveLoraAdapter(lora, ck.config, spec, values, await baseRefOf(base));
    expect(runCli('convert-weights', ['-q', base, merged, '--lora', lora]).code).toBe(0);
    expect(runCli('convert-weights', ['-q', base, other, '--dtype', 'f16']).code).toBe(0); // another file of the same shapes
    await writeDataset(data, Uint16Array.from(ev.blocks.flat()), {
      blockSize: ev.block_size, dtype: 'uint16', padId: 50256, keepTail: false, tokenizer: loadTokenizer().identity,
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    });
  });
  const evalOf = (args: string[]) => {
    const r = runCli('gpt2-eval', ['-q', '--data', data, ...args]);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { loss: number }).loss;
  };

  it('evaluates the adapted model: the loss of convert-weights --lora’s merged weights (checked against PEFT above), not the base’s', () => {
    const adapted = evalOf(['--model', base, '--lora', lora]);
    expect(adapted).toBe(evalOf(['--model', merged]));
    expect(Math.abs(adapted - evalOf(['--model', base]))).toBeGreaterThan(1e-4);
  });

  it('refuses the adapter on another base', () => {
    expectOneLineError(runCli('gpt2-eval', ['--model', other, '--lora', lora, '--data', data]), 'gpt2-eval', /this adapter was trained on .* refusing to apply it$/);
  });
});
