import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { saveCheckpoint } from '../../src/formats/checkpoint.js';
import { presetConfig } from '../../src/model/config.js';
import { initialParameters } from '../../src/model/params.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { expectOneLineError, fixture, greedyReference, ROOT, runCli, runCliToFile, tempDir } from '../helpers.js';

const dir = tempDir();
const tokenizer = loadTokenizer();
let tiny: string; // vocab 320, 32 positions: checked against PyTorch's greedy ids
let ninner: string; // the same shape with n_inner 52
let gv: string; // GPT-2's vocabulary, 128 positions: real text prompts
const gen = (args: string[], input?: string | Buffer) => runCli('gpt2-generate', ['-q', '--backend', 'wasm', ...args], { input });

/**
 * A GPT-2-vocabulary model that writes newlines only: ln_f's weight is 0, so every position's final
 * state is ln_f's bias, and wte's row for "\n" is that bias scaled up (logit 24, the others ~0.1).
 */
async function newlineModel(path = join(dir, 'newlines')): Promise<string> {
  const [nl] = tokenizer.encode('\n');
  expect(tokenizer.encode('\n')).toEqual([nl]);
  const config = { ...presetConfig('gpt2'), n_embd: 8, n_head: 2, n_layer: 1 };
  const values = initialParameters(config, 0);
  const bias = Float32Array.from({ length: 8 }, (_, j) => (j % 2 ? -1 : 1));
  values.get('transformer.ln_f.weight')!.data.fill(0);
  values.get('transformer.ln_f.bias')!.data.set(bias);
  values.get('transformer.wte.weight')!.data.set(bias.map((v) => 3 * v), nl * 8);
  await saveCheckpoint(path, config, values);
  return path;
}

beforeAll(() => {
  tiny = join(dir, 'tiny');
  ninner = join(dir, 'ninner');
  gv = join(dir, 'gv');
  expect(runCli('convert-weights', ['-q', fixture('models', 'tiny'), tiny]).code).toBe(0);
  expect(runCli('convert-weights', ['-q', fixture('models', 'tiny-ninner'), ninner]).code).toBe(0);
  expect(runCli('convert-weights', ['-q', fixture('models', 'gpt2vocab'), gv]).code).toBe(0);
});

