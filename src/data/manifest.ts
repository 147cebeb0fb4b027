/**
 * manifest.json of a record-shard directory: written last, so a directory without one is
 * incomplete and every reader refuses it. It names the format and version, the tokenizer the ids
 * belong to, the block size, and every shard's size and sha256.
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

export interface Manifest {
  format: string;
  version: number;
  tokenizer: TokenizerIdentity;
  /** Tokens per record. */
  block_size: number;
  id_dtype: IdDtype;
  /** Fields records may carry; input_ids always, attention_mask only if some record is padded. */
  fields: string[];
  doc_separator: string;
  pad_id: number;
  shards: ShardInfo[];
  totals: { records: number; tokens: number; bytes: number; documents: number; input_bytes: number };
  created_by: { tool: string; version: string; command: string[] };
}

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
  int(m.block_size, 'block_size', 2);
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
  return m as unknown as Manifest;
}
