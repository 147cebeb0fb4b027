/**
 * A faster (and correct) BatchMatMul and _FusedMatMul for the wasm backend.
 *
 * tfjs-backend-wasm sends a matmul to XNNPACK only when neither operand is transposed and both
 * have batch size 1; everything else — the transposeA/transposeB products autodiff emits for every
 * matmul gradient, attention's batched products, even a linear layer on a [B, T, C] activation —
 * runs a naive loop at a tenth of the speed. This wrapper materialises transposed operands with
 * the wasm Transpose kernel, folds a batched left operand against an unbatched right one into one
 * [B·M, K] × [K, N] product, and runs truly batched products one batch at a time on views into the
 * operands' heap memory, so that every product takes the XNNPACK path.
 *
 * It also avoids two stock bugs: the naive path of _FusedMatMul adds bias[N-1] instead of bias[j]
 * to every row but the first, and XNNPACK's packed right operand is cached by tensor id alone, so a
 * buffer multiplied again under another shape (a reshape shares it) gives garbage.
 */
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './select.js';
import { dropView, heapOffset, makeView, shapeBytes, sizeOf, wasmId, type WasmBackend } from './wasm-backend.js';
import { smallMatMul } from './wasm-gemv.js';

type MatMulC = (
  aId: number,
  aShape: Uint8Array,
  aRank: number,
  bId: number,
  bShape: Uint8Array,
  bRank: number,
  transposeA: number,
  transposeB: number,
  outId: number,
) => void;

const cwrapped = new WeakMap<object, MatMulC>();

/** The backend's exported C BatchMatMul, bound once per wasm module. */
function matMulC(backend: WasmBackend): MatMulC {
  let fn = cwrapped.get(backend.wasm);
  if (fn === undefined) {
    const argTypes = ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number'];
    fn = backend.wasm.cwrap('BatchMatMul', null, argTypes) as MatMulC;
    cwrapped.set(backend.wasm, fn);
  }
  return fn;
}

interface FusedAttrs {
  transposeA: boolean;
  transposeB: boolean;
  activation: string;
  leakyreluAlpha?: number;
}

export interface MatMulKernels {
  batchMatMul: KernelFunc;
  fusedMatMul: KernelFunc;
}

/** Builds the wrappers around the originally registered wasm kernels. */
export function makeMatMulKernels(tf: Tf, originalBatchMatMul: KernelConfig, originalFused: KernelConfig | undefined): MatMulKernels {
  const transposeKernel = tf.getKernel('Transpose', 'wasm');
  if (!transposeKernel) throw new Error('wasm backend lacks the Transpose kernel');

  const transposeLast2 = (backend: WasmBackend, x: TensorInfo): TensorInfo =>
    transposeKernel.kernelFunc({ inputs: { x }, backend, attrs: { perm: [0, 2, 1] } }) as TensorInfo;

  function matMul(backend: WasmBackend, a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean): TensorInfo {
    const [aRows, aCols] = a.shape.slice(-2);
    const [bRows, bCols] = b.shape.slice(-2);
    const m = transposeA ? aCols : aRows;
    const k = transposeA ? aRows : aCols;
    const kB = transposeB ? bCols : bRows;
    const n = transposeB ? bRows : bCols;
    if (k !== kB) {
      throw new Error(
        `Error in matMul: inner shapes (${k}) and (${kB}) of Tensors with shapes ${a.shape} and ${b.shape} and ` +
          `transposeA=${transposeA} and transposeB=${transposeB} must match.`,
      );
    }
    const aOuter = a.shape.slice(0, -2);
    const bOuter = b.shape.slice(0, -2);
    const outOuter = tf.broadcast_util.assertAndGetBroadcastShape(aOuter, bOuter);
    const outShape = [...outOuter, m, n];
    const batchA = sizeOf(aOuter);
    const batchB = sizeOf(bOuter);
    const batchOut = sizeOf(outOuter);

    const out = backend.makeOutput([batchOut, m, n], 'float32');
    if (batchOut * m * n === 0) return { ...out, shape: outShape };
    if (k === 0) {
      backend.typedArrayFromHeap(out).fill(0);
      return { ...out, shape: outShape };
    }

    if (!transposeA && smallProduct(backend, a, b, out, { transposeB, m, k, n, batchA, batchB, outOuter, aOuter, bOuter })) {
      return { ...out, shape: outShape };
    }

    // Operands as [batch, rows, inner] and [batch, inner, cols], transposing into temporaries.
    const temps: TensorInfo[] = [];
    let a3: TensorInfo = { dataId: a.dataId, shape: [batchA, aRows, aCols], dtype: 'float32' };
    let b3: TensorInfo = { dataId: b.dataId, shape: [batchB, bRows, bCols], dtype: 'float32' };
    if (transposeA) temps.push((a3 = transposeLast2(backend, a3)));
    if (transposeB) temps.push((b3 = transposeLast2(backend, b3)));

    const call = matMulC(backend);
    const outId = wasmId(backend, out);
    try {
      if (batchB === 1) {
        // One product: every batch of a against the same b, as [batchA·m, k] × [k, n]. XNNPACK
        // caches b's packed form under its id: a transposed b is a fresh temporary, anything else
        // goes through a fresh view (a reshape shares b's id; the cache would give garbage).
        const bView = transposeB ? b3 : makeView(backend, b3, 0, [1, k, n]);
        call(wasmId(backend, a3), shapeBytes([1, batchA * m, k]), 3, wasmId(backend, bView), shapeBytes([1, k, n]), 3, 0, 0, outId);
        if (bView !== b3) dropView(backend, bView);
      } else {
        const aIndex = batchIndexer(outOuter, aOuter);
        const bIndex = batchIndexer(outOuter, bOuter);
        const aShape = shapeBytes([1, m, k]);
        const bShape = shapeBytes([1, k, n]);
        for (let o = 0; o < batchOut; o++) {
          // Fresh ids per product: XNNPACK's packed-weight cache entry dies with each b view.
          const aView = makeView(backend, a3, aIndex(o) * m * k, [1, m, k]);
          const bView = makeView(backend, b3, bIndex(o) * k * n, [1, k, n]);
          const oView = makeView(backend, out, o * m * n, [1, m, n]);
          call(wasmId(backend, aView), aShape, 3, wasmId(backend, bView), bShape, 3, 0, 0, wasmId(backend, oView));
          dropView(backend, aView);
          dropView(backend, bView);
          dropView(backend, oView);
        }
      }
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
    return { ...out, shape: outShape };
  }

  const batchMatMul: KernelFunc = (args) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
    // The original throws its own error for other dtypes.
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return originalBatchMatMul.kernelFunc(args);
    return matMul(args.backend as WasmBackend, a, b, transposeA, transposeB);
  };

  const fusedMatMul: KernelFunc = (args) => {
    const original = originalFused?.kernelFunc;
    if (!original) throw new Error('no _FusedMatMul kernel registered for wasm');
    const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, TensorInfo | undefined>;
    const { transposeA, transposeB, activation, leakyreluAlpha } = args.attrs as NamedAttrMap & FusedAttrs;
    if (a!.dtype !== 'float32' || b!.dtype !== 'float32') return original(args); // it throws its own error
    // The original caches b's packed form under b's id (garbage for a buffer reused under another
    // shape) and its other path adds the bias wrongly to every row but the first, so every fused
    // product is our product, an Add and an activation kernel.

    const backend = args.backend as WasmBackend;
    let out = matMul(backend, a!, b!, transposeA, transposeB);
    const then = (kernel: string, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap = {}) => {
      const config = tf.getKernel(kernel, 'wasm');
      if (!config) throw new Error(`wasm backend lacks the ${kernel} kernel`);
      const next = config.kernelFunc({ inputs, backend, attrs }) as TensorInfo;
      backend.disposeData(out.dataId);
      out = next;
    };
    if (bias) then('Add', { a: out, b: bias });
    const unary: Record<string, string> = { relu: 'Relu', relu6: 'Relu6', elu: 'Elu', sigmoid: 'Sigmoid' };
    if (activation === 'leakyrelu') then('LeakyRelu', { x: out }, { alpha: leakyreluAlpha ?? 0.2 });
    else if (activation === 'prelu') then('Prelu', { x: out, alpha: preluActivationWeights! });
    else if (activation in unary) then(unary[activation], { x: out });
    else if (activation !== 'linear') throw new Error(`_FusedMatMul (wasm): unsupported activation ${activation}`);
    return out;
  };

  return { batchMatMul, fusedMatMul };
}

