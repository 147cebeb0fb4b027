/**
 * The tools with GGUF files: convert-weights --to gguf writes gguf-py's file byte for byte (f32,
 * f16, q8_0), reads a .gguf back to HF bit-exact (f32), refuses q8_0 for other targets;
 * gpt2-generate --model x.gguf gives PyTorch's greedy continuations (fixtures/models/tiny/greedy.json)
 * and gpt2-eval PyTorch's loss (fixtures/models/gpt2vocab/eval.json).
 */
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeDataset } from '../../src/data/dataset-writer.js';
import { readSafetensors } from '../../src/formats/safetensors.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { expectOneLineError, fixture, greedyReference, runCli, tempDir } from '../helpers.js';

const dir = tempDir('gguf-cli-');
const env = { ...process.env, GPT2_TOOLCHAIN_HOME: join(dir, 'home') };
const src = join(dir, 'tiny'); // the tiny model with its 320-token tokenizer beside it
beforeAll(() => {
  mkdirSync(src);
  for (const name of ['config.json', 'model.safetensors']) copyFileSync(fixture('models', 'tiny', name), join(src, name));
  for (const name of ['vocab.json', 'merges.txt']) copyFileSync(fixture('gguf', 'tokenizer', name), join(src, name));
});
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe('convert-weights with GGUF', () => {
  it.each(['f32', 'f16', 'q8_0'])("--to gguf --dtype %s writes gguf-py's file", (dtype) => {
    const out = join(dir, `tiny-${dtype}.gguf`);
    const r = runCli('convert-weights', [src, out, '--to', 'gguf', '--dtype', dtype], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(out).equals(readFileSync(fixture('gguf', `tiny-${dtype}.gguf`)))).toBe(true);
    expectOneLineError(runCli('convert-weights', [src, out, '--to', 'gguf', '--dtype', dtype], { env }), 'convert-weights', /tiny-.*\.gguf: exists \(use --overwrite to replace it\)$/);
    expect(runCli('convert-weights', [src, out, '--to', 'gguf', '--dtype', dtype, '--overwrite'], { env }).code).toBe(0);
  });

  it('a .gguf back to HF: bit-exact for f32, the tokenizer files equal', async () => {
    const back = join(dir, 'back');
    const r = runCli('convert-weights', [fixture('gguf', 'tiny-f32.gguf'), back], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain("GGUF (llama.cpp's names)");
    const want = (await readSafetensors(fixture('models', 'tiny', 'model.safetensors'))).tensors;
    const got = (await readSafetensors(join(back, 'model.safetensors'))).tensors;
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [name, t] of want) expect(bits(got.get(name)!.data), name).toEqual(bits(t.data));
    for (const name of ['vocab.json', 'merges.txt']) expect(readFileSync(join(back, name)).equals(readFileSync(fixture('gguf', 'tokenizer', name))), name).toBe(true);
  });

  it('q8_0 only for gguf; a GGUF SRC takes no --config', () => {
    expectOneLineError(runCli('convert-weights', [src, join(dir, 'x'), '--dtype', 'q8_0'], { env }), 'convert-weights', /--dtype q8_0 is not written with --to hf \(f32, f16\); q8_0 is for --to gguf$/, 2);
    expectOneLineError(runCli('convert-weights', [fixture('gguf', 'tiny-f32.gguf'), join(dir, 'y'), '--config', 'gpt2'], { env }), 'convert-weights', /--config: .*tiny-f32\.gguf is a GGUF file, which carries its own config$/, 2);
  });
});

describe('gpt2-generate --model x.gguf', () => {
  const ref = greedyReference('tiny');
  it.each(['f32', 'f16'])("%s: PyTorch's greedy continuations", (dtype) => {
    const input = ref.prompts.map((p) => p.join(' ')).join('\n') + '\n';
    const r = runCli('gpt2-generate', ['--model', fixture('gguf', `tiny-${dtype}.gguf`), '--input-format', 'ids', '--format', 'ids', '-n', '12', '--batch-size', '3'], { env, input });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n').map((l) => l.split(' ').map(Number))).toEqual(ref.continuations);
  });
});

describe('gpt2-eval --model x.gguf', () => {
  it("a GGUF with GPT-2's tokenizer: PyTorch's loss, and the shards' tokenizer is recognised as GPT-2's", async () => {
    const ev = JSON.parse(readFileSync(fixture('models', 'gpt2vocab', 'eval.json'), 'utf8')) as { block_size: number; blocks: number[][]; loss: number };
    const data = join(dir, 'eval-data');
    await writeDataset(data, Uint16Array.from(ev.blocks.flat()), {
      blockSize: ev.block_size, dtype: 'uint16', padId: 50256, keepTail: false, tokenizer: loadTokenizer().identity,
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    });
    const model = join(dir, 'gpt2vocab.gguf');
    expect(runCli('convert-weights', ['-q', fixture('models', 'gpt2vocab'), model, '--to', 'gguf'], { env }).code).toBe(0);
    const r = runCli('gpt2-eval', ['-q', '--model', model, '--data', data, '--batch-size', '2', '--backend', 'wasm'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(Math.abs((JSON.parse(r.stdout) as { loss: number }).loss - ev.loss) / ev.loss).toBeLessThan(1e-5);
  });
});
