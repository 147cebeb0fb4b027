/**
 * Pre-token → ids cache keyed directly on the UTF-16 code units of the input text, so a hit costs
 * a hash and a compare with no substring allocated. Open addressing, linear probing; when it gets
 * full it starts over (inputs with endless distinct words must not grow memory without bound).
 */
export const MAX_CACHED_PIECE = 48;
const MAX_ENTRIES = 1 << 19;

export function hashRange(text: string, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let k = start; k < end; k++) h = Math.imul(h ^ text.charCodeAt(k), 0x01000193);
  return h >>> 0;
}

export class PieceCache {
  private mask = 0;
  private slots = new Int32Array(0); // entry index + 1; 0 = empty
  private count = 0;
  private entHash = new Uint32Array(0);
  private entKey = new Int32Array(0); // offset into keys; length in entKeyLen
  private entKeyLen = new Uint8Array(0);
  private entVal = new Int32Array(0); // offset into vals
  private entValLen = new Uint8Array(0);
  private keys: Uint16Array = new Uint16Array(0);
  private keysUsed = 0;
  /** Ids of cached pieces; read by the encoder through `valueStart`/`valueEnd`. */
  vals: Uint32Array = new Uint32Array(0);
  private valsUsed = 0;

  constructor(private readonly initialSlots = 1 << 14) {
    this.reset();
  }

  reset(): void {
    const n = this.initialSlots;
    this.mask = n - 1;
    this.slots = new Int32Array(n);
    this.count = 0;
    this.entHash = new Uint32Array(n >> 1);
    this.entKey = new Int32Array(n >> 1);
    this.entKeyLen = new Uint8Array(n >> 1);
    this.entVal = new Int32Array(n >> 1);
    this.entValLen = new Uint8Array(n >> 1);
    this.keys = new Uint16Array(n * 4);
    this.keysUsed = 0;
    this.vals = new Uint32Array(n * 2);
    this.valsUsed = 0;
  }

  /** Entry index of text[start..end) with hash h, or -1. */
  find(text: string, start: number, end: number, h: number): number {
    const len = end - start;
    for (let s = h & this.mask; ; s = (s + 1) & this.mask) {
      const slot = this.slots[s];
      if (slot === 0) return -1;
      const e = slot - 1;
      if (this.entHash[e] === h && this.entKeyLen[e] === len) {
        const off = this.entKey[e];
        let k = 0;
        while (k < len && this.keys[off + k] === text.charCodeAt(start + k)) k++;
        if (k === len) return e;
      }
    }
  }

  valueStart(e: number): number {
    return this.entVal[e];
  }

  valueEnd(e: number): number {
    return this.entVal[e] + this.entValLen[e];
  }

  /** Caches ids[from..to) for text[start..end). Pieces longer than MAX_CACHED_PIECE are not cached. */
  insert(text: string, start: number, end: number, h: number, ids: Uint32Array, from: number, to: number): void {
    const len = end - start;
    const n = to - from;
    if (len > MAX_CACHED_PIECE || n > 255) return;
    if (this.count >= MAX_ENTRIES) this.reset();
    if ((this.count + 1) * 2 > this.slots.length) this.rehash();
    this.ensure(len, n);
    const e = this.count++;
    this.entHash[e] = h;
    this.entKey[e] = this.keysUsed;
    this.entKeyLen[e] = len;
    for (let k = 0; k < len; k++) this.keys[this.keysUsed + k] = text.charCodeAt(start + k);
    this.keysUsed += len;
    this.entVal[e] = this.valsUsed;
    this.entValLen[e] = n;
    this.vals.set(ids.subarray(from, to), this.valsUsed);
    this.valsUsed += n;
    let s = h & this.mask;
    while (this.slots[s] !== 0) s = (s + 1) & this.mask;
    this.slots[s] = e + 1;
  }

  private ensure(keyLen: number, valLen: number): void {
    if (this.keysUsed + keyLen > this.keys.length) this.keys = grow16(this.keys, this.keysUsed + keyLen);
    if (this.valsUsed + valLen > this.vals.length) this.vals = grow32(this.vals, this.valsUsed + valLen);
  }

  private rehash(): void {
    const size = this.slots.length * 2;
    this.mask = size - 1;
    this.slots = new Int32Array(size);
    const cap = size >> 1;
    this.entHash = copyInto(new Uint32Array(cap), this.entHash);
    this.entKey = copyInto(new Int32Array(cap), this.entKey);
    this.entKeyLen = copyInto(new Uint8Array(cap), this.entKeyLen);
    this.entVal = copyInto(new Int32Array(cap), this.entVal);
    this.entValLen = copyInto(new Uint8Array(cap), this.entValLen);
    for (let e = 0; e < this.count; e++) {
      let s = this.entHash[e] & this.mask;
      while (this.slots[s] !== 0) s = (s + 1) & this.mask;
      this.slots[s] = e + 1;
    }
  }
}

function copyInto<T extends Uint32Array | Int32Array | Uint8Array>(dst: T, src: T): T {
  dst.set(src as never);
  return dst;
}

function grow16(a: Uint16Array, need: number): Uint16Array {
  const b = new Uint16Array(Math.max(need, a.length * 2));
  b.set(a);
  return b;
}

function grow32(a: Uint32Array, need: number): Uint32Array {
  const b = new Uint32Array(Math.max(need, a.length * 2));
  b.set(a);
  return b;
}
