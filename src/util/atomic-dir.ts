/**
 * An output directory that appears complete or not at all: everything is written into a hidden
 * sibling directory, which commit() renames into place. With overwrite, the old directory is
 * moved aside first and deleted only after the new one is in place, so a failure loses nothing.
 *
 * What overwrite may replace is narrow on purpose (see checkReplaceable): only a directory this
 * tool made itself, holding nothing but its files, and never one that holds an input of the same
 * command, the current directory, a home directory or one above either, or `/`. What a killed
 * process left beside the target is tidied before staging (see staging.ts).
 */
import { lstat, mkdir, readdir, realpath, rename, rm, rmdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { fsError, ToolError, UsageError } from './errors.js';
import { writeFileAtomic } from './output.js';
import { asidePathFor, removeStaleStaging, tempPathFor } from './staging.js';

export interface StagedDir {
  /** Where to write; renamed to the final path by commit(). */
  readonly path: string;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** How a tool recognises a directory it may replace. */
export interface Replaceable {
  /** Undefined when `dir` holds only what this tool writes (marker included); else what is in the way. */
  foreign(dir: string): Promise<string | undefined>;
  /** Paths this command reads: a directory holding one of them is never replaced. */
  inputs?: readonly string[];
}

export interface StageOptions {
  /** For messages: "output directory", "checkpoint directory", … */
  what?: string;
  /** Set to allow replacing an existing directory that `foreign` recognises as this tool's. */
  overwrite?: Replaceable;
}

/** The names in directory `dir`; undefined when it is missing. Anything else there is an error. */
export async function dirEntries(dir: string): Promise<string[] | undefined> {
  try {
    if (!(await stat(dir)).isDirectory()) throw new ToolError(`${dir}: exists and is not a directory`);
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fsError(err, dir);
  }
}

async function existing(dir: string): Promise<'missing' | 'empty' | 'full'> {
  const entries = await dirEntries(dir);
  return entries === undefined ? 'missing' : entries.length === 0 ? 'empty' : 'full';
}

const real = (path: string) => realpath(path).catch(() => resolve(path));
const within = (path: string, dir: string) => path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);

/**
 * Refuses (with a message naming what is in the way) to replace `dir` unless it is wholly this
 * tool's output and none of the places no tool should ever delete.
 */
export async function checkReplaceable(dir: string, rules: Replaceable): Promise<void> {
  await checkNotProtected(dir);
  // By the names given and by where symlinks lead: either way the input would go with the directory.
  const targets = [resolve(dir), await real(dir)];
  for (const input of rules.inputs ?? []) {
    for (const path of [resolve(input), await real(input)]) {
      for (const target of targets) {
        if (path === target) throw new ToolError(`${dir}: refusing to replace it: it is an input of this command`);
        if (within(path, target)) throw new ToolError(`${dir}: refusing to replace it: it holds ${input}, an input of this command`);
      }
    }
  }
  const reason = await rules.foreign(dir);
  if (reason !== undefined) throw new ToolError(`${dir}: not replacing it with --overwrite: ${reason}`);
}

/** Refuses `/`, a home directory or one above it, and the current directory or one above it, even when empty. */
async function checkNotProtected(dir: string): Promise<void> {
  const target = await real(dir);
  if (target === sep) throw new ToolError(`${dir}: refusing to replace the root directory`);
  for (const home of new Set([homedir(), process.env.HOME].filter((h): h is string => !!h))) {
    const path = await real(home);
    if (within(path, target)) throw new ToolError(`${dir}: refusing to replace ${path === target ? 'a home directory' : `a directory that holds the home directory ${home}`}`);
  }
  const cwd = await real(process.cwd());
  if (within(cwd, target)) throw new ToolError(`${dir}: refusing to replace the current directory${cwd === target ? '' : ' (it is inside it)'}; name a new directory`);
}

/** What a tool writes under a name: a plain file, or a directory of its own. */
export type EntryKind = 'file' | 'directory';

/**
 * A `foreign` test for directories whose every entry this tool writes: `ours` says what kind of
 * entry the tool writes under a name (undefined: none), `marked` checks the file that proves this
 * tool wrote the directory (named by `marker`). An entry of another kind under one of the tool's
 * names is not the tool's: a directory where it writes a file, or any symlink (deleting it would
 * delete what it holds, or leave what it points to while seeming to replace it).
 */
export function ownedEntries(tool: string, ours: (name: string) => EntryKind | undefined, marker: string, marked: (dir: string) => Promise<boolean>): Replaceable['foreign'] {
  return async (dir) => {
    try {
      for (const name of await readdir(dir)) {
        const kind = ours(name);
        if (kind === undefined) return `it holds ${name}, which ${tool} does not write`;
        const stats = await lstat(join(dir, name));
        if (kind === 'file' ? !stats.isFile() : !stats.isDirectory()) {
          return `its ${name} is a ${stats.isDirectory() ? 'directory' : stats.isSymbolicLink() ? 'symbolic link' : stats.isFile() ? 'file' : 'special file'}, not a ${kind} ${tool} writes`;
        }
      }
    } catch (err) {
      throw fsError(err, dir);
    }
    if (!(await marked(dir))) return `it has no ${marker} written by ${tool}`;
    return undefined;
  };
}

/**
 * Fails early if dir may not be written: an empty path, or something there that may not be
 * replaced. First tidies what killed runs left beside it (see removeStaleStaging).
 */
export async function checkOutputDir(dir: string, options: StageOptions = {}): Promise<void> {
  const what = options.what ?? 'output directory';
  if (dir.trim() === '') throw new UsageError(`the ${what} is an empty path`);
  removeStaleStaging(dir);
  const state = await existing(resolve(dir));
  if (state === 'missing') return;
  await checkNotProtected(dir);
  if (state === 'empty') return;
  if (!options.overwrite) throw new ToolError(`${dir}: ${what} exists and is not empty (use --overwrite to replace it)`);
  await checkReplaceable(dir, options.overwrite);
}

/** Checks that dir may be written (see checkOutputDir) and stages it. */
export async function stageDir(dir: string, options: StageOptions = {}): Promise<StagedDir> {
  const what = options.what ?? 'output directory';
  const target = resolve(dir);
  await checkOutputDir(dir, options);
  try {
    await mkdir(dirname(target), { recursive: true });
  } catch (err) {
    throw fsError(err, dirname(target));
  }
  const temp = tempPathFor(target);
  try {
    await mkdir(temp);
  } catch (err) {
    throw fsError(err, dirname(target));
  }
  return {
    path: temp,
    async commit() {
      const state = await existing(target); // look again: it may have changed meanwhile
      if (state === 'full') {
        if (!options.overwrite) throw new ToolError(`${dir}: ${what} appeared while writing; not replacing it`);
        await checkReplaceable(dir, options.overwrite);
      }
      const aside = asidePathFor(target);
      try {
        if (state === 'empty') await rmdir(target);
        if (state === 'full') await rename(target, aside);
      } catch (err) {
        throw fsError(err, dir);
      }
      try {
        await rename(temp, target);
      } catch (err) {
        if (state === 'full') await rename(aside, target).catch(() => {}); // else removeStaleStaging puts it back
        throw fsError(err, dir);
      }
      // A failure here leaves only the old copy behind, which the next run removes.
      if (state === 'full') await rm(aside, { recursive: true, force: true }).catch(() => {});
    },
    async abort() {
      await rm(temp, { recursive: true, force: true });
    },
  };
}

/**
 * Writes the JSON file that marks a staged directory complete (a manifest, part.json: always
 * last, so a directory without it is incomplete) and puts the directory in place as `dir`.
 */
export async function commitWithJson(staged: StagedDir, dir: string, file: string, value: unknown): Promise<void> {
  await writeFileAtomic(join(staged.path, file), `${JSON.stringify(value, null, 2)}\n`, { shownAs: join(dir, file) });
  await staged.commit();
}
