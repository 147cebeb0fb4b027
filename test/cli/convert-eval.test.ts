/**
 * convert-weights and gpt2-eval end to end: every input form of the tiny model converts to the
 * same bits; conversions round-trip bit-exactly (also through MindFormers names, checked against
 * the Python mapping); gpt2-eval on a converted checkpoint gives the PyTorch reference's loss.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeDataset } from '../../src/data/dataset-writer.js';
import { PRESETS } from '../../src/model/config.js';
import { parseHeader, parseSafetensors } from '../../src/formats/safetensors.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { expectOneLineError, fixture, ROOT, runCli, tempDir, type CliResult } from '../helpers.js';

const dir = tempDir();
const tensorsOf = (path: string) => parseSafetensors(readFileSync(path), path).tensors;
const bytesOf = (path: string) => {
  const out = new Map<string, string>();
  for (const [name, t] of tensorsOf(path)) out.set(name, `${t.dtype}${t.shape}:${Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex')}`);
  return out;
};
const reference = () => bytesOf(fixture('models', 'tiny', 'model.safetensors'));
/** Each tensor's stored bytes, undecoded, and where they lie in the file. */
function storedOf(path: string) {
  const file = readFileSync(path);
  const out = new Map<string, { dtype: string; shape: number[]; at: number; bytes: Buffer }>();
  for (const e of parseHeader(file, file.length, path).entries) {
    out.set(e.name, { dtype: e.dtype, shape: e.shape, at: e.offset, bytes: file.subarray(e.offset, e.offset + e.count * (e.dtype === 'F16' ? 2 : 4)) });
  }
  return out;
}
/** Every preset, for messages that must list them. */
const presetList = new RegExp(Object.keys(PRESETS).map((p) => p.replace(/[-.]/g, '\\$&')).join(', '));

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

  it('--dtype f16 writes half floats: the bits PyTorch\'s .half() gives', () => {
    const out = convert(fixture('models', 'tiny'), 'half', '--dtype', 'f16');
    const t = tensorsOf(join(out, 'model.safetensors')).get('transformer.wte.weight')!;
    expect(t.dtype).toBe('F16');
    // fixtures/models/tiny-f16 holds tiny's weights as torch rounded them (make_model_fixtures.py).
    const got = storedOf(join(out, 'model.safetensors'));
    const want = storedOf(fixture('models', 'tiny-f16', 'model.safetensors'));
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [name, w] of want) {
      const g = got.get(name)!;
      expect([g.dtype, g.shape], name).toEqual(['F16', w.shape]);
      expect(g.bytes.equals(w.bytes), `${name} differs from torch's float16`).toBe(true);
    }
  });

  it('a preset config for a bare weights file', () => {
    const lone = join(dir, 'lone');
    mkdirSync(lone);
    cpSync(fixture('models', 'tiny', 'model.safetensors'), join(lone, 'weights.safetensors'));
    const r = runCli('convert-weights', [join(lone, 'weights.safetensors'), join(dir, 'lone-out')]);
    expectOneLineError(r, 'convert-weights', /no config\.json; give --config PRESET/);
    const wrong = runCli('convert-weights', [join(lone, 'weights.safetensors'), join(dir, 'lone-out'), '--config', 'gpt2-tiny']);
    expectOneLineError(wrong, 'convert-weights', /tensor transformer\.wte\.weight has shape \[320, 32\], the config expects \[50257, 64\]/);
    const unknown = runCli('convert-weights', [join(lone, 'weights.safetensors'), join(dir, 'lone-out'), '--config', 'gpt9']);
    expectOneLineError(unknown, 'convert-weights', new RegExp(`--config gpt9: neither a preset \\(${presetList.source}\\) nor a file`));
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
  it('a file in no weights format says which formats are accepted', () => {
    const text = join(dir, 'notes.txt');
    writeFileSync(text, 'these are not weights\n');
    expectOneLineError(runCli('convert-weights', [text, join(dir, 'x'), '--config', 'gpt2-tiny']), 'convert-weights', /notes\.txt: not a weights file \(22 bytes starting "these are not we", text\); accepted: safetensors .* or a PyTorch pytorch_model\.bin/);
  });
  it('a pickle that calls a global outside the whitelist is refused and nothing runs', () => {
    const evil = fixture('torch', 'evil.zip.bin'); // committed: a missing one is a failure, not a skip
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

  /** A copy of the converted model whose model.safetensors `edit` changes in place. */
  const editedModel = (name: string, edit: (file: Buffer, tensors: ReturnType<typeof storedOf>) => void) => {
    const copy = join(dir, name);
    cpSync(model, copy, { recursive: true });
    const path = join(copy, 'model.safetensors');
    const file = readFileSync(path);
    edit(file, storedOf(path));
    writeFileSync(path, file);
    return copy;
  };

  it('a NaN in the weights is an error naming the tensor, not {"loss":null}', () => {
    const bad = editedModel('nan-weights', (file, t) => file.writeFloatLE(NaN, t.get('transformer.h.0.ln_1.weight')!.at + 3 * 4));
    const r = runCli('gpt2-eval', ['-q', '--model', bad, '--data', data, '--batch-size', '2', '--backend', 'wasm']);
    expectOneLineError(r, 'gpt2-eval', /: loss is NaN on the batch of .*eval-data shard 0 record 0 to shard 0 record 1; .*nan-weights: tensor transformer\.h\.0\.ln_1\.weight holds NaN \(element 3 of 8\)$/);
    expect(r.stdout).toBe('');
  });

  it('a loss that overflows with finite weights is an error naming the batch', () => {
    // ln_f's output 10 everywhere against a wte row of 3e38 (finite): that token's logit is +inf.
    const bad = editedModel('overflow', (file, t) => {
      const ln = t.get('transformer.ln_f.weight')!;
      const bias = t.get('transformer.ln_f.bias')!;
      const wte = t.get('transformer.wte.weight')!;
      for (let i = 0; i < 8; i++) {
        file.writeFloatLE(0, ln.at + 4 * i);
        file.writeFloatLE(10, bias.at + 4 * i);
        file.writeFloatLE(3e38, wte.at + 4 * (500 * 8 + i));
      }
    });
    const r = runCli('gpt2-eval', ['-q', '--model', bad, '--data', data, '--batch-size', '2', '--backend', 'wasm']);
    expectOneLineError(r, 'gpt2-eval', /: loss is (Infinity|NaN) on the batch of .*eval-data shard 0 record 0 to shard 0 record 1; every tensor of .*overflow is finite: the activations overflow$/);
  });

  it('a failed write of the result is one line and exit 1', () => {
    const full = openSync('/dev/full', 'w');
    const p = spawnSync(process.execPath, [join(ROOT, 'bin', 'gpt2-eval.js'), '-q', '--model', model, '--data', data, '--max-records', '1', '--backend', 'wasm'], { stdio: ['ignore', full, 'pipe'] });
    closeSync(full);
    const r: CliResult = { code: p.status ?? -1, stdout: '', stderr: p.stderr.toString(), stdoutBytes: Buffer.alloc(0) };
    expectOneLineError(r, 'gpt2-eval', /no space left on device/);
  });

  it('refuses a missing model, an unknown preset and an unknown backend', () => {
    expectOneLineError(runCli('gpt2-eval', ['--model', join(dir, 'nothing'), '--data', data, '--backend', 'cpu']), 'gpt2-eval', /nothing: no such file or directory/);
    expectOneLineError(runCli('gpt2-eval', ['--model', 'gpt9', '--data', data, '--backend', 'cpu']), 'gpt2-eval', new RegExp(`--model gpt9: no such file or directory, and not a preset \\(presets: ${presetList.source}\\)`));
    expectOneLineError(runCli('gpt2-eval', ['--model', model, '--data', data, '--backend', 'tpu']), 'gpt2-eval', /unknown backend "tpu"/, 2);
  });
});
