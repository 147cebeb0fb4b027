/**
 * npm run bench:matmul — matrix products on wasm, in one process:
 *  1. our GEMM (src/backend/wasm-gemm.ts) on a shared wasm memory, on 1 and 2 threads (KernelPool),
 *     for square products and the products of a training step of issue 10's model (1024 tokens,
 *     256 wide, GPT-2's vocabulary, wte stored [50257, 256]); beside torch.mm on CPU for the same
 *     products in the same run (src/bench/matmul_anchor.py, through OpenBLAS where libblas.so.3
 *     points to it), the better of its 1 and 2 threads; and the micro-kernel alone on packed data
 *     in cache, which bounds the whole product;
 *  2. tf.matMul on the wasm backend, stock kernels against ours (src/backend/wasm-matmul.ts).
 * Medians of repeated runs, GFLOPS.
 *
 *   node dist/bench/matmul.js [--ms 500] [--only gemm|tfjs]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MAX_PAGES, wasmApi } from '../backend/wasm-asm.js';
import { KernelPool } from '../backend/kernel-pool.js';
import { GEMM_SCRATCH_BYTES, GEMM_SHAPE, gemmModule } from '../backend/wasm-gemm.js';
import { selectBackend } from '../backend/select.js';
import { useStockWasmMatMul } from '../backend/wasm-kernels.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const budgetMs = Number(flag('--ms', '500'));
const only = flag('--only', '');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Median GFLOPS of `run` (after one warm-up run), at least three runs and `budgetMs`. */
function gflops(flops: number, run: () => void): number {
  run();
  const rates: number[] = [];
  const start = performance.now();
  while (rates.length < 3 || performance.now() - start < budgetMs) {
    const t0 = performance.now();
    run();
    rates.push(flops / (performance.now() - t0) / 1e6);
  }
  return median(rates);
}

if (only !== 'tfjs') gemmTable();
if (only !== 'gemm') await tfjsTable();

function gemmTable(): void {
  const [T, D, V] = [1024, 256, 50257];
  // label, m, k, n, A transposed, B transposed (as stored: A [k, m], B [n, k])
  const cases: [string, number, number, number, boolean, boolean][] = [
    ['square 512', 512, 512, 512, false, false],
    ['square 1024', 1024, 1024, 1024, false, false],
    ['x·W (qkv projection)', T, D, 3 * D, false, false],
    ['dy·Wᵀ (its input gradient)', T, 3 * D, D, false, true],
    ['xᵀ·dy (its weight gradient)', D, T, 3 * D, true, false],
    ['h·wteᵀ (LM head)', T, D, V, false, true],
    ['dlogits·wte (LM head, dh)', T, V, D, false, false],
    ['dlogitsᵀ·h (LM head, dwte)', V, T, D, true, false],
  ];
  const most = (f: (c: (typeof cases)[number]) => number) => Math.max(...cases.map(f));
  const aBytes = most(([, m, k]) => 4 * m * k);
  const bBytes = most(([, , k, n]) => 4 * k * n);
  const cBytes = most(([, m, , n]) => 4 * m * n);
  const [a, b, c] = [0, aBytes, aBytes + bBytes];
  const scratch = c + cBytes;
  const end = scratch + 2 * GEMM_SCRATCH_BYTES;
  const memory = new wasmApi.Memory({ initial: Math.ceil(end / 65536), maximum: MAX_PAGES, shared: true });
  const heap = new Float32Array(memory.buffer);
  for (let i = 0; i < 1 << 16; i++) heap[i] = Math.random() - 0.5;
  for (let filled = 1 << 16; filled < heap.length; filled *= 2) heap.copyWithin(filled, 0, Math.min(filled, heap.length - filled));

  // The micro-kernel alone: one packed A sliver against a packed B block of 128 columns, all in
  // cache (where the full product's scratch would put them), C read and written as accumulated.
  const { mr, kc } = GEMM_SHAPE;
  const sliver = new wasmApi.Instance(gemmModule(true), { env: { memory } }).exports.sliver as (...x: number[]) => void;
  const [bp, ap] = [scratch, scratch + 4 * kc * 128];
  const reps = 100;
  const runKernel = () => {
    for (let r = 0; r < reps; r++) sliver(ap, bp, c, 128, kc, 128, mr, 1, 0, scratch + GEMM_SCRATCH_BYTES);
  };
  // V8 runs new wasm code on its baseline compiler and swaps in optimised code once it is hot:
  // warm every path up first, for a second (the first 0.5 s measured 10–25% slow after 10 runs).
  const pools = [1, 2].map((threads) => new KernelPool(memory, threads));
  for (let i = 0, start = performance.now(); performance.now() - start < 1000; i++) {
    runKernel();
    for (const pool of pools) pool.gemm({ m: 512, n: 512, k: 512, a, lda: 512, b, ldb: 512, transB: i % 2 === 1, c, ldc: 512 }, scratch);
  }
  const kernel = gflops(reps * 2 * mr * kc * 128, runKernel);
  const ours = cases.map(([, m, k, n, transA, transB]) =>
    pools.map((pool) => {
      const g = { m, n, k, a, lda: transA ? m : k, transA, b, ldb: transB ? k : n, transB, c, ldc: n };
      return gflops(2 * m * k * n, () => pool.gemm(g, scratch));
    }),
  );
  for (const pool of pools) pool.close();

  const anchor = torchAnchor(cases.map(([, m, k, n, ta, tb]) => `${m},${k},${n},${ta ? 1 : 0},${tb ? 1 : 0}`));
  const col = (x: number | undefined) => (x === undefined ? '—' : x.toFixed(1)).padStart(8);
  process.stdout.write(`GEMM on wasm SIMD, GFLOPS (medians)${' '.repeat(31)}ours: 1 thread, 2 threads   torch.mm: 1 thread, 2 threads   ours/torch (best of each)\n`);
  process.stdout.write(`${'micro-kernel alone, packed data in cache'.padEnd(66)}${col(kernel)}\n`);
  cases.forEach(([label, m, k, n, ta, tb], i) => {
    const shape = `${m}×${k}${ta ? 'ᵀ' : ''}·${k}×${n}${tb ? 'ᵀ' : ''}`;
    const torch = anchor ? [anchor[1][i], anchor[2][i]] : [undefined, undefined];
    const ratio = anchor ? `${(Math.max(...ours[i]) / Math.max(anchor[1][i], anchor[2][i])).toFixed(2)}×` : '—';
    process.stdout.write(`${label.padEnd(30)}${shape.padEnd(36)}${col(ours[i][0])}${col(ours[i][1])}${' '.repeat(14)}${col(torch[0])}${col(torch[1])}${' '.repeat(14)}${ratio.padStart(8)}\n`);
  });
  if (!anchor) process.stdout.write('torch.mm (anchor) skipped: no python3 with torch here (apt-get install python3-torch libopenblas0-pthread)\n');
}

