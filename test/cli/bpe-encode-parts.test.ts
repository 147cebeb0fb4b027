/**
 * bpe-encode --part K/N and --merge (src/data/parts.ts): N parts encoded by separate processes and
 * merged (in any order) write the shards a single run on the whole file writes, byte for byte,
 * for N = 1, 2, 3, 7, with padded tails and several shards, and when some parts hold no document;
 * a part missing or twice, parts of other options or input, an altered ids.bin, and --part on
 * standard input or two files are refused with one line.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectOneLineError, fixture, ROOT, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const DOCS = fixture('wikitext', 'wikitext2-sample.docs.txt');

const encode = (args: string[]) => {
  const r = runCli('bpe-encode', ['--quiet', ...args]);
  expect(r.code, r.stderr).toBe(0);
};
/** Every file of a data set but the manifest's created_by (the command differs). */
function dataset(out: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const name of readdirSync(out).sort()) {
    const bytes = readFileSync(join(out, name));
    if (name !== 'manifest.json') files[name] = bytes.toString('hex');
    else files[name] = JSON.stringify({ ...JSON.parse(bytes.toString('utf8')), created_by: null });
  }
  return files;
}
function parts(input: string, n: number, tag: string, options: string[]): string[] {
  return Array.from({ length: n }, (_, i) => {
    const out = join(dir, `${tag}-part-${n}-${i + 1}`);
    encode([...options, '--part', `${i + 1}/${n}`, '--out', out, input]);
    return out;
  });
}

describe('bpe-encode --part / --merge', () => {
  it.each([
    { name: 'padded tail, 3 shards', options: ['--block-size', '65', '--keep-tail', '--num-shards', '3'] },
    { name: 'full blocks, newline separator', options: ['--block-size', '129', '--doc-separator', 'newline'] },
  ])('$name: N = 1, 2, 3, 7 parts merged write the single run’s files', ({ name, options }) => {
    const tag = name.replace(/\W+/g, '-');
    const single = join(dir, `${tag}-single`);
    encode([...options, '--out', single, DOCS]);
    for (const n of [1, 2, 3, 7]) {
      const dirs = parts(DOCS, n, tag, options);
      const merged = join(dir, `${tag}-merged-${n}`);
      encode(['--merge', ...[...dirs].reverse(), '--out', merged]);
      expect(dataset(merged), `${n} parts`).toEqual(dataset(single));
    }
  });

  it('parts that hold no document (7 parts of 3 short lines) still merge into the single run', () => {
    const input = join(dir, 'short.txt');
    writeFileSync(input, 'The first document.\n\nA second one, longer than the first.\nThird\n');
    const options = ['--block-size', '4', '--keep-tail'];
    const single = join(dir, 'short-single');
    encode([...options, '--out', single, input]);
    const merged = join(dir, 'short-merged');
    const dirs = parts(input, 7, 'short', options);
    expect(dirs.map((d) => JSON.parse(readFileSync(join(d, 'part.json'), 'utf8')).documents).filter((n: number) => n === 0).length).toBeGreaterThan(0);
    encode(['--merge', ...dirs, '--out', merged]);
    expect(dataset(merged)).toEqual(dataset(single));
  });

  it('the README recipes: make -j (fixtures/recipes/parts.mk) and xargs -P write the single run’s files', () => {
    const single = join(dir, 'recipe-single');
    encode(['--block-size', '65', '--out', single, DOCS]);
    const bpe = `${process.execPath} ${join(ROOT, 'bin', 'bpe-encode.js')}`;
    const viaMake = join(dir, 'recipe-make');
    const made = spawnSync('make', ['-j2', '-s', '-f', join(ROOT, 'fixtures', 'recipes', 'parts.mk'), 'N=3', `IN=${DOCS}`, `OUT=${viaMake}`, 'BLOCK=65', `BPE_ENCODE=${bpe}`], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    expect(dataset(viaMake)).toEqual(dataset(single));
    const viaXargs = join(dir, 'recipe-xargs');
    const script = `seq 3 | xargs -P 3 -I{} ${bpe} -q --block-size 65 --part {}/3 --out ${viaXargs}.parts/{} ${DOCS} && ${bpe} -q --merge ${viaXargs}.parts/* --out ${viaXargs}`;
    const ran = spawnSync('sh', ['-c', script], { encoding: 'utf8' });
    expect(ran.status, ran.stderr).toBe(0);
    expect(dataset(viaXargs)).toEqual(dataset(single));
  });

  it('refuses a missing part, a part twice, parts of other options, an altered ids.bin, --part without one file', () => {
    const options = ['--block-size', '65'];
    const three = parts(DOCS, 3, 'bad', options);
    const out = join(dir, 'bad-out');
    expectOneLineError(runCli('bpe-encode', ['--merge', three[0], three[2], '--out', out]), 'bpe-encode', /--merge: part 2\/3 missing$/);
    expectOneLineError(runCli('bpe-encode', ['--merge', ...three, three[1], '--out', out]), 'bpe-encode', /part 2\/3 again/);
    const other = parts(DOCS, 3, 'other', ['--block-size', '66']);
    expectOneLineError(runCli('bpe-encode', ['--merge', three[0], other[1], three[2], '--out', out]), 'bpe-encode', /its options differ from .*: parts of different runs/);
    const ids = join(three[1], 'ids.bin');
    const bytes = readFileSync(ids);
    bytes[0] ^= 1;
    writeFileSync(ids, bytes);
    expectOneLineError(runCli('bpe-encode', ['--merge', ...three, '--out', out]), 'bpe-encode', /ids\.bin: size or sha256 is not what part\.json says/);
    expectOneLineError(runCli('bpe-encode', ['--part', '1/2', '--out', out, DOCS, DOCS]), 'bpe-encode', /--part reads one input file/, 2);
    expectOneLineError(runCli('bpe-encode', ['--part', '1/2', '--out', out], { input: 'a\n' }), 'bpe-encode', /--part reads one input file/, 2);
    expectOneLineError(runCli('bpe-encode', ['--part', '3/2', '--out', out, DOCS]), 'bpe-encode', /--part 3\/2: give K\/N/, 2);
  });
});
