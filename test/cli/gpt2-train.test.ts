/**
 * gpt2-train end to end on a very small model (GPT-2's vocabulary, 16 positions, 16 wide):
 * loss falls, resume is bit-exact on wasm and cpu, signals and NaNs stop cleanly, bad inputs fail
 * with one line.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeDataset } from '../../src/data/dataset-writer.js';
import type { DatasetSpec } from '../../src/data/shard-writer.js';
import { GPT2_TOKENIZER_SHA256 } from '../../src/tokenizer/tokenizer.js';
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

    // A preset name means that preset's installed weights, never random ones.
    const home = join(dir, 'toolchain-home');
    mkdirSync(home);
    const env = { GPT2_TOOLCHAIN_HOME: home };
    const fromPreset = (out: string) => runCli('gpt2-train', ['--config', CONFIG, '--train-data', data, '--eval-data', valid, ...SMALL, '--output-dir', out, '--max-steps', '1', '--init-from', 'gpt2'], { env });
    expectOneLineError(fromPreset(join(dir, 'preset-missing')), 'gpt2-train', new RegExp(`model\\.init_from \\(--init-from\\) gpt2: no weights for preset gpt2 in ${join(home, 'models', 'gpt2')}; convert a Hugging Face gpt2 there once .*, or set model\\.preset: gpt2 without init_from for random weights`));
    expect(existsSync(join(dir, 'preset-missing'))).toBe(false);
    cpSync(join(base, 'checkpoints', 'latest'), join(home, 'models', 'gpt2'), { recursive: true, dereference: true });
    const installed = join(dir, 'preset-installed');
    const r2 = fromPreset(installed);
    expect(r2.code, r2.stderr).toBe(0);
    expect(metrics(installed)[0].loss).toBeLessThan(baseFirst - 0.5); // the installed (trained) weights
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

  /** Starts a long training run; resolves once `ready` matches its stderr. */
  const startLong = (run: string, ready: RegExp) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'gpt2-train.js'), '--config', CONFIG, '--train-data', data, ...SMALL, '--output-dir', run, '--max-steps', '100000', '--set', 'eval_dataset=null']);
    let stderr = '';
    const closed = new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
    const started = new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (ready.test(stderr)) resolve();
      });
      void closed.then(() => resolve());
    });
    return { child, started, closed, stderr: () => stderr };
  };

  it('a second gpt2-train on the same run directory fails naming the pid of the first', async () => {
    const run = join(dir, 'locked');
    const first = startLong(run, /step 2\//);
    await first.started;
    const second = train(['--output-dir', run, '--overwrite', '--max-steps', '1']);
    first.child.kill('SIGINT');
    expect(await first.closed).toBe(130);
    expectOneLineError(second, 'gpt2-train', new RegExp(`locked: another gpt2-train \\(pid ${first.child.pid}\\) is training in this run directory`));
    expect(existsSync(join(run, 'gpt2-train.lock'))).toBe(false);
    expect(train(['--output-dir', run, '--resume', '--max-steps', '1', '--set', 'eval_dataset=null']).code).toBe(0); // released
  });

  it('a second SIGINT during the start stops at once and leaves nothing that blocks the next run', async () => {
    const run = join(dir, 'double-sigint');
    const long = startLong(run, /training \d+ layers/);
    await long.started;
    long.child.kill('SIGINT');
    // the second only once the first has been seen (two signals sent at once may arrive as one)
    await new Promise<void>((resolve) => long.child.stderr.on('data', () => /SIGINT: finishing/.test(long.stderr()) && resolve()));
    long.child.kill('SIGINT');
    expect(await long.closed).toBe(130);
    expect(existsSync(join(run, 'gpt2-train.lock'))).toBe(false);
    const next = train(['--output-dir', run, '--max-steps', '1', '--set', 'eval_dataset=null']);
    expect(next.code, next.stderr).toBe(0);
  });

  it('a NaN loss stops with an error naming the step; the last good checkpoint stays', () => {
    const run = join(dir, 'nan');
    const r = train(['--output-dir', run, '--max-steps', '50', '--set', 'lr_schedule.type=constant', '--set', 'lr_schedule.lr=1e30', '--set', 'lr_schedule.end_lr=0', '--set', 'optimizer.grad_clip=0', '--set', 'checkpoint.interval=1']);
    expectOneLineError(r, 'gpt2-train', /loss is (NaN|Infinity) at step (\d+); stopping \(the last checkpoint, .*step-0000\d\d, is kept\)/);
    const failedAt = Number(/at step (\d+)/.exec(r.stderr)![1]);
    expect(readlinkSync(join(run, 'checkpoints', 'latest'))).toBe(`step-${String(failedAt - 1).padStart(6, '0')}`);
  });
});

