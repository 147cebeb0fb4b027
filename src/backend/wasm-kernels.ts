/**
 * Kernels the wasm backend lacks or runs slowly, registered into the caller's tf instance.
 *
 * Found by running forward + backward of a GPT-2 block on wasm (embedding gather, fused-qkv and
 * attention matmuls with transposes, causal mask via where, softmax, logSoftmax + label gather,
 * layer norm from moments, tanh/erf/sigmoid GELUs, Adam): the only missing kernel is
 * UnsortedSegmentSum, the gradient of gather. BatchMatMul and _FusedMatMul are re-registered for
 * speed and two stock bugs (see wasm-matmul.ts). test/backend/wasm-kernels.test.ts trains such a
 * block on wasm and cpu, so a kernel missing for a new op shows up there.
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './select.js';
import { makeMatMulKernels } from './wasm-matmul.js';
import { makeTransposeKernel } from './wasm-transpose.js';
import { sizeOf, type WasmBackend } from './wasm-backend.js';

/** Marks our kernel functions, so that a second copy of this module (src and dist) registers nothing. */
const MARK = Symbol.for('gpt2-toolchain/wasm-kernel');
const marked = (f: KernelFunc): KernelFunc => Object.assign(f, { [MARK]: true });
const isOurs = (config: KernelConfig | undefined): boolean => (config?.kernelFunc as unknown as Record<symbol, unknown> | undefined)?.[MARK] === true;

/** Per tf instance: the stock and our matmul kernels, to switch between (benchmarks, bisecting). */
const matMulConfigs = new WeakMap<object, { stock: KernelConfig[]; ours: KernelConfig[] }>();

/**
 * Registers our kernels for backend 'wasm' in `tf`'s registry; idempotent. Call it before the
 * wasm backend initialises (selectBackend does) or after: the kernels need no setup of their own.
 */
export function registerWasmKernels(tf: Tf): void {
  if (isOurs(tf.getKernel('BatchMatMul', 'wasm'))) return;

  if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) {
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: marked(unsortedSegmentSum) });
  }

  const stockTranspose = tf.getKernel('Transpose', 'wasm');
  if (stockTranspose) reregister(tf, [{ ...stockTranspose, kernelFunc: marked(makeTransposeKernel(stockTranspose)) }]);

  const stockMatMul = tf.getKernel('BatchMatMul', 'wasm');
  if (!stockMatMul) throw new Error('@tensorflow/tfjs-backend-wasm registered no BatchMatMul kernel');
  const stockFused = tf.getKernel('_FusedMatMul', 'wasm');
  const { batchMatMul, fusedMatMul } = makeMatMulKernels(tf, stockMatMul, stockFused);
  // Same setup (run when the backend initialises: the stock kernels bind their C functions there).
  const stock = stockFused ? [stockMatMul, stockFused] : [stockMatMul];
  const ours = [{ ...stockMatMul, kernelFunc: marked(batchMatMul) }];
  if (stockFused) ours.push({ ...stockFused, kernelFunc: marked(fusedMatMul) });
  matMulConfigs.set(tf, { stock, ours });
  reregister(tf, ours);
}

/** Switches between our matmul kernels (the default) and the stock ones, e.g. to measure them. */
export function useStockWasmMatMul(tf: Tf, stock: boolean): void {
  const configs = matMulConfigs.get(tf);
  if (!configs) throw new Error('registerWasmKernels has not run for this tf instance');
  reregister(tf, stock ? configs.stock : configs.ours);
}

function reregister(tf: Tf, configs: KernelConfig[]): void {
  for (const config of configs) {
    tf.unregisterKernel(config.kernelName, config.backendName);
    tf.registerKernel(config);
  }
}

/**
 * out[s, …] = Σ x[i, …] over the i with segmentIds[i] = s, in float32 like the cpu backend (which
 * also returns float32 for int32 or bool x). Ids outside [0, numSegments) are dropped, as on cpu.
 * segmentIds must be 1-D with one id per row of x (the only shape gather's gradient produces; the
 * cpu kernel's results for other shapes are broadcasting accidents, not semantics).
 * Non-finite values stay in their own segment; the cpu kernel, which multiplies x by a 0/1 mask
 * per segment, spreads a NaN or ±Infinity of x to every segment as NaN.
 */
export const unsortedSegmentSum: KernelFunc = ({ inputs, backend: backendArg, attrs }) => {
  const backend = backendArg as WasmBackend;
  const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
  const numSegments = (attrs as { numSegments: number }).numSegments;
  checkSegmentArgs(x, segmentIds, numSegments);
  const out = backend.makeOutput([numSegments, ...x.shape.slice(1)], 'float32');
  // Heap views only after the last allocation: growing the heap detaches earlier ones.
  const sums = backend.typedArrayFromHeap(out) as Float32Array;
  segmentSum(backend.typedArrayFromHeap(x), backend.typedArrayFromHeap(segmentIds), x.shape, numSegments, sums);
  return out;
};

/**
 * The same on the cpu backend, whose own kernel builds a 0/1 mask per segment: for the gradient of
 * a 50257-row embedding that is 50257 tensor ops, ~15 s a step for a tiny model.
 */
const unsortedSegmentSumCpu: KernelFunc = ({ inputs, backend: backendArg, attrs }) => {
  const backend = backendArg as unknown as { data: { get(id: object): { values: ArrayLike<number> } }; makeTensorInfo(shape: number[], dtype: string, values: Float32Array): TensorInfo };
  const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
  const numSegments = (attrs as { numSegments: number }).numSegments;
  checkSegmentArgs(x, segmentIds, numSegments);
  const sums = new Float32Array(numSegments * sizeOf(x.shape.slice(1)));
  segmentSum(backend.data.get(x.dataId).values, backend.data.get(segmentIds.dataId).values, x.shape, numSegments, sums);
  return backend.makeTensorInfo([numSegments, ...x.shape.slice(1)], 'float32', sums);
};

function checkSegmentArgs(x: TensorInfo, segmentIds: TensorInfo, numSegments: number): void {
  if (segmentIds.shape.length !== 1 || x.shape.length < 1 || segmentIds.shape[0] !== x.shape[0]) {
    throw new Error(
      `UnsortedSegmentSum (wasm): segmentIds must be 1-D with one id per row of x, got segmentIds ` +
        `[${segmentIds.shape}] and x [${x.shape}]`,
    );
  }
  if (!Number.isInteger(numSegments) || numSegments < 0) {
    throw new Error(`UnsortedSegmentSum (wasm): numSegments must be a non-negative integer, got ${numSegments}`);
  }
}

function segmentSum(values: ArrayLike<number>, ids: ArrayLike<number>, shape: number[], numSegments: number, sums: Float32Array): void {
  const rows = shape[0];
  const rowSize = sizeOf(shape.slice(1));
  sums.fill(0);
  if (rows === 0 || rowSize === 0 || numSegments === 0) return;
  for (let i = 0; i < rows; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * rowSize;
    const dst = s * rowSize;
    for (let j = 0; j < rowSize; j++) sums[dst + j] += values[src + j];
  }
}

/** Our cpu kernels (see unsortedSegmentSumCpu); idempotent. */
export function registerCpuKernels(tf: Tf): void {
  if (isOurs(tf.getKernel('UnsortedSegmentSum', 'cpu'))) return;
  const stock = tf.getKernel('UnsortedSegmentSum', 'cpu');
  if (stock) tf.unregisterKernel('UnsortedSegmentSum', 'cpu');
  tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'cpu', kernelFunc: marked(unsortedSegmentSumCpu) });
}
