/**
 * Progress bars on a terminal (script(1) gives the tool one): the rate and the fields each tool
 * promises, and nothing of it when stderr is not a terminal.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { formatRate } from '../../src/cli/progress.js';
import { fixture, ROOT, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const data = join(dir, 'data');
const hasScript = spawnSync('script', ['--version']).status === 0;

/** The tool's stderr as a terminal shows it: the last frame of each bar. */
function onTerminal(tool: string, args: string[]): string {
  const command = [process.execPath, join(ROOT, 'bin', `${tool}.js`), ...args].map((a) => `'${a}'`).join(' ');
  const r = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', env: { ...process.env, LANG: 'C.UTF-8' } });
  expect(r.status, r.stdout).toBe(0);
  // Each frame starts at column 1 (ESC[1G); other escapes (cursor, clearing) are dropped.
  return r.stdout.replace(/\x1b\[1G|\r/g, '\n').replace(/\x1b(\[[0-9;?]*[A-Za-z]|[78])/g, '');
}

describe('progress bars', () => {
  beforeAll(() => {
    expect(runCli('bpe-encode', ['-q', '--block-size', '33', '--out', data, fixture('wikitext', 'golden.articles.txt')]).code).toBe(0);
  });

  it('formats rates with three significant digits', () => {
    expect(formatRate(4.5678, 'records')).toBe('4.57 records/s');
    expect(formatRate(1234.5, 'MB')).toBe('1235 MB/s');
    expect(formatRate(0, 'steps')).toBe('– steps/s');
    expect(formatRate(Number.NaN, 'steps')).toBe('– steps/s');
  });

  it.runIf(hasScript)('gpt2-eval shows records/s and an ETA on a terminal, nothing without one', () => {
    const args = ['--model', fixture('models', 'gpt2vocab'), '--data', data, '--batch-size', '1'];
    const frames = onTerminal('gpt2-eval', args).split('\n').filter((l) => l.startsWith('gpt2-eval ['));
    expect(frames.length).toBeGreaterThan(1);
    expect(frames.at(-1)).toMatch(/100% \| (\d+)\/\1 \| [\d.]+ records\/s \| ETA \d+s$/);
    expect(runCli('gpt2-eval', args).stderr).not.toContain('records/s');
  });

  // Inputs of a few MiB, so the reads (1 MiB each) give the bar several values to rate.
  const repeated = (name: string, copies: number) => {
    const path = join(dir, `${copies}x-${name}`);
    writeFileSync(path, readFileSync(fixture('wikitext', name), 'utf8').repeat(copies));
    return path;
  };
  const lastFrame = (tool: string, args: string[]) => onTerminal(tool, args).split('\n').filter((l) => l.startsWith(`${tool} [`)).at(-1);

  it.runIf(hasScript)('wikitext-prep shows MB of the file\'s MB, MB/s and an ETA', () => {
    const input = repeated('wikitext2-sample.tokens', 30);
    const mb = (statSync(input).size / 1e6).toFixed(1);
    expect(lastFrame('wikitext-prep', ['--out', join(dir, 'docs.txt'), input])).toMatch(new RegExp(`100% \\| ${mb}/${mb} MB \\| [\\d.]+ MB/s \\| ETA \\d+s$`));
  });

  it.runIf(hasScript)('bpe-encode --part counts its own slice of the file', () => {
    const input = repeated('wikitext2-sample.docs.txt', 80);
    const frame = lastFrame('bpe-encode', ['--block-size', '33', '--part', '2/3', '--out', join(dir, 'part2'), input]);
    const { slice } = JSON.parse(readFileSync(join(dir, 'part2', 'part.json'), 'utf8')) as { slice: { start: number; end: number } };
    const mb = ((slice.end - slice.start) / 1e6).toFixed(1);
    expect(mb).not.toBe((statSync(input).size / 1e6).toFixed(1));
    expect(frame).toMatch(new RegExp(`100% \\| ${mb}/${mb} MB \\| [\\d.]+ MB/s \\| ETA \\d+s$`));
  });

  it.runIf(hasScript)('gpt2-train shows steps/s, loss, lr and tokens/s on a terminal', () => {
    const args = ['--config', join(ROOT, 'configs', 'gpt2', 'run_gpt2_tiny.yaml'), '--set', 'model.config.n_positions=32', '--train-data', data, '--eval-data', data, '--output-dir', join(dir, 'run'), '--max-steps', '3'];
    const frames = onTerminal('gpt2-train', args).split('\n').filter((l) => l.startsWith('gpt2-train ['));
    expect(frames.at(-1)).toMatch(/100% \| 3\/3 \| [\d.]+ steps\/s \| loss \d+\.\d{4} \| lr [\d.]+e-\d \| \d+ tokens\/s \| ETA \d+s$/);
  });
});
