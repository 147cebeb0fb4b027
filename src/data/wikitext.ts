/**
 * WikiText (wiki.*.tokens / wiki.*.raw) → one document per line, on UTF-8 bytes (wikitext-bytes.ts).
 *
 * Cleaning follows the seed's `wikitext_clean`, rule for rule and in its order, with one repair:
 * its second rule, re.sub(r"/' [0-9]/", ...), is written with JavaScript-style slashes and never
 * matches anything; what it was after is WikiText's split decade apostrophe (" ' 80s" → " '80s"), which
 * we join, but only after whitespace so that plural possessives ("Keats' 1820") keep their space.
 * test/data/wikitext-rules.test.ts holds the rules as the seed writes them (str.replace, re.sub) and
 * checks each pass against its rule.
 */
import { decadePass, headingLevel, literalPass, trimPairPass, trimRange, utf16Length, type BytePass } from './wikitext-bytes.js';

export type SplitMode = 'articles' | 'sections';
export type UnkMode = { kind: 'keep' } | { kind: 'drop' } | { kind: 'replace'; with: string };

export interface PrepOptions {
  /** articles: a document per top-level " = Title = "; sections: every heading ends a document (the seed). */
  split: SplitMode;
  /** Apply the seed's cleaning rules (default true). */
  clean: boolean;
  unk: UnkMode;
  /** Documents shorter than this many characters (UTF-16 code units, as String.length) are dropped. */
  minChars: number;
}

export const DEFAULT_PREP: PrepOptions = { split: 'articles', clean: true, unk: { kind: 'keep' }, minChars: 0 };

const literal = (from: string, to: string): readonly [string, BytePass] => [`"${from}" → "${to}"`, literalPass(from, to)];

/**
 * The seed's wikitext_clean, in order. The seed's \s and [^x] may cross newlines; ours may not, so
 * that a pass can clean many lines at once and still pair brackets and quotes within each line only,
 * as the seed (which cleans line by line) does.
 */
export const CLEAN_RULES: readonly (readonly [name: string, pass: BytePass])[] = [
  literal("s '", "s'"),
  ['decade apostrophe', decadePass],
  literal(' @-@ ', '-'),
  literal(' @,@ ', ','),
  literal(' @.@ ', '.'),
  literal(' : ', ': '),
  literal(' ; ', '; '),
  literal(' . ', '. '),
  literal(' .', '.'),
  literal(' ! ', '! '),
  literal(' ? ', '? '),
  literal(' , ', ', '),
  ['trim inside ( )', trimPairPass('(', ')')],
  ['trim inside [ ]', trimPairPass('[', ']')],
  ['trim inside { }', trimPairPass('{', '}')],
  ['trim inside " "', trimPairPass('"', '"')],
  ["trim inside ' '", trimPairPass("'", "'")],
  literal('= = = =', '===='),
  literal('= = =', '==='),
  literal('= =', '=='),
  literal(' ° ', '°'),
  literal(' \n', '\n'),
  literal('\n ', '\n'),
  literal(' N ', ' 1 '),
  literal(" 's", "'s"),
];

/** wikitextClean of each line of buf[start, end) (lines split by "\n"), in place: returns the new end. */
export function cleanBytes(buf: Buffer, start: number, end: number): number {
  for (const [, pass] of CLEAN_RULES) end = pass(buf, start, end);
  return end;
}

/** The seed's wikitext_clean of a (well-formed) string. */
export function wikitextClean(text: string): string {
  const buf = Buffer.from(text);
  return buf.toString('utf8', 0, cleanBytes(buf, 0, buf.length));
}

export function applyUnk(text: string, unk: UnkMode): string {
  if (unk.kind === 'keep' || !text.includes('<unk>')) return text;
  if (unk.kind === 'replace') return text.replaceAll('<unk>', unk.with);
  return text.replace(/ ?<unk>/g, '').trim();
}

