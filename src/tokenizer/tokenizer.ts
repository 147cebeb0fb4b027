/**
 * GPT-2 byte-level BPE tokenizer: HF files in, tiktoken-identical ids out. Pure TypeScript.
 *
 *   const tok = loadTokenizer();            // built-in GPT-2 vocabulary
 *   tok.encode('Hello world')               // [15496, 995]
 *   tok.decode([15496, 995])                // 'Hello world'
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpeMerger } from './bpe.js';
import { IdBuffer } from './id-buffer.js';
import { hashRange, MAX_CACHED_PIECE, PieceCache, type PieceCacheParts } from './piece-cache.js';
import { pieceEnd } from './pretokenize.js';
import { findInvalidUtf8 } from './utf8.js';
import { deserializeTables, imageSha256 } from './compiled.js';
import { parseVocabFiles, tokenizerSha256, type VocabTables } from './vocab-files.js';
import { fsError, ToolError } from '../util/errors.js';

/** sha256 of the built-in GPT-2 vocab.json followed by merges.txt. */
export const GPT2_TOKENIZER_SHA256 = '00f404d36600411e497efb3df08d3b4e094f0820e2595afcb7cbd0c4353d4fcb';
/** Entries of GPT-2's vocab.json (known from its hash, so the 1 MB file need not be parsed). */
export const GPT2_VOCAB_SIZE = 50257;
export const ENDOFTEXT = '<|endoftext|>';

export interface TokenizerIdentity {
  /** "gpt2" for OpenAI's GPT-2 files, else the directory name. */
  name: string;
  vocab_size: number;
  /** sha256 of vocab.json bytes followed by merges.txt bytes. */
  sha256: string;
}

export interface EncodeOptions {
  /** Recognise special-token text such as <|endoftext|> (default: encode it as ordinary text). */
  allowSpecial?: boolean;
}

export class Tokenizer {
  readonly tables: VocabTables;
  readonly identity: TokenizerIdentity;
  /** Id of <|endoftext|>, or undefined when the vocabulary has none. */
  readonly eosId: number | undefined;
  private readonly merger: BpeMerger;
  private cache: PieceCache | undefined;
  /** Special tokens as UTF-8, longest first (so one that is a prefix of another never wins). */
  private readonly specials: [Buffer, number][];

  /** cache: one shared with other threads (see PieceCache.attach); by default one of its own, made on first use. */
  constructor(tables: VocabTables, name: string, cache?: PieceCache) {
    this.tables = tables;
    this.merger = new BpeMerger(tables);
    this.cache = cache;
    this.identity = {
      name: tables.sha256 === GPT2_TOKENIZER_SHA256 ? 'gpt2' : name,
      vocab_size: tables.vocabSize,
      sha256: tables.sha256,
    };
    this.eosId = tables.specials.get(ENDOFTEXT);
    this.specials = [...tables.specials]
      .map(([text, id]): [Buffer, number] => [Buffer.from(text, 'utf8'), id])
      .sort((a, b) => b[0].length - a[0].length);
  }

  /**
   * Switches to a cache shared with other threads (undefined: one of its own); returns the one it
   * had. It must hold this vocabulary's pieces only: created for these tables (or ones equal to
   * them) and seeded from their seedCache or nothing.
   */
  useCache(cache: PieceCache | undefined): PieceCache | undefined {
    const had = this.cache;
    this.cache = cache;
    return had;
  }

  get vocabSize(): number {
    return this.tables.vocabSize;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const out = new IdBuffer(text.length >> 2);
    this.encodeInto(text, out, options);
    return out.toArray();
  }

  /** Appends the ids of text to out. */
  encodeInto(text: string, out: IdBuffer, options: EncodeOptions = {}): void {
    const bytes = Buffer.from(text, 'utf8'); // lone surrogates become U+FFFD, as tiktoken's encode makes them
    this.encodeBytes(bytes, 0, bytes.length, out, options);
  }

