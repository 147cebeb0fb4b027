/**
 * The one chooser of training and evaluation engines (src/train/engine.ts): which engine runs,
 * that it says so on stderr, and that the wasm pass gives the same bits on any number of threads
 * (its GEMM sums every element in the same order however the work is split).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PRESETS, type GPT2Config } from '../../src/model/config.js';
import { chooseSequenceEngine } from '../../src/train/engine.js';
import { fixture, ROOT, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const data = join(dir, 'data');
const CONFIG = join(ROOT, 'configs', 'gpt2', 'run_gpt2_tiny.yaml');
const SMALL = ['--set', 'model.config.n_positions=16', '--set', 'model.config.n_embd=16', '--set', 'model.config.n_layer=1', '--set', 'model.config.n_head=2'];

beforeAll(() => {
  const docs = runCli('wikitext-prep', ['-q', fixture('wikitext', 'wiki.train.tokens')]);
  expect(runCli('bpe-encode', ['-q', '--block-size', '17', '--out', data, '-'], { input: docs.stdout }).code).toBe(0);
});

describe('chooseSequenceEngine', () => {
  const gpt2: GPT2Config = { ...PRESETS.gpt2, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
  const shape = { batch: 1, length: 1024, training: true };

  it('takes the wasm pass on wasm when it can run the model, tfjs elsewhere, and says why', () => {
    expect(chooseSequenceEngine(gpt2, 'wasm', shape)).toEqual({ engine: 'wasm-pass', why: 'backend wasm' });
    for (const backend of ['cpu', 'tensorflow', 'tensorflow-gpu']) expect(chooseSequenceEngine(gpt2, backend, shape)).toEqual({ engine: 'tfjs', why: `backend ${backend}` });
    expect(chooseSequenceEngine({ ...gpt2, n_embd: 30, n_head: 3 }, 'wasm', shape)).toEqual({ engine: 'tfjs', why: 'the wasm pass needs multiples of 4, and n_embd is 30' });
    const medium = { ...PRESETS['gpt2-medium'], embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
    expect(chooseSequenceEngine(medium, 'wasm', shape)).toMatchObject({ engine: 'tfjs', why: expect.stringMatching(/more than wasm's 4 GiB/) });
    expect(chooseSequenceEngine(medium, 'wasm', { ...shape, training: false }).engine).toBe('wasm-pass'); // evaluation needs far less
  });
});

describe('gpt2-train and gpt2-eval on the wasm pass', () => {
  const trainRun = (out: string, threads: number) =>
    runCli('gpt2-train', ['--config', CONFIG, '--train-data', data, '--eval-data', data, ...SMALL, '--output-dir', out, '--max-steps', '6', '--backend', 'wasm', '--threads', String(threads), '--set', 'eval.max_records=4']);
  const weights = (run: string) => readFileSync(join(run, 'checkpoints', 'latest', 'model.safetensors'));

  it('say which engine runs; 1 and 2 threads train the same bits', () => {
    const [one, two] = [join(dir, 'one'), join(dir, 'two')];
    const a = trainRun(one, 1);
    const b = trainRun(two, 2);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(a.stderr).toContain('gpt2-train: training: wasm pass of our own (SIMD, 1 thread) (backend wasm)');
    expect(b.stderr).toContain('gpt2-train: training: wasm pass of our own (SIMD, 2 threads) (backend wasm)');
    expect(weights(two).equals(weights(one))).toBe(true);
    expect(readFileSync(join(two, 'checkpoints', 'latest', 'optimizer.safetensors')).equals(readFileSync(join(one, 'checkpoints', 'latest', 'optimizer.safetensors')))).toBe(true);
  });

  it('gpt2-eval: the same result on 1 and 2 threads, and within float32 rounding of the tfjs path on cpu', () => {
    const model = join(dir, 'one', 'checkpoints', 'latest');
    const run = (args: string[]) => runCli('gpt2-eval', ['--model', model, '--data', data, '--max-records', '8', ...args]);
    const [one, two, cpu] = [run(['--backend', 'wasm', '--threads', '1']), run(['--backend', 'wasm', '--threads', '2']), run(['--backend', 'cpu'])];
    for (const r of [one, two, cpu]) expect(r.code, r.stderr).toBe(0);
    expect(one.stderr).toContain('gpt2-eval: evaluation: wasm pass of our own (SIMD, 1 thread) (backend wasm)');
    expect(cpu.stderr).toContain('gpt2-eval: evaluation: GPT2 on tfjs (cpu) (backend cpu)');
    expect(two.stdout).toBe(one.stdout);
    const [p, q] = [JSON.parse(one.stdout), JSON.parse(cpu.stdout)] as { loss: number; tokens: number }[];
    expect(p.tokens).toBe(q.tokens);
    expect(Math.abs(p.loss - q.loss) / q.loss).toBeLessThan(1e-6);
  });
});