const NL = 0x0a;
const UNK = Buffer.from('<unk>');

/** The first "<unk>" in b[from, end), or -1. */
function findUnk(b: Buffer, from: number, end: number): number {
  const view = b.subarray(0, end); // a search of b could run on through the rest of the chunk, for each document
  for (let a = view.indexOf(0x3c, from); a >= 0 && a + UNK.length <= end; a = view.indexOf(0x3c, a + 1)) {
    if (b[a + 1] === 0x75 && b[a + 2] === 0x6e && b[a + 3] === 0x6b && b[a + 4] === 0x3e) return a;
  }
  return -1;
}

/** Bytes appended into a buffer that grows, allocated at the first append; taken as one Buffer per push. */
class ByteSink {
  buf = Buffer.alloc(0);
  len = 0;
  /** The size to allocate at first: what the documents might take. */
  constructor(private readonly expected: number) {}
  append(src: Uint8Array, s: number, e: number): void {
    const need = this.len + (e - s) + 1; // and a "\n"
    if (need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.expected, 2 * this.buf.length));
      this.buf.copy(grown, 0, 0, this.len);
      this.buf = grown;
    }
    this.buf.set(src.subarray(s, e), this.len);
    this.len += e - s;
  }
}

/**
 * Groups lines into documents as they stream by, cleans them and writes each document as a line.
 * push() takes whole lines of one input (its bytes, valid UTF-8) and returns the output of the
 * documents they complete; finish() that of the last one, which the seed's loop loses.
 */
export class DocumentAssembler {
  /** Documents written so far. */
  documents = 0;
  /** work[0, kept): the current document so far, cleaned, its lines joined with spaces. */
  private work = Buffer.allocUnsafe(0);
  private kept = 0;
  private readonly replacement: Buffer | undefined;

  constructor(private readonly options: PrepOptions = DEFAULT_PREP) {
    const { unk } = options;
    // JavaScript's replaceAll gives "$&", "$$", … in a replacement a meaning: those go through applyUnk.
    this.replacement = unk.kind === 'replace' && !unk.with.includes('$') ? Buffer.from(unk.with) : undefined;
  }

