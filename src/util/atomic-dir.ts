/**
 * An output directory that appears complete or not at all: everything is written into a hidden
 * sibling directory, which commit() renames into place. With overwrite, the old directory is
 * moved aside first and deleted only after the new one is in place, so a failure loses nothing.
 */
import { mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fsError, ToolError } from './errors.js';
import { tempPathFor } from './output.js';

export interface StagedDir {
  /** Where to write; renamed to the final path by commit(). */
  readonly path: string;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

async function existing(dir: string): Promise<'missing' | 'empty' | 'full'> {
  let entries: string[];
  try {
    if (!(await stat(dir)).isDirectory()) throw new ToolError(`${dir}: exists and is not a directory`);
    entries = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw fsError(err, dir);
  }
  return entries.length === 0 ? 'empty' : 'full';
}

/** Fails early if dir holds something and overwrite is not set. */
export async function checkOutputDir(dir: string, overwrite: boolean, what = 'output directory'): Promise<void> {
  if ((await existing(resolve(dir))) === 'full' && !overwrite) {
    throw new ToolError(`${dir}: ${what} exists and is not empty (use --overwrite to replace it)`);
  }
}

/** Checks that dir may be written (see checkOutputDir) and stages it. */
export async function stageDir(dir: string, overwrite: boolean, what = 'output directory'): Promise<StagedDir> {
  const target = resolve(dir);
  await checkOutputDir(dir, overwrite, what);
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
      if (state === 'full' && !overwrite) throw new ToolError(`${dir}: ${what} appeared while writing; not replacing it`);
      const aside = join(dirname(target), `.${basename(target)}.old-${process.pid}`);
      try {
        if (state === 'empty') await rmdir(target);
        if (state === 'full') await rename(target, aside);
        await rename(temp, target);
      } catch (err) {
        throw fsError(err, dir);
      }
      if (state === 'full') await rm(aside, { recursive: true, force: true });
    },
    async abort() {
      await rm(temp, { recursive: true, force: true });
    },
  };
}
