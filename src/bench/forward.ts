/**
 * npm run bench:forward — the gpt2 preset (124M, random init, fp32) on a backend (default wasm):
 * load time from a checkpoint, prefill throughput for 1×1024 and 8×128 tokens, peak RSS against
 * the size of the weights. Each measurement runs in a fresh process.
 *
 *   node dist/bench/forward.js [--backend wasm] [--preset gpt2] [--runs 2]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { saveCheckpoint } from '../formats/checkpoint.js';
import { parameterCount, presetConfig } from '../model/config.js';
import { initialParameters } from '../model/params.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);

if (args[0] === '--child') {
  const [, dir, backendName, shape] = args;
  const [batch, length] = shape.split('x').map(Number);
  const t0 = performance.now();
  const { openModel } = await import('../model/open.js');
  const { model } = await openModel(dir, { backend: backendName });
  const loadMs = performance.now() - t0;
  const ids = Array.from({ length: batch }, (_, b) => Array.from({ length }, (_, t) => (b * 7919 + t * 104729) % model.config.vocab_size));
  const t1 = performance.now();
  // What generation's prefill computes: hidden states for every token, logits for the last.
  const { hidden } = model.hidden(ids);
  const tf = model.tf;
  const last = tf.tidy(() => model.lmHead(tf.reshape(tf.slice(hidden, [0, length - 1, 0], [batch, 1, -1]), [batch, model.config.n_embd])));
  await last.data();
  const prefillMs = performance.now() - t1;
  model.tf.dispose([hidden, last]);
  process.stdout.write(JSON.stringify({ loadMs, prefillMs, tokens: batch * length, maxRssKB: process.resourceUsage().maxRSS }));
  process.exit(0);
}

const backend = flag('--backend', 'wasm');
const presetName = flag('--preset', 'gpt2');
const runs = Number(flag('--runs', '2'));
const config = presetConfig(presetName);
const weightsMB = (parameterCount(config) * 4) / 1e6;
const work = mkdtempSync(join(tmpdir(), 'bench-forward-'));
const dir = join(work, 'ckpt');
console.log(`bench:forward  ${presetName} (${(parameterCount(config) / 1e6).toFixed(1)}M parameters, ${weightsMB.toFixed(0)} MB fp32) on ${backend}; writing a random checkpoint…`);
await saveCheckpoint(dir, config, initialParameters(config, 0));

const self = fileURLToPath(import.meta.url);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const shape of ['1x1024', '8x128']) {
  const results = [];
  for (let r = 0; r < runs; r++) {
    const child = spawnSync(process.execPath, [self, '--child', dir, backend, shape], { encoding: 'utf8' });
    if (child.status !== 0) throw new Error(`child failed: ${child.stderr}`);
    results.push(JSON.parse(child.stdout) as { loadMs: number; prefillMs: number; tokens: number; maxRssKB: number });
  }
  const load = median(results.map((r) => r.loadMs)) / 1000;
  const prefill = median(results.map((r) => r.prefillMs)) / 1000;
  const rss = median(results.map((r) => r.maxRssKB)) / 1000;
  console.log(`prefill ${shape.padEnd(7)} ${(results[0].tokens / prefill).toFixed(1).padStart(7)} tokens/s (${prefill.toFixed(2)} s)   load ${load.toFixed(2)} s (target ≤ 2 s)   peak RSS ${rss.toFixed(0)} MB = ${(rss / weightsMB).toFixed(2)}× the weights (target ≤ 1.3×)`);
}
rmSync(work, { recursive: true, force: true });
