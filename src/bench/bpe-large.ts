/**
 * npm run bench:bpe-large — the data tools on a WikiText-103-sized input (issue 13 §1): peak RSS
 * must stay bounded (≤ 400 MB) whatever the input size, and every core must pay (-j2 ≥ 1.8× -j1).
 *
 * The input (not committed; made in a scratch directory, ~10 s): WikiText-2 train in its own
 * format, repeated until --mb megabytes, every copy after the first with the words of each text
 * line shuffled and ~3% of them given a suffix, so the copies are new text with new pieces (a
 * cache that had seen copy 1 does not get copy 2 for free) but WikiText-shaped (headings,
 * " @-@ ", <unk>, one article after another).
 *
 * Each command runs in fresh processes, --runs times, interleaved; figures are medians, RSS is
 * /usr/bin/time's peak resident set of the process (all its threads).
 *
 *   node dist/bench/bpe-large.js [--mb 520] [--runs 3] [--shared DIR]
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Rng } from '../util/rng.js';
import { flag, median, ROOT, ROW, scratch, SHARED } from './harness.js';

const source = resolve(flag('--input', join(SHARED, 'data', 'wikitext-2', 'wiki.train.tokens')));
const targetMB = Number(flag('--mb', '520'));
const runs = Number(flag('--runs', '3'));
const RSS_LIMIT_MB = 400;

if (!existsSync(source)) {
  console.log(`bench:bpe-large SKIPPED: ${source} not found (the benchmark grows WikiText-2 from ../shared)`);
  process.exit(0);
}
if (!existsSync('/usr/bin/time')) {
  console.log('bench:bpe-large SKIPPED: /usr/bin/time (Debian package time) is needed for peak RSS');
  process.exit(0);
}

const work = scratch('bench-bpe-large-');

/** WikiText-2 train, copied with shuffled and suffixed words until targetMB. */
function makeInput(path: string): number {
  const lines = readFileSync(source, 'utf8').split('\n');
  const fd = openSync(path, 'w');
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  let written = 0;
  for (let copy = 0; written < targetMB * 1e6; copy++) {
    const rng = new Rng(2026, copy);
    const out: string[] = [];
    for (const line of lines) {
      const text = line.trim();
      if (copy === 0 || text === '' || text.startsWith('=')) {
        out.push(line);
        continue;
      }
      const words = text.split(' ');
      rng.shuffle(words);
      for (let k = 0; k < words.length; k++) {
        if (rng.nextInt(32) === 0 && /^[a-z]+$/.test(words[k])) words[k] += letters[rng.nextInt(26)] + letters[rng.nextInt(26)];
      }
      out.push(` ${words.join(' ')} `);
    }
    const bytes = Buffer.from(out.join('\n'), 'utf8');
    writeSync(fd, bytes);
    written += bytes.length;
  }
  closeSync(fd);
  return written;
}

interface Timed {
  wallS: number;
  /** Peak RSS of each process of the command, in its order. */
  rssMB: number[];
}

/** A shell command whose node processes each run under /usr/bin/time (marked "rss=" on stderr). */
function timeShell(command: string): Timed {
  const t0 = performance.now();
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', command], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 26 });
  const wallS = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`failed (${r.status}): ${command}\n${r.stderr}`);
  return { wallS, rssMB: [...r.stderr.matchAll(/^rss=(\d+)$/gm)].map((m) => Number(m[1]) / 1024) };
}
const node = (tool: string, args: string) => `/usr/bin/time -f rss=%M node ${JSON.stringify(join(ROOT, 'bin', `${tool}.js`))} -q ${args}`;

const raw = join(work, 'wiki.big.tokens');
const rawMB = makeInput(raw) / 1e6;
const docs = join(work, 'docs.txt');
timeShell(`${node('wikitext-prep', JSON.stringify(raw))} > ${docs}`);
const docsMB = statSync(docs).size / 1e6;
const out = (name: string) => JSON.stringify(join(work, name));

const cases: { label: string; mb: number; run: () => Timed }[] = [
  { label: 'wikitext-prep', mb: rawMB, run: () => timeShell(`${node('wikitext-prep', JSON.stringify(raw))} > /dev/null`) },
  ...[1, 2].map((j) => ({ label: `bpe-encode -j${j}`, mb: docsMB, run: () => timeShell(node('bpe-encode', `-j${j} --block-size 1025 --overwrite --out ${out('shards')} ${docs}`)) })),
  {
    label: 'wikitext-prep | bpe-encode -j2',
    mb: rawMB,
    run: () => timeShell(`${node('wikitext-prep', JSON.stringify(raw))} | ${node('bpe-encode', `-j2 --block-size 1025 --overwrite --out ${out('shards')}`)}`),
  },
  {
    label: '--part 1/2 & 2/2 (-j1 each)',
    mb: docsMB,
    run: () => timeShell(`for k in 1 2; do ${node('bpe-encode', `-j1 --block-size 1025 --part $k/2 --overwrite --out ${out('part')}$k ${docs}`)} & done; wait`),
  },
  // Comes right after the parts (cases run in this order in every run).
  { label: '  then --merge', mb: docsMB, run: () => timeShell(node('bpe-encode', `--merge ${out('part')}1 ${out('part')}2 --overwrite --out ${out('shards')}`)) },
  { label: 'bpe-encode -j2 --num-shards 8', mb: docsMB, run: () => timeShell(node('bpe-encode', `-j2 --block-size 1025 --num-shards 8 --overwrite --out ${out('shards')} ${docs}`)) },
];

console.log(`bench:bpe-large  ${rawMB.toFixed(0)} MB of WikiText-shaped text (${docsMB.toFixed(0)} MB of documents) grown from ${source}, ${runs} runs each, medians`);
const results = new Map(cases.map((c) => [c.label, [] as Timed[]]));
for (let r = 0; r < runs; r++) for (const c of cases) results.get(c.label)!.push(c.run());
const wall = (label: string) => median(results.get(label)!.map((t) => t.wallS));
let worst = 0;
for (const c of cases) {
  const timed = results.get(c.label)!;
  const rss = timed[0].rssMB.map((_, p) => median(timed.map((t) => t.rssMB[p])));
  worst = Math.max(worst, ...rss);
  const s = wall(c.label);
  console.log(`${ROW(c.label).padEnd(32)} ${s.toFixed(1).padStart(6)} s  ${(c.mb / s).toFixed(1).padStart(5)} MB/s  peak RSS ${rss.map((m) => `${m.toFixed(0)} MB`).join(' + ')}`);
}
// Speed-ups as medians of each run's ratio: the commands of a run ran minutes apart at most, so
// the machine's drift (10–15% from hour to hour here) cancels out of the ratio better.
const speedup = (label: string) => median(results.get('bpe-encode -j1')!.map((one, r) => one.wallS / results.get(label)![r].wallS));
console.log(
  `bpe-encode -j2 / -j1: ${speedup('bpe-encode -j2').toFixed(2)}× (target ≥ 1.8×); two processes on halves (--part, no threads) / -j1: ` +
    `${speedup('--part 1/2 & 2/2 (-j1 each)').toFixed(2)}×, what two independent encoders get from this machine's two cores`,
);
console.log(`largest peak RSS of any process ${worst.toFixed(0)} MB (target ≤ ${RSS_LIMIT_MB} MB)`);
