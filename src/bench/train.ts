/**
 * npm run bench:train — training throughput on a backend (default wasm) for the issue's config:
 * 4 layers, 256 wide, 4 heads, 128 positions, batch 8, GPT-2's 50257-token vocabulary; tokens/s
 * averaged over steps after warm-up, then one step profiled by kernel. The anchor is PyTorch on
 * CPU for the same model and batch, run in the same session when Python with torch is present
 * (src/bench/train_anchor.py; Debian's python3-torch), else skipped with a note.
 *
 *   node dist/bench/train.js [--backend wasm] [--steps 4] [--warmup 1]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type * as tfjs from '@tensorflow/tfjs';
import { selectBackend } from '../backend/select.js';
import { presetConfig } from '../model/config.js';
import { GPT2 } from '../model/gpt2.js';
import { initialParameters } from '../model/params.js';
import { AdamW } from '../train/optimizer.js';
import { trainStep } from '../train/step.js';
import type { TokenRecord } from '../data/records.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const backendName = flag('--backend', 'wasm');
const steps = Number(flag('--steps', '4'));
const warmup = Number(flag('--warmup', '1'));
const [layers, width, heads, positions, batch] = [4, 256, 4, 128, 8];

const { tf, description } = await selectBackend(backendName);
const config = { ...presetConfig('gpt2'), n_layer: layers, n_embd: width, n_head: heads, n_positions: positions };
const model = GPT2.fromValues(tf, config, initialParameters(config, 0), { trainable: true });
const optimizer = new AdamW(tf, model.params as Map<string, tfjs.Variable>, { betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1 });
const vocab = config.vocab_size;
const records = (step: number): TokenRecord[] =>
  Array.from({ length: batch }, (_, b) => {
    const ids = Int32Array.from({ length: positions + 1 }, (_, t) => (step * 131 + b * 7919 + t * 104729) % vocab);
    return { input_ids: ids, labels: ids, attention_mask: new Uint8Array(positions + 1).fill(1) };
  });
const tokensPerStep = batch * positions;
console.log(`bench:train  ${layers} layers × ${width} wide, ${heads} heads, ${positions} positions, batch ${batch}, vocab ${vocab}; ${description}`);

const times: number[] = [];
for (let s = 0; s < warmup + steps; s++) {
  const t0 = performance.now();
  await trainStep(model, optimizer, [records(s)], { lr: 1e-4, gradClip: 1, seed: 1, step: s });
  if (s >= warmup) times.push((performance.now() - t0) / 1000);
}
const mean = times.reduce((a, b) => a + b, 0) / times.length;
const ours = tokensPerStep / mean;

// One more step, profiled by kernel.
const profile = await tf.profile(async () => {
  await trainStep(model, optimizer, [records(99)], { lr: 1e-4, gradClip: 1, seed: 1, step: 99 });
});
const byKernel = new Map<string, number>();
let total = 0;
for (const k of profile.kernels) {
  const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
  byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + ms);
  total += ms;
}

const anchorScript = fileURLToPath(new URL('../../src/bench/train_anchor.py', import.meta.url));
const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0);
let anchor: number | undefined;
if (python) {
  const r = spawnSync(python, [anchorScript, String(layers), String(width), String(heads), String(positions), String(batch), String(steps), String(warmup)], { encoding: 'utf8' });
  if (r.status === 0) anchor = (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { tokens_per_s: number }).tokens_per_s;
  else console.log(`PyTorch anchor failed: ${r.stderr.trim().split('\n').at(-1)}`);
}

console.log(`ours (${backendName})          ${ours.toFixed(1).padStart(7)} tokens/s  (${mean.toFixed(2)} s a step, mean of ${steps} after ${warmup} warm-up)`);
if (anchor !== undefined) console.log(`PyTorch CPU (anchor)   ${anchor.toFixed(1).padStart(7)} tokens/s  → ours = ${(ours / anchor).toFixed(2)}× PyTorch`);
else console.log('PyTorch CPU (anchor)   skipped: no python3 with torch here (apt-get install python3-torch)');
console.log(`profile of one step: ${total.toFixed(0)} ms in kernels`);
for (const [name, ms] of [...byKernel].sort((a, b) => b[1] - a[1]).slice(0, 8)) {
  console.log(`  ${name.padEnd(30)} ${ms.toFixed(0).padStart(7)} ms  ${((100 * ms) / total).toFixed(1).padStart(5)}%`);
}
optimizer.dispose();
model.dispose();
