import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { beforeAll, describe, expect, it } from 'vitest';
import { ShardDataset } from '../../src/data/shard-reader.js';
import { expectOneLineError, fixture, runCli, tempDir } from '../helpers.js';

const tiktoken = new Tiktoken(gpt2Ranks);
const EOT = 50256;
const dir = tempDir();
let docsFile: string;
let docs: string[];

beforeAll(() => {
  // Documents made by wikitext-prep from the embedded sample; the oracle tokenizes them itself.
  const prep = runCli('wikitext-prep', ['-q', fixture('wikitext', 'wiki.train.tokens')]);
  expect(prep.code).toBe(0);
  docsFile = join(dir, 'docs.txt');
  writeFileSync(docsFile, prep.stdout);
  docs = prep.stdout.trimEnd().split('\n');
});

async function allIds(out: string): Promise<{ ids: number[]; masks: number[]; dataset: ShardDataset }> {
  const dataset = await ShardDataset.open(out);
  const ids: number[] = [];
  const masks: number[] = [];
  for await (const { record } of dataset.iterate()) {
    ids.push(...record.input_ids);
    masks.push(...record.attention_mask);
  }
  return { ids, masks, dataset };
}

const expectedStream = (separator: number[]) => docs.flatMap((d, i) => [...(i > 0 ? separator : []), ...tiktoken.encode(d, [], [])]);

describe('bpe-encode shards', () => {
  it('cuts the eos-joined token stream into blocks, tail dropped', async () => {
    const out = join(dir, 'eos');
    const r = runCli('bpe-encode', ['-q', '--block-size', '128', '--out', out, docsFile]);
    expect(r.code, r.stderr).toBe(0);
    const stream = expectedStream([EOT]);
    const { ids, dataset } = await allIds(out);
    expect(ids).toEqual(stream.slice(0, Math.floor(stream.length / 128) * 128));
    const m = dataset.manifest;
    expect(m.block_size).toBe(128);
    expect(m.id_dtype).toBe('uint16');
    expect(m.fields).toEqual(['input_ids']);
    expect(m.totals.documents).toBe(docs.length);
    expect(m.tokenizer.name).toBe('gpt2');
    expect(m.created_by.command).toEqual(['bpe-encode', '-q', '--block-size', '128', '--out', out, docsFile]);
  });

  it('--doc-separator newline reproduces the seed (encode of the "\\n"-joined text)', async () => {
    const out = join(dir, 'newline');
    expect(runCli('bpe-encode', ['-q', '--doc-separator', 'newline', '--block-size', '100', '--out', out, docsFile]).code).toBe(0);
    const stream = tiktoken.encode(docs.join('\n'), [], []);
    expect((await allIds(out)).ids).toEqual(stream.slice(0, Math.floor(stream.length / 100) * 100));
  });

  it('--keep-tail pads the last block with --pad-id and masks it', async () => {
    const out = join(dir, 'tail');
    expect(runCli('bpe-encode', ['-q', '--doc-separator', 'none', '--keep-tail', '--pad-id', '0', '--block-size', '1000', '--out', out, docsFile]).code).toBe(0);
    const stream = expectedStream([]);
    const { ids, masks, dataset } = await allIds(out);
    const padded = Math.ceil(stream.length / 1000) * 1000;
    expect(ids).toEqual([...stream, ...Array(padded - stream.length).fill(0)]);
    expect(masks).toEqual([...Array(stream.length).fill(1), ...Array(padded - stream.length).fill(0)]);
    expect(dataset.manifest.fields).toEqual(['input_ids', 'attention_mask']);
    expect(dataset.manifest.totals.tokens).toBe(stream.length);
  });

  it('--num-shards and --shard-records', async () => {
    const a = join(dir, 'n3');
    expect(runCli('bpe-encode', ['-q', '--block-size', '64', '--num-shards', '3', '--out', a, docsFile]).code).toBe(0);
    const sizes = (await ShardDataset.open(a)).manifest.shards.map((s) => s.records);
    expect(sizes).toHaveLength(3);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    const b = join(dir, 'r50');
    expect(runCli('bpe-encode', ['-q', '--block-size', '64', '--shard-records', '50', '--out', b, docsFile]).code).toBe(0);
    const total = sizes.reduce((x, y) => x + y, 0);
    expect((await ShardDataset.open(b)).manifest.shards.map((s) => s.records)).toEqual([...Array(Math.floor(total / 50)).fill(50), ...(total % 50 ? [total % 50] : [])]);
    expect((await allIds(a)).ids).toEqual((await allIds(b)).ids);
  });

  it('writes byte-identical shards for any number of workers', () => {
    const outs = [1, 2, 3].map((w) => {
      const out = join(dir, `workers${w}`);
      const r = runCli('bpe-encode', ['-q', '-j', String(w), '--chunk-bytes', '3000', '--block-size', '64', '--shard-records', '100', '--out', out, docsFile]);
      expect(r.code, r.stderr).toBe(0);
      return out;
    });
    const files = readdirSync(outs[0]).filter((f) => f.endsWith('.msgpack'));
    expect(files.length).toBeGreaterThan(1);
    for (const f of files) for (const o of outs.slice(1)) expect(readFileSync(join(o, f)).equals(readFileSync(join(outs[0], f)))).toBe(true);
  });

  it('--allow-special turns <|endoftext|> text into the special token', async () => {
    const input = 'one<|endoftext|>two\n';
    const plain = runCli('bpe-encode', ['--ids'], { input });
    const special = runCli('bpe-encode', ['--ids', '--allow-special'], { input });
    expect(plain.stdout.trim().split(' ').map(Number)).toEqual(tiktoken.encode('one<|endoftext|>two', [], []));
    expect(special.stdout.trim().split(' ').map(Number)).toEqual(tiktoken.encode('one<|endoftext|>two', 'all'));
  });
});

