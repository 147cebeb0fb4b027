/**
 * A causal LM's token stream → record shards + manifest, written as the ids arrive: ids fill one
 * block buffer, each full block is packed into the open shard's 4 MiB write buffer, and a shard is
 * closed once it holds its records. Memory stays a few MiB whatever the input (a 540 MB
 * WikiText-103 made a 240 MB id array before), and writing overlaps encoding.
 *
 * Shard sizes must be known as records arrive. With --shard-records (or the default ~64 MiB a
 * shard) they are; with --num-shards they depend on the total, so when the caller cannot say it
 * up front (a single run, before reading its input) the ids go to a spool file beside the shards
 * first and are cut from there at the end: 2 more bytes a token of disk traffic instead of memory.
 * A merge knows its total from the parts and writes directly.
 *
 * Everything goes into a staged directory (atomic-dir.ts), the manifest last: a failure or a kill
 * leaves nothing that looks complete.
 */
import { createHash, type Hash } from 'node:crypto';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { commitWithJson, stageDir, type Replaceable, type StagedDir } from '../util/atomic-dir.js';
import { fsError } from '../util/errors.js';
import { IdsFileWriter, readIdsFile, type TokenIds } from './ids-file.js';
import { MANIFEST_FILE, RECORDS_FORMAT, RECORDS_VERSION, type CausalLmManifest, type ShardInfo } from './manifest.js';
import { idArray, packer } from './records.js';
import { countRecords, createdBy, defaultShardRecords, shardName, shardSizes, type DatasetSpec } from './shard-writer.js';

/** What shapes the records; the counts (documents, input bytes) come at finish. */
export type StreamSpec = Omit<DatasetSpec, 'documents' | 'inputBytes'>;

export interface DatasetWriterOptions {
  overwrite?: Replaceable;
  /** The stream's length, when known before the first id (a merge): --num-shards then needs no spool. */
  totalTokens?: number;
  onWarning?: (message: string) => void;
}

const SPOOL = '.tokens.spool';
const WRITE_BYTES = 1 << 22;

/** Records into shard files of the sizes `capacity` gives, each hashed as it is written. */
class ShardFiles {
  readonly shards: ShardInfo[] = [];
  private file: { handle: FileHandle; name: string; hash: Hash; records: number; tokens: number; bytes: number } | undefined;
  private readonly buffer = Buffer.allocUnsafe(WRITE_BYTES);
  private used = 0;

  constructor(
    private readonly staged: string,
    private readonly shownDir: string,
    private readonly capacity: (shard: number) => number,
  ) {}

  async add(packed: Uint8Array, tokens: number): Promise<void> {
    if (!this.file) {
      const name = shardName(this.shards.length);
      const handle = await open(join(this.staged, name), 'wx').catch((err) => {
        throw fsError(err, join(this.shownDir, name));
      });
      this.file = { handle, name, hash: createHash('sha256'), records: 0, tokens: 0, bytes: 0 };
    }
    const f = this.file;
    f.hash.update(packed);
    f.records++;
    f.tokens += tokens;
    f.bytes += packed.length;
    if (this.used + packed.length > this.buffer.length) await this.flush();
    if (packed.length > this.buffer.length) await this.write(packed);
    else this.used += Buffer.from(packed.buffer, packed.byteOffset, packed.length).copy(this.buffer, this.used);
    if (f.records === this.capacity(this.shards.length)) await this.close();
  }

  private async flush(): Promise<void> {
    if (this.used > 0) await this.write(this.buffer.subarray(0, this.used));
    this.used = 0;
  }

  private async write(bytes: Uint8Array): Promise<void> {
    // writeFile goes on after a short write (a full disk then reports ENOSPC); write would not.
    await this.file!.handle.writeFile(bytes).catch((err) => {
      throw fsError(err, join(this.shownDir, this.file!.name));
    });
  }

  /** Ends the open shard, if any (the last of a --shard-records plan holds fewer). */
  async close(): Promise<void> {
    const f = this.file;
    if (!f) return;
    try {
      await this.flush();
      await f.handle.sync().catch((err) => {
        throw fsError(err, join(this.shownDir, f.name)); // what the file system defers to here (ENOSPC, EDQUOT)
      });
    } finally {
      await f.handle.close();
    }
    this.shards.push({ file: f.name, records: f.records, tokens: f.tokens, bytes: f.bytes, sha256: f.hash.digest('hex') });
    this.file = undefined;
  }

  async discard(): Promise<void> {
    await this.file?.handle.close().catch(() => {});
  }
}

/** Non-overlapping blocks of the stream, as records, into shards. */
class BlockCutter {
  private readonly block: Uint16Array | Int32Array;
  private filled = 0;
  padded = false;
  constructor(
    private readonly spec: StreamSpec,
    readonly shards: ShardFiles,
  ) {
    this.block = idArray(spec.dtype, spec.blockSize);
  }

  async append(ids: TokenIds): Promise<void> {
    const { block } = this;
    for (let at = 0; at < ids.length; ) {
      const n = Math.min(ids.length - at, block.length - this.filled);
      block.set(ids.subarray(at, at + n), this.filled);
      this.filled += n;
      at += n;
      if (this.filled === block.length) {
        await this.shards.add(packer.pack({ input_ids: block }), block.length);
        this.filled = 0;
      }
    }
  }

