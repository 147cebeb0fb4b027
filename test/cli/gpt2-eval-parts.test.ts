/**
 * gpt2-eval --part K/N and --merge (src/train/eval-parts.ts): N parts run as separate processes and
 * merged give the single run's line — tokens and records exactly, the loss to 1e-12 relative — for
 * N = 1, 2, 3, 7, whatever order the part files come in; parts of another run, a part missing or
 * twice, parts of different N, and malformed K/N are refused with one line.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectOneLineError, fixture, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const data = join(dir, 'valid');
const MODEL = ['--model', 'gpt2-tiny', '--random-init', '--seed', '3'];
const common = [...MODEL, '--data', data, '--max-records', '23', '--batch-size', '4', '--quiet'];

type Line = { loss: number; perplexity: number; tokens: number; records: number };
const evalLine = (args: string[]): string => {
  const r = runCli('gpt2-eval', args);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
};
/** Runs the N parts, each into its own file; returns the file paths. */
function parts(n: number, tag: string, extra: string[] = []): string[] {
  return Array.from({ length: n }, (_, i) => {
    const file = join(dir, `${tag}-${n}-${i + 1}.jsonl`);
    writeFileSync(file, evalLine([...common, ...extra, '--part', `${i + 1}/${n}`]));
    return file;
  });
}

let single: Line;
beforeAll(() => {
  const r = runCli('bpe-encode', ['--quiet', '--block-size', '33', '--keep-tail', '--out', data, fixture('wikitext', 'wikitext2-sample.docs.txt')]);
  expect(r.code, r.stderr).toBe(0);
  single = JSON.parse(evalLine(common));
});

describe('gpt2-eval --part / --merge', () => {
  it.each([1, 2, 3, 7])('%i parts merged = the single run', (n) => {
    const files = parts(n, 'ok');
    const merged = JSON.parse(evalLine(['--merge', ...[...files].reverse()])) as Line;
    expect({ tokens: merged.tokens, records: merged.records }).toEqual({ tokens: single.tokens, records: single.records });
    expect(Math.abs(merged.loss - single.loss) / single.loss).toBeLessThan(1e-12);
    expect(Object.keys(merged)).toEqual(['loss', 'perplexity', 'tokens', 'records']);
  });

  it('a part line names its slice and run; part sizes differ by at most one record', () => {
    const lines = parts(7, 'sizes').map((f) => JSON.parse(readFileSync(f, 'utf8')));
    expect(lines[0]).toMatchObject({ format: 'gpt2-eval.part', part: '1/7', of: { model: 'gpt2-tiny', lora: null, max_records: 23, data: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) } });
    const sizes = lines.map((l) => l.records);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(23);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
  });

  it('refuses a missing part, a part twice, parts of different N or of another run', () => {
    const three = parts(3, 'bad');
    expectOneLineError(runCli('gpt2-eval', ['--merge', three[0], three[2]]), 'gpt2-eval', /--merge: part 2\/3 missing$/);
    expectOneLineError(runCli('gpt2-eval', ['--merge', ...three, three[1]]), 'gpt2-eval', /part 2\/3 again/);
    const two = parts(2, 'bad');
    expectOneLineError(runCli('gpt2-eval', ['--merge', ...three, two[0]]), 'gpt2-eval', /part 1\/2, but .* is a part of 3/);
    const other = parts(2, 'other', ['--max-records', '22']);
    expectOneLineError(runCli('gpt2-eval', ['--merge', two[0], other[1]]), 'gpt2-eval', /evaluated max_records 22, .* 23: parts of different runs/);
    const junk = join(dir, 'junk.jsonl');
    writeFileSync(junk, '{"loss": 1}\n');
    expectOneLineError(runCli('gpt2-eval', ['--merge', junk]), 'gpt2-eval', /junk\.jsonl:1: not a part line of gpt2-eval --part/);
  });

  it('refuses a malformed K/N and --merge beside a model', () => {
    for (const bad of ['0/3', '4/3', 'a/b', '1/0']) expectOneLineError(runCli('gpt2-eval', [...common, '--part', bad]), 'gpt2-eval', /--part .*: give K\/N with 1 ≤ K ≤ N/, 2);
    expectOneLineError(runCli('gpt2-eval', [...MODEL, '--merge', 'x.jsonl']), 'gpt2-eval', /--merge takes only part files/, 2);
  });
});