describe('bpe-encode --ids / --decode / --inspect', () => {
  it('prints ids per line and decodes them back', () => {
    const input = 'Hello world\n\n  spaced  out\nünïcödé 😀\n';
    const ids = runCli('bpe-encode', ['--ids'], { input });
    expect(ids.code).toBe(0);
    const lines = ids.stdout.split('\n');
    expect(lines.slice(0, 4)).toEqual(input.split('\n').slice(0, 4).map((l) => tiktoken.encode(l, [], []).join(' ')));
    const back = runCli('bpe-encode', ['--decode'], { input: ids.stdout });
    expect(back.stdout).toBe(input);
  });

  it('--decode rejects ids that are not ids', () => {
    expectOneLineError(runCli('bpe-encode', ['--decode'], { input: '1 2 3\n4 x 5\n' }), 'bpe-encode', /<stdin>:2: "x" \(item 2\) is not a token id/);
    expectOneLineError(runCli('bpe-encode', ['--decode'], { input: '50257\n' }), 'bpe-encode', /<stdin>:1: token id 50257 is not in the vocabulary/);
  });

  it('--inspect verifies and summarises', () => {
    const out = join(dir, 'inspect');
    expect(runCli('bpe-encode', ['-q', '--block-size', '32', '--out', out, docsFile]).code).toBe(0);
    const r = runCli('bpe-encode', ['--inspect', out, '--records', '2']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('all checksums OK');
    expect(r.stdout).toContain(`record 1 (shard 0, index 1): 32/32 tokens`);
    expect(r.stdout).toContain(JSON.stringify(tiktoken.decode(tiktoken.encode(docs[0], [], []).slice(0, 32))));
  });

  it('--help has examples; --version prints the version', () => {
    const help = runCli('bpe-encode', ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Examples:\n {2}wikitext-prep/);
    const version = runCli('bpe-encode', ['--version']);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version);
  });
});

