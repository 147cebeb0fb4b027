/**
 * bpe-encode's main job as a library function: documents (one per line) from files or stdin →
 * token stream (in parallel, order kept) → record shards + manifest; or, with a part, one slice
 * of a file's lines → a part directory that parts.ts merges with the others into the same shards.
 * Nothing holds the whole input or stream: chunks of lines go to the workers, their ids straight
 * to the writer (dataset-writer.ts, or a part's ids.bin), so memory is bounded whatever the size.
 */
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import type { DocSeparator } from '../tokenizer/documents.js';
import { separatorIds } from '../tokenizer/documents.js';
import { createEncoderPool, type EncodedChunk } from '../tokenizer/pool.js';
import { mainEncodes } from '../tokenizer/encoder-threads.js';
import { loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { fsError, UsageError } from '../util/errors.js';
import { lineRange, readTextChunks, STDIN } from '../util/input.js';
import { partRange, type PartSpec } from '../util/parts.js';
import { dtypeForVocab, replaceableRecords, type CausalLmManifest } from './manifest.js';
import { DatasetWriter } from './dataset-writer.js';
import { fileIdentity, PartWriter, replaceablePart, type PartInput, type PartManifest } from './parts.js';
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
  /** Encode only this part of the one input file, into a part directory (parts.ts). */
  part?: PartSpec;
  /** Called once with the bytes this run reads, when a part's slice makes it other than the files' size. */
  onInputBytes?: (bytes: number) => void;
}

/**
 * The one file a part reads, its line-aligned slice and its identity (size, sha256): the hash of
 * the whole file runs on its own thread while the part encodes, and is awaited at the end.
 */
async function partInput(files: readonly string[], part: PartSpec): Promise<{ spec: PartSpec; input: Promise<PartInput>; slice: { start: number; end: number } }> {
  if (files.length !== 1 || files[0] === STDIN) throw new UsageError('--part reads one input file (not standard input): every part must see the same bytes');
  const input = fileIdentity(files[0]);
  input.catch(() => {}); // awaited later; a failure then is the error
  const size = (await stat(files[0]).catch((err) => { throw fsError(err, files[0]); })).size;
  const bytes = partRange(part, size);
  return { spec: part, input, slice: await lineRange(files[0], bytes.start, bytes.end) };
}

export const defaultWorkers = () => availableParallelism();

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

export async function encodeDataset(options: Omit<EncodeDatasetOptions, 'part'>): Promise<CausalLmManifest> {
  return (await encode(options)) as CausalLmManifest;
}

/** One part of a split encoding (parts.ts): its slice of the one input file → a part directory. */
export async function encodePart(options: EncodeDatasetOptions & { part: PartSpec }): Promise<PartManifest> {
  return (await encode(options)) as PartManifest;
}

async function encode(options: EncodeDatasetOptions): Promise<CausalLmManifest | PartManifest> {
  checkBlockSize(options.blockSize);
  // A part (--part K/N): the lines of one file whose first byte falls in the K-th of N byte slices.
  const part = options.part && (await partInput(options.files, options.part));
  if (part) options.onInputBytes?.(part.slice.end - part.slice.start);
  const inputs = [...options.files.filter((f) => f !== STDIN), ...(options.tokenizerDir ? [options.tokenizerDir] : [])];
  const overwrite = options.overwrite ? (part ? replaceablePart(inputs) : replaceableRecords(inputs)) : undefined;
  await checkOutputDir(options.out, { overwrite });
  const docSeparator = options.docSeparator ?? 'eos';
  const workers = Math.max(1, options.workers ?? defaultWorkers());
  const chunkBytes = options.chunkBytes ?? 1 << 18;
  const setup = { tokenizerDir: options.tokenizerDir, docSeparator, allowSpecial: !!options.allowSpecial };
  // Threads first, so they boot while this thread loads the tokenizer and the shard writer.
  const eager = (options.expectedBytes ?? 0) > chunkBytes;
  let tokenizer: Tokenizer | undefined;
  const fromFiles = options.files.length > 0 && !options.files.includes(STDIN);
  const pool = createEncoderPool(workers, setup, { eager, tokenizer: () => tokenizer!, mainShare: mainEncodes(workers, !fromFiles), chunkBytes });
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
  const shape = { blockSize: options.blockSize, dtype, padId, keepTail: !!options.keepTail, tokenizer: tokenizer.identity, docSeparator, plan: options.plan ?? {}, command: options.command ?? [] };
  let sink: DatasetWriter | PartWriter;
  try {
    sink = part ? await PartWriter.open(options.out, dtype, overwrite) : await DatasetWriter.open(options.out, shape, { overwrite, onWarning: options.onWarning });
  } catch (err) {
    await pool.close();
    throw err;
  }
  // Every document comes with a separator after it; the stream keeps those between documents only.
  const separatorIds32 = Uint32Array.from(separator);
  let documents = 0;
  let inputBytes = 0;
  const collect = async (chunks: EncodedChunk[]) => {
    for (const c of chunks) {
      if (c.documents === 0) continue;
      if (documents > 0) await sink.append(separatorIds32);
      await sink.append(c.ids.subarray(0, c.ids.length - separator.length));
      documents += c.documents;
    }
  };
  try {
    for await (const chunk of readTextChunks(options.files, { lossy: options.lossy, onWarning: options.onWarning, onBytes: options.onBytes, chunkBytes, range: part?.slice })) {
      inputBytes += chunk.bytes.length;
      await pool.submit(chunk);
      await collect(pool.drain());
    }
    await collect(await pool.finish());
  } catch (err) {
    await sink.abort();
    throw err;
  } finally {
    await pool.close();
  }
  const spec = { ...shape, documents, inputBytes };
  if (sink instanceof PartWriter) {
    const input = await part!.input.catch(async (err: unknown) => {
      await sink.abort();
      throw err;
    });
    return sink.finish({ part: part!.spec, input, slice: part!.slice, spec, separator, lossy: !!options.lossy, allowSpecial: !!options.allowSpecial });
  }
  return sink.finish({ documents, inputBytes });
}
