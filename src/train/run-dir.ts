/**
 * A training run's directory: run.json (the marker: gpt2-train made this directory), config.yaml
 * (the effective config), metrics.jsonl, loss.svg, tokenizer/, checkpoints/ (see checkpoints.ts),
 * and gpt2-train.lock while a process trains in it.
 *
 * Deciding what to do with a directory only reads it (inspectRunDir, planRun), so a start that
 * fails on its inputs leaves nothing behind. The writing begins with RunDir.begin: the lock, stale
 * temporaries of dead processes removed, a replaced run cleared, the marker. Until the first step
 * is done, a failure (or process.exit on a second SIGINT) removes what the start created; a run
 * directory without a checkpoint is restartable in any case.
 */
import { readdirSync, rmSync, rmdirSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { checkReplaceable, ownedEntries, type EntryKind, type Replaceable } from '../util/atomic-dir.js';
import { fsError, ToolError } from '../util/errors.js';
import { openOutput } from '../util/output.js';
import { processAlive } from '../util/staging.js';
import { VERSION } from '../version.js';
import { CHECKPOINTS, latestStep } from './checkpoints.js';

export const MARKER = 'run.json';
export const CONFIG = 'config.yaml';
export const METRICS = 'metrics.jsonl';
export const PLOT = 'loss.svg';
export const TOKENIZER = 'tokenizer';
export const LOCK = 'gpt2-train.lock';
const MARKER_FORMAT = 'gpt2-toolchain.run';
const ENTRIES = new Set([MARKER, CONFIG, METRICS, PLOT, TOKENIZER, CHECKPOINTS, LOCK]);
/** What tempPathFor, stageDir and the latest-symlink swap leave behind when killed: `.NAME.tmp-PID…`. */
const TEMPORARY = /^\.(.+)\.(?:tmp|old)-\d+(?:-[0-9a-f]+)?$/;

const isOurs = (name: string) => ENTRIES.has(name) || ENTRIES.has(TEMPORARY.exec(name)?.[1] ?? '');
/** checkpoints/ and tokenizer/ are directories; everything else here (temporaries included) a file. */
const kindOf = (name: string): EntryKind | undefined => (!isOurs(name) ? undefined : name === CHECKPOINTS || name === TOKENIZER ? 'directory' : 'file');
/** What the subdirectories hold: checkpoints (each our checkpoint format) and the tokenizer's files. */
const INSIDE: ReadonlyArray<readonly [string, (name: string) => boolean]> = [
  [CHECKPOINTS, (n) => /^step-\d+$/.test(n) || n === 'latest' || TEMPORARY.test(n)],
  [TOKENIZER, (n) => n === 'vocab.json' || n === 'merges.txt' || TEMPORARY.test(n)],
];

async function isMarked(dir: string): Promise<boolean> {
  try {
    return (JSON.parse(await readFile(join(dir, MARKER), 'utf8')) as { format?: unknown }).format === MARKER_FORMAT;
  } catch {
    return false;
  }
}

/** What --overwrite may replace: a run directory gpt2-train made (by its marker), holding no input. */
export function replaceableRun(inputs: readonly string[]): Replaceable {
  const top = ownedEntries('gpt2-train', kindOf, MARKER, isMarked);
  const foreign = async (dir: string) => {
    const problem = await top(dir);
    if (problem !== undefined) return problem;
    for (const [sub, ours] of INSIDE) {
      const stranger = (await readdir(join(dir, sub)).catch(() => [] as string[])).find((n) => !ours(n));
      if (stranger !== undefined) return `it holds ${join(sub, stranger)}, which gpt2-train does not write`;
    }
    return undefined;
  };
  return { inputs, foreign };
}

export interface RunDirState {
  /** Missing, or an empty directory. */
  empty: boolean;
  /** The step of checkpoints/latest, when there is one to resume from. */
  checkpointStep?: number;
  /** Undefined when the directory holds only a run of ours (marker included); else what is in the way. */
  foreign?: string;
}

/** Looks at a run directory without changing it. */
export async function inspectRunDir(dir: string): Promise<RunDirState> {
  let entries: string[];
  try {
    if (!(await stat(dir)).isDirectory()) throw new ToolError(`${dir}: exists and is not a directory`);
    entries = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { empty: true };
    throw fsError(err, dir);
  }
  if (entries.length === 0) return { empty: true };
  return { empty: false, checkpointStep: await latestStep(dir), foreign: await replaceableRun([]).foreign(dir) };
}

/** The lock file's text, and the pid in it when that process is alive (and not this one). */
async function lockHolder(dir: string): Promise<{ text: string; pid?: number }> {
  const text = await readFile(join(dir, LOCK), 'utf8').catch(() => '');
  const pid = Number.parseInt(text, 10);
  return { text, pid: pid > 0 && pid !== process.pid && processAlive(pid) ? pid : undefined };
}

const busy = (dir: string, pid: number) =>
  new ToolError(`${dir}: another gpt2-train (pid ${pid}) is training in this run directory; wait for it to finish (if no gpt2-train runs as pid ${pid}, remove ${join(dir, LOCK)})`);

export type RunPlan = { kind: 'resume'; step: number } | { kind: 'fresh'; replace: boolean; note?: string };

/**
 * What a start does with the directory: resume its checkpoint, or start afresh (replacing what is
 * there: a run of ours with --overwrite, or one that never saved a checkpoint). Refuses, saying
 * what is there, anything else. `inputs` are the command's input paths, never deleted.
 */
export async function planRun(dir: string, options: { resume: boolean; overwrite: boolean; inputs: readonly string[] }): Promise<RunPlan> {
  const state = await inspectRunDir(dir);
  const { pid } = await lockHolder(dir);
  if (pid !== undefined) throw busy(dir, pid);
  const restartable = state.checkpointStep === undefined && state.foreign === undefined;
  if (options.resume) {
    if (state.checkpointStep !== undefined) return { kind: 'resume', step: state.checkpointStep };
    if (state.empty || !restartable) {
      const held = state.empty || state.foreign === undefined ? '' : `; ${state.foreign}`;
      throw new ToolError(`${dir}: no checkpoint to resume from (${join(CHECKPOINTS, 'latest')} is missing${held})`);
    }
  }
  if (state.empty) return { kind: 'fresh', replace: false };
  if (restartable) {
    await checkReplaceable(dir, replaceableRun(options.inputs));
    return { kind: 'fresh', replace: true, note: `${dir} holds a run that saved no checkpoint: starting it again from step 0` };
  }
  if (options.overwrite) {
    await checkReplaceable(dir, replaceableRun(options.inputs));
    return { kind: 'fresh', replace: true };
  }
  if (state.checkpointStep !== undefined) {
    throw new ToolError(`${dir}: output directory holds another run (use --resume to continue it, or --overwrite to replace it; its last checkpoint is step ${state.checkpointStep})`);
  }
  throw new ToolError(`${dir}: output directory is not empty and is not a gpt2-train run: ${state.foreign}; name a new directory`);
}

/**
 * The run directory while this process trains in it: locked, and until started() cleaned up on
 * failure (abandon) or exit. release() unlocks.
 */
export class RunDir {
  private begun = false;
  private locked = false;
  private readonly onExit = () => this.cleanUpSync();

  private constructor(
    readonly dir: string,
    /** The first directory this start created (mkdir -p), removed again if the start fails. */
    private readonly createdDir: string | undefined,
    private readonly fresh: boolean,
  ) {}

  /** Creates and locks the directory, removes stale temporaries, clears it for a fresh start, marks it. */
  static async begin(dir: string, plan: RunPlan): Promise<RunDir> {
    let created: string | undefined;
    try {
      created = await mkdir(dir, { recursive: true });
    } catch (err) {
      throw fsError(err, dir);
    }
    const run = new RunDir(dir, created, plan.kind === 'fresh');
    process.on('exit', run.onExit);
    try {
      await run.lock();
      await run.removeTemporaries();
      if (plan.kind === 'fresh' && plan.replace) await run.removeEntries((name) => name !== LOCK);
      if (plan.kind === 'fresh' || !(await isMarked(dir))) {
        await writeAtomically(join(dir, MARKER), `${JSON.stringify({ format: MARKER_FORMAT, version: 1, created_by: { tool: 'gpt2-train', version: VERSION } }, null, 2)}\n`);
      }
    } catch (err) {
      await run.abandon();
      throw err;
    }
    return run;
  }

  /** The first step is done: from now on the directory holds a run (restartable until a checkpoint). */
  started(): void {
    this.begun = true;
  }

  /** A failed start: removes what it created (for a fresh start, the whole run), then unlocks. */
  async abandon(): Promise<void> {
    const undo = !this.begun && this.fresh;
    if (undo) await this.removeEntries((name) => name !== LOCK).catch(() => {});
    await this.release();
    if (undo) await this.removeCreatedDir();
  }

  async release(): Promise<void> {
    process.off('exit', this.onExit);
    if (this.locked) await rm(join(this.dir, LOCK), { force: true }).catch(() => {});
    this.locked = false;
  }

  private async lock(): Promise<void> {
    const path = join(this.dir, LOCK);
    for (;;) {
      try {
        await writeFile(path, `${process.pid}\n`, { flag: 'wx' });
        this.locked = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          await rm(path, { force: true }).catch(() => {}); // created but not written (a full disk)
          throw fsError(err, path);
        }
      }
      const holder = await lockHolder(this.dir);
      if (holder.pid !== undefined) throw busy(this.dir, holder.pid);
      // Its process has gone (killed, or the machine restarted): take the lock over, unless another
      // process has just done so.
      if ((await lockHolder(this.dir)).text !== holder.text) continue;
      await rm(path, { force: true }).catch((err) => {
        throw fsError(err, path);
      });
    }
  }

  /** `.NAME.tmp-PID…` left by killed processes: only the lock holder writes here, so all are stale. */
  private async removeTemporaries(): Promise<void> {
    for (const where of [this.dir, join(this.dir, CHECKPOINTS)]) {
      const names = await readdir(where).catch(() => [] as string[]);
      for (const name of names.filter((n) => TEMPORARY.test(n))) {
        await rm(join(where, name), { recursive: true, force: true }).catch((err) => {
          throw fsError(err, join(where, name));
        });
      }
    }
  }

  private async removeEntries(which: (name: string) => boolean): Promise<void> {
    for (const name of (await readdir(this.dir)).filter((n) => isOurs(n) && which(n))) {
      await rm(join(this.dir, name), { recursive: true, force: true }).catch((err) => {
        throw fsError(err, join(this.dir, name));
      });
    }
  }

  /** The directories mkdir -p made for this start, if they are empty again. */
  private async removeCreatedDir(): Promise<void> {
    if (this.createdDir === undefined) return;
    const top = resolve(this.createdDir);
    for (let dir = resolve(this.dir); dir.startsWith(top); dir = dirname(dir)) {
      if (!(await rmdir(dir).then(() => true, () => false))) return;
    }
  }

  /** process.exit (a second SIGINT) skips finally blocks: undo a fresh start and unlock, synchronously. */
  private cleanUpSync(): void {
    const undo = !this.begun && this.fresh;
    try {
      if (undo) for (const name of readdirSync(this.dir).filter((n) => isOurs(n) && n !== LOCK)) rmSync(join(this.dir, name), { recursive: true, force: true });
      if (this.locked) rmSync(join(this.dir, LOCK), { force: true });
      if (undo && this.createdDir !== undefined) rmdirSync(this.dir);
    } catch {
      // already gone, or not empty: the next start cleans up or says what is there
    }
  }
}

/** Writes a whole file under a temporary name and renames it into place. */
export async function writeAtomically(path: string, text: string): Promise<void> {
  const out = openOutput(path);
  try {
    await out.write(text);
    await out.commit();
  } catch (err) {
    await out.abort();
    throw err;
  }
}

/** metrics.jsonl: appends lines; on resume drops lines written after the checkpoint's step. */
export class MetricsLog {
  constructor(readonly path: string) {}

  async truncateAfter(step: number): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch {
      return;
    }
    const kept = text.split('\n').filter((line) => {
      if (line.trim() === '') return false;
      try {
        return (JSON.parse(line) as { step?: number }).step! <= step;
      } catch {
        return false;
      }
    });
    await writeAtomically(this.path, kept.length ? `${kept.join('\n')}\n` : '');
  }

  async append(entry: Record<string, unknown>): Promise<void> {
    await appendFile(this.path, `${JSON.stringify(entry)}\n`).catch((err) => {
      throw fsError(err, this.path);
    });
  }
}
