/**
 * npm run bench:generate — `gpt2-generate` on the `gpt2` preset (124M, fp32, random weights from a
 * checkpoint this benchmark writes), each measurement a fresh process, beside PyTorch on the same
 * weights (src/bench/generate_anchor.py, at 1 and 2 threads) in the same run:
 *
 *   prefill  1×1023 and 8×128 prompts (1023: a 1024-token prompt leaves no room for the token it
 *            asks for), one new token: --stats' prefill_ms, i.e. the first token after load;
 *            the anchor times the same forward (cache filled, last position's logits, argmax).
 *   decode   batch 1, an 8-token prompt, 64 new tokens, greedy, on one thread and on every core,
 *            and with the weight matrices kept as f16 and as q8_0 (--weights-dtype, every core):
 *            tokens/s, load, peak RSS against the weights; what streaming the weights allows
 *            (the same kernels over 307 MB); the anchor decoding with a key/value cache (fp32).
 *   sizes    gpt2-medium, gpt2-large, gpt2-xl (--sizes; random weights drawn and quantised as
 *            they load) as q8_0, 16 new tokens: tokens/s beside the MindFormers model card's
 *            4.66 tokens/s for gpt2 on an Ascend NPU.
 *   ttft     the tiny demo model's first token, from process start.
 *
 *   node dist/bench/generate.js [--backend wasm] [--runs 3] [--prefill-runs 1] [--anchor-threads 1,2]
 *                               [--sizes gpt2-medium,gpt2-large,gpt2-xl | none]
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { saveCheckpoint } from '../formats/checkpoint.js';
import { parameterCount, presetConfig, type GPT2Config } from '../model/config.js';
import { initialParameters } from '../model/params.js';
import { MAX_PAGES, wasmApi } from '../backend/wasm-asm.js';
import { KernelPool } from '../backend/kernel-pool.js';
import { smallMatMul } from '../backend/wasm-gemv.js';
import { describeAnchor, fixed, flag, forwardFlopsPerToken, median, reportAnchor, ROOT, ROW, runAnchor, runTool, scratch } from './harness.js';

const backend = flag('--backend', 'wasm');
const runs = Number(flag('--runs', '3'));
const prefillRuns = Number(flag('--prefill-runs', '1'));
const sizes = flag('--sizes', 'gpt2-medium,gpt2-large,gpt2-xl').split(',').filter((s) => s !== 'none');
const work = scratch('bench-generate-');
const model = join(work, 'gpt2');
const gpt2 = presetConfig('gpt2');
const V = gpt2.vocab_size;
const weightsMB = (parameterCount(gpt2) * 4) / 1e6;
const SHAPES: [number, number][] = [
  [1, gpt2.n_positions - 1],
  [8, 128],
];
const NEW_TOKENS = 64;
console.log(`bench:generate  gpt2 (${(parameterCount(gpt2) / 1e6).toFixed(1)}M, ${weightsMB.toFixed(0)} MB fp32, random weights) on ${backend}; medians of fresh processes`);
await saveCheckpoint(model, gpt2, initialParameters(gpt2, 0));
/** The prompts both sides run: row b of a [batch, length] shape (generate_anchor.py's formula). */
const prompts = (batch: number, length: number) => Array.from({ length: batch }, (_, b) => Array.from({ length }, (_, t) => (b * 7919 + t * 104729) % V).join(' '));

type Stats = { load_ms: number; prefill_ms: number; decode_tokens_per_s: number; rss: number };
function generate(shape: [number, number], newTokens: number, extra: string[] = [], on: string[] = ['--model', model]): Stats {
  const args = ['-q', '--backend', backend, ...extra, ...on, '--input-format', 'ids', '--format', 'ids', '-n', String(newTokens), '--ignore-eos', '--stats', '--batch-size', String(shape[0])];
  const r = runTool('gpt2-generate', args, { input: `${prompts(...shape).join('\n')}\n` });
  if (!r.ok) throw new Error(`gpt2-generate failed: ${r.stderr}`);
  return { ...JSON.parse(r.stderr.split('\n').find((l) => l.startsWith('{'))!), rss: r.rssMB ?? NaN };
}
/** FLOPs of a prefill: the blocks over every prompt token, the LM head on the last of each. */
const prefillGflop = ([b, t]: [number, number]) => (b * t * forwardFlopsPerToken(gpt2, t, false) + b * 2 * V * gpt2.n_embd) / 1e9;

// --- prefill -----------------------------------------------------------------------------------
console.log(`prefill (one new token; GFLOP: blocks over every prompt token + the LM head on the last)`);
const oursPrefill: number[] = [];
for (const shape of SHAPES) {
  const results = Array.from({ length: prefillRuns }, () => generate(shape, 1));
  const s = median(results.map((r) => r.prefill_ms)) / 1000;
  const tokens = shape[0] * shape[1];
  oursPrefill.push(tokens / s);
  console.log(`${ROW(`ours ${shape.join('×')}`)}${fixed(tokens / s)} tokens/s ${fixed(prefillGflop(shape) / s)} GFLOPS  first token ${(s * 1000).toFixed(0)} ms after load (${median(results.map((r) => r.load_ms)).toFixed(0)} ms)`);
}

