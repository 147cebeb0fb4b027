/**
 * A training run's directory: run.json (the marker: gpt2-train made this directory), config.yaml
 * (the effective config), metrics.jsonl, loss.svg, tokenizer/, checkpoints/ (see checkpoints.ts),
 * and gpt2-train.lock while a process trains in it.
 *
 * Deciding what to do with a directory only reads it (planRun), so a start that fails on its
 * inputs leaves nothing behind. The writing begins with RunDir.begin: the lock, the plan made again
 * under it (the directory may have changed while the model loaded), stale staging of dead
 * processes tidied, a replaced run cleared, the marker. Until the first step is done, a failure (or
 * process.exit on a second SIGINT) removes what the start created. A run directory without any
 * checkpoint is restartable; one with a checkpoint is resumed or, with --overwrite, replaced.
 */
import { readdirSync, rmdirSync, rmSync } from 'node:fs';
import { appendFile, link, mkdir, readdir, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { checkReplaceable, dirEntries, ownedEntries, type EntryKind, type Replaceable } from '../util/atomic-dir.js';
import { fsError, ToolError } from '../util/errors.js';
import { writeFileAtomic } from '../util/output.js';
import { leftBehind, markCreated, parseStagingName, removeStaleStagingIn, tempPathFor } from '../util/staging.js';
import { VERSION } from '../version.js';
import { CHECKPOINTS, checkpointName, findCheckpoints, LATEST, stepOf, type RunCheckpoints } from './checkpoints.js';

const MARKER = 'run.json';
export const CONFIG = 'config.yaml';
export const METRICS = 'metrics.jsonl';
export const PLOT = 'loss.svg';
export const TOKENIZER = 'tokenizer';
export const LOCK = 'gpt2-train.lock';
const MARKER_FORMAT = 'gpt2-toolchain.run';
const ENTRIES = new Set([MARKER, CONFIG, METRICS, PLOT, TOKENIZER, CHECKPOINTS, LOCK]);

/** A name gpt2-train writes here, or stages one of them under. */
const isOurs = (name: string) => ENTRIES.has(name) || ENTRIES.has(parseStagingName(name)?.target ?? '');
/** checkpoints/ and tokenizer/ are directories; everything else here (staging included) a file. */
const kindOf = (name: string): EntryKind | undefined => (!isOurs(name) ? undefined : name === CHECKPOINTS || name === TOKENIZER ? 'directory' : 'file');
/** What the subdirectories hold: checkpoints (each our checkpoint format) and the tokenizer's files. */
const INSIDE: ReadonlyArray<readonly [string, (name: string) => boolean]> = [
  [CHECKPOINTS, (n) => stepOf(n) !== undefined || n === LATEST || parseStagingName(n) !== undefined],
  [TOKENIZER, (n) => n === 'vocab.json' || n === 'merges.txt' || parseStagingName(n) !== undefined],
];

async function isMarked(dir: string): Promise<boolean> {
  try {
    return (JSON.parse(await readFile(join(dir, MARKER), 'utf8')) as { format?: unknown }).format === MARKER_FORMAT;
  } catch {
    return false;
  }
}

/** What --overwrite may replace: a run directory gpt2-train made (by its marker), holding no input. */
function replaceableRun(inputs: readonly string[]): Replaceable {
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

interface RunDirState {
  /** Missing, or holding nothing but a lock and staging (a start killed before it marked the directory). */
  empty: boolean;
  checkpoints: RunCheckpoints;
  /** Undefined when the directory holds only a run of ours (marker included); else what is in the way. */
  foreign?: string;
}

/** Looks at a run directory without changing it. */
async function inspectRunDir(dir: string): Promise<RunDirState> {
  const entries = await dirEntries(dir);
  if (entries === undefined || entries.every((n) => n === LOCK || (isOurs(n) && parseStagingName(n) !== undefined))) {
    return { empty: true, checkpoints: { names: [] } };
  }
  return { empty: false, checkpoints: await findCheckpoints(dir), foreign: await replaceableRun([]).foreign(dir) };
}

/** The lock file's text, and the pid in it while that process lives (this one included). */
async function lockHolder(dir: string): Promise<{ text?: string; pid?: number }> {
  const path = join(dir, LOCK);
  const text = await readFile(path, 'utf8').catch(() => undefined);
  const pid = Number.parseInt(text ?? '', 10);
  return { text, pid: pid > 0 && !leftBehind(pid, path) ? pid : undefined };
}

const busy = (dir: string, pid: number) =>
  new ToolError(`${dir}: another gpt2-train (pid ${pid}) is training in this run directory; wait for it to finish (if no gpt2-train runs as pid ${pid}, remove ${join(dir, LOCK)})`);

export interface PlanOptions {
  resume: boolean;
  overwrite: boolean;
  /** The command's input paths: a directory holding one is never replaced. */
  inputs: readonly string[];
}

/** `note`: what the user must be told about the plan (a restart, a checkpoint other than latest). */
export type RunPlan = { kind: 'resume'; step: number; note?: string } | { kind: 'fresh'; replace: boolean; note?: string };

const samePlan = (a: RunPlan, b: RunPlan) => (a.kind === 'resume' ? b.kind === 'resume' && a.step === b.step : b.kind === 'fresh' && a.replace === b.replace);

/** The run's own files may be inputs (a resume without --config reads config.yaml): they never block replacing it. */
async function withoutRunFiles(dir: string, inputs: readonly string[]): Promise<string[]> {
  const real = (path: string) => realpath(path).catch(() => resolve(path));
  const own = new Set<string>();
  for (const name of [CONFIG, MARKER]) own.add(resolve(dir, name)).add(await real(join(dir, name)));
  const kept: string[] = [];
  for (const input of inputs) if (!own.has(resolve(input)) && !own.has(await real(input))) kept.push(input);
  return kept;
}

/**
 * What a start does with the directory: resume its checkpoint, or start afresh (replacing what is
 * there: a run of ours with --overwrite, or one that never saved a checkpoint). Refuses, saying
 * what is there, anything else.
 */
export async function planRun(dir: string, options: PlanOptions): Promise<RunPlan> {
  const state = await inspectRunDir(dir);
  const { pid } = await lockHolder(dir);
  if (pid !== undefined && pid !== process.pid) throw busy(dir, pid);
  const { names, step, latestProblem } = state.checkpoints;
  if (options.resume && step !== undefined) {
    return latestProblem === undefined ? { kind: 'resume', step } : { kind: 'resume', step, note: `${dir}: ${latestProblem}; resuming from ${join(CHECKPOINTS, checkpointName(step))}, the newest complete checkpoint` };
  }
  // Starting again from scratch only where there is no checkpoint at all.
  const restartable = !state.empty && names.length === 0 && state.foreign === undefined;
  if (options.resume && !restartable) {
    const why = names.length > 0 ? `${latestProblem}, and none of ${names.map((n) => join(CHECKPOINTS, n)).join(', ')} is complete` : `${join(CHECKPOINTS, LATEST)} is missing`;
    const held = state.empty || state.foreign === undefined ? '' : `; ${state.foreign}`;
    throw new ToolError(`${dir}: no checkpoint to resume from (${why}${held})`);
  }
  if (state.empty) return { kind: 'fresh', replace: false };
  if (restartable || options.overwrite) {
    await checkReplaceable(dir, replaceableRun(await withoutRunFiles(dir, options.inputs)));
    return restartable ? { kind: 'fresh', replace: true, note: `${dir} holds a run that saved no checkpoint: starting it again from step 0` } : { kind: 'fresh', replace: true };
  }
  if (step !== undefined) {
    throw new ToolError(`${dir}: output directory holds another run (use --resume to continue it, or --overwrite to replace it; its last checkpoint is step ${step})`);
  }
  if (names.length > 0) {
    throw new ToolError(`${dir}: output directory holds another run with no complete checkpoint (${latestProblem}; ${names.map((n) => join(CHECKPOINTS, n)).join(', ')}); --overwrite replaces it`);
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
  /** Set once the plan holds under the lock: only then may a failed start remove entries. */
  private owned = false;
  private readonly onExit = () => this.cleanUpSync();

  private constructor(
    readonly dir: string,
    /** The first directory this start created (mkdir -p), removed again if the start fails. */
    private readonly createdDir: string | undefined,
    private readonly fresh: boolean,
  ) {}

  /**
   * Creates and locks the directory, checks that `plan` (made by planRun with `options`) still
   * holds, tidies stale staging, clears the directory for a fresh start, marks it.
   */
  static async begin(dir: string, plan: RunPlan, options: PlanOptions): Promise<RunDir> {
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
      for (const where of [dir, join(dir, CHECKPOINTS), join(dir, TOKENIZER)]) removeStaleStagingIn(where);
      if (!samePlan(await planRun(dir, options), plan)) {
        throw new ToolError(`${dir}: the run directory changed while this start was getting ready (another gpt2-train?); run the command again`);
      }
      run.owned = true;
      if (plan.kind === 'fresh' && plan.replace) run.removeEntriesSync((name) => name !== LOCK);
      if (plan.kind === 'fresh' || !(await isMarked(dir))) {
        await writeFileAtomic(join(dir, MARKER), `${JSON.stringify({ format: MARKER_FORMAT, version: 1, created_by: { tool: 'gpt2-train', version: VERSION } }, null, 2)}\n`);
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
    process.off('exit', this.onExit);
    this.cleanUpSync();
  }

  async release(): Promise<void> {
    process.off('exit', this.onExit);
    if (this.locked) await rm(join(this.dir, LOCK), { force: true }).catch(() => {});
    this.locked = false;
  }

  /**
   * Creates the lock file, or takes over one whose process has gone. Another start may be taking
   * it over at the same moment, so a stale lock is never deleted where it lies: it is moved to a
   * name of this process's own, and only if what was moved is still the stale text (not a lock
   * the other start has just created) is it deleted; otherwise it is put back.
   */
  private async lock(): Promise<void> {
    const path = join(this.dir, LOCK);
    for (;;) {
      if (await this.createLock(path)) return;
      const holder = await lockHolder(this.dir);
      if (holder.pid !== undefined) throw busy(this.dir, holder.pid);
      if (holder.text === undefined) continue; // gone meanwhile
      const aside = tempPathFor(path);
      try {
        await rename(path, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // another start moved it first
        throw fsError(err, path);
      }
      if ((await readFile(aside, 'utf8').catch(() => undefined)) !== holder.text) {
        // Another start's new lock: put it back, unless a third has created one meanwhile.
        await link(aside, path).catch(() => {});
      }
      await rm(aside, { force: true }).catch((err) => {
        throw fsError(err, aside);
      });
    }
  }

  /** Creates the lock file, whole (written aside, then linked: never seen empty); false if one exists. */
  private async createLock(path: string): Promise<boolean> {
    const temp = tempPathFor(path);
    try {
      await writeFile(temp, `${process.pid}\n`);
      await link(temp, path);
      markCreated(path);
      this.locked = true;
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw fsError(err, path);
    } finally {
      await rm(temp, { force: true }).catch(() => {});
    }
  }

  /** Removes our entries that `which` selects (only after the plan held: see begin). */
  private removeEntriesSync(which: (name: string) => boolean): void {
    for (const name of readdirSync(this.dir).filter((n) => isOurs(n) && which(n))) {
      try {
        rmSync(join(this.dir, name), { recursive: true, force: true });
      } catch (err) {
        throw fsError(err, join(this.dir, name));
      }
    }
  }

  /**
   * Undoes a fresh start that did not get to its first step (its entries, then the directories
   * mkdir -p made for it, while empty) and unlocks. Synchronous, for process.exit (a second
   * SIGINT) skips finally blocks.
   */
  private cleanUpSync(): void {
    try {
      if (this.owned && !this.begun && this.fresh) this.removeEntriesSync((name) => name !== LOCK);
      if (this.locked) rmSync(join(this.dir, LOCK), { force: true });
    } catch {
      // left as it is: the next start says what is there (a lock of a dead process is taken over)
    }
    this.locked = false;
    if (this.createdDir === undefined) return;
    const top = resolve(this.createdDir);
    for (let dir = resolve(this.dir); dir.startsWith(top); dir = dirname(dir)) {
      try {
        rmdirSync(dir);
      } catch {
        return; // not empty: something else is there now
      }
    }
  }
}

/** metrics.jsonl: appends lines; on resume drops what was written after the checkpoint. */
export class MetricsLog {
  constructor(readonly path: string) {}

  /**
   * Keeps the lines of steps up to `step` (its own training and evaluation lines were written
   * before its checkpoint) but no events at `step` or later: a resume from `step` records itself
   * again, once however often it is repeated.
   */
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
        const entry = JSON.parse(line) as { step?: number; event?: unknown };
        return entry.step! < step || (entry.step === step && entry.event === undefined);
      } catch {
        return false;
      }
    });
    await writeFileAtomic(this.path, kept.length ? `${kept.join('\n')}\n` : '');
  }

  async append(entry: Record<string, unknown>): Promise<void> {
    await appendFile(this.path, `${JSON.stringify(entry)}\n`).catch((err) => {
      throw fsError(err, this.path);
    });
  }
}
