import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { saveCheckpoint } from '../../src/formats/checkpoint.js';
import { presetConfig } from '../../src/model/config.js';
import { initialParameters } from '../../src/model/params.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { expectOneLineError, fixture, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const tokenizer = loadTokenizer();
let tiny: string; // vocab 320, 32 positions: checked against PyTorch's greedy ids
let gv: string; // GPT-2's vocabulary, 128 positions: real text prompts
const gen = (args: string[], input?: string | Buffer) => runCli('gpt2-generate', ['-q', '--backend', 'wasm', ...args], { input });

beforeAll(() => {
  tiny = join(dir, 'tiny');
  gv = join(dir, 'gv');
  expect(runCli('convert-weights', ['-q', fixture('models', 'tiny'), tiny]).code).toBe(0);
  expect(runCli('convert-weights', ['-q', fixture('models', 'gpt2vocab'), gv]).code).toBe(0);
});

describe('gpt2-generate', () => {
  it('greedy ids equal the PyTorch reference, with and without the cache, on any number of threads', () => {
    const ref = JSON.parse(readFileSync(fixture('models', 'tiny', 'greedy.json'), 'utf8')) as { prompts: number[][]; continuations: number[][] };
    const input = `${ref.prompts.map((p) => p.join(' ')).join('\n')}\n`;
    // default (wasm: DecodeModel on every core), one thread, the tfjs engine without the cache, cpu
    for (const cache of [[], ['--threads', '1'], ['--no-cache'], ['--backend', 'cpu']]) {
      const r = gen(['--model', tiny, '--input-format', 'ids', '--format', 'ids', '-n', '12', '--batch-size', '3', ...cache], input);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim().split('\n').map((l) => l.split(' ').map(Number))).toEqual(ref.continuations);
    }
  });

  it('a model the wasm decoder cannot take (head size 3) runs on the tfjs model instead', async () => {
    const odd = join(dir, 'odd');
    const config = { ...presetConfig('gpt2'), vocab_size: 320, n_positions: 32, n_embd: 12, n_head: 4, n_layer: 1 };
    await saveCheckpoint(odd, config, initialParameters(config, 1));
    const args = ['--model', odd, '--input-format', 'ids', '--format', 'ids', '-n', '5', '5 17 250'];
    const r = gen(args);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(gen([...args, '--no-cache']).stdout);
  });

  it('text: the prompt and its continuation; streaming prints the same', () => {
    const plain = gen(['--model', gv, '-n', '8', 'The town of', 'Once upon a time']);
    expect(plain.code, plain.stderr).toBe(0);
    const lines = plain.stdout.split('\n');
    expect(lines[0].startsWith('The town of')).toBe(true);
    expect(lines[1].startsWith('Once upon a time')).toBe(true);
    const streamed = gen(['--model', gv, '-n', '8', '--stream', 'The town of', 'Once upon a time']);
    expect(streamed.stdout).toBe(plain.stdout);
  });

  it('jsonl: prompt, text, ids and finish reason; sampling is reproducible by seed', () => {
    const args = ['--model', gv, '-n', '6', '--do-sample', '--top-k', '50', '--seed', '7', '--num-return-sequences', '3', '--format', 'jsonl', 'Hello'];
    const a = gen(args);
    expect(a.code, a.stderr).toBe(0);
    const rows = a.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      expect(row).toMatchObject({ prompt: 'Hello', prompt_ids: tokenizer.encode('Hello'), index: 0 });
      expect(['length', 'eos', 'stop']).toContain(row.finish_reason);
      expect(row.text).toBe(tokenizer.decode(row.ids));
    }
    expect(gen(args).stdout).toBe(a.stdout);
    expect(gen([...args.slice(0, -1), '--seed', '8', 'Hello']).stdout).not.toBe(a.stdout);
  });

  it('prompts from stdin and --prompt-file; an empty prompt starts from <|endoftext|>', () => {
    const file = join(dir, 'prompts.txt');
    writeFileSync(file, 'First line\nSecond line\n');
    const fromFile = gen(['--model', gv, '-n', '3', '--format', 'jsonl', '--prompt-file', file]);
    const fromStdin = gen(['--model', gv, '-n', '3', '--format', 'jsonl'], 'First line\nSecond line\n');
    expect(fromFile.stdout).toBe(fromStdin.stdout);
    expect(fromFile.stdout.trim().split('\n')).toHaveLength(2);
    const empty = gen(['--model', gv, '-n', '3', '--format', 'jsonl', '']);
    expect(JSON.parse(empty.stdout).prompt_ids).toEqual([50256]);
  });

  it('--stats prints one JSON line of timings on stderr', () => {
    const r = runCli('gpt2-generate', ['--backend', 'wasm', '--model', gv, '-n', '5', '--stats', 'Hi']);
    const stats = JSON.parse(r.stderr.trim().split('\n').at(-1)!);
    expect(Object.keys(stats).sort()).toEqual(['backend', 'decode_tokens_per_s', 'load_ms', 'new_tokens', 'prefill_ms', 'prompt_tokens']);
    expect(stats).toMatchObject({ prompt_tokens: 1, new_tokens: 5, backend: 'wasm' });
  });

  it('--truncate left keeps the last tokens of a prompt that does not fit', () => {
    const long = Array.from({ length: 40 }, (_, i) => i % 300).join(' ');
    expectOneLineError(gen(['--model', tiny, '--input-format', 'ids', '-n', '2', long]), 'gpt2-generate', /prompt 1 has 40 tokens; .* exceeds the model's 32 positions/);
    const r = gen(['--model', tiny, '--input-format', 'ids', '--format', 'jsonl', '-n', '2', '--truncate', 'left', long]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).prompt_ids).toEqual(long.split(' ').map(Number).slice(10));
  });
});

