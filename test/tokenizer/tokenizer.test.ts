import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { deserializeTables, serializeTables } from '../../src/tokenizer/compiled.js';
import { IdBuffer } from '../../src/tokenizer/id-buffer.js';
import { pretokenize } from '../../src/tokenizer/pretokenize.js';
import { StreamDecoder } from '../../src/tokenizer/stream-decoder.js';
import { builtinTokenizerDir, GPT2_TOKENIZER_SHA256, loadTokenizer, Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { parseVocabFiles } from '../../src/tokenizer/vocab-files.js';
import { tempDir } from '../helpers.js';

const tok = loadTokenizer();

describe('pre-tokenizer', () => {
  // Expected pieces worked out by hand from the pattern
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  it.each([
    ["I'm here", ['I', "'m", ' here']],
    ["they'll've", ['they', "'ll", "'ve"]],
    ["'S", ["'", 'S']], // contractions are case-sensitive
    ['a  b', ['a', ' ', ' b']], // a space run leaves its last space to the word
    ['x   ', ['x', '   ']], // ... but keeps it at the end of the text
    ['a\n\nb', ['a', '\n', '\n', 'b']], // \s+(?!\S) gives "\n", then \s+ the lone "\n"
    [' 123 4567', [' 123', ' 4567']],
    ['abc123', ['abc', '123']],
    [' !!?x', [' !!?', 'x']],
    ['\t\tx', ['\t', '\t', 'x']], // no " ?" prefix for tabs: the last tab stands alone
    ['中文 字', ['中文', ' 字']],
    ['😀😀 x', ['😀😀', ' x']], // emoji are neither letters nor numbers
    [' \u0085x', [' ', '\u0085', 'x']], // U+0085 is White_Space (JavaScript's \s disagrees)
    ['a\ufeffb', ['a', '\ufeff', 'b']], // U+FEFF is not (JavaScript's \s disagrees)
    ['a\u3000\u3000 b', ['a', '\u3000\u3000', ' b']], // multi-byte White_Space runs (the scanner reads UTF-8)
    ['x\u00a0\u3000y', ['x', '\u00a0', '\u3000', 'y']], // ... giving back a 3-byte last character
    ['', []],
  ] as [string, string[]][])('%j', (text, pieces) => {
    expect(pretokenize(text)).toEqual(pieces);
  });
});

describe('encode / decode', () => {
  it('knows a few ids by heart (from the GPT-2 vocabulary file)', () => {
    const vocab = JSON.parse(readFileSync(join(builtinTokenizerDir(), 'vocab.json'), 'utf8')) as Record<string, number>;
    expect(tok.encode('Hello world')).toEqual([vocab.Hello, vocab['Ġworld']]);
    expect(tok.encode('\n')).toEqual([vocab['Ċ']]);
    expect(tok.eosId).toBe(vocab['<|endoftext|>']);
  });

  it('encodes <|endoftext|> as text unless allowSpecial', () => {
    const text = 'a<|endoftext|>b';
    expect(tok.encode(text)).not.toContain(50256);
    const special = tok.encode(text, { allowSpecial: true });
    expect(special).toEqual([...tok.encode('a'), 50256, ...tok.encode('b')]);
    expect(tok.decode(special)).toBe(text);
  });

  it('encodes a range of UTF-8 bytes, a special token only when wholly inside it', () => {
    const bytes = Buffer.from('é<|endoftext|>b');
    const range = (start: number, end: number) => {
      const out = new IdBuffer();
      tok.encodeBytes(bytes, start, end, out, { allowSpecial: true });
      return out.toArray();
    };
    expect(range(0, 9)).toEqual(tok.encode('é<|endof'));
    expect(range(2, bytes.length)).toEqual([50256, ...tok.encode('b')]);
    expect(range(0, bytes.length)).toEqual([...tok.encode('é'), 50256, ...tok.encode('b')]);
  });

  it('on invalid UTF-8 (which callers must not pass) still ends, with ids in the vocabulary', () => {
    let x = 7;
    const cases = [Buffer.from([0x20, 0x82, 0x85, 0x78]), Buffer.from([0xe3, 0x80]), Buffer.from([0x20, 0xf0, 0x9f])];
    for (let k = 0; k < 300; k++) cases.push(Buffer.from(Array.from({ length: 1 + (k % 13) }, () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24)));
    for (const bytes of cases) {
      const out = new IdBuffer();
      tok.encodeBytes(bytes, 0, bytes.length, out);
      expect(out.toArray().every((id) => id >= 0 && id < tok.vocabSize)).toBe(true);
    }
  });

  it('decodes arbitrary ids without throwing, incomplete UTF-8 as U+FFFD', () => {
    const ids = tok.encode('😀');
    expect(ids.length).toBeGreaterThan(1); // the emoji's four bytes span several tokens
    expect(tok.decode(ids.slice(0, 1))).toBe('\ufffd');
    expect(tok.decode(ids)).toBe('😀');
  });

  it('streams characters only when complete', () => {
    const ids = tok.encode('a😀b');
    const stream = new StreamDecoder(tok);
    const pieces = ids.map((id) => stream.push(id));
    expect(pieces.join('') + stream.flush()).toBe('a😀b');
    expect(pieces.every((p) => !p.includes('\ufffd'))).toBe(true);
    expect(pieces.filter((p) => p === '').length).toBe(ids.length - 3);
    const partial = new StreamDecoder(tok);
    expect(partial.push(ids[1])).toBe('');
    expect(partial.flush()).toBe('\ufffd');
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => tok.decode([50257])).toThrow(/50257 is not in the vocabulary/);
    expect(() => tok.decode([-1])).toThrow(/not in the vocabulary/);
    expect(() => tok.decode([1.5])).toThrow(/not in the vocabulary/);
  });

  it('handles a 200k-character word (linear-ish merge loop)', () => {
    const text = 'ab'.repeat(100_000);
    const ids = tok.encode(text);
    expect(tok.decode(ids)).toBe(text);
  });
});

