/**
 * The hidden names outputs are staged under, beside their target, and the tidying of those a
 * killed process left behind. `.NAME.tmp-PID-XXXXXXXX` is a file or directory being written;
 * `.NAME.old-PID-XXXXXXXX` is a directory moved aside while its replacement is renamed into place.
 * The PID in the name says whose it is: an entry is stale once that process is gone, and only
 * then. In containers a killed run and the next one often have the same PID, so an entry naming
 * this process that this process did not create is stale too (see leftBehind).
 */
import { randomBytes } from 'node:crypto';
import { lstatSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/** Paths this process created under its own PID (staging names, lock files). */
const createdHere = new Set<string>();

/** Records that this process created `path`, which names this process's PID. */
export function markCreated(path: string): void {
  createdHere.add(resolve(path));
}

function stagingPath(path: string, kind: 'tmp' | 'old'): string {
  const staged = join(dirname(path), `.${basename(path)}.${kind}-${process.pid}-${randomBytes(4).toString('hex')}`);
  markCreated(staged);
  return staged;
}

/** A hidden temporary name beside `path`, unique to this process. */
export const tempPathFor = (path: string): string => stagingPath(path, 'tmp');

/** Where a directory being replaced waits until its replacement is in place. */
export const asidePathFor = (path: string): string => stagingPath(path, 'old');

export interface StagingName {
  /** The name of the entry it stages (`NAME`). */
  target: string;
  kind: 'tmp' | 'old';
  pid: number;
}

const STAGING = /^\.(.+)\.(tmp|old)-(\d+)-[0-9a-f]{8}$/;

/** What a staging name (from tempPathFor or asidePathFor) stages, and for whom; else undefined. */
export function parseStagingName(name: string): StagingName | undefined {
  const m = STAGING.exec(name);
  return m ? { target: m[1], kind: m[2] as 'tmp' | 'old', pid: Number(m[3]) } : undefined;
}

/** Whether a process with this id exists (EPERM: it does, but is not ours to signal). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Whether `path`, which names process `pid` as its owner (a staging entry, a lock file), was left
 * by a process that is gone: `pid` has exited, or it is this process's id but this process did not
 * create `path` (a run killed earlier in a container that reuses PIDs).
 */
export function leftBehind(pid: number, path: string): boolean {
  return pid === process.pid ? !createdHere.has(resolve(path)) : !processAlive(pid);
}

const exists = (path: string) => {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
};
const tryRemove = (path: string) => {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    // left for a later run
  }
};

/** Tidies the stale staging entries of one target in `parent` (see removeStaleStaging). */
function tidy(parent: string, target: string, entries: readonly string[]): void {
  const asides: string[] = [];
  for (const entry of entries) {
    const name = parseStagingName(entry)!;
    if (!leftBehind(name.pid, join(parent, entry))) continue;
    if (name.kind === 'old') asides.push(entry);
    else tryRemove(join(parent, entry));
  }
  const path = join(parent, target);
  if (exists(path)) {
    for (const entry of asides) tryRemove(join(parent, entry));
  } else if (asides.length === 1) {
    try {
      renameSync(join(parent, asides[0]), path);
    } catch {
      // left for a later run
    }
  }
}

const list = (dir: string): string[] => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};

/**
 * Removes what dead processes left while staging `target`: temporaries of any kind, and directories
 * moved aside once their replacement is in place. A directory moved aside whose replacement never
 * arrived (killed between the two renames) is the last complete output, so it is put back instead.
 * Best effort: anything it cannot read or remove is left as it is.
 */
export function removeStaleStaging(target: string): void {
  const path = resolve(target);
  const name = basename(path);
  if (name === '') return; // `/`
  const parent = dirname(path);
  tidy(parent, name, list(parent).filter((entry) => parseStagingName(entry)?.target === name));
}

/** removeStaleStaging for every target with staging entries in `dir`. */
export function removeStaleStagingIn(dir: string): void {
  const byTarget = new Map<string, string[]>();
  for (const entry of list(dir)) {
    const name = parseStagingName(entry);
    if (name) byTarget.set(name.target, [...(byTarget.get(name.target) ?? []), entry]);
  }
  for (const [target, entries] of byTarget) tidy(resolve(dir), target, entries);
}
