import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { packer, unpacker, type StoredRecord } from '../../src/data/records.js';
import { ShardDataset } from '../../src/data/shard-reader.js';
import { writeDataset } from '../../src/data/dataset-writer.js';
import { shardSizes, type DatasetSpec } from '../../src/data/shard-writer.js';
import { Rng } from '../../src/util/rng.js';
import { tempDir } from '../helpers.js';

const spec = (over: Partial<DatasetSpec> = {}): DatasetSpec => ({
  blockSize: 10,
  dtype: 'uint16',
  padId: 9,
  keepTail: false,
  tokenizer: { name: 'test', vocab_size: 1000, sha256: '0'.repeat(64) },
  docSeparator: 'eos',
  plan: { shardRecords: 7 },
  documents: 1,
  inputBytes: 0,
  command: ['test'],
  ...over,
});
// Record r holds ids r*10 .. r*10+9, so every record says where it came from.
const stream = Uint32Array.from({ length: 10 * 30 + 4 }, (_, i) => i);
const dir = tempDir();
let dataset: ShardDataset;

beforeAll(async () => {
  await writeDataset(join(dir, 'ds'), stream, spec());
  dataset = await ShardDataset.open(join(dir, 'ds'));
});

const firstId = (r: { record: { input_ids: ArrayLike<number> } }) => r.record.input_ids[0] / 10;

describe('shard writer', () => {
  it('splits records into shards as planned', () => {
    expect(shardSizes(30, { shardRecords: 7 }, 10, 'uint16')).toEqual([7, 7, 7, 7, 2]);
    expect(shardSizes(10, { numShards: 4 }, 10, 'uint16')).toEqual([2, 3, 2, 3]);
    expect(shardSizes(2, { numShards: 3 }, 10, 'uint16')).toEqual([0, 1, 1]);
    expect(dataset.manifest.shards.map((s) => s.records)).toEqual([7, 7, 7, 7, 2]);
  });

  it('pads and masks the tail only with keepTail', async () => {
    const read = async (keepTail: boolean) => {
      const out = join(dir, `tail-${keepTail}`);
      await writeDataset(out, Uint32Array.of(1, 2, 3, 4, 5), spec({ blockSize: 4, dtype: 'int32', padId: 0, keepTail, plan: {} }));
      const records = unpacker.unpackMultiple(readFileSync(join(out, 'shard-00000.msgpack'))) as StoredRecord[];
      rmSync(out, { recursive: true });
      return records;
    };
    expect((await read(false)).map((r) => Array.from(r.input_ids))).toEqual([[1, 2, 3, 4]]);
    const records = await read(true);
    expect(records.map((r) => Array.from(r.input_ids))).toEqual([[1, 2, 3, 4], [5, 0, 0, 0]]);
    expect(records[0].attention_mask).toBeUndefined();
    expect(Array.from(records[1].attention_mask!)).toEqual([1, 0, 0, 0]);
    expect(records[1].input_ids).toBeInstanceOf(Int32Array);
  });

  it('leaves no temporary files behind', () => {
    expect(readdirSync(dir)).toEqual(['ds']);
    expect(readdirSync(join(dir, 'ds')).sort()).toEqual(['manifest.json', ...[0, 1, 2, 3, 4].map((k) => `shard-0000${k}.msgpack`)]);
  });
});

