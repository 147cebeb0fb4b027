/**
 * npm run bench:eval — `gpt2-eval` on GPT-2 124M (random weights, a checkpoint this benchmark
 * writes) over 1024-token records (WikiText-2 test when ../shared has it, else synthetic ids),
 * beside PyTorch's forward + loss on the same weights and records (src/bench/eval_anchor.py, at 1
 * and 2 threads), in the same run; the two losses must agree to 1e-5 relative.
 *
 * Ours is the whole command in a fresh process. Including load: scored tokens / the command's wall
 * time. Excluding load: the same command on one record is timed too, and the difference of the two
 * runs is the time of the other records alone. The anchor's "with load" is also its whole process
 * (Python, torch, reading model.safetensors); without, its forward + loss alone.
 *
 *   node dist/bench/eval.js [--records 4] [--runs 1] [--batch-size N] [--anchor-threads 1,2] [--shared DIR]
 */
import { join } from 'node:path';
import { saveCheckpoint } from '../formats/checkpoint.js';
import { presetConfig } from '../model/config.js';
import { initialParameters } from '../model/params.js';
import { benchIds, describeAnchor, firstErrorLine, fixed, flag, forwardFlopsPerToken, median, reportAnchor, ROW, runAnchor, runTool, scratch, writeRecords } from './harness.js';

const count = Number(flag('--records', '4'));
const runs = Number(flag('--runs', '1'));
const batchSize = flag('--batch-size', '');
if (count < 2) throw new Error('--records must be at least 2 (one record alone is timed to take the load out)');
const config = presetConfig('gpt2');
const T = config.n_positions;
const work = scratch('bench-eval-');
const model = join(work, 'gpt2');
await saveCheckpoint(model, config, initialParameters(config, 0));
const { ids, source } = benchIds('test', count, T);
const records = await writeRecords(join(work, 'records'), ids, T);
const gflops = (tokensPerS: number) => (tokensPerS * forwardFlopsPerToken(config, T - 1, true)) / 1e9;
console.log(`bench:eval  gpt2 (124M, random weights) on ${count} records of ${T} tokens (${count * (T - 1)} scored) from ${source}; ${runs} run(s), medians`);

type Eval = { loss: number; tokens: number; wallS: number; rssMB?: number };
function evaluate(maxRecords: number): Eval | string {
  const args = ['-q', '--model', model, '--data', join(work, 'records'), '--max-records', String(maxRecords), ...(batchSize ? ['--batch-size', batchSize] : [])];
  const r = runTool('gpt2-eval', args);
  if (!r.ok) return firstErrorLine(r.stderr);
  return { ...(JSON.parse(r.stdout) as { loss: number; tokens: number }), wallS: r.wallS, rssMB: r.rssMB };
}
const full: Eval[] = [];
const one: Eval[] = [];
let failed: string | undefined;
for (let k = 0; k < runs && !failed; k++) {
  const [a, b] = [evaluate(count), evaluate(1)];
  if (typeof a === 'string' || typeof b === 'string') failed = typeof a === 'string' ? a : (b as string);
  else full.push(a), one.push(b);
}
let ours: { withLoad: number; withoutLoad: number; loss: number } | undefined;
if (failed) console.log(`${ROW('ours: gpt2-eval CLI')}fails: ${failed}`);
else {
  const tokens = full[0].tokens;
  const wall = median(full.map((r) => r.wallS));
  const withoutLoad = (tokens - one[0].tokens) / (wall - median(one.map((r) => r.wallS)));
  ours = { withLoad: tokens / wall, withoutLoad, loss: full[0].loss };
  const rss = full[0].rssMB !== undefined ? `   peak RSS ${median(full.map((r) => r.rssMB!)).toFixed(0)} MB` : '';
  console.log(`${ROW('ours: gpt2-eval CLI')}${fixed(ours.withLoad)} tokens/s with load, ${fixed(withoutLoad)} without (${fixed(gflops(withoutLoad))} GFLOPS)${rss}  (${wall.toFixed(1)} s)`);
}

type Result = { loss: number; tokens: number; tokens_per_s: number };
const anchor = runAnchor<Result>('eval_anchor.py', { model, records });
describeAnchor(anchor);
const withLoad = (r: Result & { process_s: number }) => r.tokens / r.process_s;
const best = reportAnchor(
  anchor,
  (r) => r.tokens_per_s,
  (r) => `${fixed(withLoad(r))} tokens/s with load, ${fixed(r.tokens_per_s)} without (${fixed(gflops(r.tokens_per_s))} GFLOPS)   peak RSS ${r.max_rss_mb.toFixed(0)} MB`,
  ours && ((b) => `ours = ${(ours.withLoad / withLoad(b)).toFixed(2)}× with load, ${(ours.withoutLoad / b.tokens_per_s).toFixed(2)}× without`),
);
if (ours && best) {
  const rel = Math.abs(ours.loss - best.loss) / Math.abs(best.loss);
  console.log(`loss: ours ${ours.loss.toFixed(7)}, PyTorch ${best.loss.toFixed(7)}, relative difference ${rel.toExponential(1)} ${rel <= 1e-5 ? '(equal to 1e-5: yes)' : '(NOT equal to 1e-5)'}`);
}
