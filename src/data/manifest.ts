/**
 * manifest.json of a record-shard directory: written last, so a directory without one is
 * incomplete and every reader refuses it. It names the format and version, the task, the tokenizer
 * the ids belong to, the record shape (a causal LM's block size; a classifier's max length and
 * label names), and every shard's size and sha256.
 *
 * Classification data came with `task`; the version stayed 1 because the change only adds: a
 * manifest without `task` is causal-LM data and reads as before, and a classification manifest has
 * no block_size, so a reader older than it refuses it instead of misreading it.
 */
import { join } from 'node:path';
import type { TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { ownedEntries, type Replaceable } from '../util/atomic-dir.js';
import { ToolError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';

export const MANIFEST_FILE = 'manifest.json';
export const RECORDS_FORMAT = 'gpt2-toolchain.records';
export const RECORDS_VERSION = 1;

export type IdDtype = 'uint16' | 'int32';

/** uint16 when every id fits, else int32. */
export const dtypeForVocab = (vocabSize: number): IdDtype => (vocabSize <= 65536 ? 'uint16' : 'int32');

export interface ShardInfo {
  file: string;
  records: number;
  /** Real (unpadded) tokens in the shard. */
  tokens: number;
  bytes: number;
  sha256: string;
}

/** What the records are for: token blocks for a causal LM, or labelled texts for a classifier. */
export type Task = 'causal_lm' | 'classification';
export const TASKS: readonly Task[] = ['causal_lm', 'classification'];

interface ManifestCommon {
  format: string;
  version: number;
  task: Task;
  tokenizer: TokenizerIdentity;
  id_dtype: IdDtype;
  /** Fields records carry: input_ids always; attention_mask if some LM block is padded; label for classification. */
  fields: string[];
  /** The id that pads: an LM's kept tail on disk; a classification batch in memory (never stored). */
  pad_id: number;
  shards: ShardInfo[];
  created_by: { tool: string; version: string; command: string[] };
}

export interface CausalLmManifest extends ManifestCommon {
  task: 'causal_lm';
  /** Tokens per record. */
  block_size: number;
  doc_separator: string;
  totals: { records: number; tokens: number; bytes: number; documents: number; input_bytes: number };
}

export interface ClassificationManifest extends ManifestCommon {
  task: 'classification';
  /** Each record holds 1 to max_length ids, unpadded (a batch pads to its longest record). */
  max_length: number;
  /** Which end --max-length cut from a longer text: 'right' keeps the start, 'left' the end. */
  truncation_side: 'right' | 'left';
  num_labels: number;
  /** Label names; a record's label is an index into this list. */
  labels: string[];
  totals: {
    records: number;
    tokens: number;
    bytes: number;
    input_bytes: number;
    /** Records per label id. */
    label_counts: number[];
    /** Records cut to max_length, and bad rows left out with --skip-bad. */
    truncated: number;
    skipped: number;
  };
}

export type Manifest = CausalLmManifest | ClassificationManifest;
export type ManifestFor<T extends Task> = T extends 'classification' ? ClassificationManifest : CausalLmManifest;

const SHARD_FILE = /^shard-\d{5,}\.msgpack$/;

/** What --overwrite may replace: a shard directory bpe-encode wrote (by its manifest), holding no input. */
export function replaceableRecords(inputs: readonly string[]): Replaceable {
  const marked = async (dir: string) => {
    const manifest = (await readJsonFile(join(dir, MANIFEST_FILE)).catch(() => undefined)) as { format?: unknown } | undefined;
    return manifest?.format === RECORDS_FORMAT;
  };
  return { inputs, foreign: ownedEntries('bpe-encode', (name) => (name === MANIFEST_FILE || SHARD_FILE.test(name) ? 'file' : undefined), MANIFEST_FILE, marked) };
}

/** Checks a parsed manifest's shape; `where` names the file in messages. */
export function validateManifest(value: unknown, where: string): Manifest {
  const fail = (what: string) => new ToolError(`${where}: ${what}`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw fail('expected a JSON object');
  const m = value as Record<string, unknown>;
  if (m.format !== RECORDS_FORMAT) throw fail(`not a record-shard manifest (format ${JSON.stringify(m.format)}, expected ${JSON.stringify(RECORDS_FORMAT)})`);
  if (m.version !== RECORDS_VERSION) {
    throw fail(`format version ${JSON.stringify(m.version)} is not supported (this version of gpt2-toolchain reads version ${RECORDS_VERSION}); re-encode the data with bpe-encode`);
  }
  const int = (v: unknown, name: string, min = 0) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw fail(`${name} must be an integer ≥ ${min}, found ${JSON.stringify(v)}`);
    return v;
  };
  // A manifest without a task predates classification data: token blocks for a causal LM.
  const task = m.task ?? 'causal_lm';
  if (!TASKS.includes(task as Task)) throw fail(`task must be ${TASKS.map((t) => JSON.stringify(t)).join(' or ')}, found ${JSON.stringify(m.task)}`);
  if (task === 'causal_lm') {
    int(m.block_size, 'block_size', 2);
  } else {
    int(m.max_length, 'max_length', 1);
    if (m.truncation_side !== 'right' && m.truncation_side !== 'left') throw fail(`truncation_side must be "right" or "left", found ${JSON.stringify(m.truncation_side)}`);
    int(m.num_labels, 'num_labels', 1);
    const labels = m.labels;
    if (!Array.isArray(labels) || labels.length !== m.num_labels || !labels.every((l) => typeof l === 'string')) {
      throw fail(`labels must be a list of num_labels (${m.num_labels}) names`);
    }
    if (new Set(labels).size !== labels.length) throw fail('labels must not repeat a name');
    if (!Array.isArray(m.fields) || !m.fields.includes('label')) throw fail('fields must list label');
    const counts = (m.totals as Record<string, unknown> | undefined)?.label_counts;
    if (!Array.isArray(counts) || counts.length !== m.num_labels || !counts.every((c) => Number.isSafeInteger(c) && c >= 0)) {
      throw fail(`totals.label_counts must be a list of num_labels (${m.num_labels}) counts`);
    }
  }
  int(m.pad_id, 'pad_id');
  if (m.id_dtype !== 'uint16' && m.id_dtype !== 'int32') throw fail(`id_dtype must be "uint16" or "int32", found ${JSON.stringify(m.id_dtype)}`);
  const tok = m.tokenizer as Record<string, unknown> | undefined;
  if (!tok || typeof tok.name !== 'string' || typeof tok.sha256 !== 'string') throw fail('tokenizer must have name, vocab_size and sha256');
  int(tok.vocab_size, 'tokenizer.vocab_size', 1);
  if (!Array.isArray(m.fields) || !m.fields.includes('input_ids')) throw fail('fields must list input_ids');
  if (!Array.isArray(m.shards)) throw fail('shards must be a list');
  const names = new Set<string>();
  m.shards.forEach((s: unknown, k: number) => {
    const shard = s as Record<string, unknown>;
    if (!shard || typeof shard.file !== 'string' || !/^[\w.-]+$/.test(shard.file) || shard.file.startsWith('.')) {
      throw fail(`shards[${k}].file must be a plain file name in the directory`);
    }
    if (names.has(shard.file)) throw fail(`shards[${k}].file ${shard.file} is listed twice`);
    names.add(shard.file);
    int(shard.records, `shards[${k}].records`);
    int(shard.tokens, `shards[${k}].tokens`);
    int(shard.bytes, `shards[${k}].bytes`);
    if (typeof shard.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(shard.sha256)) throw fail(`shards[${k}].sha256 must be 64 hex digits`);
  });
  return { ...m, task } as unknown as Manifest;
}
