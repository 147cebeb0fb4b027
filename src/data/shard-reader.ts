/**
 * Reading record shards for training and evaluation. openShards() refuses a directory without a
 * manifest (incomplete) or whose shards are missing or of the wrong size; a shard's sha256 is
 * checked when it is loaded (verify: 'checksum', the default). Records come in file order or in
 * a deterministic shuffled order (shards shuffled, then records within each shard, so only one
 * shard is in memory at a time), optionally sliced by rank for data-parallel runs.
 *
 * A data set is typed by its task: ShardDataset<'causal_lm'> yields TokenRecords (token blocks),
 * ShardDataset<'classification'> yields LabelledRecords. openShards() opens either (look at
 * `task`), requireTask() narrows it or refuses the other kind with a message, and
 * ShardDataset.open() is openShards() + requireTask(…, 'causal_lm'), what every LM reader uses.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fsError, ToolError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';
import { Rng } from '../util/rng.js';
import type { TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { MANIFEST_FILE, validateManifest, type Manifest, type ManifestFor, type Task } from './manifest.js';
import { labelledProblem, recordProblem, unpacker, withDefaults, type LabelledRecord, type StoredRecord, type TokenRecord } from './records.js';

export type Verify = 'checksum' | 'size' | 'none';

export interface OrderOptions {
  shuffle?: boolean;
  seed?: number;
  epoch?: number;
  /** This process's rank and the number of ranks: rank r gets positions r, r + w, r + 2w, … */
  rank?: number;
  worldSize?: number;
}

export interface IterateOptions extends OrderOptions {
  /** Skip this many of this rank's records first (resuming mid-epoch). */
  start?: number;
}

/** The record a task's data set yields. */
export type RecordFor<T extends Task> = T extends 'classification' ? LabelledRecord : TokenRecord;

export interface PositionedRecord<R = TokenRecord> {
  record: R;
  shard: number;
  index: number;
  /** Position in this rank's order for the epoch. */
  position: number;
}

export class LoadedShard<T extends Task = 'causal_lm'> {
  constructor(readonly file: string, private readonly stored: readonly object[], private readonly task: T) {}
  get length(): number {
    return this.stored.length;
  }
  get(index: number): RecordFor<T> {
    const r = this.stored[index];
    if (!r) throw new RangeError(`record ${index} out of range (shard has ${this.stored.length})`);
    return (this.task === 'classification' ? r : withDefaults(r as StoredRecord)) as RecordFor<T>;
  }
}

/** Opens a shard directory of either task; see requireTask. */
export async function openShards(dir: string, options: { verify?: Verify } = {}): Promise<ShardDataset<Task>> {
  const verify = options.verify ?? 'checksum';
  const path = join(dir, MANIFEST_FILE);
  const isDir = await stat(dir).then((s) => s.isDirectory(), () => undefined);
  if (isDir === undefined) throw new ToolError(`${dir}: no such directory`);
  if (!isDir) throw new ToolError(`${dir}: not a directory (expected record shards written by bpe-encode)`);
  if (!(await stat(path).then(() => true, () => false))) {
    throw new ToolError(`${dir}: no ${MANIFEST_FILE}, so the data set is incomplete (was bpe-encode interrupted?)`);
  }
  const manifest = validateManifest(await readJsonFile(path), path);
  if (verify !== 'none') await checkSizes(dir, manifest);
  return new ShardDataset<Task>(dir, manifest, verify);
}

/** Every shard the manifest lists is there, of its size. */
async function checkSizes(dir: string, manifest: Manifest): Promise<void> {
  for (const shard of manifest.shards) {
    const path = join(dir, shard.file);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ToolError(`${path}: shard is missing`);
      throw fsError(err, path);
    }
    if (size !== shard.bytes) {
      throw new ToolError(`${path}: shard is ${size} bytes, the manifest says ${shard.bytes} (${size < shard.bytes ? 'truncated' : 'altered'})`);
    }
  }
}

/** What each task's data is and how it is made, for requireTask's message. */
function holds(dataset: ShardDataset<Task>): string {
  const m = dataset.manifest;
  return m.task === 'classification'
    ? `classification records (${m.num_labels} labels: ${m.labels.slice(0, 4).join(', ')}${m.num_labels > 4 ? ', …' : ''})`
    : `causal-LM records (blocks of ${m.block_size} tokens)`;
}
const MADE_BY: Record<Task, string> = {
  causal_lm: 'text encoded without --label-column (bpe-encode --block-size N)',
  classification: 'labelled rows (bpe-encode --input-format tsv|csv|jsonl --label-column …)',
};

/**
 * The data set as `task`'s, or a one-line error naming the directory, what it holds, `what`
 * wanted it and what that needs: "data/x holds classification records (2 labels: 0, 1); a causal
 * LM trains on text encoded without --label-column (…)".
 */
export function requireTask<T extends Task>(dataset: ShardDataset<Task>, task: T, what: string): ShardDataset<T> {
  if (dataset.task === task) return dataset as unknown as ShardDataset<T>;
  throw new ToolError(`${dataset.dir} holds ${holds(dataset)}; ${what} needs ${MADE_BY[task]}`);
}

