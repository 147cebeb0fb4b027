/**
 * A full disk mid-write: the tools must fail with a one-line error and leave nothing behind that
 * looks complete (no output file, no shard directory, no temporaries). Needs a tiny tmpfs, which
 * needs root; elsewhere the test is skipped with a message.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { expectOneLineError, fixture, ROOT, runCli, tempDir, tinyDisk, type CliResult } from '../helpers.js';

const elsewhere = tempDir();
const mountPoint = tinyDisk('disk-full tests') ?? '';

/** `tool args > FILE` with FILE on the full file system. */
function redirected(tool: string, args: string[]): CliResult {
  const fd = openSync(join(mountPoint, 'stdout.txt'), 'w');
  try {
    const r = spawnSync(process.execPath, [join(ROOT, 'bin', `${tool}.js`), ...args], { cwd: ROOT, stdio: ['ignore', fd, 'pipe'] });
    return { code: r.status ?? -1, stdout: '', stderr: r.stderr.toString('utf8'), stdoutBytes: Buffer.alloc(0) };
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(!mountPoint)('disk full', () => {
  afterEach(() => {
    for (const name of readdirSync(mountPoint)) rmSync(join(mountPoint, name), { recursive: true });
    execFileSync('mount', ['-o', 'remount,size=16k', mountPoint]);
  });

  // The output (~60 KB) goes out in one write, of which the disk takes 16 KiB: a short write that
  // no later write reports, so only a checked write notices it.
  it('wikitext-prep > FILE: error, not exit 0 with the file cut short', () => {
    expectOneLineError(redirected('wikitext-prep', [fixture('wikitext', 'wiki.train.tokens')]), 'wikitext-prep', /^wikitext-prep: error: <stdout>: no space left on device$/);
  });

  it('bpe-encode --ids > FILE: error', () => {
    expectOneLineError(redirected('bpe-encode', ['--ids', fixture('wikitext', 'wiki.train.tokens')]), 'bpe-encode', /<stdout>: no space left on device/);
  });

  it('convert-weights: error naming DST, no directory or temporaries left', () => {
    const dst = join(mountPoint, 'model');
    expectOneLineError(runCli('convert-weights', ['-q', fixture('models', 'tiny'), dst]), 'convert-weights', new RegExp(`error: ${dst}: no space left on device$`));
    expect(readdirSync(mountPoint)).toEqual([]);
    // Room for the weights but not the tokenizer files copied after them: still DST's disk that is full.
    execFileSync('mount', ['-o', 'remount,size=160k', mountPoint]);
    expectOneLineError(runCli('convert-weights', ['-q', fixture('models', 'tiny'), dst]), 'convert-weights', new RegExp(`error: ${dst}: no space left on device$`));
    expect(readdirSync(mountPoint)).toEqual([]);
  });

  it('wikitext-prep --out: error, no file left', () => {
    const r = runCli('wikitext-prep', ['-q', '--out', join(mountPoint, 'docs.txt'), fixture('wikitext', 'wiki.train.tokens')]);
    expectOneLineError(r, 'wikitext-prep', /docs\.txt: no space left on device/);
    expect(readdirSync(mountPoint)).toEqual([]);
  });

  it('bpe-encode --out: error, no directory or temporaries left', () => {
    const r = runCli('bpe-encode', ['-q', '--block-size', '64', '--out', join(mountPoint, 'shards'), fixture('wikitext', 'wiki.train.tokens')]);
    expectOneLineError(r, 'bpe-encode', /no space left on device/);
    expect(readdirSync(mountPoint)).toEqual([]);
  });

  // Every file bpe-encode streams: a part's ids.bin, the spool of --num-shards, a merge's shards.
  it('bpe-encode --part, --num-shards and --merge: error, nothing left', () => {
    const input = fixture('wikitext', 'wiki.train.tokens');
    for (const args of [['--part', '1/1', '--out', join(mountPoint, 'part'), input], ['--num-shards', '2', '--out', join(mountPoint, 'shards'), input]]) {
      expectOneLineError(runCli('bpe-encode', ['-q', '--block-size', '64', ...args]), 'bpe-encode', /no space left on device$/);
      expect(readdirSync(mountPoint)).toEqual([]);
    }
    const parts = [1, 2].map((k) => join(elsewhere, `part${k}`));
    parts.forEach((out, k) => expect(runCli('bpe-encode', ['-q', '--block-size', '64', '--part', `${k + 1}/2`, '--out', out, input]).code).toBe(0));
    expectOneLineError(runCli('bpe-encode', ['-q', '--merge', ...parts, '--out', join(mountPoint, 'merged')]), 'bpe-encode', /no space left on device$/);
    expect(readdirSync(mountPoint)).toEqual([]);
  });
});
