/**
 * The --overwrite guard and the staging of output directories, called directly: the places no tool
 * may ever replace (`/`, home directories and what holds them, the current directory and what
 * holds it) are checked here rather than by running a tool against them.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, parse } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkOutputDir, checkReplaceable, stageDir, type Replaceable } from '../../src/util/atomic-dir.js';
import { replaceableRecords } from '../../src/data/manifest.js';
import { deadPid, livePid, tempDir } from '../helpers.js';
import { snapshot } from './snapshot.js';

const root = tempDir();
const live = livePid();
let n = 0;
const fresh = (name = 'd') => join(root, `${name}-${n++}`);

/** A rule that would accept any directory: only the protected-place checks stand in the way. */
const anything: Replaceable = { foreign: async () => undefined };

/** A directory that looks like bpe-encode's output (manifest + shard). */
function recordsDir(path = fresh('records')): string {
  mkdirSync(path, { recursive: true });
  writeFileSync(join(path, 'manifest.json'), JSON.stringify({ format: 'gpt2-toolchain.records' }));
  writeFileSync(join(path, 'shard-00000.msgpack'), 'shard');
  return path;
}

describe('places --overwrite never replaces', () => {
  const home = process.env.HOME;
  afterEach(() => {
    process.env.HOME = home;
  });

  it('/ is refused, with or without a rule that accepts anything', async () => {
    await expect(checkReplaceable('/', anything)).rejects.toThrow(/^\/: refusing to replace the root directory$/);
    await expect(checkOutputDir('/', { overwrite: anything })).rejects.toThrow(/refusing to replace the root directory/);
  });

  it('the current directory and every directory above it', async () => {
    await expect(checkReplaceable('.', anything)).rejects.toThrow(/^\.: refusing to replace the current directory; name a new directory$/);
    await expect(checkReplaceable(process.cwd(), anything)).rejects.toThrow(/refusing to replace the current directory/);
    for (let dir = dirname(process.cwd()); dir !== '/'; dir = dirname(dir)) {
      await expect(checkReplaceable(dir, anything)).rejects.toThrow(/refusing to replace the current directory \(it is inside it\)/);
      await expect(checkOutputDir(dir, { overwrite: anything })).rejects.toThrow(/refusing to replace the current directory/);
    }
    await expect(checkReplaceable('..', anything)).rejects.toThrow(/current directory \(it is inside it\)/);
  });

  it('a home directory ($HOME) and the directories that hold it', async () => {
    const fakeHome = recordsDir(join(fresh('homes'), 'user'));
    process.env.HOME = fakeHome;
    const before = snapshot(dirname(fakeHome));
    await expect(checkReplaceable(fakeHome, replaceableRecords([]))).rejects.toThrow(/refusing to replace a home directory/);
    await expect(checkOutputDir(fakeHome, { overwrite: anything })).rejects.toThrow(/refusing to replace a home directory/);
    await expect(stageDir(fakeHome, { overwrite: anything })).rejects.toThrow(/refusing to replace a home directory/);
    await expect(checkReplaceable(dirname(fakeHome), anything)).rejects.toThrow(/a directory that holds the home directory/);
    expect(snapshot(dirname(fakeHome))).toEqual(before);
    process.env.HOME = home;
    await expect(checkReplaceable(fakeHome, replaceableRecords([]))).resolves.toBeUndefined(); // the same directory elsewhere is fine
  });

  it('an empty path is a usage error', async () => {
    await expect(checkOutputDir('', { overwrite: anything })).rejects.toMatchObject({ name: 'UsageError', message: 'the output directory is an empty path' });
    await expect(checkOutputDir('  ')).rejects.toMatchObject({ name: 'UsageError' });
  });
});

describe('what --overwrite may replace', () => {
  it('our own output is replaceable; an input inside it, by any name, is not', async () => {
    const dir = recordsDir();
    await expect(checkReplaceable(dir, replaceableRecords([]))).resolves.toBeUndefined();
    const outside = fresh('outside');
    mkdirSync(outside);
    symlinkSync(dir, join(outside, 'link'));
    // The input named through a symlink that leads into the directory.
    await expect(checkReplaceable(dir, replaceableRecords([join(outside, 'link', 'shard-00000.msgpack')]))).rejects.toThrow(/it holds .*link\/shard-00000\.msgpack, an input of this command/);
    // The directory named through a symlink, the input by its real path.
    await expect(checkReplaceable(join(outside, 'link'), replaceableRecords([join(dir, 'manifest.json')]))).rejects.toThrow(/an input of this command/);
    await expect(checkReplaceable(dir, replaceableRecords([dir]))).rejects.toThrow(/it is an input of this command/);
  });

  it('an input that is a symlink inside the directory (pointing out of it) is still an input', async () => {
    const dir = recordsDir();
    const elsewhere = join(fresh('file'));
    writeFileSync(elsewhere, 'text');
    symlinkSync(elsewhere, join(dir, 'shard-00001.msgpack'));
    await expect(checkReplaceable(dir, replaceableRecords([join(dir, 'shard-00001.msgpack')]))).rejects.toThrow(/it holds .*shard-00001\.msgpack, an input/);
  });

  it('a directory or symlink under one of our names is not ours', async () => {
    const withDir = recordsDir();
    mkdirSync(join(withDir, 'shard-00001.msgpack'));
    writeFileSync(join(withDir, 'shard-00001.msgpack', 'thesis.tex'), 'years of work');
    await expect(checkReplaceable(withDir, replaceableRecords([]))).rejects.toThrow(/its shard-00001\.msgpack is a directory, not a file bpe-encode writes/);
    const withLink = recordsDir();
    symlinkSync(withDir, join(withLink, 'shard-00001.msgpack'));
    await expect(checkReplaceable(withLink, replaceableRecords([]))).rejects.toThrow(/its shard-00001\.msgpack is a symbolic link/);
  });
});

