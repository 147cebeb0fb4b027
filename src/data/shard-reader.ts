/**
 * Reading record shards for training and evaluation. open() refuses a directory without a
 * manifest (incomplete) or whose shards are missing or of the wrong size; a shard's sha256 is
 * checked when it is loaded (verify: 'checksum', the default). Records come in file order or in
 * a deterministic shuffled order (shards shuffled, then records within each shard, so only one
 * shard is in memory at a time), optionally sliced by rank for data-parallel runs.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fsError, ToolError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';
import { Rng } from '../util/rng.js';
import type { TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { MANIFEST_FILE, validateManifest, type Manifest } from './manifest.js';
import { recordProblem, unpacker, withDefaults, type StoredRecord, type TokenRecord } from './records.js';

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

export interface PositionedRecord {
  record: TokenRecord;
  shard: number;
  index: number;
  /** Position in this rank's order for the epoch. */
  position: number;
}

export class LoadedShard {
  constructor(readonly file: string, readonly stored: readonly StoredRecord[]) {}
  get length(): number {
    return this.stored.length;
  }
  get(index: number): TokenRecord {
    const r = this.stored[index];
    if (!r) throw new RangeError(`record ${index} out of range (shard has ${this.stored.length})`);
    return withDefaults(r);
  }
}

export class ShardDataset {
  private constructor(readonly dir: string, readonly manifest: Manifest, private readonly verify: Verify) {}

  static async open(dir: string, options: { verify?: Verify } = {}): Promise<ShardDataset> {
    const verify = options.verify ?? 'checksum';
    const path = join(dir, MANIFEST_FILE);
    const isDir = await stat(dir).then((s) => s.isDirectory(), () => undefined);
    if (isDir === undefined) throw new ToolError(`${dir}: no such directory`);
    if (!isDir) throw new ToolError(`${dir}: not a directory (expected record shards written by bpe-encode)`);
    if (!(await stat(path).then(() => true, () => false))) {
      throw new ToolError(`${dir}: no ${MANIFEST_FILE}, so the data set is incomplete (was bpe-encode interrupted?)`);
    }
    const manifest = validateManifest(await readJsonFile(path), path);
    const dataset = new ShardDataset(dir, manifest, verify);
    if (verify !== 'none') await dataset.checkSizes();
    return dataset;
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

  get blockSize(): number {
    return this.manifest.block_size;
  }

  private async checkSizes(): Promise<void> {
    for (const shard of this.manifest.shards) {
      const path = join(this.dir, shard.file);
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

  /** Reads, verifies and decodes shard k. */
  async loadShard(k: number): Promise<LoadedShard> {
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
    let stored: StoredRecord[];
    try {
      stored = data.length === 0 ? [] : (unpacker.unpackMultiple(data) as StoredRecord[]);
    } catch (err) {
      throw new ToolError(`${path}: cannot decode records (${(err as Error).message})`);
    }
    this.checkRecords(stored, path, shard.records);
    return new LoadedShard(shard.file, stored);
  }

  private checkRecords(stored: StoredRecord[], path: string, expected: number): void {
    if (stored.length !== expected) throw new ToolError(`${path}: holds ${stored.length} records, the manifest says ${expected}`);
    const shape = { blockSize: this.manifest.block_size, dtype: this.manifest.id_dtype, vocabSize: this.manifest.tokenizer.vocab_size };
    stored.forEach((r, i) => {
      const problem = recordProblem(r, shape);
      if (problem !== undefined) throw new ToolError(`${path}: record ${i}: ${problem}`);
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
  async *iterate(options: IterateOptions = {}): AsyncGenerator<PositionedRecord> {
    const { shard, index } = this.order(options);
    let loaded: LoadedShard | undefined;
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
