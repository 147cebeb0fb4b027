/**
 * The hidden names outputs are staged under, beside their target, and the tidying of those a
 * killed process left behind. `.NAME.tmp-PID-XXXXXXXX` is a file or directory being written;
 * `.NAME.old-PID` is a directory moved aside while its replacement is renamed into place. The PID
 * in the name says whose it is: an entry is stale once that process is gone, and only then.
 */
import { randomBytes } from 'node:crypto';
import { lstatSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/** A hidden temporary name beside `path`, unique to this process. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Where a directory being replaced waits until its replacement is in place. */
export function asidePathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.old-${process.pid}`);
}

/** Whether a process with this id exists (EPERM: it does, but is not ours to signal). */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
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

/**
 * Removes what dead processes left while staging `target`: temporaries of any kind, and directories
 * moved aside once their replacement is in place. A directory moved aside whose replacement never
 * arrived (killed between the two renames) is the last complete output, so it is put back instead.
 * Best effort: anything it cannot read or remove is left as it is.
 */
export function removeStaleStaging(target: string): void {
  const path = resolve(target);
  const parent = dirname(path);
  const name = basename(path);
  if (name === '') return; // `/`
  const pattern = new RegExp(`^\\.${escape(name)}\\.(?:tmp-(\\d+)-[0-9a-f]{8}|old-(\\d+))$`);
  let entries: string[];
  try {
    entries = readdirSync(parent);
  } catch {
    return;
  }
  const asides: string[] = [];
  for (const entry of entries) {
    const match = pattern.exec(entry);
    if (!match || processAlive(Number(match[1] ?? match[2]))) continue;
    if (match[2] !== undefined) asides.push(entry);
    else tryRemove(join(parent, entry));
  }
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