describe('bpe-encode bad inputs', () => {
  const out = () => join(dir, `bad-${Math.random().toString(36).slice(2)}`);

  it('missing file and directory', () => {
    const o = out();
    expectOneLineError(runCli('bpe-encode', ['--out', o, join(dir, 'missing.txt')]), 'bpe-encode', /missing\.txt: no such file/);
    expectOneLineError(runCli('bpe-encode', ['--out', o, dir]), 'bpe-encode', /is a directory/);
    expect(existsSync(o)).toBe(false);
  });

  it('invalid UTF-8 names the byte offset; --lossy replaces and warns', async () => {
    const o = out();
    const input = Buffer.concat([Buffer.from('fine\nalso fine\nbro'), Buffer.from([0xff]), Buffer.from('ken\n')]);
    expectOneLineError(runCli('bpe-encode', ['--out', o, '-'], { input }), 'bpe-encode', /<stdin>: invalid UTF-8 at byte 18 \(line 3\)/);
    expect(existsSync(o)).toBe(false);
    const r = runCli('bpe-encode', ['--lossy', '--block-size', '2', '--out', o, '-'], { input });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: <stdin>: invalid UTF-8/);
    const { ids } = await allIds(o);
    const stream = ['fine', 'also fine', 'bro\ufffdken'].flatMap((d, i) => [...(i ? [EOT] : []), ...tiktoken.encode(d, [], [])]);
    expect(ids).toEqual(stream.slice(0, stream.length - (stream.length % 2)));
  });

  it('empty input makes a valid empty data set, with a warning', async () => {
    const o = out();
    const r = runCli('bpe-encode', ['--out', o, '-'], { input: '' });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: the input holds no documents/);
    const dataset = await ShardDataset.open(o);
    expect(dataset.numRecords).toBe(0);
    expect(dataset.manifest.shards).toEqual([]);
  });

  it('--block-size out of range is a usage error', () => {
    expectOneLineError(runCli('bpe-encode', ['--block-size', '1', '--out', out()]), 'bpe-encode', /--block-size must be in \[2, 2147483647\], got 1/, 2);
    expectOneLineError(runCli('bpe-encode', ['--block-size', '2147483648', '--out', out()]), 'bpe-encode', /--block-size must be in/, 2);
    expectOneLineError(runCli('bpe-encode', ['--block-size', 'ten', '--out', out()]), 'bpe-encode', /--block-size must be an integer/, 2);
    expectOneLineError(runCli('bpe-encode', ['--num-shards', '2', '--shard-records', '3', '--out', out()]), 'bpe-encode', /not both/, 2);
    expectOneLineError(runCli('bpe-encode', ['--pad-id', '60000', '--out', out()], { input: 'x\n' }), 'bpe-encode', /--pad-id 60000 is outside the vocabulary/, 2);
  });

  it('malformed vocab or merges name the file and line', () => {
    const tok = join(dir, 'badtok');
    mkdirSync(tok);
    writeFileSync(join(tok, 'vocab.json'), '{"a": 0, "b": 1');
    writeFileSync(join(tok, 'merges.txt'), 'a b\n');
    expectOneLineError(runCli('bpe-encode', ['--tokenizer', tok, '--ids'], { input: 'x\n' }), 'bpe-encode', /badtok\/vocab\.json: not valid JSON/);
    cpSync(join(new URL('../../src/tokenizer/gpt2', import.meta.url).pathname, 'vocab.json'), join(tok, 'vocab.json'));
    writeFileSync(join(tok, 'merges.txt'), '#version: 0.2\nĠ t\nĠt zzzz\n');
    expectOneLineError(runCli('bpe-encode', ['--tokenizer', tok, '--ids'], { input: 'x\n' }), 'bpe-encode', /badtok\/merges\.txt:3: merge result "Ġtzzzz" is not in the vocabulary|merges\.txt:3: token "zzzz"/);
  });

  it('a non-empty output directory is refused and left as it was; --overwrite replaces only our own output', async () => {
    const o = out();
    mkdirSync(o);
    writeFileSync(join(o, 'precious.txt'), 'keep me');
    expectOneLineError(runCli('bpe-encode', ['--out', o, docsFile]), 'bpe-encode', /exists and is not empty \(use --overwrite/);
    expect(readFileSync(join(o, 'precious.txt'), 'utf8')).toBe('keep me');
    expectOneLineError(runCli('bpe-encode', ['-q', '--overwrite', '--out', o, docsFile]), 'bpe-encode', /not replacing it with --overwrite: it holds precious\.txt, which bpe-encode does not write/);
    expect(readFileSync(join(o, 'precious.txt'), 'utf8')).toBe('keep me');
    rmSync(join(o, 'precious.txt'));
    expect(runCli('bpe-encode', ['-q', '--block-size', '128', '--out', o, docsFile]).code).toBe(0);
    expect(runCli('bpe-encode', ['-q', '--overwrite', '--block-size', '256', '--out', o, docsFile]).code).toBe(0);
    expect((await ShardDataset.open(o)).blockSize).toBe(256);
    expect(readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]); // no temporaries left
  });

  describe('damaged data sets are refused, naming the shard', () => {
    const good = join(dir, 'good');
    beforeAll(() => {
      expect(runCli('bpe-encode', ['-q', '--block-size', '64', '--num-shards', '2', '--out', good, docsFile]).code).toBe(0);
    });
    const damaged = (name: string, harm: (d: string) => void) => {
      const d = join(dir, name);
      cpSync(good, d, { recursive: true });
      harm(d);
      return d;
    };
    const shard1 = (d: string) => join(d, 'shard-00001.msgpack');

    it('truncated', () => {
      const d = damaged('truncated', (x) => writeFileSync(shard1(x), readFileSync(shard1(x)).subarray(0, 100)));
      expectOneLineError(runCli('bpe-encode', ['--inspect', d]), 'bpe-encode', /shard-00001\.msgpack: shard is 100 bytes, the manifest says \d+ \(truncated\)/);
    });
    it('altered', () => {
      const d = damaged('altered', (x) => {
        const b = readFileSync(shard1(x));
        b[b.length - 3] ^= 0xff;
        writeFileSync(shard1(x), b);
      });
      expectOneLineError(runCli('bpe-encode', ['--inspect', d]), 'bpe-encode', /shard-00001\.msgpack: checksum mismatch/);
    });
    it('missing', () => {
      const d = damaged('missing', (x) => rmSync(shard1(x)));
      expectOneLineError(runCli('bpe-encode', ['--inspect', d]), 'bpe-encode', /shard-00001\.msgpack: shard is missing/);
    });
    it('no manifest (incomplete)', () => {
      const d = damaged('nomanifest', (x) => rmSync(join(x, 'manifest.json')));
      expectOneLineError(runCli('bpe-encode', ['--inspect', d]), 'bpe-encode', /no manifest\.json, so the data set is incomplete/);
    });
    it('another format version', () => {
      const d = damaged('version', (x) => {
        const m = JSON.parse(readFileSync(join(x, 'manifest.json'), 'utf8'));
        writeFileSync(join(x, 'manifest.json'), JSON.stringify({ ...m, version: 2 }));
      });
      expectOneLineError(runCli('bpe-encode', ['--inspect', d]), 'bpe-encode', /manifest\.json: format version 2 is not supported/);
    });
  });
});
