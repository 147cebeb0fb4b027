/**
 * bpe-encode's labelled input. Oracles: js-tiktoken for the ids (as in bpe-encode.test.ts), Python's
 * csv module for CSV fields (fixtures/labelled/csv-cases.json), a plain tab split for TSV, and the
 * seed's rules for labels (AG-News: label − 1) and joined columns (title + ". " + description).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { describe, expect, it } from 'vitest';
import type { ClassificationManifest } from '../../src/data/manifest.js';
import { openShards, requireTask } from '../../src/data/shard-reader.js';
import { expectOneLineError, fixture, ROOT, runCli, SHARED, tempDir } from '../helpers.js';

const tiktoken = new Tiktoken(gpt2Ranks);
const encode = (text: string) => tiktoken.encode(text, [], []);
const dir = tempDir();
const SENTIMENT = fixture('labelled', 'sentiment.tsv');
const TOPICS = fixture('labelled', 'topics.csv');
let n = 0;
const out = () => join(dir, `o${n++}`);

/** The fixture TSV as GLUE defines it: header, then sentence<TAB>label. */
const tsvRows = (path: string) =>
  readFileSync(path, 'utf8').trimEnd().split('\n').slice(1).map((l) => {
    const [sentence, label] = l.split('\t');
    return { sentence, label };
  });

async function read(path: string): Promise<{ ids: number[][]; labels: number[]; manifest: ClassificationManifest }> {
  const ds = requireTask(await openShards(path), 'classification', 'the test');
  const ids: number[][] = [];
  const labels: number[] = [];
  for await (const { record } of ds.iterate()) {
    ids.push(Array.from(record.input_ids));
    labels.push(record.label);
  }
  return { ids, labels, manifest: ds.manifest };
}

const encodeOk = (args: string[], input?: string) => {
  const r = runCli('bpe-encode', ['-q', ...args], { input });
  expect(r.code, r.stderr).toBe(0);
  return r;
};
const TSV = ['--input-format', 'tsv', '--text-column', 'sentence', '--label-column', 'label'];

describe('bpe-encode --input-format tsv', () => {
  it('encodes each sentence whole and maps sorted label names to ids', async () => {
    const o = out();
    encodeOk([...TSV, '--out', o, SENTIMENT]);
    const rows = tsvRows(SENTIMENT);
    const { ids, labels, manifest: m } = await read(o);
    expect(ids).toEqual(rows.map((r) => encode(r.sentence))); // the sentence's trailing space included, as GLUE stores it
    expect(labels).toEqual(rows.map((r) => (r.label === 'positive' ? 1 : 0)));
    expect(m.labels).toEqual(['negative', 'positive']);
    expect([m.task, m.version, m.num_labels, m.max_length, m.truncation_side, m.pad_id, m.fields]).toEqual(['classification', 1, 2, 1024, 'right', 50256, ['input_ids', 'label']]);
    expect(m.totals.label_counts).toEqual([rows.filter((r) => r.label === 'negative').length, rows.filter((r) => r.label === 'positive').length]);
    expect(m.totals.tokens).toBe(ids.flat().length);
    expect([m.totals.records, m.totals.truncated, m.totals.skipped]).toEqual([rows.length, 0, 0]);
    expect(m.created_by.command).toEqual(['bpe-encode', '-q', ...TSV, '--out', o, SENTIMENT]);
  });

  it('a column by 0-based index is the same column; --labels sets the ids', async () => {
    const byName = out();
    const byIndex = out();
    encodeOk([...TSV, '--out', byName, SENTIMENT]);
    encodeOk(['--input-format', 'tsv', '--text-column', '0', '--label-column', '1', '--out', byIndex, SENTIMENT]);
    expect(readFileSync(join(byIndex, 'shard-00000.msgpack')).equals(readFileSync(join(byName, 'shard-00000.msgpack')))).toBe(true);
    const flipped = out();
    encodeOk([...TSV, '--labels', 'positive,negative', '--out', flipped, SENTIMENT]);
    const a = await read(byName);
    const b = await read(flipped);
    expect(b.manifest.labels).toEqual(['positive', 'negative']);
    expect(b.labels).toEqual(a.labels.map((l) => 1 - l));
    const extra = out();
    encodeOk([...TSV, '--labels', 'negative,neutral,positive', '--out', extra, SENTIMENT]);
    const c = await read(extra);
    expect(c.labels).toEqual(a.labels.map((l) => 2 * l));
    expect(c.manifest.totals.label_counts).toEqual([a.manifest.totals.label_counts[0], 0, a.manifest.totals.label_counts[1]]);
  });

  it('--max-length cuts on --truncation-side (right keeps the start, left the end)', async () => {
    const rows = tsvRows(SENTIMENT);
    const long = rows.filter((r) => encode(r.sentence).length > 8).length;
    expect(long).toBeGreaterThan(10);
    for (const side of ['right', 'left'] as const) {
      const o = out();
      const r = runCli('bpe-encode', [...TSV, '--max-length', '8', '--truncation-side', side, '--out', o, SENTIMENT]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`warning: ${long} of ${rows.length} texts were longer than --max-length 8 tokens; kept each one's ${side === 'right' ? 'start' : 'end'}`);
      const { ids, manifest } = await read(o);
      expect(ids).toEqual(rows.map((x) => (side === 'right' ? encode(x.sentence).slice(0, 8) : encode(x.sentence).slice(-8))));
      expect([manifest.max_length, manifest.truncation_side, manifest.totals.truncated]).toEqual([8, side, long]);
    }
  });

  it('TSV has no quoting: a quote is text (GLUE)', async () => {
    const f = join(dir, 'quotes.tsv');
    const text = '"she said ""no""" , then "left';
    writeFileSync(f, `sentence\tlabel\n${text}\tpositive\r\n`);
    const o = out();
    encodeOk([...TSV, '--out', o, f]);
    expect((await read(o)).ids).toEqual([encode(text)]);
  });
});

