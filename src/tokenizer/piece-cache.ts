/**
 * Pre-token → ids cache keyed directly on the UTF-8 bytes of the input, so a hit costs a hash and
 * a compare with no substring allocated. Open addressing with linear probing over one
 * Int32Array of 4-word slots [hash, key offset, key length << 8 | id count, id or ids offset]:
 * a probe reads one cache line, and single-id pieces (most of them) need no second array. Measured
 * on WikiText-2, scattering the fields over separate arrays made a hit cost three times as much.
 *
 * The whole cache is one buffer of fixed capacity [header | table | keys | vals], so the encoding
 * threads can share one (a SharedArrayBuffer): a piece merged by one thread is a hit for all, and
 * no thread copies the seed of its own. Whoever owns a cache (the tokenizer its own, the pool the
 * shared one) replaces it when it fills up (needsReplacing, replacement): by a bigger copy, up to
 * MAX_SLOTS, then by a fresh one holding the seed only. Until replaced, a full cache takes no
 * entries. Starting over rather than keeping what it has follows a text that moves on (a 536 MB
 * test text bringing ~25k new words every 10 MB: -j2 31.4 s keeping, 26.4 s starting over).
 *
 * Sharing without locks: entries are only ever added and every word is written once. An entry
 * added while other threads run is claimed (its lens word set to BUSY by compareExchange), filled
 * in, then published by Atomics.store of its lens with the DYNAMIC bit set. A reader that finds
 * a matching hash on such a slot reads the lens again with Atomics.load, which makes everything
 * the adding thread wrote before publishing visible, and skips it while BUSY (it may then miss
 * and merge the piece itself, adding a duplicate: same ids, so harmless). Entries present before
 * the threads started (the seed, a private cache's own) have no DYNAMIC bit and need no atomic
 * read: Atomics.load is a ~20 ns call in Node 20, too dear for all 2.1M hits of WikiText-2 but not
 * for the few that hit entries other threads added.
 */
import type { IdBuffer } from './id-buffer.js';
import { hashBytes } from './token-table.js';

/** Longest piece cached, in bytes. */
export const MAX_CACHED_PIECE = 48;
/**
 * 2^20 slots (a 16 MB table) take 512k entries. 2^21 cost 15–25 MB more peak RSS on the 536 MB
 * test text and no measurable time (-j1 38.7 s against 36.5, -j2 22.4 against 23.9: noise).
 */
export const MAX_SLOTS = 1 << 20;

const DYNAMIC = 1 << 31;
const BUSY = -1; // lens of a claimed slot being filled in (no real lens has every bit set)
// Header words.
const COUNT = 0;
const KEYS_USED = 1;
const VALS_USED = 2;
const SLOTS = 3;
const HEADER_BYTES = 16;

/** The token table's hash of bytes[start..end), signed as the Int32Array table stores it. */
export const hashRange = (bytes: Uint8Array, start: number, end: number): number => hashBytes(bytes, start, end) | 0;

/** A cache's contents, as stored in the compiled tokenizer image. */
export interface PieceCacheParts {
  table: Int32Array;
  keys: Uint8Array;
  vals: Uint32Array;
  count: number;
}

export interface PieceCacheOptions {
  /** Table slots, a power of two; it takes up to half as many entries. */
  slots: number;
  /** Entries to start with (copied). */
  seed?: PieceCacheParts;
  /** In a SharedArrayBuffer, for threads to attach to (see attach). */
  shared?: boolean;
}

export class PieceCache {
  private readonly header: Int32Array;
  private readonly table: Int32Array;
  private readonly keys: Uint8Array;
  private readonly vals: Uint32Array;
  private readonly mask: number;
  private readonly maxEntries: number;
  private readonly dynamic: number;
  private full = false;

  private constructor(readonly buffer: ArrayBufferLike) {
    this.header = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    const slots = this.header[SLOTS];
    const [keyCap, valCap] = capacities(slots);
    this.table = new Int32Array(buffer, HEADER_BYTES, 4 * slots);
    this.keys = new Uint8Array(buffer, HEADER_BYTES + 16 * slots, keyCap);
    this.vals = new Uint32Array(buffer, HEADER_BYTES + 16 * slots + keyCap, valCap);
    this.mask = slots - 1;
    this.maxEntries = slots / 2;
    this.dynamic = buffer instanceof SharedArrayBuffer ? DYNAMIC : 0;
  }