describe('gpt2-train on a full disk', () => {
  // A 16 KiB tmpfs (needs root): the tokenizer copy alone is larger.
  it('fails at the start with one line naming the file, and leaves nothing behind', (ctx) => {
    const mountPoint = join(dir, 'tiny-disk');
    mkdirSync(mountPoint);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', mountPoint]).status !== 0) ctx.skip('cannot mount a tmpfs here (needs root)');
    try {
      expectOneLineError(train(['--output-dir', join(mountPoint, 'run')]), 'gpt2-train', /tiny-disk\/run\/tokenizer\/vocab\.json: no space left on device$/);
      expect(readdirSync(mountPoint)).toEqual([]);
    } finally {
      spawnSync('umount', [mountPoint]);
    }
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
    // a start that fails on its inputs leaves no output directory behind
    expect(existsSync(join(dir, 'x1')) || existsSync(join(dir, 'x2'))).toBe(false);
  });
  it('shards of another tokenizer, or blocks longer than the model', async () => {
    const other = join(dir, 'other-tok');
    await writeDataset(other, Uint16Array.from({ length: 170 }, (_, i) => i), {
      blockSize: 17, dtype: 'uint16', padId: 0, keepTail: false, tokenizer: { name: 'other', vocab_size: 50257, sha256: 'b'.repeat(64) },
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    });
    expectOneLineError(runCli('gpt2-train', ['--config', CONFIG, ...SMALL, '--train-data', other, '--set', 'eval_dataset=null', '--output-dir', join(dir, 'x3')]), 'gpt2-train', /encoded with tokenizer other/);
    expectOneLineError(train(['--set', 'model.config.n_positions=8', '--output-dir', join(dir, 'x4')]), 'gpt2-train', /block size 17 needs 16 positions; the model has 8/);
    expect(existsSync(join(dir, 'x3')) || existsSync(join(dir, 'x4'))).toBe(false);
  });

  it('ids outside the vocabulary name the shard, record, position and id', async () => {
    const oov = join(dir, 'oov');
    const ids = Uint16Array.from({ length: 170 }, (_, i) => (i === 17 * 5 + 3 ? 60000 : i));
    await writeDataset(oov, ids, {
      blockSize: 17, dtype: 'uint16', padId: 0, keepTail: false, tokenizer: { name: 'gpt2', vocab_size: 50257, sha256: GPT2_TOKENIZER_SHA256 },
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    } satisfies DatasetSpec);
    const r = runCli('gpt2-train', ['--config', CONFIG, ...SMALL, '--train-data', oov, '--set', 'eval_dataset=null', '--set', 'train_dataset.shuffle=false', '--output-dir', join(dir, 'x5')]);
    expectOneLineError(r, 'gpt2-train', new RegExp(`${join(oov, 'shard-00000.msgpack')}: record 5: input_ids\\[3\\] is 60000, outside the vocabulary of 50257 ids \\(0 to 50256\\)$`));
    expect(existsSync(join(dir, 'x5'))).toBe(false);
  });

  it('fewer records than one batch names the data, the count and the batch size', () => {
    const records = JSON.parse(readFileSync(join(valid, 'manifest.json'), 'utf8')).totals.records as number;
    const r = runCli('gpt2-train', ['--config', CONFIG, ...SMALL, '--train-data', valid, '--set', 'eval_dataset=null', '--set', `runner.batch_size=${records + 1}`, '--output-dir', join(dir, 'x6')]);
    expectOneLineError(r, 'gpt2-train', new RegExp(`${valid}: ${records} records per epoch, fewer than one batch of ${records + 1} \\(runner\\.batch_size\\); use a smaller runner\\.batch_size, or train_dataset\\.drop_remainder: false$`));
    expect(existsSync(join(dir, 'x6'))).toBe(false);
  });

  it('a data path from the config that is missing names the key, the file and the flag that overrides it', () => {
    const config = join(dir, 'missing-eval.yaml');
    writeFileSync(config, `extends: ${CONFIG}\neval_dataset:\n  path: ${join(dir, 'no-valid')}\n`);
    const r = runCli('gpt2-train', ['--config', config, ...SMALL, '--train-data', data, '--output-dir', join(dir, 'x7')]);
    expectOneLineError(r, 'gpt2-train', new RegExp(`no-valid: no such directory \\(eval_dataset\\.path in ${config}; --eval-data DIR overrides it, or --set eval_dataset=null trains without evaluation\\)$`));
    // given by the flag, the path is the user's own: no hint
    expectOneLineError(train(['--eval-data', join(dir, 'no-valid'), '--output-dir', join(dir, 'x7')]), 'gpt2-train', /no-valid: no such directory$/);
  });
  it('--resume without a checkpoint; an output dir holding another run, or something else', () => {
    expectOneLineError(train(['--output-dir', join(dir, 'fresh'), '--resume']), 'gpt2-train', /no checkpoint to resume from/);
    const taken = join(dir, 'taken');
    expect(train(['--output-dir', taken, '--max-steps', '1']).code).toBe(0);
    expectOneLineError(train(['--output-dir', taken]), 'gpt2-train', /holds another run \(use --resume to continue it, or --overwrite/);
    const notes = join(dir, 'notes');
    mkdirSync(notes);
    writeFileSync(join(notes, 'notes.txt'), 'mine');
    expectOneLineError(train(['--output-dir', notes]), 'gpt2-train', /notes: output directory is not empty and is not a gpt2-train run: it holds notes\.txt, which gpt2-train does not write; name a new directory$/);
    expectOneLineError(train(['--output-dir', notes, '--overwrite']), 'gpt2-train', /notes: not replacing it with --overwrite: it holds notes\.txt, which gpt2-train does not write$/);
    expect(readdirSync(notes)).toEqual(['notes.txt']);
  });

  it('--overwrite replaces a run, never one holding the training data, the current directory or an empty path', () => {
    const run = join(dir, 'overwritten');
    expect(train(['--output-dir', run, '--max-steps', '2']).code).toBe(0);
    const inside = join(run, 'train');
    cpSync(data, inside, { recursive: true });
    expectOneLineError(train(['--output-dir', run, '--overwrite', '--train-data', inside]), 'gpt2-train', new RegExp(`overwritten: refusing to replace it: it holds ${inside}, an input of this command$`));
    expect(readdirSync(inside).sort()).toEqual(readdirSync(data).sort());
    const inCwd = runCli('gpt2-train', ['--config', CONFIG, '--train-data', data, '--eval-data', valid, ...SMALL, '--output-dir', '.', '--overwrite', '--set', 'runner.max_steps=1'], { cwd: run });
    expectOneLineError(inCwd, 'gpt2-train', /: \.: refusing to replace the current directory; name a new directory$/);
    expectOneLineError(train(['--output-dir', '', '--overwrite']), 'gpt2-train', /--output-dir is an empty path/, 2);
    // a run of ours, holding only what gpt2-train writes, is replaced
    rmSync(inside, { recursive: true });
    expect(train(['--output-dir', run, '--max-steps', '1', '--overwrite']).code).toBe(0);
    expect(metrics(run).filter((l) => 'loss' in l).map((l) => l.step)).toEqual([1]);
  });

  it('--resume of a finished run says so and touches nothing', () => {
    const run = join(dir, 'finished');
    // --stop-at the last step ends the run as usual: with its final evaluation
    expect(train(['--output-dir', run, '--max-steps', '2', '--stop-at', '2']).code).toBe(0);
    expect(metrics(run).filter((l) => 'eval_loss' in l).map((l) => l.step)).toEqual([2]);
    const before = readFileSync(join(run, 'metrics.jsonl'));
    const r = train(['--output-dir', run, '--max-steps', '2', '--resume']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/finished: the run is already complete \(step 2\); nothing to do \(raise --max-steps to train further\)/);
    expect(r.stderr).not.toMatch(/NaN/);
    expect(readFileSync(join(run, 'metrics.jsonl')).equals(before)).toBe(true);
  });

  it('--resume applies and records allowed changes, refuses others naming the key and both values', () => {
    const run = join(dir, 'changed');
    expect(train(['--output-dir', run, '--max-steps', '2']).code).toBe(0);
    expectOneLineError(
      train(['--output-dir', run, '--max-steps', '4', '--resume', '--set', 'model.config.n_embd=32']),
      'gpt2-train',
      /changed: --resume cannot change model\.config\.n_embd \(the run has 16, the config now gives 32\)/,
    );
    // without --config, the run's own config.yaml; flags change it
    const r = runCli('gpt2-train', ['--output-dir', run, '--resume', '--max-steps', '3', '--set', 'logging.interval=3']);
    expect(r.code, r.stderr).toBe(0);
    const lines = metrics(run) as unknown as Array<Record<string, unknown>>;
    expect(lines.find((l) => l.event === 'resume')).toEqual({
      step: 2,
      event: 'resume',
      changes: [{ key: 'runner.max_steps', from: 2, to: 3 }, { key: 'logging.interval', from: 1, to: 3 }],
    });
    expect(lines.filter((l) => 'loss' in l).map((l) => l.step)).toEqual([1, 2, 3]);
    const yaml = readFileSync(join(run, 'config.yaml'), 'utf8');
    expect(yaml).toMatch(/^ {2}max_steps: 3$/m);
    expect(yaml).toMatch(/^logging:\n {2}interval: 3$/m);
    const state = JSON.parse(readFileSync(join(run, 'checkpoints', 'latest', 'trainer_state.json'), 'utf8'));
    expect([state.step, state.config.runner.max_steps]).toEqual([3, 3]);

    // Killed after its first step, between saving step 3 and pointing latest at it (both undone
    // here): resumed again from step 2, with --quiet. The warning still shows, nothing is deleted,
    // and metrics.jsonl records the resume once.
    const losses = lines.filter((l) => 'loss' in l);
    rmSync(join(run, 'checkpoints', 'latest'));
    rmSync(join(run, 'checkpoints', 'step-000003'), { recursive: true });
    const again = runCli('gpt2-train', ['-q', '--output-dir', run, '--resume', '--max-steps', '3', '--set', 'logging.interval=3']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toBe(`gpt2-train: warning: ${run}: checkpoints/latest is missing; resuming from checkpoints/step-000002, the newest complete checkpoint\n`);
    const relines = metrics(run) as unknown as Array<Record<string, unknown>>;
    expect(relines.filter((l) => l.event === 'resume')).toHaveLength(1);
    const exact = (l: Record<string, unknown>) => ({ step: l.step, loss: l.loss, lr: l.lr, grad_norm: l.grad_norm });
    expect(relines.filter((l) => 'loss' in l).map(exact)).toEqual(losses.map(exact)); // bit for bit the same steps
    expect(readdirSync(join(run, 'checkpoints')).sort()).toEqual(['latest', 'step-000002', 'step-000003']);
    expect(readlinkSync(join(run, 'checkpoints', 'latest'))).toBe('step-000003');
  });

  it('a run that saved no checkpoint starts again, also from its own config.yaml (--resume without --config), and says so', () => {
    const run = join(dir, 'restarted');
    expect(train(['--output-dir', run, '--max-steps', '2']).code).toBe(0);
    rmSync(join(run, 'checkpoints'), { recursive: true }); // as if killed before its first checkpoint
    const r = runCli('gpt2-train', ['-q', '--output-dir', run, '--resume', '--max-steps', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(`gpt2-train: warning: ${run} holds a run that saved no checkpoint: starting it again from step 0\n`);
    expect(metrics(run).filter((l) => 'loss' in l).map((l) => l.step)).toEqual([1]);
    expect(readFileSync(join(run, 'config.yaml'), 'utf8')).toMatch(/^ {2}max_steps: 1$/m);
  });

  it('on a terminal, beside the progress bar, the resume and its changes are still shown', (ctx) => {
    if (spawnSync('script', ['--version']).status !== 0) ctx.skip('no script(1) here to give gpt2-train a terminal');
    const run = join(dir, 'terminal');
    expect(train(['--output-dir', run, '--max-steps', '1']).code).toBe(0);
    const quote = (arg: string) => `'${arg.replace(/'/g, "'\\''")}'`;
    const command = [process.execPath, join(ROOT, 'bin', 'gpt2-train.js'), '--output-dir', run, '--resume', '--max-steps', '2'].map(quote).join(' ');
    const r = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', env: { ...process.env, LANG: 'C.UTF-8' } });
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toContain(`gpt2-train: resuming ${run} from step 1`);
    expect(r.stdout).toContain('gpt2-train: resume changes runner.max_steps: 1 → 2');
  });

  it('a corrupt optimizer state', () => {
    const run = join(dir, 'corrupt');
    expect(train(['--output-dir', run, '--max-steps', '2']).code).toBe(0);
    const opt = join(run, 'checkpoints', 'latest', 'optimizer.safetensors');
    writeFileSync(opt, readFileSync(opt).subarray(0, 200));
    expectOneLineError(train(['--output-dir', run, '--resume', '--max-steps', '4']), 'gpt2-train', /optimizer\.safetensors: (header|tensor)/);
  });
});