  /** Appends the ids of bytes[start..end), valid UTF-8 cut at character boundaries, to out. */
  encodeBytes(bytes: Uint8Array, start: number, end: number, out: IdBuffer, options: EncodeOptions = {}): void {
    if (!options.allowSpecial || this.specials.length === 0) {
      this.encodeOrdinary(bytes, start, end, out);
      return;
    }
    const haystack = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    let pos = start;
    for (;;) {
      let at = -1;
      let hit: [Buffer, number] | undefined;
      for (const special of this.specials) {
        const k = haystack.indexOf(special[0], pos);
        if (k >= 0 && k + special[0].length <= end && (at < 0 || k < at)) {
          at = k;
          hit = special;
        }
      }
      if (!hit) break;
      this.encodeOrdinary(bytes, pos, at, out);
      out.push(hit[1]);
      pos = at + hit[0].length;
    }
    this.encodeOrdinary(bytes, pos, end, out);
  }

  /** Encodes bytes[start..end) with no special-token handling (tiktoken's encode_ordinary). */
  encodeOrdinary(bytes: Uint8Array, start: number, end: number, out: IdBuffer): void {
    const cache = (this.cache ??= PieceCache.create({ slots: CACHE_SLOTS, seed: this.tables.seedCache }));
    let i = start;
    while (i < end) {
      const j = pieceEnd(bytes, i, end);
      if (j - i > MAX_CACHED_PIECE) {
        this.merger.merge(bytes, i, j, out);
      } else {
        const h = hashRange(bytes, i, j);
        if (!cache.emit(bytes, i, j, h, out)) {
          const before = out.length;
          this.merger.merge(bytes, i, j, out);
          cache.insert(bytes, i, j, h, out.data, before, out.length);
        }
      }
      i = j;
    }
    // Its own cache grows here; a shared one, where it is shared from (pool.ts).
    if (!cache.shared && cache.needsReplacing()) this.cache = cache.replacement(this.tables.seedCache);
  }

  /**
   * A cache pre-filled with every token that is a whole pre-token by itself (" the", "ing", "1999"):
   * tiktoken encodes such a piece as that one token, so the answer is known without a merge loop.
   * The build stores it in the image, so each worker starts with ~45k entries instead of none.
   */
  seedPieceCache(): PieceCacheParts {
    const cache = PieceCache.create({ slots: CACHE_SLOTS });
    const { tokenBytes, rankOf, byteToId } = this.tables;
    const ids = new Uint32Array(1);
    const isByte = new Set(byteToId);
    tokenBytes.forEach((bytes, id) => {
      if (bytes.length === 0 || (rankOf[id] < 0 && !isByte.has(id))) return;
      if (findInvalidUtf8(bytes) >= 0) return; // not whole characters: never a pre-token
      if (pieceEnd(bytes, 0, bytes.length) !== bytes.length) return;
      ids[0] = id;
      cache.insert(bytes, 0, bytes.length, hashRange(bytes, 0, bytes.length), ids, 0, 1);
    });
    return cache.parts();
  }

  /** Raw bytes of ids; throws on ids outside the vocabulary. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    const { tokenBytes } = this.tables;
    let n = 0;
    for (let k = 0; k < ids.length; k++) n += this.bytesOf(ids[k]).length;
    const out = new Uint8Array(n);
    let off = 0;
    for (let k = 0; k < ids.length; k++) {
      const b = tokenBytes[ids[k]];
      out.set(b, off);
      off += b.length;
    }
    return out;
  }

  /** Text of ids; incomplete or invalid UTF-8 becomes U+FFFD. */
  decode(ids: ArrayLike<number>): string {
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(this.decodeBytes(ids));
  }

  /** Bytes of one token. */
  bytesOf(id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.tables.vocabSize || this.tables.tokenBytes[id].length === 0) {
      throw new ToolError(`token id ${id} is not in the vocabulary (size ${this.tables.vocabSize})`);
    }
    return this.tables.tokenBytes[id];
  }
}