describe('tokenizer files', () => {
  it('identifies the built-in files as gpt2 by their sha256', () => {
    const dir = builtinTokenizerDir();
    const sha = createHash('sha256').update(readFileSync(join(dir, 'vocab.json'))).update(readFileSync(join(dir, 'merges.txt'))).digest('hex');
    expect(sha).toBe(GPT2_TOKENIZER_SHA256);
    expect(tok.identity).toEqual({ name: 'gpt2', vocab_size: 50257, sha256: sha });
    expect(loadTokenizer(dir).identity.name).toBe('gpt2');
  });

  it('the binary image holds the same tables as the text files', () => {
    const dir = builtinTokenizerDir();
    const tables = parseVocabFiles({ vocab: readFileSync(join(dir, 'vocab.json')), merges: readFileSync(join(dir, 'merges.txt')) });
    const image = deserializeTables(serializeTables(tables));
    expect(image).not.toBeNull();
    expect(Array.from(image!.rankOf)).toEqual(Array.from(tables.rankOf));
    expect(image!.tokenBytes.map((b) => Buffer.from(b).toString('hex'))).toEqual(tables.tokenBytes.map((b) => Buffer.from(b).toString('hex')));
    const fromImage = new Tokenizer(image!, 'x');
    const text = 'The image must encode exactly like the parsed files: ünïcödé, 12345, 😀.';
    expect(fromImage.encode(text)).toEqual(new Tokenizer(tables, 'y').encode(text));
    expect(deserializeTables(new Uint8Array(100))).toBeNull();
  });

  it('a seeded piece cache changes speed, not ids', () => {
    const seedCache = tok.seedPieceCache();
    expect(seedCache.count).toBeGreaterThan(40_000); // most GPT-2 tokens are whole pre-tokens
    const seeded = new Tokenizer(deserializeTables(serializeTables({ ...tok.tables, seedCache }))!, 'x');
    const cases = JSON.parse(readFileSync(new URL('../../fixtures/tokenizer/hard-cases.json', import.meta.url), 'utf8')) as string[];
    const fresh = loadTokenizer();
    for (const text of [...cases, 'the cat sat on the mat', ' of the', "it's 1999!"]) expect(seeded.encode(text)).toEqual(fresh.encode(text));
  });

  it('loads a small custom vocabulary from a directory', () => {
    const dir = join(tempDir(), 'tiny');
    mkdirSync(dir);
    const vocab: Record<string, number> = Object.fromEntries(byteVocab());
    const next = 256;
    Object.assign(vocab, { ab: next, abc: next + 1, '<|endoftext|>': next + 2 });
    writeFileSync(join(dir, 'vocab.json'), JSON.stringify(vocab));
    writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\na b\nab c\n');
    const custom = loadTokenizer(dir);
    expect(custom.identity.name).toBe('tiny');
    expect(custom.vocabSize).toBe(259);
    expect(custom.encode('abcab')).toEqual([next + 1, next]);
    expect(custom.eosId).toBe(next + 2);
  });
});

