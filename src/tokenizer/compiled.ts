/**
 * A binary image of VocabTables, so a process (and each worker thread) loads the tokenizer in
 * milliseconds instead of parsing vocab.json and merges.txt. The build writes one for the built-in
 * GPT-2 files (dist/tokenizer/gpt2.bin); it carries the sha256 of the files it was made from and
 * is used only when that matches.
 *
 * Layout (little-endian): magic "GPT2BPE\x02", u32 vocabSize, byteCount, slotCount, pairSlots,
 * specialsLength, sha256 (64 ASCII hex), then the 4-byte arrays offsets[vocabSize+1],
 * rankOf[vocabSize], hashes[vocabSize], slots[slotCount], pairLeft/pairRight/pairRank[pairSlots],
 * then the token bytes and the specials as JSON.
 */
import { PairTable } from './pair-table.js';
import { TokenTable } from './token-table.js';
import type { VocabTables } from './vocab-files.js';

const MAGIC = 'GPT2BPE\x02';
const HEADER = 8 + 20 + 64;

export function serializeTables(t: VocabTables): Uint8Array {
  const n = t.vocabSize;
  let byteCount = 0;
  for (const b of t.tokenBytes) byteCount += b.length;
  const specials = Buffer.from(JSON.stringify([...t.specials]), 'utf8');
  const arrays: (Int32Array | Uint32Array)[] = [
    new Uint32Array(n + 1), t.rankOf, t.table.hashes, t.table.slots, t.pairs.left, t.pairs.right, t.pairs.rank,
  ];
  const offsets = arrays[0];
  let pos = 0;
  t.tokenBytes.forEach((b, id) => {
    offsets[id] = pos;
    pos += b.length;
  });
  offsets[n] = pos;
  const words = arrays.reduce((sum, a) => sum + 4 * a.length, 0);
  const out = new Uint8Array(HEADER + words + byteCount + specials.length);
  const view = new DataView(out.buffer);
  out.set(Buffer.from(MAGIC, 'latin1'), 0);
  [n, byteCount, t.table.slots.length, t.pairs.left.length, specials.length].forEach((v, k) => view.setUint32(8 + 4 * k, v, true));
  out.set(Buffer.from(t.sha256, 'latin1'), 28);
  let off = HEADER;
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), off);
    off += a.byteLength;
  }
  t.tokenBytes.forEach((b, id) => out.set(b, off + offsets[id]));
  out.set(specials, off + byteCount);
  return out;
}

/** Tables from a serialized image, or null if buf is not one (wrong magic or size). */
export function deserializeTables(buf: Uint8Array): VocabTables | null {
  if (buf.length < HEADER || Buffer.from(buf.subarray(0, 8)).toString('latin1') !== MAGIC) return null;
  // Typed-array views need a 4-byte aligned offset; copy if the read was not.
  const data = buf.byteOffset % 4 === 0 ? buf : buf.slice();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const [n, byteCount, slotCount, pairSlots, specialsLength] = [0, 1, 2, 3, 4].map((k) => view.getUint32(8 + 4 * k, true));
  const sha256 = Buffer.from(data.subarray(28, HEADER)).toString('latin1');
  const words = 4 * (n + 1) + 8 * n + 4 * slotCount + 12 * pairSlots;
  if (data.length !== HEADER + words + byteCount + specialsLength) return null;
  let off = data.byteOffset + HEADER;
  const take = <T>(make: new (b: ArrayBufferLike, o: number, l: number) => T, len: number): T => {
    const a = new make(data.buffer, off, len);
    off += 4 * len;
    return a;
  };
  const offsets = take(Uint32Array, n + 1);
  const rankOf = take(Int32Array, n);
  const hashes = take(Uint32Array, n);
  const slots = take(Int32Array, slotCount);
  const pairs = PairTable.fromParts(take(Int32Array, pairSlots), take(Int32Array, pairSlots), take(Int32Array, pairSlots));
  const bytes = new Uint8Array(data.buffer, off, byteCount);
  const tokenBytes = new Array<Uint8Array>(n);
  for (let id = 0; id < n; id++) tokenBytes[id] = bytes.subarray(offsets[id], offsets[id + 1]);
  const specialsJson = Buffer.from(data.buffer, off + byteCount, specialsLength).toString('utf8');
  const specials = new Map<string, number>(JSON.parse(specialsJson) as [string, number][]);
  const table = TokenTable.fromParts(tokenBytes, slots, hashes);
  const byteToId = new Int32Array(256);
  for (let b = 0; b < 256; b++) {
    byteToId[b] = table.find(Uint8Array.of(b), 0, 1);
    if (byteToId[b] < 0) return null;
  }
  return { vocabSize: n, tokenBytes, table, pairs, byteToId, rankOf, specials, sha256 };
}