/** The directory of the built-in GPT-2 vocab.json and merges.txt (works from src/ and dist/). */
export function builtinTokenizerDir(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const dir of [join(here, 'gpt2'), resolve(here, '../../src/tokenizer/gpt2')]) {
    if (existsSync(join(dir, 'vocab.json'))) return dir;
  }
  throw new ToolError('the built-in GPT-2 vocabulary is missing from this installation (src/tokenizer/gpt2)');
}

/** Where the build puts the binary image of the built-in tables (see compiled.ts). */
export const builtinImagePath = (): string => fileURLToPath(new URL('./gpt2.bin', import.meta.url));

/**
 * Slots of a tokenizer's own piece cache: 2^18 (a 4 MB table) take 131k entries, twice what
 * WikiText-2 fills (50k seed + 19k of its pieces).
 */
export const CACHE_SLOTS = 1 << 18;

let builtin: { image: SharedArrayBuffer; tables?: VocabTables } | null | undefined;

/**
 * The built-in image, read once per process into a SharedArrayBuffer: encoding threads build
 * their tables over it (tokenizerFromImage) instead of reading and holding a copy each. Null if
 * not built (e.g. running from src/ under vitest: the text files are parsed instead).
 */
export function builtinImage(): SharedArrayBuffer | null {
  if (builtin === undefined) {
    try {
      const image = readShared(builtinImagePath());
      builtin = imageSha256(new Uint8Array(image)) === GPT2_TOKENIZER_SHA256 ? { image } : null;
    } catch {
      builtin = null;
    }
  }
  return builtin?.image ?? null;
}

/** The tables of the built-in image, built once per process. */
function builtinTables(): VocabTables | null {
  const image = builtinImage();
  if (!image) return null;
  builtin!.tables ??= deserializeTables(new Uint8Array(image)) ?? undefined;
  return builtin!.tables ?? null;
}

/** A tokenizer over the built-in image another thread read (builtinImage()), using cache. */
export function tokenizerFromImage(image: SharedArrayBuffer, cache?: PieceCache): Tokenizer {
  const tables = deserializeTables(new Uint8Array(image));
  if (tables?.sha256 !== GPT2_TOKENIZER_SHA256) throw new ToolError('the shared tokenizer image is not the built-in GPT-2 one');
  return new Tokenizer(tables, 'gpt2', cache);
}

function readShared(path: string): SharedArrayBuffer {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const bytes = new Uint8Array(new SharedArrayBuffer(size));
    for (let off = 0; off < size; ) {
      const n = readSync(fd, bytes, off, size - off, off);
      if (n === 0) throw new Error(`${path}: shorter than its size`);
      off += n;
    }
    return bytes.buffer as SharedArrayBuffer;
  } finally {
    closeSync(fd);
  }
}

/**
 * Loads vocab.json + merges.txt from dir (default: the built-in GPT-2 files). Files identical to
 * GPT-2's load from the prebuilt image; anything else is parsed and validated. cache: see the
 * Tokenizer constructor.
 */
export function loadTokenizer(dir?: string, cache?: PieceCache): Tokenizer {
  if (dir === undefined) {
    const tables = builtinTables();
    if (tables) return new Tokenizer(tables, 'gpt2', cache);
  }
  const root = dir ?? builtinTokenizerDir();
  let isDir: boolean;
  try {
    isDir = statSync(root).isDirectory();
  } catch (err) {
    throw fsError(err, root);
  }
  if (!isDir) throw new ToolError(`${root}: not a directory (a tokenizer is a directory with vocab.json and merges.txt)`);
  const read = (name: string) => {
    const path = join(root, name);
    try {
      return readFileSync(path);
    } catch (err) {
      throw fsError(err, path);
    }
  };
  const vocab = read('vocab.json');
  const merges = read('merges.txt');
  if (tokenizerSha256(vocab, merges) === GPT2_TOKENIZER_SHA256) {
    const tables = builtinTables();
    if (tables) return new Tokenizer(tables, 'gpt2', cache);
  }
  const tables = parseVocabFiles({ vocab, merges, vocabName: join(root, 'vocab.json'), mergesName: join(root, 'merges.txt') });
  return new Tokenizer(tables, basename(resolve(root)), cache);
}