// --- decode ------------------------------------------------------------------------------------
console.log(`decode (batch 1, 8-token prompt, ${NEW_TOKENS} new tokens, greedy)`);
const DTYPES = ['f32', 'f16', 'q8_0'] as const;
const one: Stats[] = [];
const all = new Map<string, Stats[]>(DTYPES.map((d) => [d, []]));
for (let r = 0; r < runs; r++) {
  // Alternating one thread, every core and the dtypes, so that the machine's mood affects all alike.
  one.push(generate([1, 8], NEW_TOKENS, ['--threads', '1']));
  for (const d of DTYPES) all.get(d)!.push(generate([1, 8], NEW_TOKENS, ['--weights-dtype', d]));
}
const rows: [string, Stats[]][] = [['ours f32 1 thread', one], ...DTYPES.map((d): [string, Stats[]] => [`ours ${d} ${availableParallelism()} threads`, all.get(d)!])];
for (const [label, results] of rows) {
  const rss = median(results.map((r) => r.rss));
  console.log(`${ROW(label)}${fixed(median(results.map((r) => r.decode_tokens_per_s)))} tokens/s  load ${median(results.map((r) => r.load_ms)).toFixed(0)} ms  peak RSS ${rss.toFixed(0)} MB = ${(rss / weightsMB).toFixed(2)}× the fp32 weights`);
}
const decode = new Map(DTYPES.map((d) => [d, median(all.get(d)!.map((r) => r.decode_tokens_per_s))]));

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

// --- the anchor ----------------------------------------------------------------------------------
type Result = { prefill: { tokens_per_s: number; s: number }[]; decode_tokens_per_s: number };
const anchor = runAnchor<Result>('generate_anchor.py', { model, prefill: SHAPES, prefill_runs: prefillRuns, new_tokens: NEW_TOKENS, runs });
describeAnchor(anchor);
// Each task's best thread count stands alone: prefill and decode may prefer different ones.
for (const [k, shape] of SHAPES.entries()) {
  console.log(`prefill ${shape.join('×')}:`);
  reportAnchor(
    anchor,
    (r) => r.prefill[k].tokens_per_s,
    (r) => `${fixed(r.prefill[k].tokens_per_s)} tokens/s ${fixed(prefillGflop(shape) / r.prefill[k].s)} GFLOPS  first token ${(r.prefill[k].s * 1000).toFixed(0)} ms`,
    (best) => `ours = ${(oursPrefill[k] / best.prefill[k].tokens_per_s).toFixed(2)}× PyTorch`,
  );
}
console.log('decode:');
reportAnchor(
  anchor,
  (r) => r.decode_tokens_per_s,
  (r) => `${fixed(r.decode_tokens_per_s)} tokens/s`,
  // Targets (issue 12): q8_0 ≥ 3.0× PyTorch fp32, f16 ≥ 2.2×.
  (best) => `ours (every core) = ${DTYPES.map((d) => `${d} ${(decode.get(d)! / best.decode_tokens_per_s).toFixed(2)}×`).join(', ')} PyTorch fp32 (targets: f16 2.2×, q8_0 3.0×)`,
);

// --- bigger models as q8_0 (random weights, drawn and quantised tensor by tensor as they load) ---
if (sizes.length) console.log(`bigger models, q8_0, random weights (batch 1, 8-token prompt, 16 new tokens, every core; MindFormers' card: gpt2 4.66 tokens/s on an Ascend NPU)`);
for (const size of sizes) {
  const c = presetConfig(size);
  const r = generate([1, 8], 16, ['--weights-dtype', 'q8_0', '--random-init'], ['--model', size]);
  console.log(`${ROW(`${size} q8_0`)}${fixed(r.decode_tokens_per_s)} tokens/s  load ${(r.load_ms / 1000).toFixed(1)} s  peak RSS ${r.rss.toFixed(0)} MB (${(parameterCount(c) / 1e6).toFixed(0)}M parameters, ${(parameterCount(c) * 4 / 1e9).toFixed(1)} GB as fp32)`);
}

// --- time to first token of the tiny demo model, from process start to the first byte on stdout --
const tiny: GPT2Config = { ...gpt2, n_positions: 64, n_embd: 64, n_layer: 2, n_head: 2 };
await saveCheckpoint(join(work, 'tiny'), tiny, initialParameters(tiny, 0));
const ttft: number[] = [];
for (let r = 0; r < runs; r++) {
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'gpt2-generate.js'), '-q', '--backend', backend, '--model', join(work, 'tiny'), '--stream', '-n', '8', 'Hello']);
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