describe('shard reader', () => {
  it('reads every record back in file order, with default masks and labels', async () => {
    const seen: number[] = [];
    for await (const r of dataset.iterate()) {
      seen.push(firstId(r));
      expect(Array.from(r.record.input_ids)).toEqual(Array.from({ length: 10 }, (_, k) => r.record.input_ids[0] + k));
      expect(Array.from(r.record.attention_mask)).toEqual(Array(10).fill(1));
      expect(r.record.labels).toBe(r.record.input_ids);
    }
    expect(seen).toEqual([...Array(30).keys()]);
  });

  it('gives random access within a loaded shard', async () => {
    const shard = await dataset.loadShard(2);
    expect(shard.length).toBe(7);
    expect(shard.get(3).input_ids[0]).toBe((14 + 3) * 10);
    expect(() => shard.get(7)).toThrow(/out of range/);
  });

  it('shuffles deterministically by seed and epoch, one shard at a time', async () => {
    const order = async (seed: number, epoch: number) => {
      const out: number[] = [];
      for await (const r of dataset.iterate({ shuffle: true, seed, epoch })) out.push(firstId(r));
      return out;
    };
    const a = await order(1, 0);
    expect(await order(1, 0)).toEqual(a);
    expect(await order(2, 0)).not.toEqual(a);
    expect(await order(1, 1)).not.toEqual(a);
    expect([...a].sort((x, y) => x - y)).toEqual([...Array(30).keys()]);
    // records of a shard stay together (shard = floor(record / 7)), so only one shard is loaded at a time
    const shardsInOrder = a.map((r) => Math.floor(r / 7)).filter((s, i, all) => i === 0 || s !== all[i - 1]);
    expect(shardsInOrder).toHaveLength(5);
  });

  it('slices by rank: disjoint, complete, balanced', async () => {
    const parts = [0, 1, 2].map((rank) => {
      const { shard, index } = dataset.order({ shuffle: true, seed: 5, rank, worldSize: 3 });
      return Array.from(shard, (s, i) => s * 7 + index[i]);
    });
    expect(parts.map((p) => p.length)).toEqual([10, 10, 10]);
    expect(parts.flat().sort((x, y) => x - y)).toEqual([...Array(30).keys()]);
    const whole = dataset.order({ shuffle: true, seed: 5 });
    const global = Array.from(whole.shard, (s, i) => s * 7 + whole.index[i]);
    expect(parts[1]).toEqual(global.filter((_, p) => p % 3 === 1));
  });

  it('refuses another tokenizer', () => {
    expect(() => dataset.requireTokenizer({ name: 'test', vocab_size: 1000, sha256: '0'.repeat(64) })).not.toThrow();
    expect(() => dataset.requireTokenizer({ name: 'gpt2', vocab_size: 50257, sha256: 'f'.repeat(64) }, 'the model\'s tokenizer')).toThrow(/encoded with tokenizer test .* not the model's tokenizer gpt2/);
  });

  it('resumes mid-epoch from a position', async () => {
    const all: number[] = [];
    for await (const r of dataset.iterate({ shuffle: true, seed: 3 })) all.push(firstId(r));
    const rest: number[] = [];
    for await (const r of dataset.iterate({ shuffle: true, seed: 3, start: 17 })) rest.push(firstId(r));
    expect(rest).toEqual(all.slice(17));
  });
});

/** A copy of a data set whose shard 0 has its records edited, with a manifest that matches it. */
async function tampered(name: string, edit: (records: StoredRecord[]) => void, over: Partial<DatasetSpec> = {}): Promise<string> {
  const out = join(dir, name);
  await writeDataset(out, stream, spec(over));
  const file = join(out, 'shard-00000.msgpack');
  const records = unpacker.unpackMultiple(readFileSync(file)) as StoredRecord[];
  edit(records);
  const data = Buffer.concat(records.map((r) => packer.pack(r)));
  writeFileSync(file, data);
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
  Object.assign(manifest.shards[0], { bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
  writeFileSync(join(out, 'manifest.json'), JSON.stringify(manifest));
  return out;
}

describe('shard reader refuses bad records, naming shard, record and value', () => {
  const loadError = async (out: string) => {
    const ds = await ShardDataset.open(out);
    return ds.loadShard(0).then(() => 'loaded', (err: Error) => err.message);
  };

  it('an attention_mask value other than 0 or 1', async () => {
    const out = await tampered('mask7', (records) => {
      records[3].attention_mask = Uint8Array.from({ length: 10 }, (_, t) => (t === 4 ? 7 : 1));
    });
    expect(await loadError(out)).toBe(`${join(out, 'shard-00000.msgpack')}: record 3: attention_mask[4] is 7, must be 0 or 1`);
  });

  it('ids outside the vocabulary, in input_ids or labels', async () => {
    // Records hold ids up to 303: with a vocabulary of 200, record 2 (ids 20..29) is fine and record 20 is not.
    const small = await tampered('oov', () => {}, { tokenizer: { name: 'test', vocab_size: 200, sha256: '0'.repeat(64) }, plan: { shardRecords: 30 } });
    expect(await loadError(small)).toBe(`${join(small, 'shard-00000.msgpack')}: record 20: input_ids[0] is 200, outside the vocabulary of 200 ids (0 to 199)`);
    const labels = await tampered('labels', (records) => {
      records[1].labels = Uint16Array.from(records[1].input_ids, (id, t) => (t === 9 ? 1000 : id));
    });
    expect(await loadError(labels)).toBe(`${join(labels, 'shard-00000.msgpack')}: record 1: labels[9] is 1000, outside the vocabulary of 1000 ids (0 to 999)`);
  });

  it('fields of the wrong type or length', async () => {
    const short = await tampered('short-mask', (records) => {
      records[0].attention_mask = new Uint8Array(3).fill(1);
    });
    expect(await loadError(short)).toMatch(/record 0: attention_mask has 3 values, block_size is 10$/);
    const wide = await tampered('wide-labels', (records) => {
      records[2].labels = Int32Array.from(records[2].input_ids);
    });
    expect(await loadError(wide)).toMatch(/record 2: labels is not a uint16 array$/);
  });
});

describe('Rng', () => {
  it('is reproducible and resumable from its state', () => {
    const a = new Rng(42, 0);
    const b = new Rng(42, 0);
    const xs = Array.from({ length: 5 }, () => a.nextU32());
    expect(Array.from({ length: 5 }, () => b.nextU32())).toEqual(xs);
    const saved = a.state;
    const next = [a.nextU32(), a.nextFloat()];
    const c = Rng.fromState(saved);
    expect([c.nextU32(), c.nextFloat()]).toEqual(next);
    expect(new Rng(42, 1).nextU32()).not.toBe(new Rng(42, 0).nextU32());
  });

  it('draws integers uniformly (chi-squared, fixed seed)', () => {
    const rng = new Rng(7);
    const n = 10;
    const draws = 100_000;
    const counts = Array(n).fill(0);
    for (let i = 0; i < draws; i++) counts[rng.nextInt(n)]++;
    const expected = draws / n;
    const chi2 = counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(27.9); // p = 0.001 for 9 degrees of freedom
  });
});
