/**
 * The streaming writer against the plain definition of a data set: the stream cut into
 * consecutive blocks (tail padded and masked with keepTail), shards of the planned sizes. However
 * the stream arrives (one array, random pieces, a spool for --num-shards), the files are the same
 * bytes, and a failure leaves nothing behind.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DatasetWriter, writeDataset } from '../../src/data/dataset-writer.js';
import { IdsFileWriter, readIdsFile } from '../../src/data/ids-file.js';
import type { CausalLmManifest } from '../../src/data/manifest.js';
import { unpacker, type StoredRecord } from '../../src/data/records.js';
import type { DatasetSpec } from '../../src/data/shard-writer.js';
import { Rng } from '../../src/util/rng.js';
import { tempDir } from '../helpers.js';

const dir = tempDir();
const spec = (over: Partial<DatasetSpec> = {}): DatasetSpec => ({
  blockSize: 7,
  dtype: 'uint16',
  padId: 50256,
  keepTail: false,
  tokenizer: { name: 'test', vocab_size: 50257, sha256: '0'.repeat(64) },
  docSeparator: 'eos',
  plan: {},
  documents: 3,
  inputBytes: 123,
  command: ['test'],
  ...over,
});

const rng = new Rng(13);
const stream = Uint32Array.from({ length: 1000 }, () => rng.nextInt(50257));

/** The stream in random pieces, as workers hand it over (empty pieces included). */
function pieces(ids: Uint32Array, seed: number): Uint32Array[] {
  const r = new Rng(seed);
  const out: Uint32Array[] = [];
  for (let at = 0; at < ids.length; ) {
    const n = r.nextInt(40);
    out.push(ids.subarray(at, at + n));
    at += n;
  }
  return out;
}

async function streamed(out: string, s: DatasetSpec, seed: number, warnings: string[] = []): Promise<CausalLmManifest> {
  const writer = await DatasetWriter.open(out, s, { onWarning: (m) => warnings.push(m) });
  for (const p of pieces(stream, seed)) await writer.append(p);
  return writer.finish({ documents: s.documents, inputBytes: s.inputBytes });
}

const files = (d: string) => Object.fromEntries(readdirSync(d).sort().map((f) => [f, readFileSync(join(d, f))]));
const records = (d: string, m: CausalLmManifest) => m.shards.flatMap((s) => unpacker.unpackMultiple(readFileSync(join(d, s.file))) as StoredRecord[]);