/** Python's csv module's reading of topics.csv (a case of fixtures/labelled/csv-cases.json). */
function pythonTopics(): string[][] {
  const cases = JSON.parse(readFileSync(fixture('labelled', 'csv-cases.json'), 'utf8')) as { text: string; rows: string[][] }[];
  const c = cases.find((x) => x.text === readFileSync(TOPICS, 'utf8'));
  if (!c) throw new Error('csv-cases.json has no case for topics.csv: rerun test/oracle/make_csv_cases.py');
  return c.rows;
}

describe('bpe-encode --input-format csv / jsonl', () => {
  const AG = ['--input-format', 'csv', '--no-header', '--text-column', '1', '--text-column', '2', '--label-column', '0'];

  it('AG-News style: title and description joined by ". ", classes 1..4 → ids 0..3 (the seed)', async () => {
    const o = out();
    encodeOk([...AG, '--out', o, TOPICS]);
    const rows = pythonTopics();
    expect(rows).toHaveLength(20);
    const { ids, labels, manifest } = await read(o);
    expect(ids).toEqual(rows.map((r) => encode(`${r[1]}. ${r[2]}`)));
    expect(labels).toEqual(rows.map((r) => Number(r[0]) - 1));
    expect(manifest.labels).toEqual(['1', '2', '3', '4']);
    const sep = out();
    encodeOk([...AG, '--text-separator', '\n', '--out', sep, TOPICS]);
    expect((await read(sep)).ids).toEqual(rows.map((r) => encode(`${r[1]}\n${r[2]}`)));
  });

  it('a header line names the columns; each input file has its own (a byte-order mark before it is dropped)', async () => {
    const f = join(dir, 'with-header.csv');
    writeFileSync(f, `\ufefflabel,title,description\n${readFileSync(TOPICS, 'utf8')}`);
    const o = out();
    encodeOk(['--input-format', 'csv', '--text-column', 'title', '--text-column', 'description', '--label-column', 'label', '--out', o, f, f]);
    const rows = pythonTopics();
    const { ids } = await read(o);
    expect(ids).toEqual([...rows, ...rows].map((r) => encode(`${r[1]}. ${r[2]}`)));
  });

  it('JSON Lines: fields by name, numeric labels sorted numerically, blank lines ignored', async () => {
    const f = join(dir, 'x.jsonl');
    const docs = [
      { text: 'Ünïcödé and "quotes"\nacross lines', label: 10 },
      { text: 'plain', label: 9, extra: [1, 2] },
      { text: 'another one', label: '10' },
    ];
    writeFileSync(f, `${docs.map((d) => JSON.stringify(d)).join('\n')}\n\n  \n`);
    const o = out();
    encodeOk(['--input-format', 'jsonl', '--text-column', 'text', '--label-column', 'label', '--out', o, f]);
    const { ids, labels, manifest } = await read(o);
    expect(ids).toEqual(docs.map((d) => encode(d.text)));
    expect(manifest.labels).toEqual(['9', '10']);
    expect(labels).toEqual([1, 0, 1]);
  });
});

