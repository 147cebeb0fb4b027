import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseLabels, sortLabels, truncate } from '../../src/data/encode-labelled.js';
import { packer, unpacker, type LabelledRecord } from '../../src/data/records.js';
import { openShards, requireTask, ShardDataset } from '../../src/data/shard-reader.js';
import { writeDataset } from '../../src/data/dataset-writer.js';
import { writeLabelledDataset, type LabelledSpec } from '../../src/data/shard-writer.js';
import { tempDir } from '../helpers.js';

const dir = tempDir();
const spec = (over: Partial<LabelledSpec> = {}): LabelledSpec => ({
  maxLength: 8,
  truncationSide: 'right',
  labels: ['neg', 'pos', 'neutral'],
  dtype: 'uint16',
  padId: 0,
  tokenizer: { name: 'test', vocab_size: 100, sha256: '0'.repeat(64) },
  plan: { shardRecords: 4 },
  inputBytes: 0,
  truncated: 0,
  skipped: 0,
  command: ['test'],
  ...over,
});
// Record k holds k % 8 + 1 ids (k, k, …) and label k % 3: every record says which it is.
const records: LabelledRecord[] = Array.from({ length: 10 }, (_, k) => ({ input_ids: new Uint16Array((k % 8) + 1).fill(k), label: k % 3 }));
const lm = join(dir, 'lm');
const cls = join(dir, 'cls');

beforeAll(async () => {
  await writeLabelledDataset(cls, records, spec());
  await writeDataset(lm, Uint32Array.from({ length: 40 }, (_, i) => i), {
    blockSize: 10, dtype: 'uint16', padId: 0, keepTail: false, tokenizer: spec().tokenizer, docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
  });
});

describe('classification shards', () => {
  it('read back in order as LabelledRecords, unpadded', async () => {
    const ds = requireTask(await openShards(cls), 'classification', 'a test');
    expect(ds.task).toBe('classification');
    const seen: { ids: number[]; label: number }[] = [];
    for await (const { record } of ds.iterate()) seen.push({ ids: Array.from(record.input_ids), label: record.label });
    expect(seen).toEqual(records.map((r) => ({ ids: Array.from(r.input_ids), label: r.label })));
    const m = ds.manifest;
    expect([m.num_labels, m.labels, m.max_length, m.fields]).toEqual([3, ['neg', 'pos', 'neutral'], 8, ['input_ids', 'label']]);
    expect(m.totals.label_counts).toEqual([4, 3, 3]);
    expect(m.totals.tokens).toBe(records.reduce((a, r) => a + r.input_ids.length, 0));
    expect(m.shards.map((s) => s.records)).toEqual([4, 4, 2]);
    const shuffled: number[] = [];
    for await (const { record } of ds.iterate({ shuffle: true, seed: 1 })) shuffled.push(record.input_ids[0]);
    expect(shuffled.sort((a, b) => a - b)).toEqual([...Array(10).keys()]);
  });

  it('requireTask refuses the other kind, both ways, in one line', async () => {
    const c = await openShards(cls);
    const l = await openShards(lm);
    expect(l.task).toBe('causal_lm');
    expect(() => requireTask(c, 'causal_lm', 'a causal LM')).toThrow(
      `${cls} holds classification records (3 labels: neg, pos, neutral); a causal LM needs text encoded without --label-column (bpe-encode --block-size N)`,
    );
    expect(() => requireTask(l, 'classification', 'a classifier')).toThrow(
      `${lm} holds causal-LM records (blocks of 10 tokens); a classifier needs labelled rows (bpe-encode --input-format tsv|csv|jsonl --label-column …)`,
    );
    await expect(ShardDataset.open(cls)).rejects.toThrow(/holds classification records .*; a causal LM needs text encoded without --label-column/);
    expect((await ShardDataset.open(lm)).task).toBe('causal_lm');
  });

  it('a manifest without task is causal-LM data (written before classification existed)', async () => {
    const path = join(lm, 'manifest.json');
    const m = JSON.parse(readFileSync(path, 'utf8'));
    expect(m.task).toBe('causal_lm');
    delete m.task;
    writeFileSync(path, JSON.stringify(m));
    const ds = await ShardDataset.open(lm);
    expect(ds.task).toBe('causal_lm');
    expect(ds.blockSize).toBe(10);
  });
});