  static create(options: PieceCacheOptions): PieceCache {
    const { slots, seed } = options;
    if (slots < 16 || slots & (slots - 1)) throw new RangeError(`piece cache slots must be a power of two ≥ 16, got ${slots}`);
    const [keyCap, valCap] = capacities(slots);
    const bytes = HEADER_BYTES + 16 * slots + keyCap + 4 * valCap;
    const cache = new PieceCache(withSlots(options.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes), slots));
    if (seed) cache.copy(seed);
    return cache;
  }

  /** The cache another thread created with `shared` (its buffer, passed to this thread). */
  static attach(buffer: SharedArrayBuffer): PieceCache {
    return new PieceCache(buffer);
  }

  /** In a SharedArrayBuffer, for threads to share. */
  get shared(): boolean {
    return this.dynamic !== 0;
  }

  get count(): number {
    return this.header[COUNT];
  }

  /** Three quarters full (entries, key space or id space) below MAX_SLOTS, full at it. */
  needsReplacing(): boolean {
    const h = this.header;
    const used = Math.max(h[COUNT] / this.maxEntries, h[KEYS_USED] / this.keys.length, h[VALS_USED] / this.vals.length);
    return used >= (this.mask + 1 < MAX_SLOTS ? 0.75 : 1);
  }

  /**
   * What replaces this cache: a copy with 4× the slots (at most MAX_SLOTS) of every entry
   * published so far (entries added after they are copied are lost to it), or at MAX_SLOTS a
   * fresh cache with seed, as small as seed's table, to grow again: a sparse 2^21-slot table with
   * only the seed in it made -j1 on the 536 MB text 8% slower (40.1 s, against 37.2). Whoever shares this cache must
   * hand the new one to the others.
   */
  replacement(seed?: PieceCacheParts): PieceCache {
    const slots = Math.min(4 * (this.mask + 1), MAX_SLOTS);
    if (slots === this.mask + 1) return PieceCache.create({ slots: seed ? seed.table.length / 4 : 1 << 16, seed, shared: this.shared });
    const next = PieceCache.create({ slots, shared: this.shared });
    const { header, table, keys, vals } = this;
    let count = 0;
    for (let at = 0; at < table.length; at += 4) {
      let lens = table[at + 2];
      if (lens === 0) continue;
      if (lens < 0) {
        lens = Atomics.load(table, at + 2);
        if (lens === BUSY) continue;
        lens &= ~DYNAMIC;
      }
      // Copied before any thread sees the copy, so without the DYNAMIC bit.
      next.place(table[at], table[at + 1], lens, table[at + 3]);
      count++;
    }
    // Keys and ids where they were (after the loop's acquiring reads, so all published ones are
    // seen): the first pieces cached, the text's most frequent, stay packed together. Copying
    // them entry by entry in table order instead cost -j1 15% on a 250 MB text.
    const keysUsed = Math.min(header[KEYS_USED], keys.length);
    const valsUsed = Math.min(header[VALS_USED], vals.length);
    next.keys.set(keys.subarray(0, keysUsed));
    next.vals.set(vals.subarray(0, valsUsed));
    next.header[COUNT] = count;
    next.header[KEYS_USED] = keysUsed;
    next.header[VALS_USED] = valsUsed;
    return next;
  }

  parts(): PieceCacheParts {
    const h = this.header;
    return { table: this.table, keys: this.keys.subarray(0, h[KEYS_USED]), vals: this.vals.subarray(0, h[VALS_USED]), count: this.count };
  }

  /**
   * If bytes[start..end) (with hash h from hashRange) is cached, appends its ids to out and
   * returns true. Lookup and copy in one method keep the encoder's hottest path free of calls.
   */
  emit(bytes: Uint8Array, start: number, end: number, h: number, out: IdBuffer): boolean {
    const len = end - start;
    const { table, mask, keys } = this;
    for (let s = h & mask; ; s = (s + 1) & mask) {
      const at = 4 * s;
      let lens = table[at + 2];
      if (lens === 0) return false;
      if (table[at] !== h) continue;
      if (lens < 0) {
        lens = Atomics.load(table, at + 2); // added by a running thread: acquire (see above)
        if (lens === BUSY) continue;
        lens &= ~DYNAMIC;
      }
      if (lens >>> 8 !== len) continue;
      const off = table[at + 1];
      let k = 0;
      while (k < len && keys[off + k] === bytes[start + k]) k++;
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

  /**
   * Caches ids[from..to) for bytes[start..end), unless the piece is too long (MAX_CACHED_PIECE, 255
   * ids) or the cache is full: out of entries, key space or id space, whichever comes first.
   */
  insert(bytes: Uint8Array, start: number, end: number, h: number, ids: Uint32Array, from: number, to: number): void {
    const len = end - start;
    const n = to - from;
    if (len > MAX_CACHED_PIECE || n > 255 || n === 0 || this.full) return;
    const { header, keys, vals, table, mask } = this;
    // Reserve an entry, key space and id space: past a limit the cache is full for everyone, and
    // each thread overshoots one at most once (it then stops here).
    const keyOff = Atomics.add(header, KEYS_USED, len);
    const valOff = Atomics.add(header, VALS_USED, n > 1 ? n : 0);
    if (Atomics.add(header, COUNT, 1) >= this.maxEntries || keyOff + len > keys.length || valOff + n > vals.length) {
      Atomics.sub(header, COUNT, 1); // the count stays exact; the spaces need not
      this.full = true;
      return;
    }
    for (let k = 0; k < len; k++) keys[keyOff + k] = bytes[start + k];
    if (n > 1) vals.set(ids.subarray(from, to), valOff);
    // At most maxEntries = slots / 2 are ever claimed, so an empty slot is always found.
    let s = h & mask;
    while (Atomics.compareExchange(table, 4 * s + 2, 0, BUSY) !== 0) s = (s + 1) & mask;
    const at = 4 * s;
    table[at] = h;
    table[at + 1] = keyOff;
    table[at + 3] = n > 1 ? valOff : ids[from];
    Atomics.store(table, at + 2, (len << 8) | n | this.dynamic);
  }

  /** Takes over seed's entries (before any thread attaches: they need no DYNAMIC bit). */
  private copy(seed: PieceCacheParts): void {
    const { header, table } = this;
    if (seed.count > this.maxEntries || seed.keys.length > this.keys.length || seed.vals.length > this.vals.length) {
      throw new RangeError(`a piece cache of ${this.mask + 1} slots cannot hold a seed of ${seed.count} entries`);
    }
    this.keys.set(seed.keys);
    this.vals.set(seed.vals);
    if (seed.table.length === table.length) {
      table.set(seed.table);
    } else {
      const from = seed.table;
      for (let at = 0; at < from.length; at += 4) if (from[at + 2] !== 0) this.place(from[at], from[at + 1], from[at + 2], from[at + 3]);
    }
    header[COUNT] = seed.count;
    header[KEYS_USED] = seed.keys.length;
    header[VALS_USED] = seed.vals.length;
  }

  /** Puts an entry in the first free slot of its probe sequence (only while no thread shares the table). */
  private place(h: number, keyOff: number, lens: number, value: number): void {
    const { table, mask } = this;
    let s = h & mask;
    while (table[4 * s + 2] !== 0) s = (s + 1) & mask;
    table[4 * s] = h;
    table[4 * s + 1] = keyOff;
    table[4 * s + 2] = lens;
    table[4 * s + 3] = value;
  }
}

/**
 * Key and id space for a table of `slots`: WikiText-2 needs ~7 bytes and 0.65 ids an entry
 * (69k entries: 469k code units, 45k ids), so 12 and 2 an entry leave room for longer words and
 * for scripts of 2–3 bytes a character.
 */
function capacities(slots: number): [keys: number, vals: number] {
  return [6 * slots, slots];
}

function withSlots<B extends ArrayBufferLike>(buffer: B, slots: number): B {
  new Int32Array(buffer, 0, HEADER_BYTES / 4)[SLOTS] = slots;
  return buffer;
}