  /** The partial block at the end: dropped, or with keepTail padded and masked. */
  async finish(): Promise<void> {
    if (this.spec.keepTail && this.filled > 0) {
      const mask = new Uint8Array(this.block.length);
      mask.fill(1, 0, this.filled);
      this.block.fill(this.spec.padId, this.filled);
      this.padded = true;
      await this.shards.add(packer.pack({ input_ids: this.block, attention_mask: mask }), this.filled);
    }
    await this.shards.close();
  }
}

export class DatasetWriter {
  private tokens = 0;
  private cutter: BlockCutter | undefined;
  private spool: IdsFileWriter | undefined;

  private constructor(
    private readonly dir: string,
    private readonly staged: StagedDir,
    private readonly spec: StreamSpec,
    private readonly onWarning: (message: string) => void,
  ) {}

  /** Stages dir (see stageDir for what may be replaced) and readies it for the stream. */
  static async open(dir: string, spec: StreamSpec, options: DatasetWriterOptions = {}): Promise<DatasetWriter> {
    const staged = await stageDir(dir, { overwrite: options.overwrite });
    const writer = new DatasetWriter(dir, staged, spec, options.onWarning ?? (() => {}));
    try {
      if (spec.plan.numShards === undefined || options.totalTokens !== undefined) writer.cutter = writer.cutterFor(options.totalTokens ?? 0);
      else writer.spool = await IdsFileWriter.create(join(staged.path, SPOOL), spec.dtype, join(dir, SPOOL));
    } catch (err) {
      await staged.abort();
      throw err;
    }
    return writer;
  }

  /** Shards sized by the plan; --num-shards spreads the records a stream of `tokens` makes. */
  private cutterFor(tokens: number): BlockCutter {
    const { plan, blockSize, dtype, keepTail } = this.spec;
    let capacity = (_: number) => plan.shardRecords ?? defaultShardRecords(blockSize, dtype);
    if (plan.numShards !== undefined) {
      const records = countRecords(tokens, blockSize, keepTail);
      if (plan.numShards > records) {
        this.onWarning(`--num-shards ${plan.numShards} is more than the ${records} records; writing ${records} shard${records === 1 ? '' : 's'}`);
      }
      const sizes = shardSizes(records, { numShards: Math.min(plan.numShards, records) }, blockSize, dtype);
      capacity = (k) => sizes[k];
    }
    return new BlockCutter(this.spec, new ShardFiles(this.staged.path, this.dir, capacity));
  }

  async append(ids: TokenIds): Promise<void> {
    this.tokens += ids.length;
    await (this.cutter ?? this.spool!).append(ids);
  }

  /** Writes the last records and the manifest and puts the directory in place. */
  async finish(counts: { documents: number; inputBytes: number }): Promise<CausalLmManifest> {
    try {
      const { blockSize, keepTail } = this.spec;
      if (counts.documents === 0) this.onWarning('the input holds no documents; writing an empty data set');
      else if (countRecords(this.tokens, blockSize, keepTail) === 0) {
        this.onWarning(`${this.tokens} tokens make no block of ${blockSize}; writing an empty data set (--keep-tail keeps a padded partial block)`);
      }
      if (this.spool) {
        await this.spool.close();
        this.cutter = this.cutterFor(this.tokens);
        const path = join(this.staged.path, SPOOL);
        for await (const ids of readIdsFile(path, this.spec.dtype)) await this.cutter.append(ids);
        await rm(path);
      }
      const cutter = this.cutter!;
      await cutter.finish();
      const manifest = this.manifest(cutter.shards.shards, cutter.padded, counts);
      await commitWithJson(this.staged, this.dir, MANIFEST_FILE, manifest);
      return manifest;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  async abort(): Promise<void> {
    await this.spool?.discard();
    await this.cutter?.shards.discard();
    await this.staged.abort();
  }

  private manifest(shards: ShardInfo[], padded: boolean, counts: { documents: number; inputBytes: number }): CausalLmManifest {
    const s = this.spec;
    const sum = (key: 'records' | 'tokens' | 'bytes') => shards.reduce((a, x) => a + x[key], 0);
    return {
      format: RECORDS_FORMAT,
      version: RECORDS_VERSION,
      task: 'causal_lm',
      tokenizer: s.tokenizer,
      block_size: s.blockSize,
      id_dtype: s.dtype,
      fields: padded ? ['input_ids', 'attention_mask'] : ['input_ids'],
      doc_separator: s.docSeparator,
      pad_id: s.padId,
      shards,
      totals: { records: sum('records'), tokens: sum('tokens'), bytes: sum('bytes'), documents: counts.documents, input_bytes: counts.inputBytes },
      created_by: createdBy(s.command),
    };
  }
}

/** A whole stream held in memory (tests, benchmarks, small jobs) → a data set. */
export async function writeDataset(dir: string, ids: TokenIds, spec: DatasetSpec, overwrite?: Replaceable): Promise<CausalLmManifest> {
  const writer = await DatasetWriter.open(dir, spec, { overwrite, totalTokens: ids.length });
  try {
    await writer.append(ids);
  } catch (err) {
    await writer.abort();
    throw err;
  }
  return writer.finish({ documents: spec.documents, inputBytes: spec.inputBytes });
}
