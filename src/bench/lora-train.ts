/**
 * node dist/bench/lora-train.js — LoRA against full fine-tuning of GPT-2 124M on the wasm pass
 * (PassTrainer), the comparison: 1024 positions, micro-batch 1, the seed's LoRA (rank 64,
 * alpha 128, dropout 0.1 on query + value), AdamW as configs/gpt2/run_gpt2.yaml, no model dropout
 * (as bench:train). Each mode runs in fresh processes, alternately (full, LoRA, full, LoRA, …), so
 * that both see the same load on a shared machine; a process times `--steps` optimizer steps after
 * `--warmup` and /usr/bin/time takes its peak RSS. Reported: medians of step time and peak RSS,
 * the pass's memory (train-memory.ts) and LoRA/full ratios. Both start from the same random
 * weights and LoRA's B is 0, so their first losses must be equal: a check that both ran the same
 * forward.
 *
 *   node dist/bench/lora-train.js [--runs 1] [--steps 2] [--warmup 1] [--threads N] [--shared DIR]
 *
 * gpt2-train drives this same trainer for a LoRA run (engine.ts); the bench times the steps alone,
 * without data reading or checkpoints.
 *
 * Measured on the 2-core development machine (shared; 2026-11-29, --runs 3 --steps 1):
 *   full fine-tuning      step 22.65 s (22.16, 22.65, 25.45)  peak RSS 2403 MB  pass memory 2325 MiB
 *   LoRA r64 query+value  step 13.25 s (11.63, 15.88, 13.25)  peak RSS 1033 MB  pass memory  946 MiB
 *   LoRA / full: step time 0.58×, peak RSS 0.43×, pass memory 0.41×; first losses equal bit for bit
 * LoRA skips the base's weight-gradient products (174 of the step's 831 GFLOP) and the LM head's
 * wte gradient (79 GFLOP), ~30% of the products, and AdamW over 124M floats; what is left is the
 * forward, the input gradients and attention, which LoRA needs as much as full training does.
 */
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { pooledGemm } from '../backend/kernel-pool.js';
import type { TokenRecord } from '../data/records.js';
import { presetConfig } from '../model/config.js';
import { initialLora, type LoraSpec } from '../model/lora.js';
import { parameterShapes, type ParameterSources } from '../model/params.js';
import { PassTrainer } from '../train/pass-trainer.js';
import { Rng } from '../util/rng.js';
import { benchIds, firstErrorLine, fixed, flag, median, ROW, runProcess } from './harness.js';

