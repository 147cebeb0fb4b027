/**
 * gpt2-classify end to end on the PyTorch-made classifier fixtures/models/tiny-cls (its expected.json:
 * HF GPT2ForSequenceClassification's logits of four records): labels and probabilities, one line per
 * input in input order whatever the batch size, both formats, inputs from arguments, a file or
 * stdin, lines printed as soon as their batch is done, and one-line errors for bad inputs.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectOneLineError, fixture, ROOT, runCli, tempDir } from '../helpers.js';

const MODEL = fixture('models', 'tiny-cls');
const fx = JSON.parse(readFileSync(join(MODEL, 'expected.json'), 'utf8')) as { labels: string[]; records: number[][]; right: { logits: number[][] } };
const lines = fx.records.map((r) => r.join(' '));
const dir = tempDir();

/** PyTorch's probabilities (softmax in float64 of its float32-stored logits) and arg max. */
const want = fx.right.logits.map((row) => {
  const max = Math.max(...row);
  const e = row.map((x) => Math.exp(x - max));
  const probs = e.map((x) => x / e.reduce((a, b) => a + b, 0));
  return { probs, id: row.indexOf(max) };
});

function expectJsonl(stdout: string): void {
  const out = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { label: string; label_id: number; probs: number[] });
  expect(out).toHaveLength(want.length);
  out.forEach((o, k) => {
    expect(Object.keys(o)).toEqual(['label', 'label_id', 'probs']);
    expect([o.label, o.label_id]).toEqual([fx.labels[want[k].id], want[k].id]);
    o.probs.forEach((p, j) => expect(Math.abs(p - want[k].probs[j]), `input ${k + 1}, label ${j}`).toBeLessThan(1e-4));
  });
}

const classify = (args: string[], input?: string) => runCli('gpt2-classify', ['--model', MODEL, '--input-format', 'ids', ...args], { input });

describe('gpt2-classify', () => {
  it.each([1, 3, 8])('arguments, batches of %i: jsonl (the default on a pipe) in input order, PyTorch’s labels and probabilities', (batch) => {
    const r = classify(['--batch-size', String(batch), ...lines]);
    expect(r.code, r.stderr).toBe(0);
    expectJsonl(r.stdout);
  });

  it('reads --input-file and stdin line by line; tsv is the label and its probability', () => {
    const file = join(dir, 'inputs.txt');
    writeFileSync(file, `${lines.join('\r\n')}\r\n`);
    expectJsonl(classify(['--input-file', file]).stdout);
    const tsv = classify(['--format', 'tsv', '-b', '2'], `${lines.join('\n')}`);
    expect(tsv.code, tsv.stderr).toBe(0);
    const rows = tsv.stdout.trimEnd().split('\n').map((l) => l.split('\t'));
    expect(rows.map((r) => r[0])).toEqual(want.map((w) => fx.labels[w.id]));
    rows.forEach((r, k) => expect(Math.abs(Number(r[1]) - want[k].probs[want[k].id])).toBeLessThan(1e-4));
  });

  it('prints each batch as soon as it is done, before the input has ended', async () => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'gpt2-classify.js'), '-q', '--model', MODEL, '--input-format', 'ids', '-b', '2'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    const linesOut = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${n} lines within 30 s; got ${JSON.stringify(out)}`)), 30_000);
        const check = () => {
          if (out.split('\n').length > n) {
            clearTimeout(timer);
            resolve();
          }
        };
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString('utf8');
          check();
        });
        check();
      });
    child.stdin.write(`${lines[0]}\n${lines[1]}\n`);
    await linesOut(2); // the first batch, while stdin is still open
    expect(out.trimEnd().split('\n')).toHaveLength(2);
    child.stdin.end(`${lines[2]}\n${lines[3]}\n`);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expectJsonl(out);
  });

  it('truncates a text longer than the context only when asked', () => {
    const long = Array.from({ length: 40 }, (_, k) => k % 300).join(' ');
    expectOneLineError(classify([long]), 'gpt2-classify', /^gpt2-classify: error: argument 1: 40 tokens, more than the model's context of 32 \(use --truncate left\|right\)$/);
    const left = classify(['--truncate', 'left', long]);
    const kept = classify([long.split(' ').slice(8).join(' ')]);
    expect(left.code, left.stderr).toBe(0);
    expect(left.stdout).toBe(kept.stdout);
  });

  it('bad inputs: one line naming the input, exit 1 (2 for bad flags)', () => {
    expectOneLineError(classify(['5 17', '5 999']), 'gpt2-classify', /argument 2: token id 999 is not in the vocabulary \(size 320\)$/);
    expectOneLineError(classify([], '5 17\nfive\n'), 'gpt2-classify', /<stdin>:2: "five" \(item 1\) is not a token id$/);
    expectOneLineError(classify([], '5 17\n\n3\n'), 'gpt2-classify', /<stdin>:2: empty input, nothing to classify$/);
    // text through GPT-2's tokenizer (the fixture has none of its own) gives ids beyond its 320
    expectOneLineError(runCli('gpt2-classify', ['--model', MODEL, 'a fine film']), 'gpt2-classify', /argument 1: token id \d+ is outside the model's vocabulary of 320/);
    expectOneLineError(runCli('gpt2-classify', ['--model', fixture('models', 'tiny'), '--input-format', 'ids', '5']), 'gpt2-classify', /is not a classifier \(no GPT2ForSequenceClassification in its config\.json, nor a classifier.s adapter\)/);
    expectOneLineError(runCli('gpt2-classify', ['--model', MODEL, '--input-format', 'xml', '5']), 'gpt2-classify', /--input-format/, 2);
    expectOneLineError(classify(['--input-file', join(dir, 'missing.txt')]), 'gpt2-classify', /missing\.txt: no such file or directory$/);
    expectOneLineError(classify(['--input-file', join(dir, 'x'), '5']), 'gpt2-classify', /give inputs as arguments or with --input-file, not both$/, 2);
  });

  it('a failing stdout (a full disk) is a one-line error, not exit 0', () => {
    const fd = openSync('/dev/full', 'w');
    try {
      const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'gpt2-classify.js'), '-q', '--model', MODEL, '--input-format', 'ids', ...lines], { stdio: ['ignore', fd, 'pipe'] });
      expectOneLineError({ code: r.status ?? -1, stdout: '', stderr: r.stderr.toString('utf8'), stdoutBytes: Buffer.alloc(0) }, 'gpt2-classify', /<stdout>: no space left on device$/);
    } finally {
      closeSync(fd);
    }
  });

  it('--help shows examples; the first one works as pasted', () => {
    const help = runCli('gpt2-classify', ['--help']);
    expect(help.code).toBe(0);
    const first = help.stdout.split('Examples:\n')[1].split('\n')[0].trim();
    expect(first).toMatch(/^gpt2-classify --model fixtures\/models\/tiny-cls /);
    const args = [...first.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]).slice(1);
    const r = runCli('gpt2-classify', args, { cwd: ROOT });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(2);
  });
});
