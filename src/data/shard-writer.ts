/**
 * Token stream → record shards + manifest. Blocks are non-overlapping slices of block_size tokens;
 * the tail is dropped or, with keepTail, padded and masked. Shards and manifest are written into a
 * staged directory (see atomic-dir.ts), each file under a temporary name first, the manifest last.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { stageDir, type Replaceable } from '../util/atomic-dir.js';
import { writeFileAtomic } from '../util/output.js';
import { VERSION } from '../version.js';
import type { TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { MANIFEST_FILE, RECORDS_FORMAT, RECORDS_VERSION, type IdDtype, type Manifest, type ShardInfo } from './manifest.js';
import { idArray, packer, type StoredRecord } from './records.js';

export interface ShardPlan {
  /** Records per shard (the last may hold fewer). */
  shardRecords?: number;
  /** Exactly this many shards, records spread evenly (the seed's num_splits). */
  numShards?: number;
}

export interface DatasetSpec {
  blockSize: number;
  dtype: IdDtype;
  padId: number;
  keepTail: boolean;
  tokenizer: TokenizerIdentity;
  docSeparator: string;
  plan: ShardPlan;
  /** For the manifest: documents and input bytes that made the stream, and the command line. */
  documents: number;
  inputBytes: number;
  command: string[];
}

/** Default shard size: about 64 MiB of ids. */
export function defaultShardRecords(blockSize: number, dtype: IdDtype): number {
  return Math.max(1, Math.floor(2 ** 26 / (blockSize * (dtype === 'uint16' ? 2 : 4))));
}

export const shardName = (k: number) => `shard-${String(k).padStart(5, '0')}.msgpack`;

/** The records a token stream makes. */
export function* blockRecords(ids: ArrayLike<number>, spec: Pick<DatasetSpec, 'blockSize' | 'dtype' | 'padId' | 'keepTail'>): Generator<StoredRecord> {
  const { blockSize, dtype } = spec;
  const full = Math.floor(ids.length / blockSize);
  const Ids = dtype === 'uint16' ? Uint16Array : Int32Array;
  for (let r = 0; r < full; r++) {
    if (ids instanceof Ids) {
      yield { input_ids: ids.slice(r * blockSize, (r + 1) * blockSize) }; // a memcpy
    } else {
      const block = idArray(dtype, blockSize);
      for (let k = 0; k < blockSize; k++) block[k] = ids[r * blockSize + k];
      yield { input_ids: block };
    }
  }
  const tail = ids.length - full * blockSize;
  if (spec.keepTail && tail > 0) {
    const block = idArray(dtype, blockSize).fill(spec.padId);
    const mask = new Uint8Array(blockSize);
    for (let k = 0; k < tail; k++) {
      block[k] = ids[full * blockSize + k];
      mask[k] = 1;
    }
    yield { input_ids: block, attention_mask: mask };
  }
}

export function countRecords(tokens: number, blockSize: number, keepTail: boolean): number {
  return Math.floor(tokens / blockSize) + (keepTail && tokens % blockSize > 0 ? 1 : 0);
}

/** How many records go in each shard. */
export function shardSizes(records: number, plan: ShardPlan, blockSize: number, dtype: IdDtype): number[] {
  if (plan.numShards !== undefined) {
    const n = plan.numShards;
    return Array.from({ length: n }, (_, k) => Math.floor(((k + 1) * records) / n) - Math.floor((k * records) / n));
  }
  const per = plan.shardRecords ?? defaultShardRecords(blockSize, dtype);
  const sizes: number[] = [];
  for (let left = records; left > 0; left -= per) sizes.push(Math.min(per, left));
  return sizes;
}

/** Writes the dataset into dir (see stageDir for overwrite rules); returns its manifest. */
export async function writeDataset(dir: string, ids: ArrayLike<number>, spec: DatasetSpec, overwrite?: Replaceable): Promise<Manifest> {
  const staged = await stageDir(dir, { overwrite });
  try {
    const records = blockRecords(ids, spec);
    const sizes = shardSizes(countRecords(ids.length, spec.blockSize, spec.keepTail), spec.plan, spec.blockSize, spec.dtype);
    const shards: ShardInfo[] = [];
    let padded = false;
    for (let k = 0; k < sizes.length; k++) {
      const parts: Uint8Array[] = [];
      let tokens = 0;
      for (let r = 0; r < sizes[k]; r++) {
        const record = records.next().value as StoredRecord;
        if (record.attention_mask) {
          padded = true;
          tokens += record.attention_mask.reduce((a, b) => a + b, 0);
        } else {
          tokens += record.input_ids.length;
        }
        parts.push(packer.pack(record));
      }
      const data = Buffer.concat(parts);
      const file = shardName(k);
      await writeFileAtomic(join(staged.path, file), data, { shownAs: join(dir, file) });
      shards.push({ file, records: sizes[k], tokens, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
    }
    const manifest: Manifest = {
      format: RECORDS_FORMAT,
      version: RECORDS_VERSION,
      tokenizer: spec.tokenizer,
      block_size: spec.blockSize,
      id_dtype: spec.dtype,
      fields: padded ? ['input_ids', 'attention_mask'] : ['input_ids'],
      doc_separator: spec.docSeparator,
      pad_id: spec.padId,
      shards,
      totals: {
        records: shards.reduce((a, s) => a + s.records, 0),
        tokens: shards.reduce((a, s) => a + s.tokens, 0),
        bytes: shards.reduce((a, s) => a + s.bytes, 0),
        documents: spec.documents,
        input_bytes: spec.inputBytes,
      },
      created_by: { tool: 'bpe-encode', version: VERSION, command: spec.command },
    };
    await writeFileAtomic(join(staged.path, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`, { shownAs: join(dir, MANIFEST_FILE) });
    await staged.commit();
    return manifest;
  } catch (err) {
    await staged.abort();
    throw err;
  }
}
