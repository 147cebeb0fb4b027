/**
 * WikiText (wiki.*.tokens / wiki.*.raw) → one document per line.
 *
 * Cleaning follows the seed's `wikitext_clean`, rule for rule and in its order, with one repair:
 * its second rule, re.sub(r"/' [0-9]/", ...), is written with JavaScript-style slashes and never
 * matches anything; what it was after is WikiText's split decade apostrophe (" ' 80s" → " '80s"),
 * which we join, but only after whitespace so that plural possessives ("Keats' 1820") keep their space.
 */

export type SplitMode = 'articles' | 'sections';
export type UnkMode = { kind: 'keep' } | { kind: 'drop' } | { kind: 'replace'; with: string };

export interface PrepOptions {
  /** articles: a document per top-level " = Title = "; sections: every heading ends a document (the seed). */
  split: SplitMode;
  /** Apply the seed's cleaning rules (default true). */
  clean: boolean;
  unk: UnkMode;
  /** Documents shorter than this many characters are dropped. */
  minChars: number;
}

export const DEFAULT_PREP: PrepOptions = { split: 'articles', clean: true, unk: { kind: 'keep' }, minChars: 0 };

type Rule = readonly [name: string, apply: (s: string) => string];
const literal = (from: string, to: string): Rule => [`"${from}" → "${to}"`, (s) => replaceLiteral(s, from, to)];
const regex = (name: string, re: RegExp, to: string): Rule => [name, (s) => s.replace(re, to)];

/**
 * s.replaceAll(from, to) (Python's str.replace: leftmost, non-overlapping), but searching for the
 * pattern's rarest-looking character rather than its first: most patterns start with a space,
 * and stopping at every space made these replaces most of wikitext-prep's time.
 */
export function replaceLiteral(s: string, from: string, to: string): string {
  let off = [...from].findIndex((c) => c !== ' ' && !/\p{L}/u.test(c));
  if (off < 0) off = Math.max(0, [...from].findIndex((c) => c !== ' '));
  const anchor = from[off];
  const parts: string[] = [];
  let done = 0; // s[0..done) is settled
  for (let a = s.indexOf(anchor, off); a >= 0; ) {
    const m = a - off;
    if (m >= done && s.startsWith(from, m)) {
      parts.push(s.slice(done, m), to);
      done = m + from.length;
      a = s.indexOf(anchor, done + off);
    } else {
      a = s.indexOf(anchor, a + 1);
    }
  }
  if (done === 0) return s;
  parts.push(s.slice(done));
  return parts.join('');
}

/** The seed's wikitext_clean, in order. Exported so each rule has its own test. */
export const CLEAN_RULES: readonly Rule[] = [
  literal("s '", "s'"),
  ['decade apostrophe', joinDecadeApostrophes],
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
  // The seed's \s and [^x] may cross newlines; ours may not, so that cleanLines() can clean many
  // lines in one pass and still pair brackets and quotes within each line only, as the seed does.
  regex('trim inside ( )', /\([^\S\n]*([^)\n]*?)[^\S\n]*\)/g, '($1)'),
  regex('trim inside [ ]', /\[[^\S\n]*([^\]\n]*?)[^\S\n]*\]/g, '[$1]'),
  regex('trim inside { }', /\{[^\S\n]*([^}\n]*?)[^\S\n]*\}/g, '{$1}'),
  regex('trim inside " "', /"[^\S\n]*([^"\n]*?)[^\S\n]*"/g, '"$1"'),
  regex("trim inside ' '", /'[^\S\n]*([^'\n]*?)[^\S\n]*'/g, "'$1'"),
  literal('= = = =', '===='),
  literal('= = =', '==='),
  literal('= =', '=='),
  literal(' ° ', '°'),
  literal(' \n', '\n'),
  literal('\n ', '\n'),
  literal(' N ', ' 1 '),
  literal(" 's", "'s"),
];

/** " ' 80s" → " '80s" where the apostrophe follows whitespace or starts the line. */
function joinDecadeApostrophes(s: string): string {
  if (!s.includes("' ")) return s;
  return s.replace(/' (\d\d)(s?)(?=\s|$)/gm, (match, digits: string, plural: string, at: number) =>
    at === 0 || /\s/.test(s[at - 1]) ? `'${digits}${plural}` : match,
  );
}

export function wikitextClean(text: string): string {
  for (const [, apply] of CLEAN_RULES) text = apply(text);
  return text;
}

/**
 * wikitextClean of each line, in one pass over all of them: ~25 scans of a long string instead of
 * ~25 per line. Same result as line by line for trimmed lines (no rule crosses a newline, and
 * the " \n" / "\n " rules find nothing to do between trimmed lines).
 */
export function cleanLines(lines: readonly string[]): string[] {
  if (lines.length === 1) return [wikitextClean(lines[0])];
  return wikitextClean(lines.join('\n')).split('\n');
}

/** 1 for " = Title = ", 2 for " = = Section = = ", …; 0 if the (stripped) line is not a heading. */
export function headingLevel(line: string): number {
  if (!(line.startsWith('=') && line.endsWith('='))) return 0;
  let level = 0;
  let k = 0;
  while (line[k] === '=') {
    level++;
    k++;
    while (line[k] === ' ') k++;
  }
  return level;
}

export function applyUnk(text: string, unk: UnkMode): string {
  if (unk.kind === 'keep' || !text.includes('<unk>')) return text;
  if (unk.kind === 'replace') return text.replaceAll('<unk>', unk.with);
  return text.replace(/ ?<unk>/g, '').trim();
}

/**
 * Groups lines into documents as they stream by. push() returns the documents a line completes;
 * finish() returns the last one, which the seed's loop loses.
 */
export class DocumentAssembler {
  private passage: string[] = [];

  constructor(private readonly options: PrepOptions = DEFAULT_PREP) {}

  push(rawLine: string): string[] {
    const line = rawLine.trim();
    if (line === '') return [];
    const level = headingLevel(line);
    if (level === 0) {
      this.passage.push(line);
      return [];
    }
    if (this.options.split === 'articles' && level > 1) return [];
    return this.flush();
  }

  finish(): string[] {
    return this.flush();
  }

  private flush(): string[] {
    if (this.passage.length === 0) return [];
    const { clean, unk, minChars } = this.options;
    const lines = clean ? cleanLines(this.passage) : this.passage;
    this.passage = [];
    const doc = applyUnk(lines.join(' ').trim(), unk);
    return doc.length === 0 || doc.length < minChars ? [] : [doc];
  }
}

/** All documents of a whole text (for tests and small inputs; the CLI streams). */
export function prepareWikitext(text: string, options: PrepOptions = DEFAULT_PREP): string[] {
  const assembler = new DocumentAssembler(options);
  const docs: string[] = [];
  for (const line of text.split('\n')) docs.push(...assembler.push(line));
  docs.push(...assembler.finish());
  return docs;
}