describe('gpt2-generate', () => {
  it.each(['tiny', 'tiny-ninner'])('greedy ids of %s equal the PyTorch reference on every path, on any number of threads', (name) => {
    const ref = greedyReference(name);
    const input = `${ref.prompts.map((p) => p.join(' ')).join('\n')}\n`;
    // default (wasm: the wasm decoder on every core), one thread, without the cache, tfjs on cpu with and without
    for (const path of [[], ['--threads', '1'], ['--no-cache'], ['--backend', 'cpu'], ['--backend', 'cpu', '--no-cache']]) {
      const r = gen(['--model', name === 'tiny' ? tiny : ninner, '--input-format', 'ids', '--format', 'ids', '-n', '12', '--batch-size', '3', ...path], input);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim().split('\n').map((l) => l.split(' ').map(Number)), path.join(' ')).toEqual(ref.continuations);
    }
  });

  it('says on stderr, once, how generation runs and why', () => {
    const line = (args: string[]) => runCli('gpt2-generate', ['--input-format', 'ids', '--format', 'ids', '-n', '2', ...args, '5 17']).stderr.split('\n').filter((l) => l.includes('generation: '));
    expect(line(['--backend', 'wasm', '--threads', '2', '--model', ninner])).toEqual(['gpt2-generate: generation: wasm decoder of our own (SIMD, 2 threads), key/value cache (backend wasm)']);
    expect(line(['--backend', 'cpu', '--no-cache', '--model', tiny])).toEqual(['gpt2-generate: generation: GPT2 on tfjs (cpu), whole context every step (backend cpu)']);
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

  it('a model whose n_inner the wasm decoder cannot take runs on the tfjs model, and says why', async () => {
    const odd = join(dir, 'odd-inner');
    const config = { ...presetConfig('gpt2'), vocab_size: 320, n_positions: 32, n_embd: 16, n_head: 4, n_layer: 1, n_inner: 30 };
    await saveCheckpoint(odd, config, initialParameters(config, 1));
    const args = ['--backend', 'wasm', '--model', odd, '--input-format', 'ids', '--format', 'ids', '-n', '5', '5 17 250'];
    const r = runCli('gpt2-generate', args);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('generation: GPT2 on tfjs (wasm), key/value cache (the wasm decoder needs multiples of 4, and n_inner is 30)');
    expect(r.stdout).toBe(gen([...args, '--backend', 'cpu', '--no-cache']).stdout);
  });

  it('--truncate left keeps the last tokens of a prompt that does not fit', () => {
    const long = Array.from({ length: 40 }, (_, i) => i % 300).join(' ');
    expectOneLineError(gen(['--model', tiny, '--input-format', 'ids', '-n', '2', long]), 'gpt2-generate', /prompt 1 has 40 tokens; .* exceeds the model's 32 positions/);
    const r = gen(['--model', tiny, '--input-format', 'ids', '--format', 'jsonl', '-n', '2', '--truncate', 'left', long]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).prompt_ids).toEqual(long.split(' ').map(Number).slice(10));
  });

  it('--max-new-tokens that leaves no room for any prompt says so, with the numbers', () => {
    for (const truncate of [[], ['--truncate', 'left']]) {
      for (const n of ['32', '1000']) {
        const r = gen(['--model', tiny, '--input-format', 'ids', '-n', n, ...truncate, '5 17 250']);
        expectOneLineError(r, 'gpt2-generate', new RegExp(`--max-new-tokens ${n} leaves no room for prompt 1: the model has 32 positions, so at most 31 new tokens after a one-token prompt`));
      }
    }
    const r = gen(['--model', tiny, '--input-format', 'ids', '--format', 'ids', '-n', '31', '--truncate', 'left', '5 17 250']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split(' ')).toHaveLength(31);
  });

  it('escapes: \\n in prompt arguments and in --stop is a newline, in both or (--no-escapes) in neither', async () => {
    const nl = await newlineModel();
    const run = (args: string[], input?: string) => gen(['--model', nl, '-n', '3', '--format', 'jsonl', ...args], input).stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(run(['A\\nB\\tC\\\\n'])[0].prompt).toBe('A\nB\tC\\n');
    expect(run(['--no-escapes', 'A\\nB'])[0].prompt).toBe('A\\nB');
    expect(run([], 'A\\nB\n')[0].prompt).toBe('A\\nB'); // read from stdin: as it is
    // The model writes newlines only: --stop "\n" stops at the first; taken as typed, it never matches.
    expect(run(['--stop', '\\n', 'Q'])[0]).toMatchObject({ text: '', finish_reason: 'stop' });
    expect(run(['--no-escapes', '--stop', '\\n', 'Q'])[0]).toMatchObject({ text: '\n\n\n', finish_reason: 'length' });
  });

  it('every example of --help works when pasted (with a model installed as the preset gpt2)', async () => {
    const home = join(dir, 'home');
    await newlineModel(join(home, 'models', 'gpt2'));
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'gpt2-generate'), `#!/bin/sh\nexec "${process.execPath}" "${join(ROOT, 'bin', 'gpt2-generate.js')}" "$@"\n`);
    chmodSync(join(bin, 'gpt2-generate'), 0o755);
    const help = runCli('gpt2-generate', ['--help']).stdout;
    const examples = help.split('Examples:\n')[1].split('\n\n')[0].split('\n').map((l) => l.trim());
    expect(examples.length).toBeGreaterThanOrEqual(5);
    const cwd = join(dir, 'pasted');
    mkdirSync(cwd);
    for (const example of examples) {
      const r = spawnSync('bash', ['-c', example], { cwd, env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, GPT2_TOOLCHAIN_HOME: home }, encoding: 'utf8' });
      expect(r.status, `${example}\n${r.stderr}`).toBe(0);
      if (example.includes('--stop')) expect(r.stdout).toBe('Q: Why is the sky blue?\nA:\n'); // the prompt's \n a newline; stopped at "\n\n"
    }
    expect(readFileSync(join(cwd, 'out.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).prompt)).toEqual(['The town of', 'Once upon a time']);
    rmSync(cwd, { recursive: true });
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

describe('gpt2-generate output and vocabularies', () => {
  it.each([
    ['text', ['-n', '3', 'Hello']],
    ['text, streamed', ['-n', '3', '--stream', 'Hello']],
    ['jsonl', ['-n', '3', '--format', 'jsonl', 'Hello']],
    ['ids', ['-n', '3', '--input-format', 'ids', '--format', 'ids', '15496']],
  ])('a write error on stdout (%s to /dev/full) is one line, exit 1', (_, args) => {
    const r = runCliToFile('gpt2-generate', ['-q', '--backend', 'wasm', '--model', gv, ...args], '/dev/full');
    expectOneLineError(r, 'gpt2-generate', /<stdout>: no space left on device/);
  });

  it('ids in and out need no tokenizer: a model with more ids than GPT-2 and no vocab.json / merges.txt', async () => {
    const big = join(dir, 'big-vocab');
    const config = { ...presetConfig('gpt2'), vocab_size: 60000, n_positions: 64, n_embd: 8, n_head: 2, n_layer: 1 };
    const values = initialParameters(config, 2);
    values.get('transformer.wte.weight')!.data.fill(0, 0, 50257 * 8); // GPT-2's ids score 0: a draw beyond them is near certain
    await saveCheckpoint(big, config, values);
    for (const file of ['vocab.json', 'merges.txt']) rmSync(join(big, file));
    const args = ['--backend', 'wasm', '--model', big, '--input-format', 'ids', '--format', 'ids', '-n', '8'];
    const r = runCli('gpt2-generate', [...args, '59999 3']);
    expect(r.code, r.stderr).toBe(0);
    const ids = r.stdout.trim().split(' ').map(Number);
    expect(ids).toHaveLength(8);
    expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < 60000)).toBe(true);
    expect(ids.some((id) => id >= 50257)).toBe(true);
    const notes = r.stderr.split('\n').filter((l) => l.includes('text cannot be decoded'));
    expect(notes).toEqual([`gpt2-generate: ${big}: no tokenizer (vocab.json, merges.txt) and 60000 token ids, GPT-2's has 50257: ids in and out, text cannot be decoded`]);
    // text out draws ids GPT-2's tokenizer cannot decode: a warning first, then a one-line error
    const text = runCli('gpt2-generate', ['--backend', 'wasm', '--model', big, '--input-format', 'ids', '-n', '8', '59999 3']);
    expect(text.stderr).toContain("GPT-2's tokenizer has 50257 token ids and the model 60000");
    expectOneLineError(text, 'gpt2-generate', /token id \d+ is not in the vocabulary \(size 50257\)/);
  });

  it('ids in and out need no tokenizer: a checkpoint whose vocabulary is not byte-level BPE', () => {
    const odd = join(dir, 'not-bpe');
    expect(runCli('convert-weights', ['-q', fixture('models', 'tiny'), odd]).code).toBe(0);
    writeFileSync(join(odd, 'vocab.json'), JSON.stringify(Object.fromEntries(Array.from({ length: 320 }, (_, i) => [`▁piece${i}`, i]))));
    writeFileSync(join(odd, 'merges.txt'), 'not a merges file\n');
    const ref = greedyReference('tiny');
    const r = runCli('gpt2-generate', ['--backend', 'wasm', '--model', odd, '--input-format', 'ids', '--format', 'ids', '-n', '12', ref.prompts[0].join(' ')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split(' ').map(Number)).toEqual(ref.continuations[0]);
    expect(r.stderr.split('\n').filter((l) => l.includes('text cannot be decoded'))).toHaveLength(1);
    expect(r.stderr).toMatch(/its tokenizer is not byte-level BPE \(.*\): ids in and out, text cannot be decoded/);
    expectOneLineError(gen(['--model', odd, '-n', '2', 'Hello']), 'gpt2-generate', /--input-format ids --format ids needs no tokenizer/);
  });
});
