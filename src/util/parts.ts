/**
 * "The K-th of N": how every map/merge split in the toolchain names a part (bpe-encode --part over
 * an input's bytes, gpt2-eval --part over records), 1-based as people count and as GNU parallel's
 * {#} and Slurm arrays started at 1 give it (a Kubernetes Indexed Job adds 1 to its 0-based index).
 */
import { ToolError, UsageError } from './errors.js';

export interface PartSpec {
  /** 1 ≤ k ≤ n. */
  k: number;
  n: number;
}

/** "K/N" with 1 ≤ K ≤ N. */
export function parsePart(text: string, flag = '--part'): PartSpec {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const [k, n] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
  if (!(Number.isSafeInteger(k) && Number.isSafeInteger(n) && n >= 1 && k >= 1 && k <= n)) {
    throw new UsageError(`${flag} ${text}: give K/N with 1 ≤ K ≤ N (the K-th of N equal slices), e.g. ${flag} 2/8`);
  }
  return { k, n };
}

/** [start, end) of part k of n over `total` units: contiguous slices whose sizes differ by at most one. */
export function partRange(part: PartSpec, total: number): { start: number; end: number } {
  return { start: Math.floor(((part.k - 1) * total) / part.n), end: Math.floor((part.k * total) / part.n) };
}

export const partName = (part: PartSpec) => `${part.k}/${part.n}`;

/**
 * The parts of one split, checked and put in part order: every item a part of the same N (its
 * "K/N" given by `name`), each of 1…N exactly once; `sameRun` refuses an item whose run differs
 * from the first's. Messages name items by `where`.
 */
export function orderedParts<T>(items: readonly T[], name: (item: T) => string, where: (item: T) => string, sameRun: (item: T, first: T) => void): T[] {
  const first = items[0];
  const n = parsePart(name(first)).n;
  const seen = new Map<number, T>();
  for (const item of items) {
    const p = parsePart(name(item));
    if (p.n !== n) throw new ToolError(`${where(item)}: part ${name(item)}, but ${where(first)} is a part of ${n}`);
    sameRun(item, first);
    if (seen.has(p.k)) throw new ToolError(`${where(item)}: part ${name(item)} again (also ${where(seen.get(p.k)!)})`);
    seen.set(p.k, item);
  }
  const missing = Array.from({ length: n }, (_, i) => i + 1).filter((k) => !seen.has(k));
  if (missing.length > 0) throw new ToolError(`--merge: part${missing.length > 1 ? 's' : ''} ${missing.map((k) => `${k}/${n}`).join(', ')} missing`);
  return Array.from({ length: n }, (_, i) => seen.get(i + 1)!);
}