  push(input: Uint8Array): Buffer {
    // The input is copied behind the kept text in one go and its passage lines moved down in
    // place: copyWithin costs ~0.15 µs a line, Buffer.copy/set from another buffer ~0.5 µs (17 ms
    // for WikiText-2 train's 36,718 lines).
    const need = this.kept + 1 + input.length;
    if (this.work.length < need) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.work.length));
      this.work.copy(grown, 0, 0, this.kept);
      this.work = grown;
    }
    const work = this.work;
    const from = this.kept + 1;
    work.set(input, from);
    const ends: number[] = []; // a document ends after line ends[k] (counting the kept text as one)
    const w = passageLines(work, from, from + input.length, this.kept, this.options.split === 'articles', ends);
    const cleanFrom = this.kept > 0 ? this.kept + 1 : 0; // the kept text is cleaned already
    const end = this.options.clean && w > cleanFrom ? cleanBytes(work, cleanFrom, w) : w;

    const out = new ByteSink(end + ends.length);
    const p = this.emitDocuments(out, work, end, ends);
    // What follows the last complete document is kept, joined, for the next push.
    if (p < end) {
      const done = work.subarray(0, end);
      for (let q = done.indexOf(NL, p); q >= 0; q = done.indexOf(NL, q + 1)) work[q] = 0x20;
      work.copyWithin(0, p, end);
    }
    this.kept = Math.max(0, end - p);
    return out.buf.subarray(0, out.len);
  }

  /** Emits the documents of work[0, end) that end after lines ends[]; returns where the rest starts. */
  private emitDocuments(out: ByteSink, work: Buffer, end: number, ends: readonly number[]): number {
    const done = work.subarray(0, end);
    let p = 0;
    let line = 0;
    for (const last of ends) {
      const docStart = p;
      let q;
      for (;;) {
        q = done.indexOf(NL, p);
        if (q < 0) q = end;
        if (++line === last) break;
        work[q] = 0x20; // a document's lines are joined with spaces
        p = q + 1;
      }
      this.emit(out, work, docStart, q);
      p = q + 1;
    }
    return p;
  }

  finish(): Buffer {
    const out = new ByteSink(this.kept + 1);
    if (this.kept > 0) this.emit(out, this.work, 0, this.kept);
    this.kept = 0;
    return out.buf.subarray(0, out.len);
  }

  /**
   * Appends a document (buf[s, e), its lines joined) as a line, unless --unk or --min-chars drop it.
   * The seed strips the joined document; that has nothing to do, for its lines are stripped and no
   * rule changes a line's first or last character into whitespace (or empties a line).
   */
  private emit(out: ByteSink, buf: Buffer, s: number, e: number): void {
    const { unk, minChars } = this.options;
    const start = out.len;
    let u = unk.kind === 'keep' ? -1 : findUnk(buf, s, e);
    if (u < 0) {
      out.append(buf, s, e);
    } else if (unk.kind === 'drop') {
      // text.replace(/ ?<unk>/g, '').trim(); a space before "<unk>" is never the end of the last match
      for (; u >= 0; u = findUnk(buf, s, e)) {
        out.append(buf, s, u > s && buf[u - 1] === 0x20 ? u - 1 : u);
        s = u + UNK.length;
      }
      out.append(buf, s, e);
      const [ts, te] = trimRange(out.buf, start, out.len);
      out.buf.copyWithin(start, ts, te);
      out.len = start + te - ts;
    } else if (this.replacement) {
      for (; u >= 0; u = findUnk(buf, s, e)) {
        out.append(buf, s, u);
        out.append(this.replacement, 0, this.replacement.length);
        s = u + UNK.length;
      }
      out.append(buf, s, e);
    } else {
      const text = Buffer.from(applyUnk(buf.toString('utf8', s, e), unk));
      out.append(text, 0, text.length);
    }
    if (out.len === start || (minChars > 0 && utf16Length(out.buf, start, out.len) < minChars)) {
      out.len = start;
      return;
    }
    out.buf[out.len++] = NL; // append() leaves room for it
    this.documents++;
  }
}

/**
 * Moves the passage lines of buf[from, to) (trimmed, non-empty, not headings) down to follow
 * buf[0, kept), each after a "\n"; pushes onto ends the line count at each document boundary.
 * Returns the end of the lines.
 */
function passageLines(buf: Buffer, from: number, to: number, kept: number, articles: boolean, ends: number[]): number {
  const view = buf.subarray(0, to);
  let w = kept;
  let lines = kept > 0 ? 1 : 0;
  let boundary = 0;
  for (let p = from; p < to; ) {
    let q = view.indexOf(NL, p);
    if (q < 0) q = to;
    const [s, e] = trimRange(buf, p, q);
    p = q + 1;
    if (s === e) continue;
    const level = headingLevel(buf, s, e);
    if (level === 0) {
      if (w > 0) buf[w++] = NL;
      if (w !== s) buf.copyWithin(w, s, e);
      w += e - s;
      lines++;
    } else if (!(articles && level > 1) && lines > boundary) {
      ends.push(lines);
      boundary = lines;
    }
  }
  return w;
}

/**
 * All documents of a whole (well-formed) text, for the benchmarks and tests; the CLI streams. The
 * output is split at "\n", so a --unk replacement holding "\n" splits a document here.
 */
export function prepareWikitext(text: string, options: PrepOptions = DEFAULT_PREP): string[] {
  const assembler = new DocumentAssembler(options);
  const out = Buffer.concat([assembler.push(Buffer.from(text)), assembler.finish()]).toString('utf8');
  return out === '' ? [] : out.slice(0, -1).split('\n');
}