/** torch.mm's median GFLOPS per case on 1 and 2 threads, or undefined without Python's torch. */
function torchAnchor(cases: string[]): Record<1 | 2, number[]> | undefined {
  const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0);
  if (!python) return undefined;
  const script = fileURLToPath(new URL('../../src/bench/matmul_anchor.py', import.meta.url));
  const result: Partial<Record<1 | 2, number[]>> = {};
  for (const threads of [1, 2] as const) {
    // OpenBLAS picks its kernels and blocking from the CPU itself (these two, set on this machine,
    // make it slower) and runs as many threads as it is told here, whatever torch is told.
    const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    const r = spawnSync(python, [script, String(threads), String(budgetMs), ...cases], { encoding: 'utf8', env });
    if (r.status !== 0) {
      process.stdout.write(`torch.mm anchor failed: ${r.stderr.trim().split('\n').at(-1)}\n`);
      return undefined;
    }
    result[threads] = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as number[];
  }
  return result as Record<1 | 2, number[]>;
}

async function tfjsTable(): Promise<void> {
  const { tf, description } = await selectBackend('wasm');
  type T = ReturnType<typeof tf.randomNormal>;
  type T2 = Parameters<typeof tf.matMul>[0] & T;
  const m512a = tf.randomNormal([512, 512]) as T2;
  const m512b = tf.randomNormal([512, 512]) as T2;
  const q = tf.randomNormal([12, 512, 64]) as T2;
  const k = tf.randomNormal([12, 512, 64]) as T2;
  const x = tf.randomNormal([8, 256, 768]) as T2;
  const w = tf.randomNormal([768, 768]) as T2;
  const bias = tf.randomNormal([512]);
  const cases: [string, number, () => T][] = [];
  for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
    cases.push([`matMul 512×512 transposeA=${ta ? 1 : 0} transposeB=${tb ? 1 : 0}`, 2 * 512 ** 3, () => tf.matMul(m512a, m512b, ta, tb)]);
  }
  cases.push(['batched q·kᵀ [12,512,64]×[12,64,512]', 2 * 12 * 512 * 512 * 64, () => tf.matMul(q, k, false, true)]);
  cases.push(['linear [8,256,768]×[768,768]', 2 * 8 * 256 * 768 * 768, () => tf.matMul(x, w)]);
  cases.push(['fused 512 + bias, transposeB', 2 * 512 ** 3, () => tf.fused.matMul({ a: m512a, b: m512b, bias, transposeB: true })]);

  process.stdout.write(`\ntf.matMul, backend: ${description}\n${'case'.padEnd(44)} ${'stock'.padStart(12)} ${'ours'.padStart(12)}  speed-up\n`);
  for (const [label, flops, run] of cases) {
    useStockWasmMatMul(tf, true);
    const stock = gflops(flops, () => run().dispose());
    useStockWasmMatMul(tf, false);
    const ours = gflops(flops, () => run().dispose());
    process.stdout.write(`${label.padEnd(44)} ${stock.toFixed(2).padStart(6)} GFLOPS ${ours.toFixed(2).padStart(6)} GFLOPS  ${(ours / stock).toFixed(1)}×\n`);
  }
}
