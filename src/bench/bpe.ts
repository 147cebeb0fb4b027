/**
 * npm run bench:bpe — WikiText-2 train through wikitext-prep | bpe-encode into shards, against
 * gpt-tokenizer's encode of the same documents, in the same run. Every figure is the median of
 * --runs fresh processes (machines are noisy); ratios are ours / gpt-tokenizer. The anchor times
 * encode() alone; the tool rows are whole commands (process start, reading, writing shards).
 *
 *   node dist/bench/bpe.js [--input wiki.train.tokens] [--runs 5] [--shared DIR]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { flag, median, ROOT as root, scratch, SHARED } from './harness.js';

const input = resolve(flag('--input', join(SHARED, 'data', 'wikitext-2', 'wiki.train.tokens')));
const runs = Number(flag('--runs', '5'));

if (!existsSync(input)) {
  console.log(`bench:bpe SKIPPED: ${input} not found (the benchmark needs WikiText-2 from ../shared)`);
  process.exit(0);
}

const work = scratch('bench-bpe-');
const bin = (tool: string) => JSON.stringify(join(root, 'bin', `${tool}.js`));

function timeShell(command: string): number {
  const t0 = performance.now();
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', command], { stdio: ['ignore', 'ignore', 'inherit'] });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`failed (${r.status}): ${command}`);
  return ms;
}

// The documents bpe-encode sees, for the anchor.
const docs = join(work, 'docs.txt');
if (spawnSync('bash', ['-c', `node ${bin('wikitext-prep')} -q ${JSON.stringify(input)} > ${JSON.stringify(docs)}`]).status !== 0) throw new Error('wikitext-prep failed');
const inputMB = statSync(input).size / 1e6;
const docsMB = statSync(docs).size / 1e6;

// gpt-tokenizer's encode of the documents in a fresh process, timed around encode() alone.
const anchorScript = join(work, 'anchor.mjs');
writeFileSync(
  anchorScript,
  `import { readFileSync } from 'node:fs';
import { encode } from ${JSON.stringify(join(root, 'node_modules', 'gpt-tokenizer', 'esm', 'encoding', 'r50k_base.js'))};
const text = readFileSync(process.argv[2], 'utf8');
const t0 = performance.now();
const n = encode(text).length;
process.stdout.write(JSON.stringify({ ms: performance.now() - t0, tokens: n }));`,
);
// Ours measured the same way: a fresh process, timed around encode() of the whole text alone.
const oursScript = join(work, 'ours.mjs');
writeFileSync(
  oursScript,
  `import { readFileSync } from 'node:fs';
import { loadTokenizer } from ${JSON.stringify(join(root, 'dist', 'tokenizer', 'tokenizer.js'))};
const text = readFileSync(process.argv[2], 'utf8');
const tokenizer = loadTokenizer();
const t0 = performance.now();
const n = tokenizer.encode(text).length;
process.stdout.write(JSON.stringify({ ms: performance.now() - t0, tokens: n }));`,
);
function encodeMs(script: string): number {
  const r = spawnSync(process.execPath, [script, docs], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${script} failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { ms: number }).ms;
}

const out = join(work, 'shards');
const cases: { label: string; mb: number; run: () => number }[] = [
  { label: 'gpt-tokenizer encode (anchor)', mb: docsMB, run: () => encodeMs(anchorScript) },
  { label: 'our Tokenizer.encode, same way', mb: docsMB, run: () => encodeMs(oursScript) },
  ...[1, 2].map((w) => ({
    label: `bpe-encode -j${w} (documents → shards)`,
    mb: docsMB,
    run: () => timeShell(`node ${bin('bpe-encode')} -q -j ${w} --block-size 1025 --overwrite --out ${out} ${JSON.stringify(docs)}`),
  })),
  ...[1, 2].map((w) => ({
    label: `wikitext-prep | bpe-encode -j${w} (raw → shards)`,
    mb: inputMB,
    run: () => timeShell(`node ${bin('wikitext-prep')} -q ${JSON.stringify(input)} | node ${bin('bpe-encode')} -q -j ${w} --block-size 1025 --overwrite --out ${out}`),
  })),
];

console.log(`bench:bpe  input ${input} (${inputMB.toFixed(1)} MB raw, ${docsMB.toFixed(1)} MB of documents), ${runs} runs each, medians`);
const times = new Map(cases.map((c) => [c.label, [] as number[]]));
for (let r = 0; r < runs; r++) for (const c of cases) times.get(c.label)!.push(c.run()); // interleaved, so drift hits all alike
const anchor = cases[0].mb / (median(times.get(cases[0].label)!) / 1000);
for (const c of cases) {
  const ms = median(times.get(c.label)!);
  const mbps = c.mb / (ms / 1000);
  console.log(`${c.label.padEnd(44)} ${(ms / 1000).toFixed(2).padStart(6)} s  ${mbps.toFixed(1).padStart(6)} MB/s  ${(mbps / anchor).toFixed(2)}× gpt-tokenizer`);
}
