/**
 * A binary image of VocabTables, so a process (and each worker thread) loads the tokenizer in
 * milliseconds instead of parsing vocab.json and merges.txt. The build writes one for the built-in
 * GPT-2 files (dist/tokenizer/gpt2.bin); it carries the sha256 of the files it was made from and
 * is used only when that matches.
 *
 * Layout (little-endian): magic "GPT2BPE\x04", u32 vocabSize, byteCount, slotCount, pairSlots,
 * specialsLength, cacheTable, cacheVals, cacheKeys, cacheCount, sha256 (64 ASCII hex), then the
 * 4-byte arrays offsets[vocabSize+1], rankOf[vocabSize], hashes[vocabSize], slots[slotCount],
 * pairLeft/pairRight/pairRank[pairSlots], cache table[cacheTable] and vals[cacheVals], then the
 * cache keys (UTF-8, u8[cacheKeys]), the token bytes and the specials as JSON.
 */
import { PairTable } from './pair-table.js';
import { TokenTable } from './token-table.js';
import type { PieceCacheParts } from './piece-cache.js';
import type { VocabTables } from './vocab-files.js';

const MAGIC = 'GPT2BPE\x04';
const HEADER = 8 + 36 + 64;

export function serializeTables(t: VocabTables): Uint8Array {
  const n = t.vocabSize;
  const { bytes, offsets } = t.table; // every token's bytes, end to end, as the image stores them
  const byteCount = bytes.length;
  const specials = Buffer.from(JSON.stringify([...t.specials]), 'utf8');
  const cache = t.seedCache ?? { table: new Int32Array(0), vals: new Uint32Array(0), keys: new Uint8Array(0), count: 0 };
  const arrays: (Int32Array | Uint32Array | Uint8Array)[] = [
    offsets, t.rankOf, t.table.hashes, t.table.slots, t.pairs.left, t.pairs.right, t.pairs.rank,
    cache.table, cache.vals, cache.keys,
  ];
  const words = arrays.reduce((sum, a) => sum + a.byteLength, 0);
  const out = new Uint8Array(HEADER + words + byteCount + specials.length);
  const view = new DataView(out.buffer);
  out.set(Buffer.from(MAGIC, 'latin1'), 0);
  const counts = [n, byteCount, t.table.slots.length, t.pairs.left.length, specials.length, cache.table.length, cache.vals.length, cache.keys.length, cache.count];
  counts.forEach((v, k) => view.setUint32(8 + 4 * k, v, true));
  out.set(Buffer.from(t.sha256, 'latin1'), 44);
  let off = HEADER;
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), off);
    off += a.byteLength;
  }
  out.set(bytes, off);
  out.set(specials, off + byteCount);
  return out;
}

interface Header {
  /** The image, 4-byte aligned. */
  data: Uint8Array;
  n: number;
  byteCount: number;
  slotCount: number;
  pairSlots: number;
  specialsLength: number;
  cacheTable: number;
  cacheVals: number;
  cacheKeys: number;
  cacheCount: number;
}

/** The counts of an image, or null if buf is not one (wrong magic or size). */
function readHeader(buf: Uint8Array): Header | null {
  if (buf.length < HEADER || Buffer.from(buf.subarray(0, 8)).toString('latin1') !== MAGIC) return null;
  // Typed-array views need a 4-byte aligned offset; copy if the read was not.
  const data = buf.byteOffset % 4 === 0 ? buf : buf.slice();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const [n, byteCount, slotCount, pairSlots, specialsLength, cacheTable, cacheVals, cacheKeys, cacheCount] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((k) => view.getUint32(8 + 4 * k, true));
  const words = 4 * (n + 1) + 8 * n + 4 * slotCount + 12 * pairSlots + 4 * (cacheTable + cacheVals) + cacheKeys;
  if (data.length !== HEADER + words + byteCount + specialsLength) return null;
  return { data, n, byteCount, slotCount, pairSlots, specialsLength, cacheTable, cacheVals, cacheKeys, cacheCount };
}

/** Views of consecutive arrays of h.data from byte `at` on. */
function reader(h: Header, at: number) {
  let off = h.data.byteOffset + at;
  return <T extends { byteLength: number }>(make: new (b: ArrayBufferLike, o: number, l: number) => T, len: number): T => {
    const a = new make(h.data.buffer, off, len);
    off += a.byteLength;
    return a;
  };
}

const seedOf = (h: Header, take: ReturnType<typeof reader>): PieceCacheParts | undefined => {
  const table = take(Int32Array, h.cacheTable);
  const vals = take(Uint32Array, h.cacheVals);
  const keys = take(Uint8Array, h.cacheKeys);
  return h.cacheTable > 0 ? { table, vals, keys, count: h.cacheCount } : undefined;
};

/** The sha256 of the tokenizer files an image was made from, or null if buf is not one. */
export function imageSha256(buf: Uint8Array): string | null {
  const h = readHeader(buf);
  return h && Buffer.from(h.data.subarray(44, HEADER)).toString('latin1');
}

/** The seed piece cache of an image alone (what threads sharing a cache start from), if it has one. */
export function imageSeedCache(buf: Uint8Array): PieceCacheParts | undefined {
  const h = readHeader(buf);
  return h ? seedOf(h, reader(h, HEADER + 4 * (h.n + 1) + 8 * h.n + 4 * h.slotCount + 12 * h.pairSlots)) : undefined;
}

/** Tables from a serialized image, or null if buf is not one (wrong magic or size). */
export function deserializeTables(buf: Uint8Array): VocabTables | null {
  const h = readHeader(buf);
  if (!h) return null;
  const { data, n, byteCount, slotCount, pairSlots, specialsLength } = h;
  const sha256 = imageSha256(data)!;
  const take = reader(h, HEADER);
  const offsets = take(Uint32Array, n + 1);
  const rankOf = take(Int32Array, n);
  const hashes = take(Uint32Array, n);
  const slots = take(Int32Array, slotCount);
  const pairs = PairTable.fromParts(take(Int32Array, pairSlots), take(Int32Array, pairSlots), take(Int32Array, pairSlots));
  const seedCache = seedOf(h, take);
  const bytes = take(Uint8Array, byteCount);
  const specialsJson = Buffer.from(data.buffer, bytes.byteOffset + byteCount, specialsLength).toString('utf8');
  const specials = new Map<string, number>(JSON.parse(specialsJson) as [string, number][]);
  const table = TokenTable.fromParts(bytes, offsets, slots, hashes);
  const byteToId = new Int32Array(256);
  for (let b = 0; b < 256; b++) {
    byteToId[b] = table.find(Uint8Array.of(b), 0, 1);
    if (byteToId[b] < 0) return null;
  }
  // Each token's own array only for whoever asks (decoding does; encoding never does).
  let tokenBytes: Uint8Array[] | undefined;
  return {
    vocabSize: n,
    get tokenBytes() {
      if (!tokenBytes) {
        tokenBytes = new Array<Uint8Array>(n);
        for (let id = 0; id < n; id++) tokenBytes[id] = bytes.subarray(offsets[id], offsets[id + 1]);
      }
      return tokenBytes;
    },
    table,
    pairs,
    byteToId,
    rankOf,
    specials,
    sha256,
    seedCache,
  };
}