describe('DatasetWriter', () => {
  const plans = [
    { name: 'default shards', over: {} },
    { name: '--shard-records 9, a padded tail', over: { plan: { shardRecords: 9 }, keepTail: true } },
    { name: '--num-shards 4 (spooled)', over: { plan: { numShards: 4 } } },
    { name: '--num-shards 5, int32, a padded tail', over: { plan: { numShards: 5 }, keepTail: true, dtype: 'int32' as const, blockSize: 33 } },
  ];
  for (const { name, over } of plans) {
    it(`${name}: the blocks of the stream, the same bytes however it arrives`, async () => {
      const s = spec(over);
      const whole = join(dir, `${name}-whole`);
      const m = await writeDataset(whole, stream, s); // the total known up front: no spool
      const full = Math.floor(stream.length / s.blockSize);
      const want = Array.from({ length: full }, (_, r) => Array.from(stream.subarray(r * s.blockSize, (r + 1) * s.blockSize)));
      const got = records(whole, m);
      expect(got.slice(0, full).map((r) => Array.from(r.input_ids))).toEqual(want);
      const tail = stream.length - full * s.blockSize;
      if (s.keepTail) {
        expect(got).toHaveLength(full + 1);
        const last = got[full];
        expect(Array.from(last.input_ids)).toEqual([...stream.subarray(full * s.blockSize), ...Array(s.blockSize - tail).fill(s.padId)]);
        expect(Array.from(last.attention_mask!)).toEqual([...Array(tail).fill(1), ...Array(s.blockSize - tail).fill(0)]);
        expect(m.fields).toEqual(['input_ids', 'attention_mask']);
      } else {
        expect(got).toHaveLength(full);
      }
      expect(got.every((r) => r.input_ids instanceof (s.dtype === 'uint16' ? Uint16Array : Int32Array))).toBe(true);
      const sizes = m.shards.map((x) => x.records);
      if (s.plan.numShards) expect(sizes).toHaveLength(s.plan.numShards);
      if (s.plan.shardRecords) expect(sizes.slice(0, -1).every((n) => n === s.plan.shardRecords)).toBe(true);
      for (const x of m.shards) expect(createHash('sha256').update(readFileSync(join(whole, x.file))).digest('hex')).toBe(x.sha256);
      expect(m.totals).toMatchObject({ records: got.length, tokens: full * s.blockSize + (s.keepTail ? tail : 0), documents: 3, input_bytes: 123 });

      for (const seed of [1, 2]) {
        const out = join(dir, `${name}-${seed}`);
        await streamed(out, s, seed);
        expect(files(out)).toEqual(files(whole)); // no spool left behind either
      }
    });
  }

  it('warns about an empty stream, a stream short of a block, and more shards than records', async () => {
    const warnings: string[] = [];
    const m = await writeDataset(join(dir, 'empty'), new Uint32Array(0), spec({ documents: 0 }));
    expect(m.shards).toEqual([]);
    const w = await DatasetWriter.open(join(dir, 'short'), spec(), { onWarning: (x) => warnings.push(x) });
    await w.append(stream.subarray(0, 5));
    await w.finish({ documents: 1, inputBytes: 5 });
    await streamed(join(dir, 'many'), spec({ plan: { numShards: 500 } }), 3, warnings);
    expect(warnings).toEqual([
      '5 tokens make no block of 7; writing an empty data set (--keep-tail keeps a padded partial block)',
      '--num-shards 500 is more than the 142 records; writing 142 shards',
    ]);
    expect(readdirSync(join(dir, 'many'))).toHaveLength(143);
  });

  it('abort leaves neither the directory nor anything staged beside it', async () => {
    const sub = join(dir, 'aborted');
    const before = readdirSync(dir);
    for (const over of [{}, { plan: { numShards: 2 } }]) {
      const w = await DatasetWriter.open(join(sub), spec(over));
      await w.append(stream);
      await w.abort();
      expect(existsSync(sub)).toBe(false);
      expect(readdirSync(dir)).toEqual(before);
    }
  });
});

describe('ids files', () => {
  it('round-trip in pieces, with the sha256 of the raw little-endian bytes', async () => {
    const ids = Uint32Array.from({ length: 3_000_001 }, (_, i) => (i * 7919) % 65536); // spans pieces of 4 MiB
    const path = join(dir, 'ids.bin');
    const w = await IdsFileWriter.create(path, 'uint16');
    for (const p of [ids.subarray(0, 5), ids.subarray(5, 2_500_000), ids.subarray(2_500_000)]) await w.append(p);
    const summary = await w.close();
    const raw = Buffer.from(Uint16Array.from(ids).buffer);
    expect(summary).toEqual({ tokens: ids.length, bytes: raw.length, sha256: createHash('sha256').update(raw).digest('hex') });
    expect(readFileSync(path).equals(raw)).toBe(true);
    const back: number[] = [];
    let n = 0;
    for await (const piece of readIdsFile(path, 'uint16', { ...summary, what: 'the test' })) {
      expect(piece).toBeInstanceOf(Uint16Array);
      n++;
      if (back.length < 10) back.push(...piece.subarray(0, 10));
    }
    expect(n).toBe(2);
    expect(back).toEqual(Array.from(ids.subarray(0, 10)));
    await expect(IdsFileWriter.create(path, 'uint16')).rejects.toThrow(/ids\.bin/); // never over an existing file

    const altered = Buffer.from(raw);
    altered[raw.length - 1] ^= 1;
    writeFileSync(path, altered);
    const drain = async (expect: { bytes: number; sha256: string; what: string }) => {
      for await (const _ of readIdsFile(path, 'uint16', expect));
    };
    await expect(drain({ ...summary, what: 'part.json' })).rejects.toThrow(/ids\.bin: size or sha256 is not what part\.json says/);
    writeFileSync(path, raw.subarray(0, raw.length - 2));
    await expect(drain({ ...summary, what: 'part.json' })).rejects.toThrow(/size or sha256/);
    writeFileSync(path, raw.subarray(0, 3));
    await expect(drain({ bytes: 3, sha256: summary.sha256, what: 'x' })).rejects.toThrow(/3 bytes is not a whole number of uint16 ids/);
  });
});