export class ShardDataset<T extends Task = 'causal_lm'> {
  /** Use openShards() (any task) or ShardDataset.open() (causal LM). */
  constructor(readonly dir: string, readonly manifest: ManifestFor<T>, private readonly verify: Verify) {}

  /** Opens causal-LM data, refusing classification records. */
  static async open(dir: string, options: { verify?: Verify } = {}): Promise<ShardDataset<'causal_lm'>> {
    return requireTask(await openShards(dir, options), 'causal_lm', 'a causal LM');
  }

  get task(): T {
    return this.manifest.task as T;
  }

  /** Fails unless the ids were made by this tokenizer (same vocab.json + merges.txt bytes). */
  requireTokenizer(identity: TokenizerIdentity, what = 'the tokenizer'): void {
    const t = this.manifest.tokenizer;
    if (t.sha256 !== identity.sha256) {
      throw new ToolError(`${this.dir}: encoded with tokenizer ${t.name} (vocab ${t.vocab_size}, sha256 ${t.sha256.slice(0, 12)}…), not ${what} ${identity.name} (vocab ${identity.vocab_size}, sha256 ${identity.sha256.slice(0, 12)}…)`);
    }
  }

  get numRecords(): number {
    return this.manifest.totals.records;
  }

  /** Tokens per record (causal LM); the most a record holds (classification). */
  get blockSize(): number {
    const m = this.manifest as Manifest;
    return m.task === 'classification' ? m.max_length : m.block_size;
  }

  /** Reads, verifies and decodes shard k. */
  async loadShard(k: number): Promise<LoadedShard<T>> {
    const shard = this.manifest.shards[k];
    if (!shard) throw new RangeError(`shard ${k} out of range`);
    const path = join(this.dir, shard.file);
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ToolError(`${path}: shard is missing`);
      throw fsError(err, path);
    }
    if (this.verify !== 'none' && data.length !== shard.bytes) {
      throw new ToolError(`${path}: shard is ${data.length} bytes, the manifest says ${shard.bytes}`);
    }
    if (this.verify === 'checksum' && createHash('sha256').update(data).digest('hex') !== shard.sha256) {
      throw new ToolError(`${path}: checksum mismatch (the shard was altered or corrupted)`);
    }
    let stored: object[];
    try {
      stored = data.length === 0 ? [] : (unpacker.unpackMultiple(data) as object[]);
    } catch (err) {
      throw new ToolError(`${path}: cannot decode records (${(err as Error).message})`);
    }
    this.checkRecords(stored, path, shard.records);
    return new LoadedShard(shard.file, stored, this.task);
  }

  private checkRecords(stored: object[], path: string, expected: number): void {
    if (stored.length !== expected) throw new ToolError(`${path}: holds ${stored.length} records, the manifest says ${expected}`);
    const m = this.manifest as Manifest;
    const [dtype, vocabSize] = [m.id_dtype, m.tokenizer.vocab_size];
    const problem =
      m.task === 'classification'
        ? (r: object) => labelledProblem(r as LabelledRecord, { maxLength: m.max_length, dtype, vocabSize, numLabels: m.num_labels })
        : (r: object) => recordProblem(r as StoredRecord, { blockSize: m.block_size, dtype, vocabSize });
    stored.forEach((r, i) => {
      const bad = problem(r);
      if (bad !== undefined) throw new ToolError(`${path}: record ${i}: ${bad}`);
    });
  }

  /** Verifies every shard's checksum now (bpe-encode --inspect). */
  async verifyAll(): Promise<void> {
    for (let k = 0; k < this.manifest.shards.length; k++) await this.loadShard(k);
  }

  /** This rank's order for an epoch, as [shard, index] pairs packed into one array. */
  order(options: OrderOptions = {}): { shard: Uint32Array; index: Uint32Array } {
    const { shuffle = false, seed = 0, epoch = 0, rank = 0, worldSize = 1 } = options;
    if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new RangeError(`rank ${rank} / world size ${worldSize}`);
    }
    const shards = this.manifest.shards;
    const shardOrder = Uint32Array.from(shards.keys());
    const rng = new Rng(seed, epoch);
    if (shuffle) rng.shuffle(shardOrder);
    const total = this.numRecords;
    const mine = Math.floor(total / worldSize) + (rank < total % worldSize ? 1 : 0);
    const shard = new Uint32Array(mine);
    const index = new Uint32Array(mine);
    let global = 0;
    let n = 0;
    for (const k of shardOrder) {
      const within = Uint32Array.from({ length: shards[k].records }, (_, i) => i);
      if (shuffle) rng.shuffle(within);
      for (const i of within) {
        if (global++ % worldSize === rank) {
          shard[n] = k;
          index[n++] = i;
        }
      }
    }
    return { shard, index };
  }

  /** Records in this rank's order, loading one shard at a time. */
  async *iterate(options: IterateOptions = {}): AsyncGenerator<PositionedRecord<RecordFor<T>>> {
    const { shard, index } = this.order(options);
    let loaded: LoadedShard<T> | undefined;
    let loadedK = -1;
    for (let p = options.start ?? 0; p < shard.length; p++) {
      if (shard[p] !== loadedK) {
        loadedK = shard[p];
        loaded = await this.loadShard(loadedK);
      }
      yield { record: loaded!.get(index[p]), shard: shard[p], index: index[p], position: p };
    }
  }
}
