/**
 * npm run bench:generate — decoding speed and memory of the `gpt2` preset (124M, fp32, random
 * weights from a checkpoint this project wrote), batch 1, an 8-token prompt, 64 new tokens,
 * greedy, on a backend (default wasm): decode tokens/s, prefill ms, load ms, peak RSS against the
 * weights — on one thread and on every core — beside PyTorch decoding the same model on CPU. Then
 * the time to the first token of the tiny demo model, from process start.
 *
 *   node dist/bench/generate.js [--backend wasm] [--runs 5]
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { saveCheckpoint } from '../formats/checkpoint.js';
import { parameterCount, presetConfig, type GPT2Config } from '../model/config.js';
import { initialParameters } from '../model/params.js';
import { MAX_PAGES, wasmApi } from '../backend/wasm-asm.js';
import { KernelPool } from '../backend/kernel-pool.js';
import { smallMatMul } from '../backend/wasm-gemv.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const backend = flag('--backend', 'wasm');
const runs = Number(flag('--runs', '5'));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const work = mkdtempSync(join(tmpdir(), 'bench-generate-'));
const bin = join(root, 'bin', 'gpt2-generate.js');

const gpt2 = presetConfig('gpt2');
const weightsMB = (parameterCount(gpt2) * 4) / 1e6;
console.log(`bench:generate  gpt2 (${(parameterCount(gpt2) / 1e6).toFixed(1)}M, ${weightsMB.toFixed(0)} MB fp32) on ${backend}, batch 1, 8-token prompt, 64 new tokens, greedy`);
await saveCheckpoint(join(work, 'gpt2'), gpt2, initialParameters(gpt2, 0));
const prompt = Array.from({ length: 8 }, (_, t) => (t * 104729) % gpt2.vocab_size).join(' ');
type Run = { load_ms: number; prefill_ms: number; decode_tokens_per_s: number; rss: number };
function measure(extra: string[]): Run {
  // /usr/bin/time -f %M gives the child's peak RSS; the tool's --stats the timings.
  const out = spawnSync('/usr/bin/time', ['-f', 'maxrss=%M', process.execPath, bin, '-q', '--backend', backend, ...extra, '--model', join(work, 'gpt2'), '--input-format', 'ids', '--format', 'ids', '-n', '64', '--ignore-eos', '--stats', prompt], { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(out.stderr);
  const stats = JSON.parse(out.stderr.split('\n').find((l) => l.startsWith('{'))!);
  return { ...stats, rss: Number(/maxrss=(\d+)/.exec(out.stderr)![1]) / 1000 };
}
const report = (label: string, results: Run[]) => {
  const rss = median(results.map((r) => r.rss));
  console.log(`${label.padEnd(12)} decode ${median(results.map((r) => r.decode_tokens_per_s)).toFixed(1)} tokens/s (target ≥ 25)   prefill ${median(results.map((r) => r.prefill_ms)).toFixed(0)} ms   load ${median(results.map((r) => r.load_ms)).toFixed(0)} ms   peak RSS ${rss.toFixed(0)} MB = ${(rss / weightsMB).toFixed(2)}× the weights (target ≤ 1.3×)`);
};
// Alternating one thread and every core, so that the machine's mood affects both alike.
const one: Run[] = [];
const all: Run[] = [];
for (let r = 0; r < runs; r++) {
  one.push(measure(['--threads', '1']));
  all.push(measure([]));
}
report('1 thread', one);
report(`${availableParallelism()} threads`, all);
console.log(`[medians of ${runs} fresh processes each]`);
const decode = median(all.map((r) => r.decode_tokens_per_s));

// What bounds a step: streaming the weights. The same kernel over 307 MB (more than any cache),
// on one thread and on every core, in this process, now.
{
  const rows = 100_000;
  const k = 768;
  const memory = new wasmApi.Memory({ initial: Math.ceil((rows * (k + 1) * 4 + 8192) / 65536), maximum: MAX_PAGES, shared: true }); // a, b, out
  new Float32Array(memory.buffer).fill(0.01);
  const pool = new KernelPool(memory, availableParallelism());
  const single = smallMatMul(memory);
  const gbps = (kernels: { nt: typeof single.nt }) => {
    const times: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      kernels.nt(0, rows * k * 4, rows * k * 4 + 4096, rows, k, 1);
      times.push(performance.now() - t0);
    }
    return (rows * k * 4) / median(times) / 1e6;
  };
  const [one1, all1, threads] = [gbps(single), gbps(pool), pool.threads];
  pool.close();
  const perToken = (parameterCount(gpt2) * 4) / 1e9;
  console.log(`memory streaming (same kernels): 1 thread ${one1.toFixed(1)} GB/s, ${threads} threads ${all1.toFixed(1)} GB/s → at most ${(all1 / perToken).toFixed(0)} tokens/s for ${(perToken * 1000).toFixed(0)} MB a token`);
}

// Anchor: PyTorch on CPU decoding the same model the same way, when this machine's Python has torch.
const anchorScript = fileURLToPath(new URL('../../src/bench/generate_anchor.py', import.meta.url));
const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0);
if (python) {
  const r = spawnSync(python, [anchorScript, '64', String(runs)], { encoding: 'utf8' });
  if (r.status === 0) {
    const anchor = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { decode_tokens_per_s: number; threads: number };
    console.log(`PyTorch CPU (anchor, ${anchor.threads} threads) decode ${anchor.decode_tokens_per_s.toFixed(1)} tokens/s  → ours = ${(decode / anchor.decode_tokens_per_s).toFixed(2)}× PyTorch`);
  } else console.log(`PyTorch anchor failed: ${r.stderr.trim().split('\n').at(-1)}`);
} else console.log('PyTorch CPU (anchor) skipped: no python3 with torch here (apt-get install python3-torch)');

// Time to first token of the tiny demo model, from process start to the first byte on stdout.
const tiny: GPT2Config = { ...gpt2, n_positions: 64, n_embd: 64, n_layer: 2, n_head: 2 };
await saveCheckpoint(join(work, 'tiny'), tiny, initialParameters(tiny, 0));
const ttft: number[] = [];
for (let r = 0; r < runs; r++) {
  const t0 = performance.now();
  const child = spawn(process.execPath, [bin, '-q', '--backend', backend, '--model', join(work, 'tiny'), '--stream', '-n', '8', 'Hello']);
  ttft.push(
    await new Promise<number>((resolve, reject) => {
      let first: number | undefined;
      let seen = '';
      child.stdout.on('data', (d: Buffer) => {
        seen += d.toString();
        if (first === undefined && seen.length > 'Hello'.length) first = performance.now() - t0;
      });
      child.on('close', (code) => (code === 0 && first !== undefined ? resolve(first) : reject(new Error(`tiny generate failed (${code})`))));
    }),
  );
}
console.log(`tiny demo model: first token ${median(ttft).toFixed(0)} ms after process start (target < 500)`);
rmSync(work, { recursive: true, force: true });
