/**
 * The byte-pair merge loop, with tiktoken's rules: a piece that is itself a token is that token;
 * otherwise adjacent parts merge when their concatenation is a mergeable token, lowest rank
 * first, leftmost on ties. A short piece is merged as tiktoken does, rescanning its pairs for the
 * lowest rank after every merge; a long one keeps its parts in a linked list and candidate pairs
 * in a binary heap keyed by (rank, position), so it costs O(n log n) rather than O(n²).
 */
import type { IdBuffer } from './id-buffer.js';
import type { VocabTables } from './vocab-files.js';

const POS = 2 ** 28; // heap key = rank * POS + position: exact in a double for ranks < 2^24
/**
 * Longest piece merged by rescanning. Nearly all merges are of short pieces (WikiText-2's
 * uncached ones average 8 bytes): ~1.3 µs a piece that way against ~1.9 µs through the heap.
 */
const RESCAN_MAX = 64;

export class BpeMerger {
  private readonly t: VocabTables;
  private readonly idOfRank: Int32Array;
  // Scratch space reused across calls, grown on demand.
  private ids = new Int32Array(64);
  private next = new Int32Array(64);
  private prev = new Int32Array(64);
  private rankAt = new Int32Array(64); // rank of the pair (i, next[i]) when last offered; -1 none
  private heap = new Float64Array(3 * 64); // each merge adds at most two pairs: ≤ 3n entries

  constructor(tables: VocabTables) {
    this.t = tables;
    // Plain loops: this runs once per tokenizer, before anything is compiled (a forEach over the
    // 50k ids cost ~6 ms of every start-up).
    const { rankOf } = tables;
    let maxRank = -1;
    for (let id = 0; id < rankOf.length; id++) if (rankOf[id] > maxRank) maxRank = rankOf[id];
    const idOfRank = (this.idOfRank = new Int32Array(maxRank + 1).fill(-1));
    for (let id = 0; id < rankOf.length; id++) if (rankOf[id] >= 0) idOfRank[rankOf[id]] = id;
  }

  /** Appends the ids of bytes[start..end) to out. */
  merge(bytes: Uint8Array, start: number, end: number, out: IdBuffer): void {
    const { byteToId, rankOf, table } = this.t;
    const n = end - start;
    if (n === 1) return out.push(byteToId[bytes[start]]);
    const whole = table.find(bytes, start, end);
    if (whole >= 0 && rankOf[whole] >= 0) return out.push(whole);
    if (n >= POS) throw new RangeError('piece too long');
    if (this.ids.length < n) this.grow(n);
    if (n <= RESCAN_MAX) this.mergeByRescan(bytes, start, n, out);
    else this.mergeByHeap(bytes, start, n, out);
  }

  /** bytes[start..start + n), n ≥ 2: after each merge, the next is the first pair of lowest rank. */
  private mergeByRescan(bytes: Uint8Array, start: number, n: number, out: IdBuffer): void {
    const { byteToId, pairs } = this.t;
    const { ids, rankAt, idOfRank } = this;
    for (let i = 0; i < n; i++) ids[i] = byteToId[bytes[start + i]];
    for (let i = 0; i + 1 < n; i++) rankAt[i] = pairs.find(ids[i], ids[i + 1]);
    let len = n;
    for (;;) {
      let best = -1;
      let bestRank = 0x7fffffff;
      for (let i = 0; i + 1 < len; i++) {
        const r = rankAt[i];
        if (r >= 0 && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      ids[best] = idOfRank[bestRank];
      len--;
      for (let k = best + 1; k < len; k++) {
        ids[k] = ids[k + 1];
        rankAt[k] = rankAt[k + 1];
      }
      rankAt[best] = best + 1 < len ? pairs.find(ids[best], ids[best + 1]) : -1;
      if (best > 0) rankAt[best - 1] = pairs.find(ids[best - 1], ids[best]);
    }
    for (let i = 0; i < len; i++) out.push(ids[i]);
  }

  /** bytes[start..start + n), n ≥ 2, with a heap of candidate pairs. */
  private mergeByHeap(bytes: Uint8Array, start: number, n: number, out: IdBuffer): void {
    const { byteToId, pairs } = this.t;
    const { ids, next, prev, rankAt, heap, idOfRank } = this;

    let size = 0;
    for (let i = 0; i < n; i++) {
      ids[i] = byteToId[bytes[start + i]];
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    for (let i = 0; i < n; i++) {
      const rank = i + 1 < n ? pairs.find(ids[i], ids[i + 1]) : -1;
      rankAt[i] = rank;
      if (rank >= 0) size = heapPush(heap, size, rank * POS + i);
    }
    while (size > 0) {
      const key = heap[0];
      size = heapPop(heap, size);
      const rank = Math.floor(key / POS);
      const pos = key - rank * POS;
      // Entries go stale when a neighbour merges. Whenever the pair starting at pos changes it is
      // re-offered and rankAt[pos] updated, and a changed pair spells a longer, different token,
      // so an entry is current exactly when it still matches rankAt[pos].
      if (ids[pos] < 0 || rankAt[pos] !== rank) continue;
      const right = next[pos];
      ids[pos] = idOfRank[rank];
      ids[right] = -1;
      const after = next[right];
      next[pos] = after;
      if (after >= 0) prev[after] = pos;
      const before = prev[pos];
      if (before >= 0) {
        const r = pairs.find(ids[before], ids[pos]);
        rankAt[before] = r;
        if (r >= 0) size = heapPush(heap, size, r * POS + before);
      }
      const r = after >= 0 ? pairs.find(ids[pos], ids[after]) : -1;
      rankAt[pos] = r;
      if (r >= 0) size = heapPush(heap, size, r * POS + pos);
    }
    for (let i = 0; i >= 0; i = next[i]) out.push(ids[i]);
  }

  private grow(n: number): void {
    const cap = Math.max(n, this.ids.length * 2);
    this.ids = new Int32Array(cap);
    this.next = new Int32Array(cap);
    this.prev = new Int32Array(cap);
    this.rankAt = new Int32Array(cap);
    this.heap = new Float64Array(3 * cap);
  }
}

/** Min-heap push; returns the new size. */
function heapPush(heap: Float64Array, size: number, key: number): number {
  let k = size;
  while (k > 0) {
    const parent = (k - 1) >> 1;
    if (heap[parent] <= key) break;
    heap[k] = heap[parent];
    k = parent;
  }
  heap[k] = key;
  return size + 1;
}

/** Min-heap pop of heap[0]; returns the new size. */
function heapPop(heap: Float64Array, size: number): number {
  const last = heap[--size];
  let k = 0;
  for (;;) {
    let child = 2 * k + 1;
    if (child >= size) break;
    if (child + 1 < size && heap[child + 1] < heap[child]) child++;
    if (heap[child] >= last) break;
    heap[k] = heap[child];
    k = child;
  }
  heap[k] = last;
  return size;
}
