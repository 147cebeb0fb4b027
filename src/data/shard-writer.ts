/**
 * Records → shards + manifest. A causal LM's token stream becomes non-overlapping blocks of
 * block_size tokens (the tail dropped or, with keepTail, padded and masked); a classifier's
 * labelled records are written as they come. Shards and manifest are written into a staged
 * directory (see atomic-dir.ts), each file under a temporary name first, the manifest last.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { stageDir, type Replaceable } from '../util/atomic-dir.js';
import { writeFileAtomic } from '../util/output.js';
import { VERSION } from '../version.js';
import type { TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { MANIFEST_FILE, RECORDS_FORMAT, RECORDS_VERSION, type CausalLmManifest, type ClassificationManifest, type IdDtype, type Manifest, type ShardInfo } from './manifest.js';
import { idArray, packer, type LabelledRecord, type StoredRecord } from './records.js';

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

/**
 * Writes records into dir as shards of the given sizes, then the manifest that `finish` makes
 * from the shard list (see stageDir for overwrite rules). `tokens` counts a record's real tokens.
 */
export async function writeShards<R extends object, M extends Manifest>(
  dir: string,
  records: Iterator<R>,
  sizes: readonly number[],
  tokens: (record: R) => number,
  finish: (shards: ShardInfo[]) => M,
  overwrite?: Replaceable,
): Promise<M> {
  const staged = await stageDir(dir, { overwrite });
  try {
    const shards: ShardInfo[] = [];
    for (let k = 0; k < sizes.length; k++) {
      const parts: Uint8Array[] = [];
      let count = 0;
      for (let r = 0; r < sizes[k]; r++) {
        const record = records.next().value as R;
        count += tokens(record);
        parts.push(packer.pack(record));
      }
      const data = Buffer.concat(parts);
      const file = shardName(k);
      await writeFileAtomic(join(staged.path, file), data, { shownAs: join(dir, file) });
      shards.push({ file, records: sizes[k], tokens: count, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
    }
    const manifest = finish(shards);
    await writeFileAtomic(join(staged.path, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`, { shownAs: join(dir, MANIFEST_FILE) });
    await staged.commit();
    return manifest;
  } catch (err) {
    await staged.abort();
    throw err;
  }
}

const sum = (shards: ShardInfo[], key: 'records' | 'tokens' | 'bytes') => shards.reduce((a, s) => a + s[key], 0);
const createdBy = (command: string[]) => ({ tool: 'bpe-encode', version: VERSION, command });

/** Writes a causal LM's token stream into dir as blocks; returns its manifest. */
export async function writeDataset(dir: string, ids: ArrayLike<number>, spec: DatasetSpec, overwrite?: Replaceable): Promise<CausalLmManifest> {
  const sizes = shardSizes(countRecords(ids.length, spec.blockSize, spec.keepTail), spec.plan, spec.blockSize, spec.dtype);
  let padded = false;
  const tokens = (record: StoredRecord) => {
    if (!record.attention_mask) return record.input_ids.length;
    padded = true;
    return record.attention_mask.reduce((a, b) => a + b, 0);
  };
  const finish = (shards: ShardInfo[]): CausalLmManifest => ({
    format: RECORDS_FORMAT,
    version: RECORDS_VERSION,
    task: 'causal_lm',
    tokenizer: spec.tokenizer,
    block_size: spec.blockSize,
    id_dtype: spec.dtype,
    fields: padded ? ['input_ids', 'attention_mask'] : ['input_ids'],
    doc_separator: spec.docSeparator,
    pad_id: spec.padId,
    shards,
    totals: { records: sum(shards, 'records'), tokens: sum(shards, 'tokens'), bytes: sum(shards, 'bytes'), documents: spec.documents, input_bytes: spec.inputBytes },
    created_by: createdBy(spec.command),
  });
  return writeShards(dir, blockRecords(ids, spec), sizes, tokens, finish, overwrite);
}

export interface LabelledSpec {
  maxLength: number;
  truncationSide: 'right' | 'left';
  labels: string[];
  dtype: IdDtype;
  padId: number;
  tokenizer: TokenizerIdentity;
  plan: ShardPlan;
  inputBytes: number;
  /** Records cut to maxLength, and bad rows left out. */
  truncated: number;
  skipped: number;
  command: string[];
}

/** Writes labelled records (unpadded) into dir; returns its manifest. */
export async function writeLabelledDataset(dir: string, records: readonly LabelledRecord[], spec: LabelledSpec, overwrite?: Replaceable): Promise<ClassificationManifest> {
  const sizes = shardSizes(records.length, spec.plan, spec.maxLength, spec.dtype);
  const counts = spec.labels.map(() => 0);
  for (const r of records) counts[r.label]++;
  const finish = (shards: ShardInfo[]): ClassificationManifest => ({
    format: RECORDS_FORMAT,
    version: RECORDS_VERSION,
    task: 'classification',
    tokenizer: spec.tokenizer,
    max_length: spec.maxLength,
    truncation_side: spec.truncationSide,
    num_labels: spec.labels.length,
    labels: spec.labels,
    id_dtype: spec.dtype,
    fields: ['input_ids', 'label'],
    pad_id: spec.padId,
    shards,
    totals: {
      records: sum(shards, 'records'),
      tokens: sum(shards, 'tokens'),
      bytes: sum(shards, 'bytes'),
      input_bytes: spec.inputBytes,
      label_counts: counts,
      truncated: spec.truncated,
      skipped: spec.skipped,
    },
    created_by: createdBy(spec.command),
  });
  return writeShards(dir, records[Symbol.iterator](), sizes, (r) => r.input_ids.length, finish, overwrite);
}

/**
 * Writes a whole token stream as the data set (a single run's, or the parts' merged): the warnings
 * for an empty stream, too few tokens for a block and more shards asked for than records.
 */
export async function writeStream(out: string, ids: Uint16Array | Int32Array, spec: DatasetSpec, overwrite: Replaceable | undefined, onWarning?: (m: string) => void): Promise<CausalLmManifest> {
  if (spec.documents === 0) onWarning?.('the input holds no documents; writing an empty data set');
  const records = countRecords(ids.length, spec.blockSize, spec.keepTail);
  if (spec.documents > 0 && records === 0) {
    onWarning?.(`${ids.length} tokens make no block of ${spec.blockSize}; writing an empty data set (--keep-tail keeps a padded partial block)`);
  }
  let plan = spec.plan;
  if (plan.numShards !== undefined && plan.numShards > records) {
    onWarning?.(`--num-shards ${plan.numShards} is more than the ${records} records; writing ${records} shard${records === 1 ? '' : 's'}`);
    plan = { numShards: records };
  }
  return writeDataset(out, ids, { ...spec, plan }, overwrite);
}
