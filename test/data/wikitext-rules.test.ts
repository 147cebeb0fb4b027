/**
 * The byte passes of wikitext-prep against the seed's rules as the seed writes them (str.replace,
 * re.sub; JavaScript's split/join and RegExp here), and the streaming DocumentAssembler against the
 * seed's preprocess_data done line by line on strings — over random and adversarial text: nested
 * and unbalanced brackets and quotes, every whitespace character \s matches (tab, CR, U+00A0,
 * U+2003, U+2028, U+FEFF, …) and some it does not (U+0085, U+180E, U+200B), astral characters.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { headingLevel, spaceAt, spaceBefore, trimRange, utf16Length, type BytePass } from '../../src/data/wikitext-bytes.js';
import { CLEAN_RULES, DocumentAssembler, type PrepOptions, type UnkMode } from '../../src/data/wikitext.js';

// ------------------------------------------------------------------------------ the seed's rules
/** Python's str.replace: split/join finds the same leftmost, non-overlapping occurrences. */
const replace = (from: string, to: string) => (s: string) => s.split(from).join(to);
const regex = (re: RegExp, to: string) => (s: string) => s.replace(re, to);
/** The repaired rule 2 (src/data/wikitext.ts): only after whitespace or at a line's start. */
const decade = (s: string) =>
  s.replace(/' (\d\d)(s?)(?=\s|$)/gm, (match, digits: string, plural: string, at: number) => (at === 0 || /\s/.test(s[at - 1]) ? `'${digits}${plural}` : match));

const SEED_RULES: readonly ((s: string) => string)[] = [
  replace("s '", "s'"),
  decade,
  replace(' @-@ ', '-'),
  replace(' @,@ ', ','),
  replace(' @.@ ', '.'),
  replace(' : ', ': '),
  replace(' ; ', '; '),
  replace(' . ', '. '),
  replace(' .', '.'),
  replace(' ! ', '! '),
  replace(' ? ', '? '),
  replace(' , ', ', '),
  // The seed's \s*, with "\n" left out so that brackets pair within a line (see CLEAN_RULES).
  regex(/\([^\S\n]*([^)\n]*?)[^\S\n]*\)/g, '($1)'),
  regex(/\[[^\S\n]*([^\]\n]*?)[^\S\n]*\]/g, '[$1]'),
  regex(/\{[^\S\n]*([^}\n]*?)[^\S\n]*\}/g, '{$1}'),
  regex(/"[^\S\n]*([^"\n]*?)[^\S\n]*"/g, '"$1"'),
  regex(/'[^\S\n]*([^'\n]*?)[^\S\n]*'/g, "'$1'"),
  replace('= = = =', '===='),
  replace('= = =', '==='),
  replace('= =', '=='),
  replace(' ° ', '°'),
  replace(' \n', '\n'),
  replace('\n ', '\n'),
  replace(' N ', ' 1 '),
  replace(" 's", "'s"),
];

const seedClean = (line: string) => SEED_RULES.reduce((s, rule) => rule(s), line);

// ------------------------------------------------------------------------------ random text
const SPACES = ['\t', '\v', '\f', '\r', ' ', '\u00a0', '\u1680', '\u2000', '\u2003', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000', '\ufeff'];
const NOT_SPACES = ['\u0085', '\u180e', '\u200b', '\u2020', '\u00b0', 'é', '😀', '\u2030', '\u00a1'];
const PIECES = [
  ...SPACES, ...NOT_SPACES, ' ', ' ', ' ', ' ', 's', 'x', 'N', '1', '8', '0', "'", "'", '"', '"', '(', ')', '[', ']', '{', '}', '@', '-', ',', '.',
  ':', ';', '!', '?', '=', '°', '<unk>', '<', 'unk>', '$', ' @-@ ', ' @,@ ', ' @.@ ', " ' 80s", "s '", " 's", ' , ', ' . ', ' N ', '= = ', '( ', ' )', '" ', ' "',
];
const piece = fc.constantFrom(...PIECES);
const text = (maxLength: number) => fc.array(piece, { maxLength }).map((p) => p.join(''));
/** Lines, some of them headings or blank. */
const line = fc.oneof(
  { weight: 6, arbitrary: text(30) },
  { weight: 1, arbitrary: fc.constantFrom(' = Title = ', ' = = Section = = ', ' = = = Sub = = = ', '=', '==', '= x', 'x =', ' ', '', '\u00a0', '\t= T =\r') },
);
const lines = fc.array(line, { maxLength: 25 });

/** pass over text placed after a prefix and followed by bytes it must not read; the prefix must stay. */
function runPass(pass: BytePass, s: string): string {
  const prefix = Buffer.from("s ' ( \n");
  const body = Buffer.from(s);
  const buf = Buffer.concat([prefix, body, Buffer.from(" @-@ ' 80s ) \" . , 's")]);
  const end = pass(buf, prefix.length, prefix.length + body.length);
  expect(buf.subarray(0, prefix.length).equals(prefix)).toBe(true);
  return buf.toString('utf8', prefix.length, end);
}

describe('each byte pass is its seed rule', () => {
  it('has a pass for each of the seed’s 25 rules', () => expect(CLEAN_RULES).toHaveLength(SEED_RULES.length));

  it.each(CLEAN_RULES.map(([name, pass], i) => [i + 1, name, pass, SEED_RULES[i]] as const))('rule %i: %s', (_i, _name, pass, rule) => {
    fc.assert(
      fc.property(fc.array(text(40), { maxLength: 4 }), (ls) => {
          expect(runPass(pass, ls.join('\n'))).toBe(rule(ls.join('\n')));
        }),
      { numRuns: 400 },
    );
  });

  it('adversarial cases', () => {
    const cases = [
      '( a ( b ) c )', '( ( ) )', '(\u2003x\u00a0)', '( x\n)', '(\n( y )', '( \u2028 )', '(\u200bx\u200b)', '( \ufeff )', '" a " b " c "', '" \n " x "',
      '""', '" "', "' '", "''", "a ' b ' c '", "it ' s ' 80s '", "' 80s", " ' 80s", "x' 80s", "\u3000' 99", "\u200b' 99", "' 99s'", "' 99 s", "' 999", "' 9",
      '[ [ ] ]', '{ a }} {{ b }', "s ' s '", ' @-@ @,@ @.@ ', ' . . . ', ' .  . ', '= = = = = = =', ' ° ° ', ' N N N ', " 's 's", '\r( a \r)\r',
    ];
    CLEAN_RULES.forEach(([name, pass], i) => {
      for (const s of cases) expect(runPass(pass, s), `${name} on ${JSON.stringify(s)}`).toBe(SEED_RULES[i](s));
    });
  });
});

describe('byte helpers', () => {
  it('spaceAt and spaceBefore are \\s without "\\n", for every BMP character', () => {
    for (let c = 0; c < 0x10000; c++) {
      if (c >= 0xd800 && c <= 0xdfff) continue;
      const ch = String.fromCharCode(c);
      const want = /\s/.test(ch) && ch !== '\n' ? Buffer.byteLength(ch) : 0;
      expect(spaceAt(Buffer.from(`${ch}x`), 0), `U+${c.toString(16)}`).toBe(want);
      const b = Buffer.from(`x${ch}`);
      expect(spaceBefore(b, b.length, 0), `U+${c.toString(16)}`).toBe(want);
    }
  });

  it('trimRange is String.prototype.trim and utf16Length is String.length', () => {
    fc.assert(
      fc.property(text(20), (s) => {
        const b = Buffer.from(s);
        const [ts, te] = trimRange(b, 0, b.length);
        expect(b.toString('utf8', ts, te)).toBe(s.trim());
        expect(utf16Length(b, 0, b.length)).toBe(s.length);
      }),
      { numRuns: 1000 },
    );
  });

  it('headingLevel counts the "=" of a line that starts and ends with one', () => {
    const level = (s: string) => headingLevel(Buffer.from(s), 0, Buffer.byteLength(s));
    expect([level('= = = x = = ='), level('=== x ='), level('= =x= ='), level('='), level('x ='), level('')]).toEqual([3, 3, 2, 1, 0, 0]);
  });
});

// ------------------------------------------------------------------------------ whole documents
function seedUnk(text: string, unk: UnkMode): string {
  if (unk.kind === 'keep' || !text.includes('<unk>')) return text;
  if (unk.kind === 'replace') return text.replaceAll('<unk>', unk.with);
  return text.replace(/ ?<unk>/g, '').trim();
}

/** preprocess_data on strings: each line stripped, headings end documents, each line cleaned by itself. */
function seedDocuments(input: string, options: PrepOptions): string[] {
  const docs: string[] = [];
  let passage: string[] = [];
  const flush = () => {
    const doc = seedUnk((options.clean ? passage.map(seedClean) : passage).join(' ').trim(), options.unk);
    passage = [];
    if (doc.length > 0 && doc.length >= options.minChars) docs.push(doc);
  };
  for (const raw of input.split('\n')) {
    const l = raw.trim();
    if (l === '') continue;
    if (!(l.startsWith('=') && l.endsWith('='))) passage.push(l);
    else if (!(options.split === 'articles' && /^=[ ]*=/.test(l))) flush();
  }
  flush();
  return docs;
}

const options = fc.record({
  split: fc.constantFrom('articles' as const, 'sections' as const),
  clean: fc.boolean(),
  unk: fc.constantFrom<UnkMode>({ kind: 'keep' }, { kind: 'drop' }, { kind: 'replace', with: '[UNK]' }, { kind: 'replace', with: '' }, { kind: 'replace', with: ' $& $$ $` ' }),
  minChars: fc.constantFrom(0, 0, 5, 40),
});

describe('DocumentAssembler is the seed’s preprocess_data, line by line', () => {
  it('for any lines, options and cuts into pushes at line ends', () => {
    fc.assert(
      fc.property(lines, options, fc.array(fc.nat(), { maxLength: 4 }), (ls, opts, cuts) => {
        const input = Buffer.from(ls.join('\n'));
        const at = [...new Set(cuts.map((c) => input.indexOf(0x0a, c % (input.length + 1)) + 1).filter((c) => c > 0))].sort((a, b) => a - b);
        const assembler = new DocumentAssembler(opts);
        const out = [0, ...at].map((from, k) => assembler.push(input.subarray(from, k < at.length ? at[k] : input.length)));
        out.push(assembler.finish());
        const want = seedDocuments(ls.join('\n'), opts);
        expect(Buffer.concat(out).toString()).toBe(want.map((d) => `${d}\n`).join(''));
        expect(assembler.documents).toBe(want.length);
      }),
      { numRuns: 1500 },
    );
  });
});
