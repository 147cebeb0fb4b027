/**
 * A causal LM's token stream → record shards + manifest, written as the ids arrive: ids fill one
 * block buffer, each full block goes as a record into the open shard's write buffers, and a shard is
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
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { commitWithJson, stageDir, type Replaceable, type StagedDir } from '../util/atomic-dir.js';
import { HashedFileWriter } from '../util/hashed-file-writer.js';
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

/**
 * Records into shard files of the sizes `capacity` gives. A full shard is closed (its last
 * writes, fsync: ~130 ms for 64 MiB) in the background while the next fills; a shard waits for
 * the close of the one before it to end before its own starts, so at most two are open.
 */
class ShardFiles {
  private readonly done: ShardInfo[] = [];
  /** The last close started (awaiting it throws its error). */
  private closing: Promise<void> = Promise.resolve();
  private file: { writer: HashedFileWriter; index: number; records: number; tokens: number } | undefined;
  private opened = 0;

  constructor(
    private readonly staged: string,
    private readonly shownDir: string,
    private readonly capacity: (shard: number) => number,
  ) {}

  /** Adds a record of `tokens` real tokens, written as the concatenation of `pieces`. */
  async add(pieces: Uint8Array[], tokens: number): Promise<void> {
    if (!this.file) {
      const index = this.opened;
      const name = shardName(index);
      this.file = { writer: await HashedFileWriter.create(join(this.staged, name), join(this.shownDir, name)), index, records: 0, tokens: 0 };
      this.opened++;
    }
    const f = this.file;
    for (const piece of pieces) await f.writer.write(piece);
    f.records++;
    f.tokens += tokens;
    if (f.records === this.capacity(f.index)) await this.close();
  }

  /** Starts ending the open shard, if any (the last of a --shard-records plan holds fewer), once the last close has ended. */
  private async close(): Promise<void> {
    const f = this.file;
    if (!f) return;
    await this.closing;
    this.file = undefined;
    this.closing = f.writer.close().then(({ bytes, sha256 }) => void this.done.push({ file: shardName(f.index), records: f.records, tokens: f.tokens, bytes, sha256 }));
    this.closing.catch(() => {}); // not unhandled while nobody awaits it yet
  }

  /** Every shard, once all are written and synced. */
  async finish(): Promise<ShardInfo[]> {
    await this.close();
    await this.closing;
    return this.done;
  }

  async discard(): Promise<void> {
    await this.closing.catch(() => {});
    await this.file?.writer.discard();
  }
}

/**
 * Non-overlapping blocks of the stream, as records, into shards. Every full block of a stream
 * packs to the same msgpack header before its ids, so msgpackr packs the first and the header is
 * reused for the rest (msgpackr per record was ~40% of the writer's time).
 */
class BlockCutter {
  private readonly block: Uint16Array | Int32Array;
  private readonly blockBytes: Uint8Array;
  private header: Uint8Array | undefined;
  private filled = 0;
  padded = false;
  constructor(
    private readonly spec: StreamSpec,
    readonly shards: ShardFiles,
  ) {
    this.block = idArray(spec.dtype, spec.blockSize);
    this.blockBytes = new Uint8Array(this.block.buffer); // the host is little-endian, as msgpackr writes
  }

  async append(ids: TokenIds): Promise<void> {
    const { block } = this;
    for (let at = 0; at < ids.length; ) {
      const n = Math.min(ids.length - at, block.length - this.filled);
      block.set(ids.subarray(at, at + n), this.filled);
      this.filled += n;
      at += n;
      if (this.filled === block.length) {
        this.header ??= headerOf(packer.pack({ input_ids: block }), this.blockBytes);
        await this.shards.add([this.header, this.blockBytes], block.length);
        this.filled = 0;
      }
    }
  }

  /** The partial block at the end: dropped, or with keepTail padded and masked. */
  async finish(): Promise<ShardInfo[]> {
    if (this.spec.keepTail && this.filled > 0) {
      const mask = new Uint8Array(this.block.length);
      mask.fill(1, 0, this.filled);
      this.block.fill(this.spec.padId, this.filled);
      this.padded = true;
      await this.shards.add([packer.pack({ input_ids: this.block, attention_mask: mask })], this.filled);
    }
    return this.shards.finish();
  }
}

/** What precedes `tail` in `packed`, which must end with exactly those bytes. */
function headerOf(packed: Uint8Array, tail: Uint8Array): Uint8Array {
  const header = packed.slice(0, packed.length - tail.length);
  if (!Buffer.from(packed.subarray(header.length)).equals(tail)) throw new Error('msgpackr no longer writes a typed array as its raw bytes last');
  return header;
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
      const shards = await cutter.finish();
      const manifest = this.manifest(shards, cutter.padded, counts);
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