const config = { ...presetConfig('gpt2'), embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
const SPEC: LoraSpec = { rank: 64, alpha: 128, dropout: 0.1, targets: ['query', 'value'] };
const T = config.n_positions;
const [steps, warmup] = [Number(flag('--steps', '2')), Number(flag('--warmup', '1'))];
const threads = Number(flag('--threads', String(availableParallelism())));

interface ChildResult {
  stepS: number[];
  firstLoss: number;
  layoutMiB: number;
}

/**
 * Weights as HF initialises GPT-2 (LayerNorm γ 1, biases 0, the rest of std 0.02, here uniform)
 * written straight into the trainer's memory: no JavaScript copy of the model in either mode.
 */
function randomSources(): ParameterSources {
  const rng = new Rng(7, 0x6c6f7261);
  const bound = 0.02 * Math.sqrt(3);
  return new Map(
    parameterShapes(config).map(([name, shape]) => [
      name,
      {
        shape,
        async readInto(dest: Float32Array) {
          if (name.endsWith('.bias')) dest.fill(0);
          else if (/ln_\w+\.weight$/.test(name)) dest.fill(1);
          else for (let k = 0; k < dest.length; k++) dest[k] = (2 * rng.nextFloat() - 1) * bound;
        },
      },
    ]),
  );
}

async function child(mode: 'full' | 'lora'): Promise<ChildResult> {
  const { ids } = benchIds('valid', warmup + steps, T + 1);
  const records: TokenRecord[] = Array.from({ length: warmup + steps }, (_, k) => {
    const input_ids = ids.slice(k * (T + 1), (k + 1) * (T + 1));
    return { input_ids, attention_mask: new Uint8Array(T + 1).fill(1), labels: input_ids };
  });
  const optimizer = { betas: [0.9, 0.95] as [number, number], eps: 1e-8, weight_decay: 0.1 };
  const lora = mode === 'lora' ? { spec: SPEC, values: initialLora(config, SPEC, 1) } : undefined;
  const trainer = await PassTrainer.fromSources(config, randomSources(), { batch: 1, length: T, optimizer, gemm: pooledGemm(threads), lora });
  const stepS: number[] = [];
  let firstLoss = NaN;
  for (const [k, r] of records.entries()) {
    const t0 = performance.now();
    const { loss } = trainer.trainStep([[r]], { lr: 1e-4, gradClip: 1, seed: 1, step: k });
    if (k >= warmup) stepS.push((performance.now() - t0) / 1000);
    if (k === 0) firstLoss = loss;
  }
  const layoutMiB = (trainer.layout.floats * 4) / 2 ** 20;
  trainer.dispose();
  return { stepS, firstLoss, layoutMiB };
}

const mode = flag('--child', '');
if (mode === 'full' || mode === 'lora') {
  console.log(JSON.stringify(await child(mode)));
} else {
  const runs = Number(flag('--runs', '1'));
  console.log(
    `bench:lora  GPT-2 124M, ${T} positions, micro-batch 1, no model dropout, wasm pass on ${threads} thread(s); ` +
      `LoRA rank ${SPEC.rank}, alpha ${SPEC.alpha}, dropout ${SPEC.dropout} on ${SPEC.targets.join(' + ')} vs full fine-tuning; ` +
      `${runs} process(es) each, alternately, ${warmup} warm-up + ${steps} timed steps a process`,
  );
  const results: Record<'full' | 'lora', { stepS: number[]; rssMB: number[]; firstLoss: number; layoutMiB: number }> = {
    full: { stepS: [], rssMB: [], firstLoss: NaN, layoutMiB: NaN },
    lora: { stepS: [], rssMB: [], firstLoss: NaN, layoutMiB: NaN },
  };
  const self = fileURLToPath(import.meta.url);
  const shared = flag('--shared', '') === '' ? [] : ['--shared', flag('--shared', '')];
  for (let run = 0; run < runs; run++) {
    for (const m of ['full', 'lora'] as const) {
      const r = runProcess(process.execPath, [self, '--child', m, '--steps', String(steps), '--warmup', String(warmup), '--threads', String(threads), ...shared]);
      if (!r.ok) {
        console.log(`${ROW(m)}fails: ${firstErrorLine(r.stderr)}`);
        process.exit(1);
      }
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
      Object.assign(results[m], { firstLoss: out.firstLoss, layoutMiB: out.layoutMiB });
      results[m].stepS.push(...out.stepS);
      if (r.rssMB !== undefined) results[m].rssMB.push(r.rssMB);
    }
  }
  const line = (m: 'full' | 'lora', label: string) => {
    const r = results[m];
    const rss = r.rssMB.length > 0 ? `peak RSS ${fixed(median(r.rssMB), 0, 5)} MB` : 'peak RSS n/a (no /usr/bin/time)';
    console.log(`${ROW(label)}step ${fixed(median(r.stepS), 2)} s (of ${r.stepS.map((s) => s.toFixed(2)).join(', ')})   ${rss}   pass memory ${fixed(r.layoutMiB, 0, 5)} MiB`);
  };
  line('full', 'full fine-tuning');
  line('lora', 'LoRA r64 query+value');
  const [f, l] = [results.full, results.lora];
  const rssRatio = f.rssMB.length > 0 ? `, peak RSS ${(median(l.rssMB) / median(f.rssMB)).toFixed(2)}×` : '';
  console.log(`LoRA / full: step time ${(median(l.stepS) / median(f.stepS)).toFixed(2)}×${rssRatio}, pass memory ${(l.layoutMiB / f.layoutMiB).toFixed(2)}×`);
  console.log(`first step's loss: full ${f.firstLoss.toFixed(6)}, LoRA ${l.firstLoss.toFixed(6)} (B = 0: ${f.firstLoss === l.firstLoss ? 'equal, bit for bit' : 'DIFFERENT'})`);
}
