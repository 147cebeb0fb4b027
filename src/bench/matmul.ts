/**
 * Matmul throughput on the wasm backend, stock kernels against ours, in one process:
 * `node dist/backend/bench-matmul.js [--ms 500]`.
 */
import { selectBackend } from '../backend/select.js';
import { useStockWasmMatMul } from '../backend/wasm-kernels.js';

const argMs = process.argv.indexOf('--ms');
const budgetMs = argMs > 0 ? Number(process.argv[argMs + 1]) : 500;

const { tf, description } = await selectBackend('wasm');
type T = ReturnType<typeof tf.randomNormal>;
type T2 = Parameters<typeof tf.matMul>[0] & T;

interface Case {
  label: string;
  flops: number;
  run: () => T;
}

const m512a = tf.randomNormal([512, 512]) as T2;
const m512b = tf.randomNormal([512, 512]) as T2;
const q = tf.randomNormal([12, 512, 64]) as T2;
const k = tf.randomNormal([12, 512, 64]) as T2;
const x = tf.randomNormal([8, 256, 768]) as T2;
const w = tf.randomNormal([768, 768]) as T2;
const bias = tf.randomNormal([512]);

const cases: Case[] = [];
for (const [ta, tb] of [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
] as const) {
  cases.push({ label: `matMul 512×512 transposeA=${ta ? 1 : 0} transposeB=${tb ? 1 : 0}`, flops: 2 * 512 ** 3, run: () => tf.matMul(m512a, m512b, ta, tb) });
}
cases.push({ label: 'batched q·kᵀ [12,512,64]×[12,64,512]', flops: 2 * 12 * 512 * 512 * 64, run: () => tf.matMul(q, k, false, true) });
cases.push({ label: 'linear [8,256,768]×[768,768]', flops: 2 * 8 * 256 * 768 * 768, run: () => tf.matMul(x, w) });
cases.push({ label: 'fused 512 + bias, transposeB', flops: 2 * 512 ** 3, run: () => tf.fused.matMul({ a: m512a, b: m512b, bias, transposeB: true }) });

function gflops(c: Case): number {
  c.run().dispose(); // warm-up
  let n = 0;
  const start = performance.now();
  let elapsed = 0;
  do {
    c.run().dispose();
    n++;
    elapsed = performance.now() - start;
  } while (elapsed < budgetMs);
  return (c.flops * n) / (elapsed / 1000) / 1e9;
}

process.stdout.write(`backend: ${description}\n${'case'.padEnd(44)} ${'stock'.padStart(12)} ${'ours'.padStart(12)}  speed-up\n`);
for (const c of cases) {
  useStockWasmMatMul(tf, true);
  const stock = gflops(c);
  useStockWasmMatMul(tf, false);
  const ours = gflops(c);
  process.stdout.write(`${c.label.padEnd(44)} ${stock.toFixed(2).padStart(6)} GFLOPS ${ours.toFixed(2).padStart(6)} GFLOPS  ${(ours / stock).toFixed(1)}×\n`);
}
