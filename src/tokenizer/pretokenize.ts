/**
 * GPT-2's pre-tokenizer, hand-compiled from its pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * into a scanner over UTF-16 code units: no regex engine, no substring allocation.
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
  if (cp >= 0xd800 && cp <= 0xdfff) return OTHER; // lone surrogate: encoded as U+FFFD
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

const isHigh = (c: number) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c: number) => c >= 0xdc00 && c <= 0xdfff;

/** Class of the code point that starts at `i` (callers know i < text.length). */
export function classAt(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c < 0x100) return BMP[c];
  if (!isHigh(c)) return bmpClass(c);
  const d = text.charCodeAt(i + 1);
  if (!isLow(d)) return OTHER;
  return astralClass(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
}

/** End of the run of code points of class `cls` starting at i. */
function runEnd(text: string, i: number, end: number, cls: number): number {
  while (i < end) {
    const c = text.charCodeAt(i);
    if (c < 0x100) {
      if (BMP[c] !== cls) return i; // the hot path: Latin-1
      i++;
    } else if (!isHigh(c)) {
      if (bmpClass(c) !== cls) return i;
      i++;
    } else {
      const d = i + 1 < end ? text.charCodeAt(i + 1) : 0;
      if (isLow(d)) {
        if (astralClass(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000) !== cls) return i;
        i += 2;
      } else {
        if (cls !== OTHER) return i; // lone surrogate
        i++;
      }
    }
  }
  return i;
}

const APOS = 0x27;

/**
 * Index just past the pre-token that starts at `i` in text[..end). Requires i < end.
 * Most English pieces are " word", "word", " 1999" or ",": an ASCII run (after an optional space)
 * that ends at an ASCII character of another class. Those are decided here from a 128-entry
 * table; anything else (apostrophes, whitespace, non-ASCII) takes the general path.
 */
export function pieceEnd(text: string, i: number, end: number): number {
  const c = text.charCodeAt(i);
  if (c !== APOS && c < 0x80) {
    let j = c === 0x20 ? i + 1 : i;
    if (j < end) {
      const first = text.charCodeAt(j);
      const cls = first < 0x80 ? BMP[first] : SPACE;
      if (cls !== SPACE) {
        j++;
        let d = 0;
        while (j < end && (d = text.charCodeAt(j)) < 0x80 && BMP[d] === cls) j++;
        if (j === end || d < 0x80) return j;
      }
    }
  }
  return pieceEndGeneral(text, i, end);
}

function pieceEndGeneral(text: string, i: number, end: number): number {
  const c = text.charCodeAt(i);
  if (c === APOS && i + 1 < end) {
    const d = text.charCodeAt(i + 1);
    // 's 't 'm 'd
    if (d === 0x73 || d === 0x74 || d === 0x6d || d === 0x64) return i + 2;
    if (i + 2 < end) {
      const e = text.charCodeAt(i + 2);
      // 're 've 'll
      if ((e === 0x65 && (d === 0x72 || d === 0x76)) || (d === 0x6c && e === 0x6c)) return i + 3;
    }
  }
  let start = i;
  let cls = classAt(text, i);
  if (c === 0x20 && i + 1 < end) {
    const next = classAt(text, i + 1);
    if (next !== SPACE) {
      start = i + 1; // " ?" prefix of a letter, number or other run
      cls = next;
    }
  }
  if (cls !== SPACE) return runEnd(text, start, end, cls);
  // \s+(?!\S) | \s+ : a whitespace run keeps its last character for the next piece when
  // something non-space follows (so " word" stays together), unless the run is one character.
  const j = runEnd(text, i, end, SPACE);
  if (j === end || j - i === 1) return j;
  return j - 1;
}

/** Splits text into pre-tokens (for tests and debugging; the encoder scans in place). */
export function pretokenize(text: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; ) {
    const j = pieceEnd(text, i, text.length);
    out.push(text.slice(i, j));
    i = j;
  }
  return out;
}
