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
 * the shards through the same writer as a single run. Merging reads and writes 2 bytes a token;
 * the tokenising, the expensive part, is what the parts share out.
 *
 * part.json names the input (size and sha256 of the whole file, which every part hashes) and every
 * option that shapes the ids or the records; the merge refuses parts that disagree in any, a part
 * missing or twice, and an ids.bin whose size or sha256 is not its part.json's.
 */
import { createHash } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ownedEntries, stageDir, type Replaceable } from '../util/atomic-dir.js';
import { fsError, ToolError, UsageError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';
import { sha256OfFile } from '../util/sha256-file.js';
import { orderedParts, partName, parsePart, type PartSpec } from '../util/parts.js';
import type { CausalLmManifest, IdDtype } from './manifest.js';
import { writeStream, type DatasetSpec } from './shard-writer.js';

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

export interface PartData {
  part: PartSpec;
  input: PartInput;
  slice: { start: number; end: number };
  spec: DatasetSpec;
  separator: number[];
  ids: Uint16Array | Int32Array;
  lossy: boolean;
  allowSpecial: boolean;
}

const littleEndian = (ids: Uint16Array | Int32Array) => Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength); // the host is little-endian (x86, arm64)

/** Writes a part directory atomically: ids.bin, then part.json. */
export async function writePart(dir: string, p: PartData, overwrite?: Replaceable): Promise<PartManifest> {
  const bytes = littleEndian(p.ids);
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
    tokens: p.ids.length,
    ids: { file: IDS_FILE, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') },
  };
  const staged = await stageDir(dir, { what: 'part directory', overwrite });
  try {
    await writeFile(join(staged.path, IDS_FILE), bytes).catch((err) => { throw fsError(err, join(dir, IDS_FILE)); });
    await writeFile(join(staged.path, PART_FILE), `${JSON.stringify(manifest, null, 2)}\n`).catch((err) => { throw fsError(err, join(dir, PART_FILE)); });
    await staged.commit();
  } catch (err) {
    await staged.abort();
    throw err;
  }
  return manifest;
}

async function readPart(dir: string): Promise<{ manifest: PartManifest; ids: Uint16Array | Int32Array }> {
  const path = join(dir, PART_FILE);
  const m = (await readJsonFile(path)) as PartManifest | null;
  if (m?.format !== PART_FORMAT || m.version !== 1 || typeof m.part !== 'string' || !m.input || !m.options || !m.ids) {
    throw new ToolError(`${path}: not a part of bpe-encode --part (format "${PART_FORMAT}", version 1)`);
  }
  parsePart(m.part, `${path}: part`);
  const idsPath = join(dir, m.ids.file);
  const bytes = await readFile(idsPath).catch((err) => { throw fsError(err, idsPath); });
  if (bytes.length !== m.ids.bytes || createHash('sha256').update(bytes).digest('hex') !== m.ids.sha256) {
    throw new ToolError(`${idsPath}: size or sha256 is not what ${PART_FILE} says (altered or incomplete)`);
  }
  const width = m.options.id_dtype === 'uint16' ? 2 : 4;
  if (bytes.length !== m.tokens * width) throw new ToolError(`${idsPath}: ${bytes.length} bytes, ${PART_FILE} says ${m.tokens} ${m.options.id_dtype} ids`);
  const copy = new Uint8Array(bytes).buffer; // aligned for the typed array
  return { manifest: m, ids: width === 2 ? new Uint16Array(copy) : new Int32Array(copy) };
}

export interface MergeOptions {
  overwrite?: Replaceable;
  command?: string[];
  onWarning?: (message: string) => void;
}

/** Parts 1…N of one run → the data set a single run writes. */
export async function mergeParts(dirs: readonly string[], out: string, options: MergeOptions = {}): Promise<CausalLmManifest> {
  if (dirs.length === 0) throw new UsageError('--merge needs the part directories');
  const parts = [];
  for (const dir of dirs) parts.push({ dir, ...(await readPart(dir)) });
  const ordered = orderedParts(parts, (p) => p.manifest.part, (p) => p.dir, (p, first) => {
    for (const key of ['input', 'options'] as const) {
      if (JSON.stringify(p.manifest[key]) !== JSON.stringify(first.manifest[key])) {
        throw new ToolError(`${p.dir}: its ${key} differ from ${first.dir}'s (${key === 'input' ? 'another input file' : 'other options'}): parts of different runs`);
      }
    }
  });
  const first = ordered[0];
  const o = first.manifest.options;
  const withDocs = ordered.filter((p) => p.manifest.documents > 0);
  const length = withDocs.reduce((sum, p) => sum + p.ids.length, 0) + Math.max(0, withDocs.length - 1) * o.separator.length;
  const ids = o.id_dtype === 'uint16' ? new Uint16Array(length) : new Int32Array(length);
  let at = 0;
  withDocs.forEach((p, i) => {
    if (i > 0) {
      ids.set(o.separator, at);
      at += o.separator.length;
    }
    ids.set(p.ids, at);
    at += p.ids.length;
  });
  const spec: DatasetSpec = {
    blockSize: o.block_size,
    dtype: o.id_dtype,
    padId: o.pad_id,
    keepTail: o.keep_tail,
    tokenizer: o.tokenizer,
    docSeparator: o.doc_separator,
    plan: o.plan,
    documents: ordered.reduce((sum, p) => sum + p.manifest.documents, 0),
    inputBytes: first.manifest.input.bytes,
    command: options.command ?? [],
  };
  return writeStream(out, ids, spec, options.overwrite, options.onWarning);
}
