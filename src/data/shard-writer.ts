/**
 * Records → shards + manifest: what every data set shares (shard names and sizes, the spec), and a
 * classifier's labelled records, written as they come. A causal LM's token stream is cut into
 * blocks as it arrives by dataset-writer.ts. Shards and manifest are written into a staged
 * directory (see atomic-dir.ts), each file under a temporary name first, the manifest last.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { commitWithJson, stageDir, type Replaceable } from '../util/atomic-dir.js';
import { writeFileAtomic } from '../util/output.js';
import { VERSION } from '../version.js';
import type { TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { MANIFEST_FILE, RECORDS_FORMAT, RECORDS_VERSION, type ClassificationManifest, type IdDtype, type Manifest, type ShardInfo } from './manifest.js';
import { packer, type LabelledRecord } from './records.js';

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
    await commitWithJson(staged, dir, MANIFEST_FILE, manifest);
    return manifest;
  } catch (err) {
    await staged.abort();
    throw err;
  }
}

const sum = (shards: ShardInfo[], key: 'records' | 'tokens' | 'bytes') => shards.reduce((a, s) => a + s[key], 0);
export const createdBy = (command: string[]) => ({ tool: 'bpe-encode', version: VERSION, command });

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
