/** A growable array of token ids, so encoding appends without per-token allocation. */
export class IdBuffer {
  data: Uint32Array;
  length = 0;

  constructor(capacity = 1024) {
    this.data = new Uint32Array(Math.max(16, capacity));
  }

  /** Makes room for `extra` more ids. */
  reserve(extra: number): void {
    const need = this.length + extra;
    if (need <= this.data.length) return;
    let cap = this.data.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint32Array(cap);
    next.set(this.data.subarray(0, this.length));
    this.data = next;
  }

  push(id: number): void {
    if (this.length === this.data.length) this.reserve(1);
    this.data[this.length++] = id;
  }

  pushRange(src: Uint32Array, start: number, end: number): void {
    const n = end - start;
    if (this.length + n > this.data.length) this.reserve(n);
    if (n < 8) {
      for (let k = start; k < end; k++) this.data[this.length++] = src[k];
    } else {
      this.data.set(src.subarray(start, end), this.length);
      this.length += n;
    }
  }

  /** A view of the ids written so far (shares memory with the buffer). */
  view(): Uint32Array {
    return this.data.subarray(0, this.length);
  }

  toArray(): number[] {
    return Array.from(this.view());
  }
}
