/** openOutput: files appear whole or not at all, never over an input, and never replace a device. */
import { spawnSync } from 'node:child_process';
import { linkSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openOutput } from '../../src/util/output.js';
import { deadPid, livePid, tempDir } from '../helpers.js';
import { snapshot } from './snapshot.js';

const root = tempDir();
const live = livePid();
let n = 0;
const fresh = () => {
  const dir = join(root, `case-${n++}`);
  mkdirSync(dir);
  return dir;
};

describe('openOutput', () => {
  it('writes through a temporary that commit renames into place and abort removes', async () => {
    const dir = fresh();
    const path = join(dir, 'out.txt');
    const output = openOutput(path);
    const big = 'x'.repeat(100_000); // more than one buffer
    await output.write('a\n');
    await output.write(big);
    await output.write(Buffer.from('\nb\n'));
    expect(readdirSync(dir)).toEqual([expect.stringMatching(/^\.out\.txt\.tmp-\d+-[0-9a-f]{8}$/)]);
    await output.commit();
    expect(readFileSync(path, 'utf8')).toBe(`a\n${big}\nb\n`);
    expect(readdirSync(dir)).toEqual(['out.txt']);

    const aborted = openOutput(path);
    await aborted.write('never');
    await aborted.abort();
    expect(readdirSync(dir)).toEqual(['out.txt']);
    expect(readFileSync(path, 'utf8')).toBe(`a\n${big}\nb\n`);
  });

  it('an empty path is a usage error; a directory is refused', () => {
    expect(() => openOutput('')).toThrow(expect.objectContaining({ name: 'UsageError', message: 'the output file is an empty path' }));
    const dir = fresh();
    expect(() => openOutput(dir)).toThrow(/is a directory, expected a file/);
  });

  it('refuses to write over an input, by its name, a symlink or a hard link, before writing anything', () => {
    const dir = fresh();
    const input = join(dir, 'in.txt');
    writeFileSync(input, 'precious');
    symlinkSync(input, join(dir, 'soft.txt'));
    linkSync(input, join(dir, 'hard.txt'));
    const before = snapshot(dir);
    for (const out of ['in.txt', 'soft.txt', 'hard.txt']) {
      expect(() => openOutput(join(dir, out), { inputs: ['-', join(dir, 'missing'), input] })).toThrow(new RegExp(`${out}: refusing to write over .*in\\.txt, an input of this command`));
      expect(() => openOutput(input, { inputs: [join(dir, out)] })).toThrow(/refusing to write over/);
    }
    expect(snapshot(dir)).toEqual(before);
    expect(() => openOutput(join(dir, 'new.txt'), { inputs: [input] })).not.toThrow();
  });

  it('writes into a device instead of renaming a file over it', async () => {
    const dir = fresh();
    const device = join(dir, 'null');
    if (spawnSync('mknod', [device, 'c', '1', '3']).status !== 0) return void console.warn('SKIPPED: mknod needs root');
    const output = openOutput(device, { inputs: [device] }); // reading and writing /dev/null is no loss
    await output.write('discarded');
    await output.commit();
    expect(statSync(device).isCharacterDevice()).toBe(true);
    expect(readdirSync(dir)).toEqual(['null']);
  });

  it('removes the temporaries of dead processes, not of live ones or of other files', async () => {
    const dir = fresh();
    const dead = deadPid();
    // This process's pid on a temporary it did not create: a run killed earlier in a container
    // that gives every run the same pid.
    const stale = [`.out.txt.tmp-${dead}-0123abcd`, `.out.txt.tmp-${process.pid}-0123abcd`];
    const kept = [`.out.txt.tmp-${live}-0123abcd`, `.other.txt.tmp-${dead}-0123abcd`, `.out.txt.tmp-${dead}`, 'out.txt'];
    for (const name of [...stale, ...kept]) writeFileSync(join(dir, name), name);
    const output = openOutput(join(dir, 'out.txt'));
    expect(readdirSync(dir).filter((name) => stale.includes(name))).toEqual([]);
    expect(readdirSync(dir)).toEqual(expect.arrayContaining(kept));
    // ... and one this process is writing is its own, not stale
    const full = 'x'.repeat(1 << 16); // a whole buffer: written to the temporary at once
    await output.write(full);
    const second = openOutput(join(dir, 'out.txt'));
    await second.write(full);
    expect(readdirSync(dir).filter((name) => name.startsWith(`.out.txt.tmp-${process.pid}-`))).toHaveLength(2);
    await Promise.all([output.abort(), second.abort()]);
  });
});