describe('bad labelled input: one line naming file and line, nothing written', () => {
  /** Runs a failing encode and checks the message and that no output (or temporary) appeared. */
  const fails = (args: string[], pattern: RegExp, code = 1, input?: string) => {
    const o = out();
    const before = readdirSync(dir).length;
    expectOneLineError(runCli('bpe-encode', [...args, '--out', o], { input }), 'bpe-encode', pattern, code);
    expect(existsSync(o)).toBe(false);
    expect(readdirSync(dir)).toHaveLength(before);
  };
  const file = (name: string, text: string) => {
    const f = join(dir, name);
    writeFileSync(f, text);
    return f;
  };

  it('a column the header lacks, by name or index', () => {
    fails(['--input-format', 'tsv', '--text-column', 'text', '--label-column', 'label', SENTIMENT], /sentiment\.tsv:1: no column "text" \(the header has 2 columns: "sentence", "label"\)$/);
    fails(['--input-format', 'tsv', '--text-column', 'sentence', '--label-column', '2', SENTIMENT], /sentiment\.tsv:1: no column 2 \(the header has 2 columns/);
    fails(['--input-format', 'csv', '--no-header', '--text-column', '3', '--label-column', '0', TOPICS], /topics\.csv:1: no column 3 \(rows have 3 fields\)$/);
  });

  const lines = ['sentence\tlabel', 'good one\tpos', '\tneg', 'also good\tpos', 'three\tfields\there', 'fine\tmaybe', 'last good\tneg', ' \tpos', 'no label\t '];
  const bad = file('bad.tsv', `${lines.join('\n')}\n`);
  const problems: [number, string][] = [
    [3, 'empty text \\(column sentence\\) \\(--skip-bad leaves such rows out\\)$'],
    [5, '3 fields, the header has 2'],
    [6, 'label "maybe" is not one of --labels pos,neg'],
    [8, 'empty text'],
    [9, 'empty label \\(column label\\)'],
  ];
  it('empty text, ragged row, label not in --labels, empty label — each at its line', () => {
    for (const [line, pattern] of problems) {
      // The other bad lines made good, so that this one is the problem met.
      const only = file(`only-${line}.tsv`, `${lines.map((l, k) => (k + 1 !== line && problems.some(([p]) => p === k + 1) ? 'filler\tpos' : l)).join('\n')}\n`);
      fails(['--input-format', 'tsv', '--text-column', 'sentence', '--label-column', 'label', '--labels', 'pos,neg', only], new RegExp(`only-${line}\\.tsv:${line}: ${pattern}`));
    }
  });

  it('invalid JSON, a missing field, an unclosed CSV quote', () => {
    const jsonl = file('bad.jsonl', '{"text": "ok", "label": 1}\n{"text": "a", "label": }\n');
    fails(['--input-format', 'jsonl', '--text-column', 'text', '--label-column', 'label', jsonl], /bad\.jsonl:2: not valid JSON \(.+\)/);
    const missing = file('missing.jsonl', '{"text": "ok", "label": 1}\n\n{"txt": "a", "label": 0}\n');
    fails(['--input-format', 'jsonl', '--text-column', 'text', '--label-column', 'label', missing], /missing\.jsonl:3: no field "text"/);
    const array = file('array.jsonl', '["ok", 1]\n');
    fails(['--input-format', 'jsonl', '--text-column', 'text', '--label-column', 'label', array], /array\.jsonl:1: not a JSON object/);
    fails(['--input-format', 'csv', '--skip-bad', '--text-column', 't', '--label-column', 'l', file('head.csv', '"t,l\nfine,1\n')], /head\.csv:1: a quoted field is not closed before the end of the input \(in the header\)$/);
    const csv = file('open.csv', 't,l\nfine,1\n"never closed,1\nmore,0\n');
    fails(['--input-format', 'csv', '--text-column', 't', '--label-column', 'l', csv], /open\.csv:3: a quoted field is not closed before the end of the input/);
    fails(['--input-format', 'tsv', '--text-column', 'sentence', '--label-column', 'label', '-'], /<stdin>:2: 1 field, the header has 2/, 1, 'sentence\tlabel\njust text\n');
  });

  it('--skip-bad leaves bad rows out and counts them on stderr and in the manifest', async () => {
    const o = out();
    const r = runCli('bpe-encode', ['--input-format', 'tsv', '--text-column', 'sentence', '--label-column', 'label', '--labels', 'pos,neg', '--skip-bad', '--out', o, bad]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`warning: skipped 5 bad rows (the first: ${bad}:3: empty text (column sentence))`);
    const { ids, labels, manifest } = await read(o);
    expect(ids).toEqual(['good one', 'also good', 'last good'].map(encode));
    expect(labels).toEqual([0, 0, 1]);
    expect(manifest.totals.skipped).toBe(5);
  });

  it('flags of the other kind of input, and missing column flags, are usage errors', () => {
    fails(['--label-column', 'label', SENTIMENT], /--label-column needs --input-format tsv, csv or jsonl/, 2);
    fails(['--max-length', '8', SENTIMENT], /--max-length needs --input-format tsv, csv or jsonl/, 2);
    fails([...TSV, '--block-size', '65', SENTIMENT], /--block-size is for text input \(a causal LM's blocks\); labelled rows are cut by --max-length/, 2);
    fails([...TSV, '--keep-tail', SENTIMENT], /--keep-tail is for text input/, 2);
    fails(['--input-format', 'tsv', '--text-column', 'sentence', SENTIMENT], /--input-format tsv needs --label-column NAME\|INDEX/, 2);
    fails(['--input-format', 'tsv', '--label-column', 'label', SENTIMENT], /--input-format tsv needs --text-column NAME\|INDEX/, 2);
    fails([...TSV, '--no-header', SENTIMENT], /column "sentence": with --no-header, columns are given by index/, 2);
    fails([...TSV, '--labels', 'a,a', SENTIMENT], /--labels "a,a": "a" is named twice/, 2);
    fails(['--input-format', 'xml', SENTIMENT], /argument 'xml' is invalid/, 2);
    fails(['--input-format', 'jsonl', '--no-header', '--text-column', 't', '--label-column', 'l', SENTIMENT], /--no-header is for tsv and csv/, 2);
    expectOneLineError(runCli('bpe-encode', [...TSV, '--ids', SENTIMENT]), 'bpe-encode', /--ids reads text lines, not --input-format tsv/, 2);
  });

  it('an input with no rows needs --labels; with them it makes an empty data set', async () => {
    const empty = file('empty.tsv', 'sentence\tlabel\n');
    fails([...TSV, empty], /the input holds no rows, so it names no labels \(give --labels to write an empty data set\)/);
    const o = out();
    const r = runCli('bpe-encode', [...TSV, '--labels', 'a,b', '--out', o, empty]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: the input holds no rows/);
    const { ids, manifest } = await read(o);
    expect([ids.length, manifest.num_labels, manifest.shards.length]).toEqual([0, 2, 0]);
  });
});

describe('classification data and the tools that read it', () => {
  const cls = join(dir, 'cls');
  const encoded = () => existsSync(join(cls, 'manifest.json')) || encodeOk([...TSV, '--out', cls, SENTIMENT]);

  it('--overwrite replaces a labelled data set; without it the directory is refused', async () => {
    encoded();
    expectOneLineError(runCli('bpe-encode', [...TSV, '--out', cls, SENTIMENT]), 'bpe-encode', /exists and is not empty \(use --overwrite/);
    encodeOk([...TSV, '--overwrite', '--max-length', '4', '--out', cls, SENTIMENT]);
    expect((await read(cls)).manifest.max_length).toBe(4);
    encodeOk([...TSV, '--overwrite', '--out', cls, SENTIMENT]);
  });

  it('--inspect shows the task, labels and records with their label', () => {
    encoded();
    const r = runCli('bpe-encode', ['--inspect', cls, '--records', '2']);
    expect(r.code, r.stderr).toBe(0);
    const first = tsvRows(SENTIMENT)[0];
    expect(r.stdout).toContain('all checksums OK');
    expect(r.stdout).toContain('task        classification, 2 labels: 0="negative"');
    expect(r.stdout).toContain(`record 0 (shard 0, index 0): ${encode(first.sentence).length}/1024 tokens, label ${first.label === 'negative' ? 0 : 1} "${first.label}"`);
    expect(r.stdout).toContain(`  text  ${JSON.stringify(first.sentence)}`);
  });

  it('gpt2-train and gpt2-eval refuse classification data with a message, writing nothing', () => {
    encoded();
    const model = join(dir, 'tiny');
    expect(runCli('convert-weights', ['-q', fixture('models', 'tiny'), model]).code).toBe(0);
    expectOneLineError(runCli('gpt2-eval', ['--model', model, '--data', cls, '--backend', 'cpu']), 'gpt2-eval', /cls holds classification records \(2 labels: negative, positive\); a causal LM needs text encoded without --label-column/);
    const run = join(dir, 'run');
    const config = join(ROOT, 'configs', 'gpt2', 'run_gpt2_tiny.yaml');
    expectOneLineError(runCli('gpt2-train', ['--config', config, '--train-data', cls, '--set', 'eval_dataset=null', '--output-dir', run]), 'gpt2-train', /cls holds classification records .*; a causal LM needs/);
    expect(existsSync(run)).toBe(false);
  });
});

const SST2_DEV = join(SHARED, 'data', 'sst2', 'dev.tsv');
describe.skipIf(!existsSync(SST2_DEV))(`SST-2 dev (${SST2_DEV}; skipped when absent)`, () => {
  it('872 rows, labels 0 and 1, every text as tiktoken encodes it', async () => {
    const o = out();
    encodeOk([...TSV, '--max-length', '1024', '--out', o, SST2_DEV]);
    const rows = tsvRows(SST2_DEV);
    expect(rows).toHaveLength(872);
    const { ids, labels, manifest } = await read(o);
    expect(manifest.labels).toEqual(['0', '1']);
    expect(labels).toEqual(rows.map((r) => Number(r.label)));
    expect(ids).toEqual(rows.map((r) => encode(r.sentence)));
    expect(manifest.totals.label_counts).toEqual([0, 1].map((l) => rows.filter((r) => Number(r.label) === l).length));
  });
});

describe('README', () => {
  it('the labelled-data block under bpe-encode runs as written', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.split(/^### /m).find((s) => s.startsWith('bpe-encode\n'))!;
    const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
    expect(block, 'README.md: no ```sh block under "### bpe-encode"').toContain('--input-format tsv');
    const cwd = tempDir('gpt2tc-readme-labelled-');
    symlinkSync(join(ROOT, 'fixtures'), join(cwd, 'fixtures'));
    const script = ['set -euo pipefail', `npx() { local tool=$1; shift; node ${JSON.stringify(ROOT)}/bin/$tool.js "$@"; }`, block!].join('\n');
    const r = spawnSync('bash', ['-c', script], { cwd, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('task        classification, 2 labels: 0="negative"');
    const dev = await read(join(cwd, 'data', 'sentiment-dev'));
    expect(dev.ids).toEqual(tsvRows(fixture('labelled', 'sentiment-dev.tsv')).map((x) => encode(x.sentence)));
  });
});