describe('gpt2-generate bad inputs', () => {
  it('model missing or incomplete', () => {
    expectOneLineError(gen(['--model', join(dir, 'nope'), 'x']), 'gpt2-generate', /nope: no such file or directory/);
    const partial = join(dir, 'partial');
    mkdirSync(partial);
    writeFileSync(join(partial, 'config.json'), readFileSync(join(tiny, 'config.json')));
    expectOneLineError(gen(['--model', partial, 'x']), 'gpt2-generate', /no model\.safetensors or pytorch_model\.bin/);
  });
  it('prompt ids out of range or not integers', () => {
    expectOneLineError(gen(['--model', tiny, '--input-format', 'ids', '5 320']), 'gpt2-generate', /prompt 1: token id 320 is not in the vocabulary \(size 320\)/);
    expectOneLineError(gen(['--model', tiny, '--input-format', 'ids', '5 x']), 'gpt2-generate', /prompt 1: "x" \(item 2\) is not a token id/);
  });
  it.each([
    [['--do-sample', '--temperature', '0'], /--temperature must be a number > 0/],
    [['--top-p', '1.5'], /--top-p must be in \(0, 1\]/],
    [['--top-p', '0'], /--top-p must be in \(0, 1\]/],
    [['--top-k', '-1'], /--top-k must be at least 0/],
    [['--max-new-tokens', '-3'], /--max-new-tokens must be at least 0/],
    [['--greedy', '--do-sample'], /--greedy and --do-sample contradict each other/],
    [['--threads', '0'], /--threads must be in \[1, 64\], got 0/],
  ])('usage error for %j', (args, message) => {
    expectOneLineError(gen(['--model', tiny, ...(args as string[]), 'x']), 'gpt2-generate', message as RegExp, 2);
  });
  it('a prompt file that does not exist; prompts that are not UTF-8', () => {
    expectOneLineError(gen(['--model', gv, '--prompt-file', join(dir, 'missing.txt')]), 'gpt2-generate', /missing\.txt: no such file/);
    expectOneLineError(gen(['--model', gv], Buffer.from([0x48, 0xff, 0x0a])), 'gpt2-generate', /<stdin>: prompts are not valid UTF-8/);
  });
});
