/**
 * GPT-2's pre-tokenizer, hand-compiled from its pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * into a scanner over UTF-8 bytes: no regex engine, no string, no substring allocation. Scanning the
 * bytes as they come from a file also spares decoding them into a JS string (~50 ms on WikiText-2)
 * and byte access is cheaper than charCodeAt (pre-tokenizing and hashing WikiText-2: ~70 ms
 * against ~100–150 ms).
 *
 * `\s` is Unicode White_Space, as in tiktoken (Rust regex), OpenAI's encoder.py and HF (Python
 * `regex`). JavaScript's own `\s` differs (it adds U+FEFF and lacks U+0085), which is why the pure-JS
 * tokenizers disagree with tiktoken on those two characters and we do not.
 */

export const OTHER = 0;
export const LETTER = 1;
export const NUMBER = 2;
export const SPACE = 3;

const WHITE_SPACE = [
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
  0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
];
const isWhiteSpace = new Set(WHITE_SPACE);
const LETTER_RE = /^\p{L}$/u;
const NUMBER_RE = /^\p{N}$/u;

function classifyCodePoint(cp: number): number {
  if (isWhiteSpace.has(cp)) return SPACE;
  if (cp > 0x10ffff) return OTHER; // decoded from invalid UTF-8
  const ch = String.fromCodePoint(cp);
  if (LETTER_RE.test(ch)) return LETTER;
  if (NUMBER_RE.test(ch)) return NUMBER;
  return OTHER;
}

// Classes of the BMP, filled in 256-code-point pages on first use so start-up costs nothing.
const BMP = new Uint8Array(0x10000);
const READY = new Uint8Array(0x100);
const astral = new Map<number, number>();

function fillPage(page: number): void {
  for (let i = 0; i < 256; i++) BMP[(page << 8) | i] = classifyCodePoint((page << 8) | i);
  READY[page] = 1;
}
fillPage(0);

function bmpClass(c: number): number {
  if (READY[c >> 8] === 0) fillPage(c >> 8);
  return BMP[c];
}

function astralClass(cp: number): number {
  let cls = astral.get(cp);
  if (cls === undefined) astral.set(cp, (cls = classifyCodePoint(cp)));
  return cls;
}

/** Bytes in the UTF-8 sequence that starts with lead byte b (the input is valid UTF-8). */
const seqLength = (b: number) => (b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4);

/** Class of the multi-byte character that starts at i (lead byte b ≥ 0x80). */
function multiByteClass(bytes: Uint8Array, i: number, b: number): number {
  if (b < 0xe0) {
    const cp = ((b & 0x1f) << 6) | (bytes[i + 1] & 0x3f);
    return cp < 0x100 ? BMP[cp] : bmpClass(cp);
  }
  if (b < 0xf0) return bmpClass(((b & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f));
  return astralClass(((b & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) | ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f));
}

/** Class of the character that starts at byte i (callers know i < end). */
function classAt(bytes: Uint8Array, i: number): number {
  const b = bytes[i];
  return b < 0x80 ? BMP[b] : multiByteClass(bytes, i, b);
}

/** End of the run of characters of class `cls` starting at byte i. */
function runEnd(bytes: Uint8Array, i: number, end: number, cls: number): number {
  while (i < end) {
    const b = bytes[i];
    if (b < 0x80) {
      if (BMP[b] !== cls) return i; // the hot path: ASCII
      i++;
    } else {
      if (multiByteClass(bytes, i, b) !== cls) return i;
      i += seqLength(b);
    }
  }
  return Math.min(i, end); // past it only on invalid UTF-8, which gets wrong ids but stays in range
}

const APOS = 0x27;

/**
 * Index just past the pre-token that starts at byte i of bytes[..end), valid UTF-8 cut at
 * character boundaries. Requires i < end.
 * Most English pieces are " word", "word", " 1999" or ",": an ASCII run (after an optional space)
 * that ends at an ASCII character of another class. Those are decided here from a 128-entry
 * table; anything else (apostrophes, whitespace, non-ASCII) takes the general path.
 */
export function pieceEnd(bytes: Uint8Array, i: number, end: number): number {
  const c = bytes[i];
  if (c !== APOS && c < 0x80) {
    let j = c === 0x20 ? i + 1 : i;
    if (j < end) {
      const first = bytes[j];
      const cls = first < 0x80 ? BMP[first] : SPACE;
      if (cls !== SPACE) {
        j++;
        let d = 0;
        while (j < end && (d = bytes[j]) < 0x80 && BMP[d] === cls) j++;
        if (j === end || d < 0x80) return j;
      }
    }
  }
  return pieceEndGeneral(bytes, i, end);
}

function pieceEndGeneral(bytes: Uint8Array, i: number, end: number): number {
  const c = bytes[i];
  if (c === APOS && i + 1 < end) {
    const d = bytes[i + 1];
    // 's 't 'm 'd
    if (d === 0x73 || d === 0x74 || d === 0x6d || d === 0x64) return i + 2;
    if (i + 2 < end) {
      const e = bytes[i + 2];
      // 're 've 'll
      if ((e === 0x65 && (d === 0x72 || d === 0x76)) || (d === 0x6c && e === 0x6c)) return i + 3;
    }
  }
  let start = i;
  let cls = classAt(bytes, i);
  if (c === 0x20 && i + 1 < end) {
    const next = classAt(bytes, i + 1);
    if (next !== SPACE) {
      start = i + 1; // " ?" prefix of a letter, number or other run
      cls = next;
    }
  }
  if (cls !== SPACE) return runEnd(bytes, start, end, cls);
  // \s+(?!\S) | \s+ : a whitespace run keeps its last character for the next piece when
  // something non-space follows (so " word" stays together), unless the run is one character.
  const j = runEnd(bytes, i, end, SPACE);
  if (j === end || i + seqLength(c) === j) return j;
  let last = j - 1;
  while ((bytes[last] & 0xc0) === 0x80) last--; // back over the last character's continuation bytes
  return last > i ? last : j; // (last = i only on invalid UTF-8: never an empty piece)
}

/** Splits text into pre-tokens (for tests and debugging; the encoder scans bytes in place). */
export function pretokenize(text: string): string[] {
  const bytes = Buffer.from(text, 'utf8');
  const out: string[] = [];
  for (let i = 0; i < bytes.length; ) {
    const j = pieceEnd(bytes, i, bytes.length);
    out.push(bytes.toString('utf8', i, j));
    i = j;
  }
  return out;
}
