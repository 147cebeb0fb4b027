/**
 * Byte sequence → token id, as an open-addressing hash over typed arrays. Building it for 50k
 * tokens takes a few milliseconds where a Map<string, number> takes tens on our machines, and
 * lookups need no string: the BPE loop asks "is bytes(a) + bytes(b) a token?" millions of times.
 */
export class TokenTable {
  private readonly mask: number;
  /** id + 1 per slot; 0 = empty. Power-of-two length. */
  readonly slots: Int32Array;
  /** Hash of each id's bytes. */
  readonly hashes: Uint32Array;
  /**
   * Every token's bytes end to end, id k at [offsets[k], offsets[k + 1]): one array rather than
   * an object per token, whose 50k allocations (and the collections they set off) took ~20 ms of
   * every tokenizer load.
   */
  readonly bytes: Uint8Array;
  readonly offsets: Uint32Array;

  private constructor(bytes: Uint8Array, offsets: Uint32Array, slots: Int32Array, hashes: Uint32Array) {
    this.bytes = bytes;
    this.offsets = offsets;
    this.slots = slots;
    this.hashes = hashes;
    this.mask = slots.length - 1;
  }

  /** tokenBytes[id] for every id; empty arrays mark unused ids. */
  static build(tokenBytes: readonly Uint8Array[]): TokenTable {
    let size = 16;
    while (size < tokenBytes.length * 2) size *= 2;
    const slots = new Int32Array(size);
    const hashes = new Uint32Array(tokenBytes.length);
    for (let id = 0; id < tokenBytes.length; id++) {
      const b = tokenBytes[id];
      if (b.length === 0) continue;
      const h = hashBytes(b, 0, b.length);
      hashes[id] = h;
      let s = h & (size - 1);
      while (slots[s] !== 0) s = (s + 1) & (size - 1);
      slots[s] = id + 1;
    }
    const offsets = new Uint32Array(tokenBytes.length + 1);
    for (let id = 0; id < tokenBytes.length; id++) offsets[id + 1] = offsets[id] + tokenBytes[id].length;
    const bytes = new Uint8Array(offsets[tokenBytes.length]);
    tokenBytes.forEach((b, id) => bytes.set(b, offsets[id]));
    return new TokenTable(bytes, offsets, slots, hashes);
  }

  /** Rebuilds a table from the arrays of a built one, over the image's token bytes (see compiled.ts). */
  static fromParts(bytes: Uint8Array, offsets: Uint32Array, slots: Int32Array, hashes: Uint32Array): TokenTable {
    if (slots.length & (slots.length - 1) || hashes.length + 1 !== offsets.length) throw new Error('bad token table');
    return new TokenTable(bytes, offsets, slots, hashes);
  }

  /** Id of the token spelled by buf[start..end), or -1. The first id wins for duplicate spellings. */
  find(buf: Uint8Array, start: number, end: number): number {
    const h = hashBytes(buf, start, end);
    const len = end - start;
    let found = -1;
    for (let s = h & this.mask; ; s = (s + 1) & this.mask) {
      const slot = this.slots[s];
      if (slot === 0) return found;
      const id = slot - 1;
      if (this.hashes[id] !== h) continue;
      const at = this.offsets[id];
      if (this.offsets[id + 1] - at !== len) continue;
      let k = 0;
      while (k < len && this.bytes[at + k] === buf[start + k]) k++;
      if (k === len && (found < 0 || id < found)) found = id;
    }
  }
}

export function hashBytes(buf: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let k = start; k < end; k++) h = Math.imul(h ^ buf[k], 0x01000193);
  return h >>> 0;
}
