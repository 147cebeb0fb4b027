/**
 * Run directories as a library: what a start may do with a directory (planRun reads only), the
 * lock, stale temporaries, and undoing a failed start. No training here: see test/cli/gpt2-train.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LOCK, METRICS, planRun, RunDir, type RunPlan } from '../../src/train/run-dir.js';
import { tempDir } from '../helpers.js';

const root = tempDir('gpt2tc-rundir-');
let n = 0;
const fresh = (): RunPlan => ({ kind: 'fresh', replace: false });
const none = { resume: false, overwrite: false, inputs: [] };
const messageOf = (p: Promise<unknown>) => p.then(() => 'no error', (err: Error) => err.message);

/** A run directory as gpt2-train leaves it after `steps` steps (a checkpoint only when `checkpoint`). */
async function runDir(options: { checkpoint?: number } = {}): Promise<string> {
  const dir = join(root, `run${n++}`);
  const run = await RunDir.begin(dir, fresh());
  run.started();
  writeFileSync(join(dir, METRICS), '{"step":1,"loss":10}\n');
  if (options.checkpoint !== undefined) {
    const name = `step-${String(options.checkpoint).padStart(6, '0')}`;
    mkdirSync(join(dir, 'checkpoints', name), { recursive: true });
    symlinkSync(name, join(dir, 'checkpoints', 'latest'));
  }
  await run.release();
  return dir;
}

/** The pid of a process that has exited. */
const deadPid = () => spawnSync(process.execPath, ['-e', '']).pid!;

describe('planRun', () => {
  it('a missing or empty directory starts fresh', async () => {
    expect(await planRun(join(root, 'missing'), none)).toEqual({ kind: 'fresh', replace: false });
    mkdirSync(join(root, 'empty'));
    expect(await planRun(join(root, 'empty'), none)).toEqual({ kind: 'fresh', replace: false });
    expect(await messageOf(planRun(join(root, 'missing'), { ...none, resume: true }))).toMatch(/missing: no checkpoint to resume from \(checkpoints\/latest is missing\)$/);
  });

  it('a directory holding one unrelated file is not "another run": the message says what is in it, and nothing is deleted', async () => {
    const dir = join(root, 'notes');
    mkdirSync(dir);
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    expect(await messageOf(planRun(dir, none))).toBe(`${dir}: output directory is not empty and is not a gpt2-train run: it holds notes.txt, which gpt2-train does not write; name a new directory`);
    expect(await messageOf(planRun(dir, { ...none, overwrite: true }))).toBe(`${dir}: not replacing it with --overwrite: it holds notes.txt, which gpt2-train does not write`);
    expect(await messageOf(planRun(dir, { ...none, resume: true }))).toBe(
      `${dir}: no checkpoint to resume from (checkpoints/latest is missing; it holds notes.txt, which gpt2-train does not write)`,
    );
    // gpt2-train's file names without its marker are no run of ours either
    const lookalike = join(root, 'lookalike');
    mkdirSync(lookalike);
    writeFileSync(join(lookalike, 'metrics.jsonl'), '{}\n');
    expect(await messageOf(planRun(lookalike, { ...none, overwrite: true }))).toBe(`${lookalike}: not replacing it with --overwrite: it has no run.json written by gpt2-train`);
    expect(readdirSync(dir)).toEqual(['notes.txt']);
  });

  it('a run with a checkpoint: resumed, replaced with --overwrite, else refused naming its step', async () => {
    const dir = await runDir({ checkpoint: 3 });
    expect(await messageOf(planRun(dir, none))).toBe(`${dir}: output directory holds another run (use --resume to continue it, or --overwrite to replace it; its last checkpoint is step 3)`);
    expect(await planRun(dir, { ...none, resume: true })).toEqual({ kind: 'resume', step: 3 });
    expect(await planRun(dir, { ...none, overwrite: true })).toEqual({ kind: 'fresh', replace: true });
  });

  it('a run without a checkpoint (a start that failed or was killed) is restartable, with or without --resume', async () => {
    const dir = await runDir();
    const restart = { kind: 'fresh', replace: true, note: `${dir} holds a run that saved no checkpoint: starting it again from step 0` };
    expect(await planRun(dir, none)).toEqual(restart);
    expect(await planRun(dir, { ...none, resume: true })).toEqual(restart);
  });

  it('--overwrite never replaces a directory holding an input or a stranger, the current directory, / or a home directory', async () => {
    const dir = await runDir({ checkpoint: 2 });
    const over = { ...none, overwrite: true };
    mkdirSync(join(dir, 'tokenizer', 'data'), { recursive: true });
    expect(await messageOf(planRun(dir, { ...over, inputs: [join(dir, 'tokenizer', 'data')] }))).toBe(`${dir}: refusing to replace it: it holds ${join(dir, 'tokenizer', 'data')}, an input of this command`);
    expect(await messageOf(planRun(dir, { ...over, inputs: [dir] }))).toBe(`${dir}: refusing to replace it: it is an input of this command`);
    expect(await messageOf(planRun(dir, over))).toBe(`${dir}: not replacing it with --overwrite: it holds tokenizer/data, which gpt2-train does not write`);
    const inCheckpoints = await runDir({ checkpoint: 2 });
    writeFileSync(join(inCheckpoints, 'checkpoints', 'notes.txt'), '');
    expect(await messageOf(planRun(inCheckpoints, over))).toMatch(/: it holds checkpoints\/notes\.txt, which gpt2-train does not write$/);

    const run = await runDir({ checkpoint: 2 });
    const cwd = process.cwd();
    process.chdir(run);
    try {
      expect(await messageOf(planRun('.', over))).toBe('.: refusing to replace the current directory; name a new directory');
      expect(await messageOf(planRun('.', none))).toMatch(/^\.: output directory holds another run/);
    } finally {
      process.chdir(cwd);
    }
    expect(await messageOf(planRun('/', over))).toBe('/: refusing to replace the root directory');
    const home = process.env.HOME;
    process.env.HOME = run;
    try {
      expect(await messageOf(planRun(run, over))).toBe(`${run}: refusing to replace a home directory`);
    } finally {
      process.env.HOME = home;
    }
  });
});

