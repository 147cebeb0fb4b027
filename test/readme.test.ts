/**
 * The README's quick start, run as written: the first ```sh block under "## Quick start", line by
 * line in bash with `set -euo pipefail`, in a fresh directory that has the clone's fixtures/ and
 * configs/. `npm ci` is skipped (the suite runs after it); `npx <tool>` runs this checkout's
 * bin/<tool>.js, and a separate check shows that `npx` itself finds every tool the block names.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './helpers.js';

function quickStart(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Quick start\n'));
  const block = section && /```sh\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error('README.md has no ```sh block under "## Quick start"');
  return block[1].split('\n').filter((line) => line.trim() !== '');
}

describe('README quick start', () => {
  const lines = quickStart();
  const tools = [...new Set(lines.flatMap((l) => [...l.matchAll(/\bnpx ([\w-]+)/g)].map((m) => m[1])))];

  it('names tools that npx finds in this package', () => {
    expect(tools.length).toBeGreaterThanOrEqual(5);
    for (const tool of tools) {
      const r = spawnSync('npx', ['--no-install', tool, '--version'], { cwd: ROOT, encoding: 'utf8' });
      expect(r.status, `npx ${tool}: ${r.stderr}`).toBe(0);
    }
  });

  it('runs as written on a fresh clone', () => {
    const dir = tempDir('gpt2tc-readme-');
    for (const sub of ['fixtures', 'configs']) symlinkSync(join(ROOT, sub), join(dir, sub));
    const script = [
      'set -euo pipefail',
      `npx() { local tool=$1; shift; node ${JSON.stringify(ROOT)}/bin/$tool.js "$@"; }`,
      ...lines.filter((l) => !/^npm ci\b/.test(l)),
    ].join('\n');
    const r = spawnSync('bash', ['-c', script], { cwd: dir, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = r.stdout.trim().split('\n');
    const evalLine = JSON.parse(out.find((l) => l.startsWith('{"loss"'))!) as { loss: number; perplexity: number; tokens: number };
    expect(Number.isFinite(evalLine.loss) && evalLine.tokens > 0).toBe(true);
    expect(evalLine.loss).toBeLessThan(Math.log(50257)); // trained: below a uniform guess over the vocabulary
    expect(out.at(-1)!.startsWith('The meaning of life is')).toBe(true);
    expect(out.at(-1)!.length).toBeGreaterThan('The meaning of life is'.length);
  }, 240_000);
});
