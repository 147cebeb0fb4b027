/**
 * The record-shard format read by a second implementation: test/oracle/read_shards.py, written from
 * the README's specification with Python's standard library and python3-msgpack. On shards that
 * bpe-encode writes (padded tails, several shards and workers, labelled records) it must give exactly
 * our reader's records, and the ids must be tiktoken's (js-tiktoken, GPT-2's ranks) for the input
 * documents joined by <|endoftext|>. Skips, saying why, where Python or msgpack is missing.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { beforeAll, describe, expect, it } from 'vitest';
import { openShards } from '../../src/data/shard-reader.js';
import { fixture, ROOT, runCli, tempDir } from '../helpers.js';

const PYTHON = '/usr/bin/python3';
const probe = spawnSync(PYTHON, ['-c', 'import msgpack'], { encoding: 'utf8' });
const missing = probe.error ? `${PYTHON} is not there` : probe.status !== 0 ? 'python3-msgpack is not installed (apt-get install python3-msgpack)' : undefined;
if (missing) console.warn(`shards-python.test.ts skipped: ${missing}`);

const dir = tempDir();
const DOCS = fixture('wikitext', 'wikitext2-sample.docs.txt');
const EOS = 50256;

type PyRecord = { input_ids: number[]; attention_mask?: number[]; label?: number };
const readWithPython = (shards: string): { manifest: Record<string, unknown>; records: PyRecord[] } => {
  const r = spawnSync(PYTHON, [join(ROOT, 'test', 'oracle', 'read_shards.py'), shards], { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`read_shards.py: ${r.stderr}`);
  return JSON.parse(r.stdout);
};
/** Records as the format defines them: an LM record's mask all ones where none is stored. */
const normal = (r: PyRecord) => ({ input_ids: r.input_ids, ...(r.label !== undefined ? { label: r.label } : { attention_mask: r.attention_mask ?? r.input_ids.map(() => 1) }) });
/** Our reader's records in file order. */
async function ours(shards: string): Promise<ReturnType<typeof normal>[]> {
  const data = await openShards(shards);
  const out: ReturnType<typeof normal>[] = [];
  for (let k = 0; k < data.manifest.shards.length; k++) {
    const shard = await data.loadShard(k);
    for (let i = 0; i < shard.length; i++) {
      const r = shard.get(i) as { input_ids: ArrayLike<number>; attention_mask?: ArrayLike<number>; label?: number };
      out.push(r.label !== undefined ? { input_ids: Array.from(r.input_ids), label: r.label } : { input_ids: Array.from(r.input_ids), attention_mask: Array.from(r.attention_mask!) });
    }
  }
  return out;
}

describe.skipIf(missing !== undefined)('record shards read by a Python implementation of the format', () => {
  let tiktokenIds: number[];
  beforeAll(() => {
    const tiktoken = new Tiktoken(gpt2Ranks);
    const docs = readFileSync(DOCS, 'utf8').split('\n').filter((l) => l !== '');
    tiktokenIds = docs.flatMap((d, k) => [...tiktoken.encode(d, [], []), ...(k + 1 < docs.length ? [EOS] : [])]);
  });

  it.each([
    { name: 'uint16 ids, a padded tail', args: ['--block-size', '65', '--keep-tail', '--num-shards', '3'] },
    { name: 'full blocks only, two workers', args: ['--block-size', '129', '--workers', '2'] },
  ])('$name: the same records as ours, ids as tiktoken encodes the documents', async ({ name, args }) => {
    const out = join(dir, name.replace(/\W+/g, '-'));
    const r = runCli('bpe-encode', ['--quiet', '--out', out, ...args, DOCS]);
    expect(r.code, r.stderr).toBe(0);
    const py = readWithPython(out);
    expect(py.records.map(normal)).toEqual(await ours(out));
    const stream = py.records.flatMap((rec) => (rec.attention_mask ? rec.input_ids.filter((_, t) => rec.attention_mask![t] === 1) : rec.input_ids));
    expect(stream).toEqual(tiktokenIds.slice(0, stream.length));
    expect(stream.length).toBe(args.includes('--keep-tail') ? tiktokenIds.length : tiktokenIds.length - (tiktokenIds.length % Number(args[1])));
  });

  it('labelled records: ids and labels as ours', async () => {
    const out = join(dir, 'labelled');
    const r = runCli('bpe-encode', ['--quiet', '--out', out, '--input-format', 'tsv', '--text-column', 'sentence', '--label-column', 'label', '--labels', 'negative,positive', fixture('labelled', 'sentiment.tsv')]);
    expect(r.code, r.stderr).toBe(0);
    const py = readWithPython(out);
    expect(py.manifest.task).toBe('classification');
    expect(py.records.map(normal)).toEqual(await ours(out));
  });

  it('a shard changed after writing is refused by the Python reader too (sha256)', () => {
    const out = join(dir, 'uint16-ids-a-padded-tail');
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    const path = join(out, manifest.shards[0].file);
    const bytes = readFileSync(path);
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(path, bytes);
    expect(() => readWithPython(out)).toThrow(/size or sha256 differs from the manifest/);
  });
});
