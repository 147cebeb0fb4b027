/**
 * (left id, right id) → merge rank, for every pair of tokens whose concatenation is a mergeable
 * token. That is tiktoken's rule (a pair merges when its bytes form a ranked token, whichever
 * merge created it), precomputed from every split point of every merged token so the BPE loop
 * looks up two integers instead of hashing bytes.
 */
import type { TokenTable } from './token-table.js';

export class PairTable {
  private readonly mask: number;

  private constructor(
    /** Left id + 1 per slot (0 = empty), right id, and rank; power-of-two length. */
    readonly left: Int32Array,
    readonly right: Int32Array,
    readonly rank: Int32Array,
  ) {
    this.mask = left.length - 1;
  }

  static build(tokenBytes: readonly Uint8Array[], rankOf: Int32Array, table: TokenTable): PairTable {
    const found: number[] = [];
    for (let id = 0; id < tokenBytes.length; id++) {
      const r = rankOf[id];
      if (r < 0) continue;
      const t = tokenBytes[id];
      for (let k = 1; k < t.length; k++) {
        const a = table.find(t, 0, k);
        if (a < 0) continue;
        const b = table.find(t, k, t.length);
        if (b >= 0) found.push(a, b, r);
      }
    }
    let size = 16;
    while (size < (found.length / 3) * 2) size *= 2;
    const pairs = new PairTable(new Int32Array(size), new Int32Array(size), new Int32Array(size));
    for (let k = 0; k < found.length; k += 3) pairs.insert(found[k], found[k + 1], found[k + 2]);
    return pairs;
  }

  static fromParts(left: Int32Array, right: Int32Array, rank: Int32Array): PairTable {
    if (left.length & (left.length - 1) || right.length !== left.length || rank.length !== left.length) {
      throw new Error('bad pair table');
    }
    return new PairTable(left, right, rank);
  }

  /** Rank of the token spelled by a then b, or -1 when they do not merge. */
  find(a: number, b: number): number {
    const key = a + 1;
    for (let s = slotOf(a, b) & this.mask; ; s = (s + 1) & this.mask) {
      const l = this.left[s];
      if (l === 0) return -1;
      if (l === key && this.right[s] === b) return this.rank[s];
    }
  }

  private insert(a: number, b: number, rank: number): void {
    let s = slotOf(a, b) & this.mask;
    while (this.left[s] !== 0) {
      if (this.left[s] === a + 1 && this.right[s] === b) {
        if (rank < this.rank[s]) this.rank[s] = rank;
        return;
      }
      s = (s + 1) & this.mask;
    }
    this.left[s] = a + 1;
    this.right[s] = b;
    this.rank[s] = rank;
  }
}

const slotOf = (a: number, b: number) => (Math.imul(a, 0x9e3779b1) ^ Math.imul(b, 0x85ebca6b)) >>> 0;