/**
 * Products with few rows (a decode step: one per sequence) or, for a·bᵀ, few columns (the LM head
 * as wte·hᵀ), go to our streaming kernels (wasm-gemv.ts): no packing of the weight, no transpose.
 * Returns false to leave the product to XNNPACK.
 */
const SMALL = 16;
interface Dims {
  transposeB: boolean;
  m: number;
  k: number;
  n: number;
  batchA: number;
  batchB: number;
  outOuter: number[];
  aOuter: number[];
  bOuter: number[];
}
function smallProduct(backend: WasmBackend, a: TensorInfo, b: TensorInfo, out: TensorInfo, d: Dims): boolean {
  const { transposeB, m, k, n, batchA, batchB } = d;
  const fits = transposeB ? k % 4 === 0 && (m <= SMALL || n <= SMALL) : n % 4 === 0 && m * (batchB === 1 ? batchA : 1) <= SMALL;
  if (!fits) return false;
  const memory = backend.wasm.asm?.memory;
  if (!memory) return false;
  const kernels = smallMatMul(memory);
  const kernel = transposeB ? kernels.nt : (a: number, b: number, o: number, m: number, k: number, n: number) => kernels.nn(a, b, o, m, k, n, n);
  const [aAt, bAt, outAt] = [heapOffset(backend, a), heapOffset(backend, b), heapOffset(backend, out)];
  if (batchB === 1) {
    // Every batch of a against the same b: one call over all rows (nt: rows of a are independent too).
    kernel(aAt, bAt, outAt, batchA * m, k, n);
    return true;
  }
  const aIndex = batchIndexer(d.outOuter, d.aOuter);
  const bIndex = batchIndexer(d.outOuter, d.bOuter);
  const batchOut = sizeOf(d.outOuter);
  for (let o = 0; o < batchOut; o++) kernel(aAt + aIndex(o) * m * k * 4, bAt + bIndex(o) * k * n * 4, outAt + o * m * n * 4, m, k, n);
  return true;
}

/** Maps a flat index over the broadcast outer dims to the flat batch index of one operand. */
function batchIndexer(outOuter: number[], inOuter: number[]): (o: number) => number {
  const rankOut = outOuter.length;
  const pad = rankOut - inOuter.length;
  const dims = outOuter.map((_, d) => (d < pad ? 1 : inOuter[d - pad]));
  if (sizeOf(dims) === sizeOf(outOuter)) return (o) => o; // no broadcasting
  const strides = new Array<number>(rankOut);
  for (let d = rankOut - 1, s = 1; d >= 0; d--) {
    strides[d] = dims[d] === 1 ? 0 : s;
    s *= dims[d];
  }
  return (o) => {
    let index = 0;
    for (let d = rankOut - 1; d >= 0; d--) {
      const i = o % outOuter[d];
      o = (o - i) / outOuter[d];
      index += i * strides[d];
    }
    return index;
  };
}