/** The 256 single-byte tokens of GPT-2's byte alphabet, ids 0..255 in byte order. */
function byteVocab(): [string, number][] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let shifted = 0;
  return [...Array(256).keys()].map((b) => [String.fromCharCode(printable(b) ? b : 256 + shifted++), b]);
}

describe('malformed tokenizer files', () => {
  const good = Object.fromEntries(byteVocab());
  const vocabWith = (extra: object) => JSON.stringify({ ...good, ...extra });
  const parse = (vocab: string, merges: string) => () => parseVocabFiles({ vocab, merges, vocabName: 'v.json', mergesName: 'm.txt' });

  it.each([
    ['invalid JSON', '{"a": 1', 'a b\n', /v\.json: not valid JSON/],
    ['not an object', '[1, 2]', 'a b\n', /v\.json: expected a JSON object/],
    ['a fractional id', vocabWith({ ab: 2.5 }), 'a b\n', /v\.json: token "ab" has id 2\.5/],
    ['a negative id', vocabWith({ ab: -3 }), 'a b\n', /v\.json: token "ab" has id -3/],
    ['a duplicate id', vocabWith({ ab: 5 }), 'a b\n', /v\.json: id 5 is used by both/],
    ['a missing byte token', JSON.stringify({ a: 0, b: 1, ab: 2 }), 'a b\n', /v\.json: missing the single-byte token/],
    ['a merge with one part', vocabWith({ ab: 256 }), '#version: 0.2\nab\n', /m\.txt:2: expected two tokens/],
    ['a merge with three parts', vocabWith({ ab: 256 }), 'a b c\n', /m\.txt:1: expected two tokens/],
    ['a merge of an unknown token', vocabWith({ ab: 256 }), 'a b\nab zz\n', /m\.txt:2: merge result "abzz" is not in the vocabulary|m\.txt:2: token "zz"/],
    ['a merge result not in the vocabulary', vocabWith({ ab: 256 }), 'a b\nb c\n', /m\.txt:2: merge result "bc" is not in the vocabulary/],
    ['no merges at all', vocabWith({}), '#version: 0.2\n', /m\.txt: no merges found/],
  ])('%s', (_what, vocab, merges, message) => {
    expect(parse(vocab, merges)).toThrow(message);
  });

  it('names the file when a tokenizer directory is incomplete', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'vocab.json'), JSON.stringify(good));
    expect(() => loadTokenizer(dir)).toThrow(new RegExp(`${dir}/merges.txt: no such file`));
    expect(() => loadTokenizer(join(dir, 'vocab.json'))).toThrow(/not a directory/);
    expect(() => loadTokenizer(join(dir, 'missing'))).toThrow(/missing: no such file or directory/);
  });
});
