/**
 * bpe-encode's main job as a library function: documents (one per line) from files or stdin →
 * token stream (in parallel, order kept) → record shards + manifest.
 */
import { availableParallelism } from 'node:os';
import type { DocSeparator } from '../tokenizer/documents.js';
import { separatorIds } from '../tokenizer/documents.js';
import { createEncoderPool } from '../tokenizer/pool.js';
import { loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { UsageError } from '../util/errors.js';
import { readTextChunks, STDIN } from '../util/input.js';
import { dtypeForVocab, replaceableRecords, type CausalLmManifest, type IdDtype } from './manifest.js';
import type { ShardPlan } from './shard-writer.js';
import { checkOutputDir } from '../util/atomic-dir.js';

export interface EncodeDatasetOptions {
  files: string[];
  out: string;
  overwrite?: boolean;
  blockSize: number;
  docSeparator?: DocSeparator;
  keepTail?: boolean;
  /** Default: the tokenizer's <|endoftext|>. */
  padId?: number;
  plan?: ShardPlan;
  workers?: number;
  tokenizerDir?: string;
  allowSpecial?: boolean;
  lossy?: boolean;
  /** Input bytes per unit of work (default 256 KiB). */
  chunkBytes?: number;
  /** Total input size when known (files): large inputs start the worker threads at once. */
  expectedBytes?: number;
  command?: string[];
  onWarning?: (message: string) => void;
  onBytes?: (bytes: number) => void;
}

export const defaultWorkers = () => availableParallelism();

/** A growable id array in the data set's dtype (2 bytes a token for GPT-2, not 8 as a JS array). */
class TokenStream {
  data: Uint16Array | Int32Array;
  length = 0;
  constructor(readonly dtype: IdDtype) {
    this.data = dtype === 'uint16' ? new Uint16Array(1 << 16) : new Int32Array(1 << 16);
  }
  append(ids: Uint32Array): void {
    const need = this.length + ids.length;
    if (need > this.data.length) {
      let cap = this.data.length * 2;
      while (cap < need) cap *= 2;
      const next = this.dtype === 'uint16' ? new Uint16Array(cap) : new Int32Array(cap);
      next.set(this.data.subarray(0, this.length));
      this.data = next;
    }
    this.data.set(ids, this.length);
    this.length = need;
  }
}

export function checkBlockSize(blockSize: number): void {
  if (!Number.isSafeInteger(blockSize) || blockSize < 2 || blockSize > 2 ** 31 - 1) {
    throw new UsageError(`--block-size must be an integer in [2, 2147483647], got ${blockSize}`);
  }
}

export function checkPadId(tokenizer: Tokenizer, padId: number | undefined): number {
  const id = padId ?? tokenizer.eosId;
  if (id === undefined) throw new UsageError('the vocabulary has no <|endoftext|>; give --pad-id');
  if (!Number.isInteger(id) || id < 0 || id >= tokenizer.vocabSize) {
    throw new UsageError(`--pad-id ${id} is outside the vocabulary (size ${tokenizer.vocabSize})`);
  }
  return id;
}

export async function encodeDataset(options: EncodeDatasetOptions): Promise<CausalLmManifest> {
  checkBlockSize(options.blockSize);
  const inputs = [...options.files.filter((f) => f !== STDIN), ...(options.tokenizerDir ? [options.tokenizerDir] : [])];
  const overwrite = options.overwrite ? replaceableRecords(inputs) : undefined;
  await checkOutputDir(options.out, { overwrite });
  const docSeparator = options.docSeparator ?? 'eos';
  const workers = Math.max(1, options.workers ?? defaultWorkers());
  const chunkBytes = options.chunkBytes ?? 1 << 18;
  const setup = { tokenizerDir: options.tokenizerDir, docSeparator, allowSpecial: !!options.allowSpecial };
  // Threads first, so they boot while this thread loads the tokenizer and the shard writer.
  const eager = (options.expectedBytes ?? 0) > chunkBytes;
  let tokenizer: Tokenizer | undefined;
  const fromFiles = options.files.length > 0 && !options.files.includes(STDIN);
  const pool = createEncoderPool(workers, setup, { eager, tokenizer: () => tokenizer!, mainShare: fromFiles });
  let padId: number;
  let separator: number[];
  try {
    tokenizer = loadTokenizer(options.tokenizerDir);
    padId = checkPadId(tokenizer, options.padId);
    separator = separatorIds(tokenizer, docSeparator);
  } catch (err) {
    await pool.close();
    throw err;
  }
  const dtype = dtypeForVocab(tokenizer.vocabSize);
  const writer = import('./shard-writer.js'); // msgpackr and friends load while the threads work
  const stream = new TokenStream(dtype);
  let documents = 0;
  let inputBytes = 0;
  const collect = (chunks: { ids: Uint32Array; documents: number }[]) => {
    for (const c of chunks) {
      stream.append(c.ids);
      documents += c.documents;
    }
  };
  try {
    for await (const chunk of readTextChunks(options.files, { lossy: options.lossy, onWarning: options.onWarning, onBytes: options.onBytes, chunkBytes })) {
      inputBytes += chunk.bytes.length;
      await pool.submit(chunk);
      collect(pool.drain());
    }
    collect(await pool.finish());
  } finally {
    await pool.close();
  }
  if (documents > 0) stream.length -= separator.length; // separators go between documents
  if (documents === 0) options.onWarning?.('the input holds no documents; writing an empty data set');
  const { countRecords, writeDataset } = await writer;
  const records = countRecords(stream.length, options.blockSize, !!options.keepTail);
  if (documents > 0 && records === 0) {
    options.onWarning?.(`${stream.length} tokens make no block of ${options.blockSize}; writing an empty data set (--keep-tail keeps a padded partial block)`);
  }
  let plan = options.plan ?? {};
  if (plan.numShards !== undefined && plan.numShards > records) {
    options.onWarning?.(`--num-shards ${plan.numShards} is more than the ${records} records; writing ${records} shard${records === 1 ? '' : 's'}`);
    plan = { numShards: records };
  }
  const ids = stream.data.subarray(0, stream.length);
  return writeDataset(
    options.out,
    ids,
    {
      blockSize: options.blockSize,
      dtype,
      padId,
      keepTail: !!options.keepTail,
      tokenizer: tokenizer.identity,
      docSeparator,
      plan,
      documents,
      inputBytes,
      command: options.command ?? [],
    },
    overwrite,
  );
}
