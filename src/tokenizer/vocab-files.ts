/**
 * Parses and validates a Hugging Face GPT-2 tokenizer (vocab.json + merges.txt) into the tables
 * the encoder needs, working on bytes: JSON.parse plus a Map of 50k strings costs ~0.4 s on our
 * machines, this costs a few tens of ms (it runs again in every worker thread).
 * Every malformed input is a ToolError naming the file and, where known, the line.
 */
import { createHash } from 'node:crypto';
import { BYTE_TO_CHAR, CHAR_TO_BYTE, tokenStringToBytes } from './bytes.js';
import { PairTable } from './pair-table.js';
import type { PieceCacheParts } from './piece-cache.js';
import { TokenTable } from './token-table.js';
import { ToolError } from '../util/errors.js';

export interface VocabTables {
  /** Number of ids (max id + 1). */
  readonly vocabSize: number;
  /** id → raw bytes of the token (empty for ids the vocabulary does not use). */
  readonly tokenBytes: readonly Uint8Array[];
  /** bytes → id. */
  readonly table: TokenTable;
  /** (left id, right id) → rank of their concatenation, for the BPE loop. */
  readonly pairs: PairTable;
  /** byte → id of the single-byte token. */
  readonly byteToId: Int32Array;
  /** id → merge rank (index in merges.txt) of the first merge producing it; -1 when none does. */
  readonly rankOf: Int32Array;
  /** Literal text of special tokens (in the vocabulary, neither a byte nor a merge result) → id. */
  readonly specials: ReadonlyMap<string, number>;
  /** sha256 of vocab.json bytes followed by merges.txt bytes: the tokenizer's identity. */
  readonly sha256: string;
  /** A piece cache to start from (the compiled image carries one: see seedPieceCache). */
  readonly seedCache?: PieceCacheParts;
}

export interface VocabSources {
  vocab: Uint8Array | string;
  merges: Uint8Array | string;
  /** Names used in error messages (file paths). */
  vocabName?: string;
  mergesName?: string;
}

const asBytes = (data: Uint8Array | string): Uint8Array =>
  typeof data === 'string' ? Buffer.from(data, 'utf8') : data;

export function tokenizerSha256(vocab: Uint8Array | string, merges: Uint8Array | string): string {
  return createHash('sha256').update(asBytes(vocab)).update(asBytes(merges)).digest('hex');
}

export function parseVocabFiles(src: VocabSources): VocabTables {
  const vocabName = src.vocabName ?? 'vocab.json';
  const mergesName = src.mergesName ?? 'merges.txt';
  const vocabBytes = asBytes(src.vocab);
  const entries = parseVocabJson(vocabBytes, vocabName);

  let maxId = -1;
  for (const [, id] of entries) if (id > maxId) maxId = id;
  const vocabSize = maxId + 1;
  const tokenBytes = new Array<Uint8Array>(vocabSize).fill(EMPTY);
  const names = new Array<string | undefined>(vocabSize);
  for (const [token, id] of entries) {
    if (names[id] !== undefined) {
      throw new ToolError(`${vocabName}: id ${id} is used by both ${JSON.stringify(names[id])} and ${JSON.stringify(token)}`);
    }
    if (token.length === 0) throw new ToolError(`${vocabName}: empty token string for id ${id}`);
    names[id] = token;
    // Tokens outside the byte alphabet can only be added special tokens; they keep their UTF-8 text.
    tokenBytes[id] = tokenStringToBytes(token) ?? Buffer.from(token, 'utf8');
  }
  const table = TokenTable.build(tokenBytes);

  const byteToId = new Int32Array(256);
  for (let b = 0; b < 256; b++) {
    const id = table.find(Uint8Array.of(b), 0, 1);
    if (id < 0) {
      throw new ToolError(`${vocabName}: missing the single-byte token ${JSON.stringify(BYTE_TO_CHAR[b])} (byte 0x${b.toString(16).padStart(2, '0')}); not a byte-level BPE vocabulary`);
    }
    byteToId[b] = id;
  }

  const rankOf = parseMerges(asBytes(src.merges), mergesName, table, vocabSize);

  const specials = new Map<string, number>();
  const isByte = new Uint8Array(vocabSize);
  for (let b = 0; b < 256; b++) isByte[byteToId[b]] = 1;
  for (let id = 0; id < vocabSize; id++) {
    if (names[id] !== undefined && !isByte[id] && rankOf[id] < 0) {
      specials.set(Buffer.from(tokenBytes[id]).toString('utf8'), id);
    }
  }

  const pairs = PairTable.build(tokenBytes, rankOf, table);
  return { vocabSize, tokenBytes, table, pairs, byteToId, rankOf, specials, sha256: tokenizerSha256(vocabBytes, src.merges) };
}

const EMPTY = new Uint8Array(0);

/**
 * [token, id] pairs of vocab.json. A flat object of strings to integers is scanned directly;
 * anything the scanner does not expect goes through JSON.parse, which also words the errors.
 */
function parseVocabJson(bytes: Uint8Array, name: string): [string, number][] {
  const fast = scanFlatJsonObject(bytes);
  const entries = fast ?? parseVocabJsonSlow(bytes, name);
  if (entries.length === 0) throw new ToolError(`${name}: the vocabulary is empty`);
  for (const [token, id] of entries) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 16_777_215) {
      throw new ToolError(`${name}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}, expected an integer in [0, 16777215]`);
    }
  }
  return entries;
}