describe('RunDir', () => {
  const children: Array<{ kill(): void }> = [];
  afterAll(() => children.forEach((c) => c.kill()));

  it('a second process on the run directory fails naming the pid of the live one', async () => {
    const dir = await runDir({ checkpoint: 1 });
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    children.push(other);
    writeFileSync(join(dir, LOCK), `${other.pid}\n`);
    const busy = `${dir}: another gpt2-train (pid ${other.pid}) is training in this run directory; wait for it to finish (if no gpt2-train runs as pid ${other.pid}, remove ${join(dir, LOCK)})`;
    expect(await messageOf(planRun(dir, { ...none, resume: true }))).toBe(busy);
    expect(await messageOf(RunDir.begin(dir, { kind: 'resume', step: 1 }))).toBe(busy);
    expect(readFileSync(join(dir, LOCK), 'utf8')).toBe(`${other.pid}\n`);
  });

  it('takes over the lock of a dead process, holds it while running, and releases it', async () => {
    const dir = await runDir({ checkpoint: 1 });
    writeFileSync(join(dir, LOCK), `${deadPid()}\n`);
    const run = await RunDir.begin(dir, await planRun(dir, { ...none, resume: true }));
    expect(readFileSync(join(dir, LOCK), 'utf8')).toBe(`${process.pid}\n`);
    await run.release();
    expect(existsSync(join(dir, LOCK))).toBe(false);
  });

  it('removes temporaries that killed processes left, and nothing else', async () => {
    const dir = await runDir({ checkpoint: 5 });
    const pid = deadPid();
    const stale = [`checkpoints/.latest.tmp-${pid}`, `checkpoints/.step-000010.tmp-${pid}-0123abcd`, `checkpoints/.step-000005.old-${pid}`, `.config.yaml.tmp-${pid}-89abcdef`, `.metrics.jsonl.tmp-${pid}-00ff00ff`];
    symlinkSync('step-000005', join(dir, stale[0]));
    mkdirSync(join(dir, stale[1]));
    writeFileSync(join(dir, stale[1], 'model.safetensors'), 'partial');
    mkdirSync(join(dir, stale[2]));
    writeFileSync(join(dir, stale[3]), 'partial');
    writeFileSync(join(dir, stale[4]), 'partial');
    const before = { top: readdirSync(dir).sort(), checkpoints: readdirSync(join(dir, 'checkpoints')).sort() };
    // temporaries of ours do not stop --overwrite either
    expect(await planRun(dir, { ...none, overwrite: true })).toEqual({ kind: 'fresh', replace: true });
    const run = await RunDir.begin(dir, await planRun(dir, { ...none, resume: true }));
    await run.release();
    expect(readdirSync(dir).sort()).toEqual(before.top.filter((name) => !stale.includes(name)));
    expect(readdirSync(join(dir, 'checkpoints')).sort()).toEqual(['latest', 'step-000005']);
  });

  it('a fresh start replacing a run clears it; abandoning a fresh start removes what it created', async () => {
    const dir = await runDir();
    const run = await RunDir.begin(dir, await planRun(dir, none));
    expect(readdirSync(dir).sort()).toEqual([LOCK, 'run.json']);
    await run.abandon();
    expect(readdirSync(dir)).toEqual([]); // it was there before: emptied, not removed

    const nested = join(root, 'new', 'deeper', 'run');
    const started = await RunDir.begin(nested, fresh());
    writeFileSync(join(nested, 'config.yaml'), 'seed: 1\n');
    await started.abandon();
    expect(existsSync(join(root, 'new'))).toBe(false);

    const kept = join(root, 'kept');
    mkdirSync(kept);
    await (await RunDir.begin(kept, fresh())).abandon();
    expect(readdirSync(kept)).toEqual([]);
  });
});