/** A copy of the classification data set with shard 0's records edited and the manifest made to match. */
async function tampered(name: string, edit: (records: LabelledRecord[]) => void, manifestEdit: (m: Record<string, unknown>) => void = () => {}): Promise<string> {
  const out = join(dir, name);
  await writeLabelledDataset(out, records, spec());
  const file = join(out, 'shard-00000.msgpack');
  const stored = unpacker.unpackMultiple(readFileSync(file)) as LabelledRecord[];
  edit(stored);
  const data = Buffer.concat(stored.map((r) => packer.pack(r)));
  writeFileSync(file, data);
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
  Object.assign(manifest.shards[0], { bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
  manifestEdit(manifest);
  writeFileSync(join(out, 'manifest.json'), JSON.stringify(manifest));
  return out;
}

describe('the reader refuses bad classification records, naming shard, record and value', () => {
  const loadError = async (out: string) => {
    const ds = await openShards(out);
    return ds.loadShard(0).then(() => 'loaded', (err: Error) => err.message);
  };
  const at = (out: string, k: number) => `${join(out, 'shard-00000.msgpack')}: record ${k}: `;

  it('a label outside 0 … num_labels − 1, or not an integer', async () => {
    const big = await tampered('label3', (r) => void (r[2].label = 3));
    expect(await loadError(big)).toBe(`${at(big, 2)}label is 3, must be an integer in 0 … 2 (num_labels 3)`);
    const half = await tampered('label-half', (r) => void (r[1].label = 0.5));
    expect(await loadError(half)).toBe(`${at(half, 1)}label is 0.5, must be an integer in 0 … 2 (num_labels 3)`);
    const none = await tampered('label-none', (r) => void delete (r[0] as Partial<LabelledRecord>).label);
    expect(await loadError(none)).toBe(`${at(none, 0)}label is undefined, must be an integer in 0 … 2 (num_labels 3)`);
  });

  it('ids outside the vocabulary, none, or more than max_length', async () => {
    const oov = await tampered('oov', (r) => void (r[3].input_ids[2] = 100));
    expect(await loadError(oov)).toBe(`${at(oov, 3)}input_ids[2] is 100, outside the vocabulary of 100 ids (0 to 99)`);
    const empty = await tampered('empty', (r) => void (r[1].input_ids = new Uint16Array(0)));
    expect(await loadError(empty)).toBe(`${at(empty, 1)}input_ids has 0 tokens, must have 1 to max_length 8`);
    const long = await tampered('long', (r) => void (r[0].input_ids = new Uint16Array(9)));
    expect(await loadError(long)).toBe(`${at(long, 0)}input_ids has 9 tokens, must have 1 to max_length 8`);
    const wide = await tampered('wide', (r) => void (r[0].input_ids = Int32Array.from(r[0].input_ids)));
    expect(await loadError(wide)).toBe(`${at(wide, 0)}input_ids is not a uint16 array`);
  });

  it('a manifest whose labels do not match num_labels, or an unknown task', async () => {
    const fewer = await tampered('fewer', () => {}, (m) => void (m.labels = ['a', 'b']));
    await expect(openShards(fewer)).rejects.toThrow(/manifest\.json: labels must be a list of num_labels \(3\) names$/);
    const twice = await tampered('twice', () => {}, (m) => void (m.labels = ['a', 'b', 'a']));
    await expect(openShards(twice)).rejects.toThrow(/labels must not repeat a name$/);
    const counts = await tampered('counts', () => {}, (m) => void ((m.totals as { label_counts: number[] }).label_counts = [1, 2]));
    await expect(openShards(counts)).rejects.toThrow(/totals\.label_counts must be a list of num_labels \(3\) counts$/);
    const task = await tampered('task', () => {}, (m) => void (m.task = 'regression'));
    await expect(openShards(task)).rejects.toThrow(/task must be "causal_lm" or "classification", found "regression"$/);
  });
});

describe('label names and truncation', () => {
  it('sorts labels numerically when all are numbers, else by code point', () => {
    expect(sortLabels(['3', '1', '4', '2', '1'])).toEqual(['1', '2', '3', '4']); // AG-News: 1..4 → ids 0..3
    expect(sortLabels(['10', '9', '-1', '2.5'])).toEqual(['-1', '2.5', '9', '10']);
    expect(sortLabels(['positive', 'negative', 'Neutral'])).toEqual(['Neutral', 'negative', 'positive']);
    expect(sortLabels(['10', '9', 'x'])).toEqual(['10', '9', 'x']);
  });

  it('parses --labels, refusing empty and repeated names', () => {
    expect(parseLabels('neg, pos,neutral')).toEqual(['neg', 'pos', 'neutral']);
    expect(() => parseLabels('a,,b')).toThrow('--labels "a,,b": a label name is empty');
    expect(() => parseLabels('a,b,a')).toThrow('--labels "a,b,a": "a" is named twice');
  });

  it('cuts on the side asked, copying', () => {
    const ids = Uint16Array.from([1, 2, 3, 4, 5]);
    expect(Array.from(truncate(ids, 3, 'right'))).toEqual([1, 2, 3]);
    expect(Array.from(truncate(ids, 3, 'left'))).toEqual([3, 4, 5]);
    expect(truncate(ids, 5, 'left')).toBe(ids);
    expect(truncate(ids, 3, 'left').buffer).not.toBe(ids.buffer);
  });
});