function parseVocabJsonSlow(bytes: Uint8Array, name: string): [string, number][] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8').decode(bytes)); // (TextDecoder drops a BOM)
  } catch (err) {
    throw new ToolError(`${name}: not valid JSON (${(err as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ToolError(`${name}: expected a JSON object mapping token strings to ids`);
  }
  return Object.entries(parsed as Record<string, number>);
}

/** Scans `{"tok": 12, ...}`; returns null on anything else (escapes other than \" \\ \/ \uXXXX included). */
function scanFlatJsonObject(b: Uint8Array): [string, number][] | null {
  const out: [string, number][] = [];
  const text = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  let i = 0;
  const ws = () => {
    while (i < b.length && (b[i] === 0x20 || b[i] === 0x0a || b[i] === 0x0d || b[i] === 0x09)) i++;
  };
  ws();
  if (b[i++] !== 0x7b) return null; // {
  ws();
  if (b[i] === 0x7d) return out;
  for (;;) {
    ws();
    if (b[i++] !== 0x22) return null; // "
    const start = i;
    let escaped = false;
    while (i < b.length && b[i] !== 0x22) {
      if (b[i] === 0x5c) {
        escaped = true;
        i++;
      }
      i++;
    }
    if (i >= b.length) return null;
    let key = text.toString('utf8', start, i);
    if (escaped) {
      try {
        key = JSON.parse(`"${key}"`) as string;
      } catch {
        return null;
      }
    }
    i++;
    ws();
    if (b[i++] !== 0x3a) return null; // :
    ws();
    let id = 0;
    const digits = i;
    while (i < b.length && b[i] >= 0x30 && b[i] <= 0x39) id = id * 10 + (b[i++] - 0x30);
    if (i === digits || i - digits > 9) return null;
    out.push([key, id]);
    ws();
    const c = b[i++];
    if (c === 0x7d) break; // }
    if (c !== 0x2c) return null; // ,
  }
  ws();
  return i === b.length ? out : null;
}

/** rankOf[id] for every token a merge produces, validating every line of merges.txt. */
function parseMerges(b: Uint8Array, name: string, table: TokenTable, vocabSize: number): Int32Array {
  const rankOf = new Int32Array(vocabSize).fill(-1);
  const text = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const scratch = new Uint8Array(1024);
  let rank = 0;
  let line = 0;
  for (let start = 0; start < b.length; ) {
    let end = b.indexOf(0x0a, start);
    if (end < 0) end = b.length;
    line++;
    const stop = end > start && b[end - 1] === 0x0d ? end - 1 : end;
    const lineStart = start;
    start = end + 1;
    if (stop === lineStart) continue;
    if (line === 1 && b[lineStart] === 0x23 /* # */ && text.toString('latin1', lineStart, lineStart + 8) === '#version') continue;
    const raw = () => JSON.stringify(text.toString('utf8', lineStart, Math.min(stop, lineStart + 80)));
    // Decode the byte-alphabet characters of "a b" straight to token bytes.
    let n = 0;
    let split = -1;
    for (let k = lineStart; k < stop; ) {
      const c0 = b[k];
      let code: number;
      if (c0 < 0x80) {
        code = c0;
        k++;
      } else if ((c0 & 0xe0) === 0xc0 && k + 1 < stop) {
        code = ((c0 & 0x1f) << 6) | (b[k + 1] & 0x3f);
        k += 2;
      } else {
        throw new ToolError(`${name}:${line}: character outside GPT-2's byte alphabet in ${raw()}`);
      }
      if (code === 0x20) {
        if (split >= 0) throw new ToolError(`${name}:${line}: expected two tokens separated by one space, found ${raw()}`);
        split = n;
        continue;
      }
      const byte = code < 512 ? CHAR_TO_BYTE[code] : -1;
      if (byte < 0) throw new ToolError(`${name}:${line}: character outside GPT-2's byte alphabet in ${raw()}`);
      if (n === scratch.length) throw new ToolError(`${name}:${line}: merge longer than ${scratch.length} bytes`);
      scratch[n++] = byte;
    }
    if (split <= 0 || split >= n) throw new ToolError(`${name}:${line}: expected two tokens separated by one space, found ${raw()}`);
    const part = (k: number) => JSON.stringify(text.toString('utf8', lineStart, stop).split(' ')[k]);
    if (table.find(scratch, 0, split) < 0) throw new ToolError(`${name}:${line}: token ${part(0)} is not in the vocabulary`);
    if (table.find(scratch, split, n) < 0) throw new ToolError(`${name}:${line}: token ${part(1)} is not in the vocabulary`);
    const merged = table.find(scratch, 0, n);
    if (merged < 0) throw new ToolError(`${name}:${line}: merge result ${JSON.stringify(text.toString('utf8', lineStart, stop).replace(' ', ''))} is not in the vocabulary`);
    // Several merges may spell the same token; like tiktoken, a token's rank is its first merge.
    if (rankOf[merged] < 0) rankOf[merged] = rank;
    rank++;
  }
  if (rank === 0) throw new ToolError(`${name}: no merges found`);
  return rankOf;
}
