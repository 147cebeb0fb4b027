/**
 * Run directories as a library: what a start may do with a directory (planRun reads only), the
 * lock, stale temporaries, and undoing a failed start. No training here: see test/cli/gpt2-train.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { LOCK, METRICS, MetricsLog, planRun, RunDir, type PlanOptions, type RunPlan } from '../../src/train/run-dir.js';
import { deadPid, livePid, ROOT, tempDir } from '../helpers.js';

// A hook run just before the lock file is moved or removed: another start acting at that moment.
const hooks = vi.hoisted(() => ({ beforeLockMove: undefined as ((path: string) => void) | undefined }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const intercepted = <A extends unknown[], R>(f: (path: string, ...rest: A) => R) => (path: string, ...rest: A): R => {
    const hook = hooks.beforeLockMove;
    if (hook && String(path).endsWith('/gpt2-train.lock')) {
      hooks.beforeLockMove = undefined;
      hook(String(path));
    }
    return f(path, ...rest);
  };
  const patched = { ...fs, rm: intercepted(fs.rm), rename: intercepted(fs.rename) };
  return { ...patched, default: patched };
});

const root = tempDir('gpt2tc-rundir-');
let n = 0;
const fresh = (): RunPlan => ({ kind: 'fresh', replace: false });
const none: PlanOptions = { resume: false, overwrite: false, inputs: [] };
const resume: PlanOptions = { ...none, resume: true };
const messageOf = (p: Promise<unknown>) => p.then(() => 'no error', (err: Error) => err.message);
const busy = (dir: string, pid: number) => `${dir}: another gpt2-train (pid ${pid}) is training in this run directory; wait for it to finish (if no gpt2-train runs as pid ${pid}, remove ${join(dir, LOCK)})`;
const name = (step: number) => `step-${String(step).padStart(6, '0')}`;

/** A checkpoint directory with every file a complete one holds (contents do not matter here). */
function checkpointDir(dir: string, step: number, files = ['config.json', 'model.safetensors', 'optimizer.safetensors', 'trainer_state.json']): void {
  mkdirSync(join(dir, 'checkpoints', name(step)), { recursive: true });
  for (const file of files) writeFileSync(join(dir, 'checkpoints', name(step), file), '');
}

/** A run directory as gpt2-train leaves it after a step; checkpoints at `checkpoints`, latest at the last. */
async function runDir(options: { checkpoint?: number; checkpoints?: number[]; latest?: boolean } = {}): Promise<string> {
  const dir = join(root, `run${n++}`);
  const run = await RunDir.begin(dir, fresh(), none);
  run.started();
  writeFileSync(join(dir, METRICS), '{"step":1,"loss":10}\n');
  const steps = options.checkpoints ?? (options.checkpoint === undefined ? [] : [options.checkpoint]);
  for (const step of steps) checkpointDir(dir, step);
  if (steps.length > 0 && options.latest !== false) symlinkSync(name(steps.at(-1)!), join(dir, 'checkpoints', 'latest'));
  await run.release();
  return dir;
}

