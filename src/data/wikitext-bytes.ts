/**
 * The pieces of wikitext-prep that work on UTF-8 bytes in place: each cleaning rule is a pass that
 * rewrites buf[start, end) where it lies and returns the new end (no rule lengthens the text).
 *
 * Why bytes: on strings every rule that matched once copied the whole text (~25 ms a pass over
 * WikiText-2 train, 0.7 s for the 25 rules, plus 40 ms to decode and the garbage); in place a pass
 * costs its stops (a native Buffer.indexOf, ~45 ns each, ~590,000 for the 25 rules over train) and
 * its matches (a copyWithin each). All of them take ~8.5 ms a MiB once optimized. Every pattern is
 * ASCII or whole UTF-8 characters, and a UTF-8 lead byte never occurs inside another character, so
 * a byte match is a character match; the input is valid UTF-8 (readTextChunks checks, or replaces
 * bad bytes with U+FFFD under --lossy).
 *
 * wikitext-prep wiki.train.tokens (10.8 MB; wall s / user+sys s, medians of 5–7 in three sessions on
 * 2 shared cores): strings (before) 0.78–0.85 / 0.91–1.00 to /dev/null, 0.81–0.89 / 0.92–0.99 into
 * a pipe; bytes 0.37–0.40 / 0.45–0.49 and 0.36–0.43 / 0.46–0.49. Of the ~0.38 s, 0.21–0.24 s is
 * start-up (node alone 0.14, the rest mostly commander and module loading) and ~0.06 s the JIT's
 * warm-up (the first MiB takes ~40 ms, the next ~8.5 ms).
 *
 * Tried and dropped: needles for Buffer.indexOf ("@-@ " rather than "@": fewer stops, but each
 * native search costs more, 107 ms against 83 ms for the passes over train); cleaning in 64 KiB
 * blocks to keep the memmoves in cache, and 256 KiB or 64 KiB input chunks (no gain beyond noise).
 *
 * A pass only reads ahead of its read position r and writes behind it (w ≤ r), so what it tests is
 * always the text as the rule received it, as with the seed's str.replace/re.sub.
 */

/** A cleaning rule's pass over buf[start, end), whole lines split by "\n": returns the new end. */
export type BytePass = (buf: Buffer, start: number, end: number) => number;

const NL = 0x0a;
const SPACE = 0x20;

/**
 * Byte length of the character at b[i] if JavaScript's \s matches it and it is not "\n" (the
 * regexes' [^\S\n]; also String.prototype.trim's set on text without "\n"), else 0: tab, VT, FF,
 * CR, space, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F, U+3000, U+FEFF.
 */
export function spaceAt(b: Uint8Array, i: number): number {
  const x = b[i];
  if (x < 0x80) return x === SPACE || (x <= 0x0d && x >= 0x09 && x !== NL) ? 1 : 0;
  return x >= 0xc2 ? wideSpaceAt(b, i, x) : 0;
}

/** spaceAt for a lead byte x ≥ 0xc2 (kept apart so that the ASCII test stays small). */
function wideSpaceAt(b: Uint8Array, i: number, x: number): number {
  if (x === 0xc2) return b[i + 1] === 0xa0 ? 2 : 0;
  const y = b[i + 1];
  const z = b[i + 2];
  if (x === 0xe2) {
    if (y === 0x80) return z <= 0x8a || z === 0xa8 || z === 0xa9 || z === 0xaf ? 3 : 0; // z ≥ 0x80: a continuation byte
    return y === 0x81 && z === 0x9f ? 3 : 0;
  }
  if (x === 0xe1) return y === 0x9a && z === 0x80 ? 3 : 0;
  if (x === 0xe3) return y === 0x80 && z === 0x80 ? 3 : 0;
  if (x === 0xef) return y === 0xbb && z === 0xbf ? 3 : 0;
  return 0;
}

/** Byte length of the character that ends at b[j - 1] if spaceAt counts it, else 0; reads nothing below lo. */
export function spaceBefore(b: Uint8Array, j: number, lo: number): number {
  const x = b[j - 1];
  if (x < 0x80) return x === SPACE || (x <= 0x0d && x >= 0x09 && x !== NL) ? 1 : 0;
  if (x > 0xbf || j - 2 < lo) return 0;
  if (x === 0xa0 && b[j - 2] === 0xc2) return 2;
  return j - 3 >= lo && b[j - 3] >= 0xc2 && wideSpaceAt(b, j - 3, b[j - 3]) === 3 ? 3 : 0;
}

/** [s, e) without the leading and trailing whitespace String.prototype.trim removes (text without "\n"). */
export function trimRange(b: Uint8Array, s: number, e: number): [number, number] {
  for (let k; s < e && (k = spaceAt(b, s)) > 0; ) s += k;
  for (let k; e > s && (k = spaceBefore(b, e, s)) > 0; ) e -= k;
  return [s, e];
}

/** The text's length in UTF-16 code units (String.prototype.length): a 4-byte character counts 2. */
export function utf16Length(b: Uint8Array, s: number, e: number): number {
  let n = 0;
  for (let i = s; i < e; i++) {
    const x = b[i];
    if ((x & 0xc0) !== 0x80) n += x >= 0xf0 ? 2 : 1;
  }
  return n;
}

