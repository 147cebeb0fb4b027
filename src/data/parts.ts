/**
 * bpe-encode split across processes or machines: `--part K/N` encodes the lines of one input file
 * whose first byte falls in the K-th of N equal byte slices (so every part is computed from the
 * same file alone) into a part directory; `--merge` joins parts 1…N into the data set a single
 * run on the whole file writes — the same shard bytes.
 *
 * A part cannot cut its own blocks: where the data set's block boundaries fall depends on how many
 * tokens every earlier part made. So a part hands over its token stream (ids.bin, raw little-endian
 * ids of the data set's dtype) with its document count and separator, and the merge joins the
 * streams — a separator between two parts' documents, as between any two documents — and writes
 * the shards through the same writer as a single run. Merging streams 2 bytes a token through a
 * few MiB of memory; the tokenising, the expensive part, is what the parts share out.
 *
 * part.json names the input (size and sha256 of the whole file, which every part hashes) and every
 * option that shapes the ids or the records; the merge refuses parts that disagree in any, a part
 * missing or twice, and an ids.bin whose size or sha256 is not its part.json's.
 */
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { commitWithJson, ownedEntries, stageDir, type Replaceable, type StagedDir } from '../util/atomic-dir.js';
import { fsError, ToolError, UsageError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';
import { sha256OfFile } from '../util/sha256-file.js';
import { orderedParts, partName, parsePart, type PartSpec } from '../util/parts.js';
import { DatasetWriter } from './dataset-writer.js';
import { IdsFileWriter, idWidth, readIdsFile, type TokenIds } from './ids-file.js';
import type { CausalLmManifest, IdDtype } from './manifest.js';
import type { DatasetSpec } from './shard-writer.js';

const PART_FILE = 'part.json';
const IDS_FILE = 'ids.bin';
const PART_FORMAT = 'gpt2-toolchain.records-part';

/** The input a part was cut from. */
export interface PartInput {
  file: string;
  bytes: number;
  sha256: string;
}

export interface PartManifest {
  format: typeof PART_FORMAT;
  version: 1;
  part: string;
  input: PartInput;
  /** The part's bytes of the input: its lines, [start, end). */
  slice: { start: number; end: number };
  /** Everything that shapes the ids or the records; equal in every part of one run. */
  options: {
    block_size: number;
    doc_separator: string;
    keep_tail: boolean;
    pad_id: number;
    id_dtype: IdDtype;
    tokenizer: DatasetSpec['tokenizer'];
    plan: DatasetSpec['plan'];
    lossy: boolean;
    allow_special: boolean;
    /** The ids between two documents. */
    separator: number[];
  };
  documents: number;
  tokens: number;
  ids: { file: string; bytes: number; sha256: string };
}

/** Size and sha256 of a file. */
export async function fileIdentity(path: string): Promise<PartInput> {
  const bytes = (await stat(path).catch((err) => { throw fsError(err, path); })).size;
  return { file: basename(path), bytes, sha256: await sha256OfFile(path) };
}

/** What --overwrite may replace in part mode: a part directory bpe-encode wrote, never an input. */
export function replaceablePart(inputs: readonly string[]): Replaceable {
  const marked = async (dir: string) => ((await readJsonFile(join(dir, PART_FILE)).catch(() => undefined)) as { format?: unknown } | undefined)?.format === PART_FORMAT;
  return { inputs, foreign: ownedEntries('bpe-encode', (name) => (name === PART_FILE || name === IDS_FILE ? 'file' : undefined), PART_FILE, marked) };
}

/** What part.json records besides the ids: the part, its input and slice, and the options. */
export interface PartMeta {
  part: PartSpec;
  input: PartInput;
  slice: { start: number; end: number };
  spec: DatasetSpec;
  separator: number[];
  lossy: boolean;
  allowSpecial: boolean;
}

/** A part directory being written: ids.bin as the ids arrive, part.json at finish, atomically. */
export class PartWriter {
  private constructor(
    private readonly dir: string,
    private readonly staged: StagedDir,
    private readonly ids: IdsFileWriter,
  ) {}

  static async open(dir: string, dtype: IdDtype, overwrite?: Replaceable): Promise<PartWriter> {
    const staged = await stageDir(dir, { what: 'part directory', overwrite });
    try {
      return new PartWriter(dir, staged, await IdsFileWriter.create(join(staged.path, IDS_FILE), dtype, join(dir, IDS_FILE)));
    } catch (err) {
      await staged.abort();
      throw err;
    }
  }

  append(ids: TokenIds): Promise<void> {
    return this.ids.append(ids);
  }

  async finish(p: PartMeta): Promise<PartManifest> {
    try {
      const ids = await this.ids.close();
      const manifest: PartManifest = {
        format: PART_FORMAT,
        version: 1,
        part: partName(p.part),
        input: p.input,
        slice: p.slice,
        options: {
          block_size: p.spec.blockSize,
          doc_separator: p.spec.docSeparator,
          keep_tail: p.spec.keepTail,
          pad_id: p.spec.padId,
          id_dtype: p.spec.dtype,
          tokenizer: p.spec.tokenizer,
          plan: p.spec.plan,
          lossy: p.lossy,
          allow_special: p.allowSpecial,
          separator: p.separator,
        },
        documents: p.spec.documents,
        tokens: ids.tokens,
        ids: { file: IDS_FILE, bytes: ids.bytes, sha256: ids.sha256 },
      };
      await commitWithJson(this.staged, this.dir, PART_FILE, manifest);
      return manifest;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  async abort(): Promise<void> {
    await this.ids.discard();
    await this.staged.abort();
  }
}

async function readPart(dir: string): Promise<PartManifest> {
  const path = join(dir, PART_FILE);
  const m = (await readJsonFile(path)) as PartManifest | null;
  if (m?.format !== PART_FORMAT || m.version !== 1 || typeof m.part !== 'string' || !m.input || !m.options || !m.ids) {
    throw new ToolError(`${path}: not a part of bpe-encode --part (format "${PART_FORMAT}", version 1)`);
  }
  parsePart(m.part, `${path}: part`);
  if (m.ids.bytes !== m.tokens * idWidth(m.options.id_dtype)) throw new ToolError(`${path}: ${m.ids.bytes} bytes of ids cannot hold ${m.tokens} ${m.options.id_dtype} ids`);
  return m;
}

export interface MergeOptions {
  overwrite?: Replaceable;
  command?: string[];
  onWarning?: (message: string) => void;
  /** The bytes of ids.bin the merge will read, once the parts are checked; then the bytes read so far. */
  onTotal?: (bytes: number) => void;
  onBytes?: (bytes: number) => void;
}

/**
 * Parts 1…N of one run → the data set a single run writes. The parts' ids stream through (each
 * ids.bin checked against its part.json's size and sha256 as it is read); their total is known
 * from the part.json files, so --num-shards needs no spool.
 */
export async function mergeParts(dirs: readonly string[], out: string, options: MergeOptions = {}): Promise<CausalLmManifest> {
  if (dirs.length === 0) throw new UsageError('--merge needs the part directories');
  const parts = [];
  for (const dir of dirs) parts.push({ dir, manifest: await readPart(dir) });
  const ordered = orderedParts(parts, (p) => p.manifest.part, (p) => p.dir, (p, first) => {
    for (const key of ['input', 'options'] as const) {
      if (JSON.stringify(p.manifest[key]) !== JSON.stringify(first.manifest[key])) {
        throw new ToolError(`${p.dir}: its ${key} differ from ${first.dir}'s (${key === 'input' ? 'another input file' : 'other options'}): parts of different runs`);
      }
    }
  });
  const first = ordered[0].manifest;
  const o = first.options;
  // Separators go between documents: between two parts that have any.
  const withDocs = ordered.filter((p) => p.manifest.documents > 0);
  const totalTokens = withDocs.reduce((sum, p) => sum + p.manifest.tokens, 0) + Math.max(0, withDocs.length - 1) * o.separator.length;
  const spec = { blockSize: o.block_size, dtype: o.id_dtype, padId: o.pad_id, keepTail: o.keep_tail, tokenizer: o.tokenizer, docSeparator: o.doc_separator, plan: o.plan, command: options.command ?? [] };
  const writer = await DatasetWriter.open(out, spec, { overwrite: options.overwrite, totalTokens, onWarning: options.onWarning });
  options.onTotal?.(withDocs.reduce((sum, p) => sum + p.manifest.ids.bytes, 0));
  try {
    const separator = Uint32Array.from(o.separator);
    let read = 0;
    for (const [i, { dir, manifest: m }] of withDocs.entries()) {
      if (i > 0) await writer.append(separator);
      for await (const ids of readIdsFile(join(dir, m.ids.file), o.id_dtype, { bytes: m.ids.bytes, sha256: m.ids.sha256, what: PART_FILE })) {
        await writer.append(ids);
        options.onBytes?.((read += ids.byteLength));
      }
    }
  } catch (err) {
    await writer.abort();
    throw err;
  }
  return writer.finish({ documents: ordered.reduce((sum, p) => sum + p.manifest.documents, 0), inputBytes: first.input.bytes });
}