describe('stageDir', () => {
  it('puts the old directory back when the new one cannot be renamed into place', async () => {
    const dir = recordsDir();
    const before = snapshot(dir);
    const staged = await stageDir(dir, { overwrite: replaceableRecords([]) });
    rmSync(staged.path, { recursive: true }); // the rename of the staged directory will fail
    await expect(staged.commit()).rejects.toThrow(/no such file or directory/);
    expect(snapshot(dir)).toEqual(before);
    expect(readdirSync(dirname(dir)).filter((f) => f.includes(parse(dir).base) && f !== parse(dir).base)).toEqual([]);
  });
});

describe('stale staging left by killed processes', () => {
  it('removes the temporaries and moved-aside copies of dead processes only, and only ours', async () => {
    const parent = fresh('stale');
    const out = recordsDir(join(parent, 'out'));
    const dead = deadPid();
    const plant = (name: string) => {
      mkdirSync(join(parent, name));
      writeFileSync(join(parent, name, 'shard-00000.msgpack'), name);
    };
    const stale = [
      `.out.tmp-${dead}-0123abcd`,
      `.out.old-${dead}-0123abcd`,
      // this process's pid, but not created by it: a run killed earlier in a container that
      // gives every run the same pid
      `.out.tmp-${process.pid}-0123abcd`,
      `.out.old-${process.pid}-0123abcd`,
    ];
    const kept = [
      `.out.tmp-${live}-0123abcd`, // a live process
      `.out.old-${live}-0123abcd`,
      `.out.tmp-${dead}`, // not our exact naming
      `.out.old-${dead}`,
      `.out.tmp-${dead}-0123abcd.bak`,
      `.out.tmp-${dead}-0123ABCD`,
      `out.tmp-${dead}-0123abcd`,
      `.other.tmp-${dead}-0123abcd`, // another target's
      `.out2.old-${dead}`,
    ];
    for (const name of [...stale, ...kept]) plant(name);
    writeFileSync(join(parent, `.out.tmp-${dead}-89abcdef`), 'a stale temporary file');
    const staged = await stageDir(out, { overwrite: replaceableRecords([]) });
    await staged.abort();
    expect(readdirSync(parent).sort()).toEqual(['out', ...kept].sort());
  });

  it('an aside left under this process\'s pid by an earlier run does not block replacing the directory', async () => {
    const parent = fresh('same-pid');
    const out = recordsDir(join(parent, 'out'));
    // What a killed run with this pid left: an aside of the old naming (no random part, so every
    // later commit's rename onto it failed with ENOTEMPTY) and one of the current naming.
    recordsDir(join(parent, `.out.old-${process.pid}`));
    recordsDir(join(parent, `.out.old-${process.pid}-0123abcd`));
    const staged = await stageDir(out, { overwrite: replaceableRecords([]) });
    writeFileSync(join(staged.path, 'manifest.json'), JSON.stringify({ format: 'gpt2-toolchain.records', version: 2 }));
    await staged.commit();
    expect(JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')).version).toBe(2);
    expect(readdirSync(parent).sort()).toEqual([`.out.old-${process.pid}`, 'out']); // the old naming is not ours to remove
  });

  it('puts back a directory moved aside whose replacement never arrived', async () => {
    const parent = fresh('aside');
    const old = recordsDir(join(parent, `.out.old-${deadPid()}-0123abcd`));
    const before = snapshot(old);
    mkdirSync(join(parent, `.out.tmp-${deadPid()}-0123abcd`)); // the replacement, killed before its rename
    await expect(checkOutputDir(join(parent, 'out'))).rejects.toThrow(/exists and is not empty/);
    expect(readdirSync(parent)).toEqual(['out']);
    expect(snapshot(join(parent, 'out'))).toEqual(before);
    expect(existsSync(old)).toBe(false);
    expect(readFileSync(join(parent, 'out', 'shard-00000.msgpack'), 'utf8')).toBe('shard');
  });
});
