/**
 * gpt2-train end to end on a very small model (GPT-2's vocabulary, 16 positions, 16 wide):
 * loss falls, resume is bit-exact on wasm and cpu, signals and NaNs stop cleanly, bad inputs fail
 * with one line.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeDataset } from '../../src/data/shard-writer.js';
import { expectOneLineError, fixture, ROOT, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const data = join(dir, 'train');
const valid = join(dir, 'valid');
const CONFIG = join(ROOT, 'configs', 'gpt2', 'run_gpt2_tiny.yaml');
// A model small enough that a step takes milliseconds: what matters here is the machinery.
const SMALL = ['--set', 'model.config.n_positions=16', '--set', 'model.config.n_embd=16', '--set', 'model.config.n_layer=1', '--set', 'model.config.n_head=2', '--set', 'logging.interval=1', '--set', 'eval.max_records=4'];
const train = (args: string[]) => runCli('gpt2-train', ['--config', CONFIG, '--train-data', data, '--eval-data', valid, ...SMALL, ...args]);
const metrics = (run: string) =>
  readFileSync(join(run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);

beforeAll(() => {
  const docs = runCli('wikitext-prep', ['-q', fixture('wikitext', 'wiki.train.tokens')]);
  for (const [out, input] of [[data, docs.stdout], [valid, docs.stdout.split('\n').slice(0, 2).join('\n')]]) {
    expect(runCli('bpe-encode', ['-q', '--block-size', '17', '--out', out, '-'], { input }).code).toBe(0);
  }
});

describe('gpt2-train', () => {
  it('trains: the loss falls, checkpoints are HF directories, latest points at the last', () => {
    const run = join(dir, 'falls');
    const r = train(['--output-dir', run, '--max-steps', '30', '--backend', 'wasm', '--set', 'checkpoint.interval=10', '--set', 'eval.interval=10']);
    expect(r.code, r.stderr).toBe(0);
    const lines = metrics(run);
    const losses = lines.filter((l) => 'loss' in l).map((l) => l.loss);
    expect(losses).toHaveLength(30);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(losses.slice(-5))).toBeLessThan(mean(losses.slice(0, 5)) - 0.5);
    expect(lines.filter((l) => 'eval_loss' in l).map((l) => l.step)).toEqual([10, 20, 30]);
    expect(readlinkSync(join(run, 'checkpoints', 'latest'))).toBe('step-000030');
    const ck = join(run, 'checkpoints', 'step-000030');
    for (const f of ['config.json', 'model.safetensors', 'vocab.json', 'merges.txt', 'optimizer.safetensors', 'trainer_state.json']) expect(existsSync(join(ck, f))).toBe(true);
    expect(existsSync(join(run, 'checkpoints', 'step-000010'))).toBe(false); // keep_last 2
    expect(existsSync(join(run, 'config.yaml')) && existsSync(join(run, 'loss.svg'))).toBe(true);
    // the checkpoint evaluates with gpt2-eval
    const ev = runCli('gpt2-eval', ['-q', '--model', join(run, 'checkpoints', 'latest'), '--data', valid, '--max-records', '4']);
    expect(ev.code, ev.stderr).toBe(0);
    expect(JSON.parse(ev.stdout).loss).toBeCloseTo(lines.at(-1)!.eval_loss, 4);
  });

  // cpu runs fewer steps: its softmax over 50257 classes is ~1 s a micro-batch.
  it.each([
    ['wasm', 20, 10, 2],
    ['cpu', 6, 3, 1],
  ] as const)('resumes bit for bit on %s: %i straight = %i + resume', (backend, steps, stopAt, accumulation) => {
    const common = ['--backend', backend, '--max-steps', String(steps), '--set', 'model.dropout=0.1', '--set', 'checkpoint.interval=4', '--set', `eval.interval=${stopAt - 1}`, '--set', `runner.gradient_accumulation_steps=${accumulation}`, '--set', 'eval.max_records=2'];
    const straight = join(dir, `straight-${backend}`);
    const split = join(dir, `split-${backend}`);
    expect(train([...common, '--output-dir', straight]).code).toBe(0);
    expect(train([...common, '--output-dir', split, '--stop-at', String(stopAt)]).code).toBe(0);
    expect(train([...common, '--output-dir', split, '--resume']).code).toBe(0);
    const exact = (l: Record<string, number>) => ({ step: l.step, loss: l.loss, lr: l.lr, grad_norm: l.grad_norm, eval_loss: l.eval_loss });
    expect(metrics(split).map(exact)).toEqual(metrics(straight).map(exact));
    for (const f of ['model.safetensors', 'optimizer.safetensors']) {
      expect(readFileSync(join(split, 'checkpoints', 'latest', f)).equals(readFileSync(join(straight, 'checkpoints', 'latest', f)))).toBe(true);
    }
  });

  it('--init-from starts from a checkpoint with fresh optimizer state', () => {
    const base = join(dir, 'base');
    expect(train(['--output-dir', base, '--max-steps', '20']).code).toBe(0);
    const tuned = join(dir, 'tuned');
    const r = train(['--output-dir', tuned, '--max-steps', '2', '--init-from', join(base, 'checkpoints', 'latest')]);
    expect(r.code, r.stderr).toBe(0);
    const first = metrics(tuned)[0].loss;
    const baseFirst = metrics(base)[0].loss;
    expect(first).toBeLessThan(baseFirst - 0.5); // starts where the base run got to, not from random
    const state = JSON.parse(readFileSync(join(tuned, 'checkpoints', 'latest', 'trainer_state.json'), 'utf8'));
    expect(state.step).toBe(2);
  });

  it('plot writes loss.svg', () => {
    const run = join(dir, 'falls');
    const r = runCli('gpt2-train', ['plot', run]);
    expect(r.code).toBe(0);
    const svg = readFileSync(join(run, 'loss.svg'), 'utf8');
    expect(svg).toMatch(/^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg.match(/<polyline/g)?.length).toBe(2); // train and eval
  });
});

describe('gpt2-train stops cleanly', () => {
  it('SIGINT: finishes the step, saves a checkpoint, exits 130', async () => {
    const run = join(dir, 'sigint');
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'gpt2-train.js'), '--config', CONFIG, '--train-data', data, ...SMALL, '--output-dir', run, '--max-steps', '100000', '--set', 'eval_dataset=null']);
    let stderr = '';
    const code = await new Promise<number>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (/step 3\//.test(stderr) && !child.killed) child.kill('SIGINT');
      });
      child.on('close', (c) => resolve(c ?? -1));
    });
    expect(code).toBe(130);
    expect(stderr).toMatch(/stopped by SIGINT after step \d+; checkpoint /);
    const state = JSON.parse(readFileSync(join(run, 'checkpoints', 'latest', 'trainer_state.json'), 'utf8'));
    expect(state.step).toBeGreaterThanOrEqual(3);
  });

  it('a NaN loss stops with an error naming the step; the last good checkpoint stays', () => {
    const run = join(dir, 'nan');
    const r = train(['--output-dir', run, '--max-steps', '50', '--set', 'lr_schedule.type=constant', '--set', 'lr_schedule.lr=1e30', '--set', 'lr_schedule.end_lr=0', '--set', 'optimizer.grad_clip=0', '--set', 'checkpoint.interval=1']);
    expectOneLineError(r, 'gpt2-train', /loss is (NaN|Infinity) at step (\d+); stopping \(the last checkpoint, .*step-0000\d\d, is kept\)/);
    const failedAt = Number(/at step (\d+)/.exec(r.stderr)![1]);
    expect(readlinkSync(join(run, 'checkpoints', 'latest'))).toBe(`step-${String(failedAt - 1).padStart(6, '0')}`);
  });
});

describe('gpt2-train bad inputs', () => {
  it('malformed YAML names the line', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'seed: 1\nrunner:\n  batch_size: 2\n   max_steps: 3\n');
    expectOneLineError(runCli('gpt2-train', ['--config', bad]), 'gpt2-train', /bad\.yaml:4:\d+: bad indentation/);
  });
  it('unknown and mistyped keys', () => {
    expectOneLineError(train(['--set', 'optimizer.beta=0.9']), 'gpt2-train', /optimizer\.beta: unknown key \(did you mean betas\?\)/);
    expectOneLineError(train(['--set', 'runner.batch_size=0']), 'gpt2-train', /runner\.batch_size: must be an integer ≥ 1, got 0/);
    expectOneLineError(train(['--set', 'optimizer.betas[1]=1.5']), 'gpt2-train', /optimizer\.betas\[1\]: must be in \[0, 1\)/);
  });
  it('training data missing or incomplete', () => {
    expectOneLineError(runCli('gpt2-train', ['--config', CONFIG, ...SMALL, '--train-data', join(dir, 'none'), '--set', 'eval_dataset=null', '--output-dir', join(dir, 'x1')]), 'gpt2-train', /none: no such directory/);
    const partial = join(dir, 'partial');
    mkdirSync(partial);
    writeFileSync(join(partial, 'shard-00000.msgpack'), 'x');
    expectOneLineError(runCli('gpt2-train', ['--config', CONFIG, ...SMALL, '--train-data', partial, '--set', 'eval_dataset=null', '--output-dir', join(dir, 'x2')]), 'gpt2-train', /no manifest\.json, so the data set is incomplete/);
  });
  it('shards of another tokenizer, or blocks longer than the model', async () => {
    const other = join(dir, 'other-tok');
    await writeDataset(other, Uint16Array.from({ length: 170 }, (_, i) => i), {
      blockSize: 17, dtype: 'uint16', padId: 0, keepTail: false, tokenizer: { name: 'other', vocab_size: 50257, sha256: 'b'.repeat(64) },
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    });
    expectOneLineError(runCli('gpt2-train', ['--config', CONFIG, ...SMALL, '--train-data', other, '--set', 'eval_dataset=null', '--output-dir', join(dir, 'x3')]), 'gpt2-train', /encoded with tokenizer other/);
    expectOneLineError(train(['--set', 'model.config.n_positions=8', '--output-dir', join(dir, 'x4')]), 'gpt2-train', /block size 17 needs 16 positions; the model has 8/);
  });
  it('--resume without a checkpoint; an output dir holding another run', () => {
    expectOneLineError(train(['--output-dir', join(dir, 'fresh'), '--resume']), 'gpt2-train', /no checkpoint to resume from/);
    const taken = join(dir, 'taken');
    mkdirSync(taken);
    writeFileSync(join(taken, 'metrics.jsonl'), '{}\n');
    expectOneLineError(train(['--output-dir', taken]), 'gpt2-train', /holds another run \(use --resume to continue it, or --overwrite/);
  });
  it('a corrupt optimizer state', () => {
    const run = join(dir, 'corrupt');
    expect(train(['--output-dir', run, '--max-steps', '2']).code).toBe(0);
    const opt = join(run, 'checkpoints', 'latest', 'optimizer.safetensors');
    writeFileSync(opt, readFileSync(opt).subarray(0, 200));
    expectOneLineError(train(['--output-dir', run, '--resume', '--max-steps', '4']), 'gpt2-train', /optimizer\.safetensors: (header|tensor)/);
  });
});
