/**
 * npm run bench:train — training throughput through the real `gpt2-train` CLI beside the PyTorch
 * anchor (src/bench/train_anchor.py) on the same weights and records, in the same run:
 *
 *   small  the issue's shape: 4 layers × 256 wide, 4 heads, 128 positions, batch 8, GPT-2's
 *          vocabulary, no dropout.
 *   124m   GPT-2 124M at 1024 positions, micro-batch 1 with gradient accumulation 4 (the seed's
 *          batch 4); peak RSS of both sides. Ours may abort: reported as "fails: <why>".
 *
 * Each case writes a checkpoint (random init), record shards (WikiText-2 valid when ../shared has
 * it) and a config, runs `gpt2-train --init-from` it with a metric line every step and takes the
 * median of the steps' tokens_per_s after the warm-up ones; the anchor times its steps the same way
 * at 1 and 2 threads. GFLOPS count the step's FLOPs (harness.ts: FLOPS_FORMULA). The first step's
 * loss of both is printed as a check that both did the same work.
 *
 *   node dist/bench/train.js [--case small|124m|all] [--steps 4] [--warmup 2] [--steps-124m 1]
 *                            [--warmup-124m 1] [--anchor-threads 1,2] [--shared DIR]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { saveCheckpoint } from '../formats/checkpoint.js';
import { presetConfig, type GPT2Config } from '../model/config.js';
import { initialParameters } from '../model/params.js';
import { benchIds, firstErrorLine, fixed, flag, FLOPS_FORMULA, forwardFlopsPerToken, describeAnchor, gemmGflops, median, reportAnchor, ROW, runAnchor, runTool, scratch, writeRecords } from './harness.js';

interface Case {
  name: string;
  config: GPT2Config;
  batch: number;
  accumulation: number;
  steps: number;
  warmup: number;
}
const gpt2 = presetConfig('gpt2');
const cases: Case[] = [
  { name: 'small', config: { ...gpt2, n_layer: 4, n_embd: 256, n_head: 4, n_positions: 128 }, batch: 8, accumulation: 1, steps: Number(flag('--steps', '4')), warmup: Number(flag('--warmup', '2')) },
  { name: '124m', config: gpt2, batch: 1, accumulation: 4, steps: Number(flag('--steps-124m', '1')), warmup: Number(flag('--warmup-124m', '1')) },
];
const which = flag('--case', 'all');
const work = scratch('bench-train-');

// What our products reach here now, to set a step's GFLOPS beside (bench:matmul has the detail).
const peak = [1, 2].map(gemmGflops);
console.log(`our GEMM alone (1024³): ${peak[0].toFixed(1)} GFLOPS on 1 thread, ${peak[1].toFixed(1)} on 2\n`);
for (const c of cases.filter((c) => which === 'all' || which === c.name)) {
  const { config, batch, accumulation, steps, warmup } = c;
  const T = config.n_positions;
  const tokensPerStep = batch * accumulation * T;
  const stepFlops = 3 * forwardFlopsPerToken(config, T, true) * tokensPerStep;
  const dir = join(work, c.name);
  await saveCheckpoint(join(dir, 'init'), { ...config, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 }, initialParameters(config, 0));
  const { ids, source } = benchIds('valid', (warmup + steps) * batch * accumulation, T + 1);
  const records = await writeRecords(join(dir, 'records'), ids, T + 1);
  console.log(
    `bench:train ${c.name}  ${config.n_layer} layers × ${config.n_embd} wide, ${config.n_head} heads, ${T} positions, ` +
      `batch ${batch * accumulation}${accumulation > 1 ? ` (micro-batch ${batch} × accumulation ${accumulation})` : ''}, vocab ${config.vocab_size}, no dropout; ` +
      `${warmup} warm-up + ${steps} measured steps, medians; records: ${source}`,
  );
  console.log(`  a step: ${(stepFlops / 1e9).toFixed(1)} GFLOP (${FLOPS_FORMULA})`);

  // The run's config: JSON is YAML. Fixed lr, no evaluation, one checkpoint at the end (after the
  // timed steps), records in order so that the anchor reads the same ones.
  const runConfig = {
    output_dir: join(dir, 'run'),
    task: 'causal_lm',
    model: { preset: null, config: { vocab_size: config.vocab_size, n_positions: T, n_embd: config.n_embd, n_layer: config.n_layer, n_head: config.n_head }, dropout: 0, init_from: join(dir, 'init') },
    runner: { batch_size: batch, max_steps: warmup + steps, gradient_accumulation_steps: accumulation },
    optimizer: { type: 'adamw', betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0 },
    lr_schedule: { type: 'constant', lr: 1e-4 },
    train_dataset: { path: join(dir, 'records'), shuffle: false, drop_remainder: true },
    eval_dataset: null,
    checkpoint: { interval: 0, keep_last: 1 },
    logging: { interval: 1 },
  };
  writeFileSync(join(dir, 'config.yaml'), JSON.stringify(runConfig, null, 2));
  const run = runTool('gpt2-train', ['--quiet', '--config', join(dir, 'config.yaml')]);
  const rss = run.rssMB !== undefined ? `peak RSS ${run.rssMB.toFixed(0)} MB` : '';
  let ours: { tokensPerS: number; firstLoss: number } | undefined;
  if (run.ok) {
    const metrics = readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step?: number; loss?: number; tokens_per_s?: number });
    const stepsLogged = metrics.filter((m) => m.tokens_per_s !== undefined);
    const tokensPerS = median(stepsLogged.slice(warmup).map((m) => m.tokens_per_s!));
    ours = { tokensPerS, firstLoss: stepsLogged[0].loss! };
    console.log(`${ROW('ours: gpt2-train CLI')}${fixed(tokensPerS)} tokens/s ${fixed((tokensPerS * stepFlops) / tokensPerStep / 1e9)} GFLOPS (${((100 * (tokensPerS * stepFlops)) / tokensPerStep / 1e9 / peak[1]).toFixed(0)}% of the GEMM's)   ${rss}  (whole command ${run.wallS.toFixed(1)} s)`);
  } else {
    console.log(`${ROW('ours: gpt2-train CLI')}fails: ${firstErrorLine(run.stderr)}   ${rss} (after ${run.wallS.toFixed(1)} s)`);
  }

  type Result = { tokens_per_s: number; step_s: number; losses: number[] };
  const anchor = runAnchor<Result>('train_anchor.py', { model: join(dir, 'init'), records, batch, accumulation, steps, warmup });
  describeAnchor(anchor);
  const best = reportAnchor(
    anchor,
    (r) => r.tokens_per_s,
    (r) => `${fixed(r.tokens_per_s)} tokens/s ${fixed((r.tokens_per_s * stepFlops) / tokensPerStep / 1e9)} GFLOPS   peak RSS ${r.max_rss_mb.toFixed(0)} MB`,
    ours && ((b) => `ours = ${(ours.tokensPerS / b.tokens_per_s).toFixed(2)}× PyTorch`),
  );
  if (ours && best) {
    const theirs = best.losses[0];
    console.log(`first step's loss: ours ${ours.firstLoss.toFixed(6)}, PyTorch ${theirs.toFixed(6)} (relative difference ${(Math.abs(ours.firstLoss - theirs) / Math.abs(theirs)).toExponential(1)})`);
  }
  console.log();
}
