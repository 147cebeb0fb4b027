/**
 * Pre-token → ids cache keyed directly on the UTF-16 code units of the input text, so a hit costs
 * a hash and a compare with no substring allocated. Open addressing with linear probing over one
 * Int32Array of 4-word slots [hash, key offset, key length << 8 | id count, id or ids offset]:
 * a probe reads one cache line, and single-id pieces (most of them) need no second array. Measured
 * on WikiText-2, scattering the fields over separate arrays made a hit cost three times as much.
 * When the cache gets big it starts over, so endless distinct words cannot grow memory unbounded.
 */
import type { IdBuffer } from './id-buffer.js';

export const MAX_CACHED_PIECE = 48;
const MAX_ENTRIES = 1 << 20;
const INITIAL_SLOTS = 1 << 14;

export function hashRange(text: string, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let k = start; k < end; k++) h = Math.imul(h ^ text.charCodeAt(k), 0x01000193);
  return h | 0;
}

/** A cache's contents, as stored in the compiled tokenizer image. */
export interface PieceCacheParts {
  table: Int32Array;
  keys: Uint16Array;
  vals: Uint32Array;
  count: number;
}

export class PieceCache {
  private table = new Int32Array(4 * INITIAL_SLOTS);
  private mask = INITIAL_SLOTS - 1;
  private count = 0;
  private keys = new Uint16Array(8 * INITIAL_SLOTS);
  private keysUsed = 0;
  private vals = new Uint32Array(INITIAL_SLOTS);
  private valsUsed = 0;

  /** A cache holding a copy of parts (the copy is this cache's own to grow and overwrite). */
  static from(parts: PieceCacheParts): PieceCache {
    const cache = new PieceCache();
    cache.table = parts.table.slice();
    cache.mask = parts.table.length / 4 - 1;
    cache.count = parts.count;
    cache.keys = parts.keys.slice();
    cache.keysUsed = parts.keys.length;
    cache.vals = parts.vals.slice();
    cache.valsUsed = parts.vals.length;
    return cache;
  }

  parts(): PieceCacheParts {
    return { table: this.table, keys: this.keys.subarray(0, this.keysUsed), vals: this.vals.subarray(0, this.valsUsed), count: this.count };
  }

  /**
   * If text[start..end) (with hash h from hashRange) is cached, appends its ids to out and
   * returns true. Lookup and copy in one method keep the encoder's hottest path free of calls.
   */
  emit(text: string, start: number, end: number, h: number, out: IdBuffer): boolean {
    const len = end - start;
    const { table, mask, keys } = this;
    for (let s = h & mask; ; s = (s + 1) & mask) {
      const at = 4 * s;
      const lens = table[at + 2];
      if (lens === 0) return false;
      if (table[at] !== h || lens >>> 8 !== len) continue;
      const off = table[at + 1];
      let k = 0;
      while (k < len && keys[off + k] === text.charCodeAt(start + k)) k++;
      if (k !== len) continue;
      const n = lens & 0xff;
      if (n === 1) {
        out.push(table[at + 3]);
      } else {
        const from = table[at + 3];
        out.pushRange(this.vals, from, from + n);
      }
      return true;
    }
  }

  /** Caches ids[from..to) for text[start..end). Pieces over MAX_CACHED_PIECE are not cached. */
  insert(text: string, start: number, end: number, h: number, ids: Uint32Array, from: number, to: number): void {
    const len = end - start;
    const n = to - from;
    if (len > MAX_CACHED_PIECE || n > 255 || n === 0) return;
    if (this.count >= MAX_ENTRIES) this.reset();
    if (2 * (this.count + 1) > this.mask + 1) this.grow();
    if (this.keysUsed + len > this.keys.length) this.keys = grown(this.keys, this.keysUsed + len);
    const keyOff = this.keysUsed;
    for (let k = 0; k < len; k++) this.keys[keyOff + k] = text.charCodeAt(start + k);
    this.keysUsed += len;
    let value = ids[from];
    if (n > 1) {
      if (this.valsUsed + n > this.vals.length) this.vals = grown(this.vals, this.valsUsed + n);
      this.vals.set(ids.subarray(from, to), this.valsUsed);
      value = this.valsUsed;
      this.valsUsed += n;
    }
    this.place(h, keyOff, (len << 8) | n, value);
    this.count++;
  }

  private place(h: number, keyOff: number, lens: number, value: number): void {
    let s = h & this.mask;
    while (this.table[4 * s + 2] !== 0) s = (s + 1) & this.mask;
    this.table.set([h, keyOff, lens, value], 4 * s);
  }

  private grow(): void {
    const old = this.table;
    this.table = new Int32Array(2 * old.length);
    this.mask = this.table.length / 4 - 1;
    for (let at = 0; at < old.length; at += 4) if (old[at + 2] !== 0) this.place(old[at], old[at + 1], old[at + 2], old[at + 3]);
  }

  private reset(): void {
    this.table = new Int32Array(4 * INITIAL_SLOTS);
    this.mask = INITIAL_SLOTS - 1;
    this.count = this.keysUsed = this.valsUsed = 0;
  }
}

function grown<T extends Uint16Array | Uint32Array>(a: T, need: number): T {
  const b = new (a.constructor as new (n: number) => T)(Math.max(need, 2 * a.length));
  b.set(a);
  return b;
}