const live = livePid();

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
    expect(await planRun(dir, resume)).toEqual({ kind: 'resume', step: 3 });
    expect(await planRun(dir, { ...none, overwrite: true })).toEqual({ kind: 'fresh', replace: true });
  });

  it('a run without a checkpoint (a start that failed or was killed) is restartable, with or without --resume', async () => {
    const dir = await runDir();
    const restart = { kind: 'fresh', replace: true, note: `${dir} holds a run that saved no checkpoint: starting it again from step 0` };
    expect(await planRun(dir, none)).toEqual(restart);
    expect(await planRun(dir, resume)).toEqual(restart);
  });

  it('a run whose checkpoints/latest is missing (killed before the swap, or copied without symlinks) resumes from its newest complete checkpoint, never restarts', async () => {
    const dir = await runDir({ checkpoints: [4, 6], latest: false });
    checkpointDir(dir, 8, ['config.json', 'model.safetensors']); // cut short: not one to resume from
    expect(await planRun(dir, resume)).toEqual({
      kind: 'resume',
      step: 6,
      note: `${dir}: checkpoints/latest is missing; resuming from checkpoints/step-000006, the newest complete checkpoint`,
    });
    expect(await messageOf(planRun(dir, none))).toBe(`${dir}: output directory holds another run (use --resume to continue it, or --overwrite to replace it; its last checkpoint is step 6)`);
    expect(await planRun(dir, { ...none, overwrite: true })).toEqual({ kind: 'fresh', replace: true });
    await (await RunDir.begin(dir, await planRun(dir, resume), resume)).release();
    expect(readdirSync(join(dir, 'checkpoints')).sort()).toEqual([name(4), name(6), name(8)]);

    // latest pointing at a checkpoint that is not there
    symlinkSync(name(9), join(dir, 'checkpoints', 'latest'));
    expect((await planRun(dir, resume)).note).toBe(`${dir}: checkpoints/latest points to step-000009, which is not a complete checkpoint; resuming from checkpoints/step-000006, the newest complete checkpoint`);

    // no complete checkpoint at all: still a run's checkpoints, never deleted by a restart
    const cut = await runDir({ latest: false });
    checkpointDir(cut, 2, ['config.json']);
    expect(await messageOf(planRun(cut, resume))).toBe(`${cut}: no checkpoint to resume from (checkpoints/latest is missing, and none of checkpoints/step-000002 is complete)`);
    expect(await messageOf(planRun(cut, none))).toBe(`${cut}: output directory holds another run with no complete checkpoint (checkpoints/latest is missing; checkpoints/step-000002); --overwrite replaces it`);
  });

  it('a restart may replace the run whose own config.yaml is an input (--resume without --config), not one holding another input', async () => {
    const dir = await runDir();
    writeFileSync(join(dir, 'config.yaml'), 'seed: 1\n');
    const restart = { kind: 'fresh', replace: true, note: `${dir} holds a run that saved no checkpoint: starting it again from step 0` };
    expect(await planRun(dir, { ...resume, inputs: [join(dir, 'config.yaml'), join(dir, 'run.json')] })).toEqual(restart);
    const withCheckpoint = await runDir({ checkpoint: 1 });
    writeFileSync(join(withCheckpoint, 'config.yaml'), 'seed: 1\n');
    expect(await planRun(withCheckpoint, { ...none, overwrite: true, inputs: [join(withCheckpoint, 'config.yaml')] })).toEqual({ kind: 'fresh', replace: true });
    mkdirSync(join(dir, 'tokenizer'), { recursive: true });
    writeFileSync(join(dir, 'tokenizer', 'vocab.json'), '{}');
    expect(await messageOf(planRun(dir, { ...resume, inputs: [join(dir, 'config.yaml'), join(dir, 'tokenizer', 'vocab.json')] }))).toBe(
      `${dir}: refusing to replace it: it holds ${join(dir, 'tokenizer', 'vocab.json')}, an input of this command`,
    );
  });

  it('a directory holding only a stale lock and staging (a start killed before its marker) is empty', async () => {
    const dir = join(root, 'killed-start');
    mkdirSync(dir);
    writeFileSync(join(dir, LOCK), `${deadPid()}\n`);
    writeFileSync(join(dir, `.run.json.tmp-${deadPid()}-0123abcd`), '{');
    expect(await planRun(dir, none)).toEqual({ kind: 'fresh', replace: false });
    await (await RunDir.begin(dir, fresh(), none)).release();
    expect(readdirSync(dir)).toEqual(['run.json']);
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
    expect(await messageOf(planRun(dir, resume))).toBe(busy);
    expect(await messageOf(RunDir.begin(dir, { kind: 'resume', step: 1 }, resume))).toBe(busy);
    expect(readFileSync(join(dir, LOCK), 'utf8')).toBe(`${other.pid}\n`);
  });

  it('a second start in this process is refused while the first holds the lock; a lock naming this pid that it did not create is stale', async () => {
    const dir = await runDir({ checkpoint: 1 });
    const first = await RunDir.begin(dir, { kind: 'resume', step: 1 }, resume);
    expect(await messageOf(RunDir.begin(dir, { kind: 'resume', step: 1 }, resume))).toBe(busy(dir, process.pid));
    // a container restarted: the killed run had the pid this process has now
    const copy = join(root, 'restarted-container');
    cpSync(dir, copy, { recursive: true, verbatimSymlinks: true });
    await first.release();
    expect(readFileSync(join(copy, LOCK), 'utf8')).toBe(`${process.pid}\n`);
    expect(await planRun(copy, resume)).toEqual({ kind: 'resume', step: 1 });
    await (await RunDir.begin(copy, { kind: 'resume', step: 1 }, resume)).release();
    expect(existsSync(join(copy, LOCK))).toBe(false);
  });

  it('taking over a stale lock that another start has just taken over: the other start keeps it', async () => {
    const dir = await runDir({ checkpoint: 1 });
    writeFileSync(join(dir, LOCK), `${deadPid()}\n`);
    // Between this start reading the stale lock and moving it, the other start replaces it with its own.
    hooks.beforeLockMove = (path) => {
      rmSync(path);
      writeFileSync(path, `${live}\n`);
    };
    expect(await messageOf(RunDir.begin(dir, { kind: 'resume', step: 1 }, resume))).toBe(busy(dir, live));
    expect(hooks.beforeLockMove).toBeUndefined();
    expect(readFileSync(join(dir, LOCK), 'utf8')).toBe(`${live}\n`);
    expect(readdirSync(dir).filter((f) => f.includes(LOCK))).toEqual([LOCK]);
    rmSync(join(dir, LOCK));
  });

  it('a plan made before the model loaded is checked again under the lock', async () => {
    const dir = join(root, 'changed-meanwhile');
    const plan = await planRun(dir, none); // a new directory: fresh
    // meanwhile another gpt2-train ran there and saved a checkpoint
    const other = await RunDir.begin(dir, fresh(), none);
    other.started();
    checkpointDir(dir, 2);
    symlinkSync(name(2), join(dir, 'checkpoints', 'latest'));
    await other.release();
    const before = readdirSync(dir).sort();
    expect(await messageOf(RunDir.begin(dir, plan, none))).toBe(`${dir}: output directory holds another run (use --resume to continue it, or --overwrite to replace it; its last checkpoint is step 2)`);
    expect(readdirSync(dir).sort()).toEqual(before);
    expect(readlinkSync(join(dir, 'checkpoints', 'latest'))).toBe(name(2));
    // the same with --overwrite is a different plan (replace): refused, nothing removed
    expect(await messageOf(RunDir.begin(dir, await planRun(dir, { ...none, overwrite: true }), none))).toMatch(/holds another run/);
    expect(await messageOf(RunDir.begin(dir, { kind: 'resume', step: 1 }, resume))).toBe(`${dir}: the run directory changed while this start was getting ready (another gpt2-train?); run the command again`);
    expect(readdirSync(dir).sort()).toEqual(before);
  });

  it('takes over the lock of a dead process, holds it while running, and releases it', async () => {
    const dir = await runDir({ checkpoint: 1 });
    writeFileSync(join(dir, LOCK), `${deadPid()}\n`);
    const run = await RunDir.begin(dir, await planRun(dir, resume), resume);
    expect(readFileSync(join(dir, LOCK), 'utf8')).toBe(`${process.pid}\n`);
    await run.release();
    expect(existsSync(join(dir, LOCK))).toBe(false);
  });

  it('removes temporaries that killed processes left, and nothing else', async () => {
    const dir = await runDir({ checkpoint: 5 });
    const pid = deadPid();
    const stale = [
      `checkpoints/.latest.tmp-${pid}-01234567`,
      `checkpoints/.step-000010.tmp-${pid}-0123abcd`,
      `checkpoints/.step-000005.old-${pid}-0123abcd`,
      `checkpoints/.step-000004.tmp-${process.pid}-0123abcd`, // this pid, not this process's: a prune cut short
      `.config.yaml.tmp-${pid}-89abcdef`,
      `.metrics.jsonl.tmp-${pid}-00ff00ff`,
      `tokenizer/.vocab.json.tmp-${pid}-00ff00ff`,
    ];
    symlinkSync('step-000005', join(dir, stale[0]));
    for (const dirName of stale.slice(1, 4)) {
      mkdirSync(join(dir, dirName));
      writeFileSync(join(dir, dirName, 'model.safetensors'), 'partial');
    }
    mkdirSync(join(dir, 'tokenizer'));
    for (const file of stale.slice(4)) writeFileSync(join(dir, file), 'partial');
    // a checkpoint moved aside whose replacement never arrived is put back
    mkdirSync(join(dir, 'checkpoints', `.step-000003.old-${pid}-0123abcd`));
    writeFileSync(join(dir, 'checkpoints', `.step-000003.old-${pid}-0123abcd`, 'model.safetensors'), 'whole');
    // temporaries of ours do not stop --overwrite either
    expect(await planRun(dir, { ...none, overwrite: true })).toEqual({ kind: 'fresh', replace: true });
    const run = await RunDir.begin(dir, await planRun(dir, resume), resume);
    await run.release();
    expect(readdirSync(dir).sort()).toEqual(['checkpoints', METRICS, 'run.json', 'tokenizer']);
    expect(readdirSync(join(dir, 'checkpoints')).sort()).toEqual(['latest', 'step-000003', 'step-000005']);
    expect(readFileSync(join(dir, 'checkpoints', 'step-000003', 'model.safetensors'), 'utf8')).toBe('whole');
    expect(readdirSync(join(dir, 'tokenizer'))).toEqual([]);
  });

  it('a fresh start replacing a run clears it; abandoning a fresh start removes what it created', async () => {
    const dir = await runDir();
    const run = await RunDir.begin(dir, await planRun(dir, none), none);
    expect(readdirSync(dir).sort()).toEqual([LOCK, 'run.json']);
    await run.abandon();
    expect(readdirSync(dir)).toEqual([]); // it was there before: emptied, not removed

    const nested = join(root, 'new', 'deeper', 'run');
    const started = await RunDir.begin(nested, fresh(), none);
    writeFileSync(join(nested, 'config.yaml'), 'seed: 1\n');
    await started.abandon();
    expect(existsSync(join(root, 'new'))).toBe(false);

    const kept = join(root, 'kept');
    mkdirSync(kept);
    await (await RunDir.begin(kept, fresh(), none)).abandon();
    expect(readdirSync(kept)).toEqual([]);
  });

  it('process.exit during a fresh start (a second SIGINT) removes every directory the start created', () => {
    const top = join(root, 'exit-new');
    const nested = join(top, 'deeper', 'run');
    const script = `const { RunDir } = await import(${JSON.stringify(join(ROOT, 'dist', 'train', 'run-dir.js'))});
      await RunDir.begin(${JSON.stringify(nested)}, { kind: 'fresh', replace: false }, { resume: false, overwrite: false, inputs: [] });
      process.exit(130);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect([r.status, r.stderr]).toEqual([130, '']);
    expect(existsSync(top)).toBe(false);
  });
});

describe('MetricsLog', () => {
  it('resuming twice from the same checkpoint leaves one resume event', async () => {
    const path = join(root, 'metrics-twice.jsonl');
    const line = (entry: object) => `${JSON.stringify(entry)}\n`;
    const kept = [{ step: 1, loss: 5 }, { step: 2, loss: 4 }, { step: 2, eval_loss: 4.5 }];
    writeFileSync(path, [...kept, { step: 3, loss: 3 }, 'torn line {'].map((e) => (typeof e === 'string' ? `${e}\n` : line(e))).join(''));
    const log = new MetricsLog(path);
    const event = { step: 2, event: 'resume', changes: [{ key: 'runner.max_steps', from: 3, to: 4 }] };
    await log.truncateAfter(2);
    await log.append(event);
    await log.append({ step: 3, loss: 3 }); // ... and killed before its next checkpoint
    await log.truncateAfter(2);
    await log.append(event);
    expect(readFileSync(path, 'utf8')).toBe([...kept, event].map(line).join(''));
  });
});
