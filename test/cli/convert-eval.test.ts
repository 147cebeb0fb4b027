/**
 * convert-weights and gpt2-eval end to end: every input form of the tiny model converts to the
 * same bits; conversions round-trip bit-exactly (also through MindFormers names, checked against
 * the Python mapping); gpt2-eval on a converted checkpoint gives the PyTorch reference's loss.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeDataset } from '../../src/data/shard-writer.js';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { expectOneLineError, fixture, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const tensorsOf = (path: string) => parseSafetensors(readFileSync(path), path).tensors;
const bytesOf = (path: string) => {
  const out = new Map<string, string>();
  for (const [name, t] of tensorsOf(path)) out.set(name, `${t.dtype}${t.shape}:${Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex')}`);
  return out;
};
const reference = () => bytesOf(fixture('models', 'tiny', 'model.safetensors'));

function convert(src: string, name: string, ...args: string[]): string {
  const out = join(dir, name);
  const r = runCli('convert-weights', ['-q', src, out, ...args]);
  expect(r.code, r.stderr).toBe(0);
  return out;
}

describe('convert-weights', () => {
  it.each([
    ['safetensors with the transformer. prefix', fixture('models', 'tiny')],
    ['safetensors without prefix, with buffers and lm_head', fixture('models', 'tiny-noprefix')],
    ['pytorch_model.bin, zip format', fixture('models', 'tiny', 'pytorch_model.bin')],
    ['pytorch_model.bin, legacy format, no prefix', fixture('models', 'tiny-legacy')],
    ['pytorch_model.bin with strided views and storage offsets', fixture('models', 'tiny-strided')],
  ])('%s → the same bits', (_what, src) => {
    const out = convert(src, `from-${Math.random().toString(36).slice(2)}`);
    expect(bytesOf(join(out, 'model.safetensors'))).toEqual(reference());
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], n_embd: 32, n_layer: 2, n_head: 4, vocab_size: 320 });
    expect(existsSync(join(out, 'vocab.json')) && existsSync(join(out, 'merges.txt'))).toBe(true);
  });

  it('round-trips bit-exactly, also through the MindFormers names', () => {
    const once = convert(fixture('models', 'tiny'), 'once', '--to', 'mindformers');
    const twice = convert(once, 'twice');
    expect(readFileSync(join(twice, 'model.safetensors')).equals(readFileSync(join(once, 'model.safetensors')))).toBe(true);
    // our HF → MindFormers mapping equals the Python one
    expect(bytesOf(join(once, 'mindformers.safetensors'))).toEqual(bytesOf(fixture('models', 'tiny', 'mindformers.safetensors')));
    // and back
    const back = convert(join(once, 'mindformers.safetensors'), 'back', '--config', join(once, 'config.json'));
    expect(bytesOf(join(back, 'model.safetensors'))).toEqual(reference());
  });

  it('--dtype f16 writes half floats', () => {
    const out = convert(fixture('models', 'tiny'), 'half', '--dtype', 'f16');
    const t = tensorsOf(join(out, 'model.safetensors')).get('transformer.wte.weight')!;
    expect(t.dtype).toBe('F16');
  });

  it('a preset config for a bare weights file', () => {
    const lone = join(dir, 'lone');
    mkdirSync(lone);
    cpSync(fixture('models', 'tiny', 'model.safetensors'), join(lone, 'weights.safetensors'));
    const r = runCli('convert-weights', [join(lone, 'weights.safetensors'), join(dir, 'lone-out')]);
    expectOneLineError(r, 'convert-weights', /no config\.json; give --config PRESET/);
    const wrong = runCli('convert-weights', [join(lone, 'weights.safetensors'), join(dir, 'lone-out'), '--config', 'gpt2-tiny']);
    expectOneLineError(wrong, 'convert-weights', /tensor transformer\.wte\.weight has shape \[320, 32\], the config expects \[50257, 64\]/);
  });
});

describe('convert-weights bad inputs', () => {
  const bad = (name: string, setup: (d: string) => void) => {
    const d = join(dir, name);
    cpSync(fixture('models', 'tiny'), d, { recursive: true });
    setup(d);
    return d;
  };
  it('missing source', () => expectOneLineError(runCli('convert-weights', [join(dir, 'nope'), join(dir, 'x')]), 'convert-weights', /nope: no such file or directory/));
  it('no weights in the directory', () => {
    const d = join(dir, 'empty-src');
    mkdirSync(d);
    writeFileSync(join(d, 'config.json'), readFileSync(fixture('models', 'tiny', 'config.json')));
    expectOneLineError(runCli('convert-weights', [d, join(dir, 'x')]), 'convert-weights', /no model\.safetensors or pytorch_model\.bin/);
  });
  it('truncated safetensors', () => {
    const d = bad('trunc', (x) => writeFileSync(join(x, 'model.safetensors'), readFileSync(join(x, 'model.safetensors')).subarray(0, 5000)));
    expectOneLineError(runCli('convert-weights', [join(d, 'model.safetensors'), join(dir, 'x'), '--config', join(d, 'config.json')]), 'convert-weights', /model\.safetensors: tensor .* lie outside the \d+ data bytes: truncated/);
  });
  it('truncated pytorch_model.bin', () => {
    const d = join(dir, 'trunc-bin');
    mkdirSync(d);
    cpSync(fixture('models', 'tiny', 'config.json'), join(d, 'config.json'));
    writeFileSync(join(d, 'pytorch_model.bin'), readFileSync(fixture('models', 'tiny', 'pytorch_model.bin')).subarray(0, 60000));
    expectOneLineError(runCli('convert-weights', [d, join(dir, 'x')]), 'convert-weights', /pytorch_model\.bin/);
  });
  it('config and tensors disagree', () => {
    const d = bad('mismatch', (x) => {
      const c = JSON.parse(readFileSync(join(x, 'config.json'), 'utf8'));
      writeFileSync(join(x, 'config.json'), JSON.stringify({ ...c, n_embd: 64 }));
    });
    expectOneLineError(runCli('convert-weights', [d, join(dir, 'x')]), 'convert-weights', /tensor transformer\.wte\.weight has shape \[320, 32\], the config expects \[320, 64\]/);
  });
  it('unknown activation', () => {
    const d = bad('act', (x) => {
      const c = JSON.parse(readFileSync(join(x, 'config.json'), 'utf8'));
      writeFileSync(join(x, 'config.json'), JSON.stringify({ ...c, activation_function: 'swish' }));
    });
    expectOneLineError(runCli('convert-weights', [d, join(dir, 'x')]), 'convert-weights', /config\.json: activation_function "swish" is not supported/);
  });
  it('an existing destination needs --overwrite', () => {
    const out = convert(fixture('models', 'tiny'), 'exists');
    expectOneLineError(runCli('convert-weights', [fixture('models', 'tiny'), out]), 'convert-weights', /exists and is not empty \(use --overwrite/);
    expect(runCli('convert-weights', ['-q', '--overwrite', fixture('models', 'tiny'), out]).code).toBe(0);
  });
  it('a pickle that calls a global outside the whitelist is refused and nothing runs', () => {
    const evil = fixture('torch', 'evil.zip.bin');
    if (!existsSync(evil)) return void console.warn('SKIPPED: fixtures/torch/evil.zip.bin not present');
    const r = runCli('convert-weights', [evil, join(dir, 'evil'), '--config', fixture('models', 'tiny', 'config.json')]);
    expectOneLineError(r, 'convert-weights', /refusing to load/);
  });
});

describe('gpt2-eval', () => {
  const ev = JSON.parse(readFileSync(fixture('models', 'gpt2vocab', 'eval.json'), 'utf8')) as { block_size: number; blocks: number[][]; loss: number };
  const data = join(dir, 'eval-data');
  let model: string;
  beforeAll(async () => {
    await writeDataset(data, Uint16Array.from(ev.blocks.flat()), {
      blockSize: ev.block_size, dtype: 'uint16', padId: 50256, keepTail: false, tokenizer: loadTokenizer().identity,
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    });
    model = convert(fixture('models', 'gpt2vocab'), 'gpt2vocab');
  });

  it.each(['wasm'])('equals the PyTorch reference loss on %s', (backend) => {
    const r = runCli('gpt2-eval', ['-q', '--model', model, '--data', data, '--batch-size', '2', '--backend', backend]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.tokens).toBe(3 * 64);
    expect(out.records).toBe(3);
    expect(Math.abs(out.loss - ev.loss) / ev.loss).toBeLessThan(1e-5);
    expect(out.perplexity).toBeCloseTo(Math.exp(ev.loss), 0);
  });

  it('refuses shards of another tokenizer', async () => {
    const other = join(dir, 'other-tok');
    await writeDataset(other, Uint16Array.from(ev.blocks.flat()), {
      blockSize: ev.block_size, dtype: 'uint16', padId: 0, keepTail: false, tokenizer: { name: 'other', vocab_size: 50257, sha256: 'a'.repeat(64) },
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    });
    expectOneLineError(runCli('gpt2-eval', ['--model', model, '--data', other, '--backend', 'cpu']), 'gpt2-eval', /encoded with tokenizer other .* not the model's tokenizer gpt2/);
  });

  it('refuses ids outside the vocabulary, and a vocabulary larger than the model\'s', async () => {
    const d = join(dir, 'big-ids');
    await writeDataset(d, Uint16Array.from([1, 2, 3, 60000, 5, 6, 7, 8]), {
      blockSize: 8, dtype: 'uint16', padId: 0, keepTail: false, tokenizer: loadTokenizer().identity,
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    });
    expectOneLineError(runCli('gpt2-eval', ['--model', model, '--data', d, '--backend', 'cpu']), 'gpt2-eval', /big-ids\/shard-00000\.msgpack: record 0: input_ids\[3\] is 60000, outside the vocabulary of 50257 ids \(0 to 50256\)$/);
    const tiny = convert(fixture('models', 'tiny'), 'tiny-for-eval'); // vocab 320, GPT-2's tokenizer
    expectOneLineError(runCli('gpt2-eval', ['--model', tiny, '--data', d, '--backend', 'cpu']), 'gpt2-eval', /tokenizer vocabulary \(50257\) is larger than the model's \(320\)/);
    expectOneLineError(runCli('gpt2-eval', ['--model', tiny, '--data', data, '--backend', 'cpu']), 'gpt2-eval', /block size 65 needs 64 positions; the model has 32/);
  });

  it('refuses a missing model and an unknown backend', () => {
    expectOneLineError(runCli('gpt2-eval', ['--model', join(dir, 'nothing'), '--data', data, '--backend', 'cpu']), 'gpt2-eval', /nothing: no such file or directory/);
    expectOneLineError(runCli('gpt2-eval', ['--model', model, '--data', data, '--backend', 'tpu']), 'gpt2-eval', /unknown backend "tpu"/, 2);
  });
});