/** 1 for "= Title =", 2 for "= = Section = =", …; 0 if the (trimmed) line b[s, e) is not a heading. */
export function headingLevel(b: Uint8Array, s: number, e: number): number {
  const EQ = 0x3d;
  if (s === e || b[s] !== EQ || b[e - 1] !== EQ) return 0;
  let level = 0;
  for (let k = s; k < e && b[k] === EQ; ) {
    level++;
    k++;
    while (k < e && b[k] === SPACE) k++;
  }
  return level;
}

/**
 * Python's str.replace(from, to): leftmost, non-overlapping. It stops at the pattern's rarest-looking
 * byte rather than its first: most patterns start with a space, and stopping at every space would
 * make these passes most of the time.
 */
export function literalPass(from: string, to: string): BytePass {
  const f = Buffer.from(from);
  const t = Buffer.from(to);
  if (t.length > f.length) throw new Error(`literalPass: "${to}" is longer than "${from}"`);
  const isLetter = (x: number) => (x | 0x20) >= 0x61 && (x | 0x20) <= 0x7a;
  let off = f.findIndex((x) => x !== SPACE && !isLetter(x));
  if (off < 0) off = Math.max(0, f.findIndex((x) => x !== SPACE));
  const anchor = f[off];
  const n = f.length;
  return (buf, start, end) => {
    const view = buf.subarray(0, end);
    let r = start; // buf[r, end) is untouched; buf[start, w) is the result so far
    let w = start;
    for (let a = view.indexOf(anchor, start + off); a >= 0; ) {
      const m = a - off;
      let hit = m >= r && m + n <= end;
      for (let k = 0; hit && k < n; k++) hit = buf[m + k] === f[k];
      if (!hit) {
        a = view.indexOf(anchor, a + 1);
        continue;
      }
      if (w !== r) buf.copyWithin(w, r, m);
      w += m - r;
      for (let k = 0; k < t.length; k++) buf[w++] = t[k];
      r = m + n;
      a = view.indexOf(anchor, r + off);
    }
    return finish(buf, r, w, end);
  };
}

/** Moves the untouched tail buf[r, end) down to w; returns the new end. */
function finish(buf: Buffer, r: number, w: number, end: number): number {
  if (w === r) return end;
  buf.copyWithin(w, r, end);
  return w + end - r;
}

/**
 * re.sub(OPEN [^\S\n]* ([^CLOSE\n]*?) [^\S\n]* CLOSE, OPEN \1 CLOSE): the whitespace just inside a
 * pair on one line goes. From an opener the match ends at the first closer if no "\n" comes first
 * (the lazy group cannot pass a closer); the group is then the inside without its leading
 * whitespace (taken by the greedy [^\S\n]*) and trailing whitespace (the lazy group stops where
 * only whitespace is left), and all of it when the inside is only whitespace. When a "\n" comes
 * first, no opener before that "\n" matches (for quotes: there is none between).
 */
export function trimPairPass(open: string, close: string): BytePass {
  const o0 = open.charCodeAt(0);
  const c0 = close.charCodeAt(0);
  return (buf, start, end) => {
    const view = buf.subarray(0, end);
    let r = start;
    let w = start;
    let nl = -1; // the first "\n" after the current opener (end if none)
    for (let o = view.indexOf(o0, start); o >= 0; ) {
      const c = view.indexOf(c0, o + 1);
      if (c < 0) break;
      if (nl < o) {
        nl = view.indexOf(NL, o + 1);
        if (nl < 0) nl = end;
      }
      if (nl < c) {
        o = view.indexOf(o0, nl + 1);
        continue;
      }
      const [i, j] = trimRange(buf, o + 1, c);
      if (i !== o + 1 || j !== c) {
        if (w !== r) buf.copyWithin(w, r, o + 1);
        w += o + 1 - r;
        if (w !== i) buf.copyWithin(w, i, j);
        w += j - i;
        buf[w++] = c0;
        r = c + 1;
      }
      o = view.indexOf(o0, c + 1);
    }
    return finish(buf, r, w, end);
  };
}

/**
 * The repaired rule 2 (see wikitext.ts): " ' 80s" → " '80s", i.e. re.sub(r"' (\d\d)(s?)(?=\s|$)", …)
 * with the multiline flag, applied only where the apostrophe starts a line or follows whitespace.
 */
export const decadePass: BytePass = (buf, start, end) => {
  const view = buf.subarray(0, end);
  const isDigit = (x: number) => x >= 0x30 && x <= 0x39;
  // \s, or the end of the line ($ matches before "\n", and \s has "\n" too)
  const spaceOrEnd = (k: number) => k === end || buf[k] === NL || spaceAt(buf, k) > 0;
  let r = start;
  let w = start;
  for (let a = view.indexOf(0x27, start); a >= 0; a = view.indexOf(0x27, a + 1)) {
    if (a + 3 >= end || buf[a + 1] !== SPACE || !isDigit(buf[a + 2]) || !isDigit(buf[a + 3])) continue;
    const s = a + 4;
    if (!(s < end && buf[s] === 0x73 && spaceOrEnd(s + 1)) && !spaceOrEnd(s)) continue;
    // After whitespace or at a line's start; the character before a begins at or after r (r is
    // start or just after a digit), so it is still as the rule received it.
    if (a > start && buf[a - 1] !== NL && spaceBefore(buf, a, r) === 0) continue;
    if (w !== r) buf.copyWithin(w, r, a + 1);
    w += a + 1 - r;
    r = a + 2; // the space after the apostrophe goes
  }
  return finish(buf, r, w, end);
};
