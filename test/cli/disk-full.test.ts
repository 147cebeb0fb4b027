/**
 * A full disk mid-write: the tools must fail with a one-line error and leave nothing behind that
 * looks complete (no output file, no shard directory, no temporaries). Needs a tiny tmpfs, which
 * needs root; elsewhere the test is skipped with a message.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectOneLineError, fixture, runCli, tempDir } from '../helpers.js';

const mountPoint = join(tempDir(), 'tiny');
mkdirSync(mountPoint);
let mounted = false;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', mountPoint], { stdio: 'ignore' });
  mounted = true;
} catch {
  console.warn('SKIPPED: disk-full tests (cannot mount a tmpfs here; they need root)');
}
afterAll(() => {
  if (mounted) execFileSync('umount', [mountPoint]);
});

describe.skipIf(!mounted)('disk full', () => {
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
});
