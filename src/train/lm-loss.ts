/**
 * The LM task's training loss: the seed's shift (shiftBatch), then masked mean next-token
 * cross-entropy through the tied LM head, as one op with its own gradient. Autodiff of logSoftmax + gather costs several passes over the [N, vocab]
 * logits (wasm's exp alone runs ~30 ns an element) and transposes them for wte's gradient; here
 * the forward is one product and a softmax (vectorised), the backward one pass that writes
 * (softmax − one-hot)·coefficient without ever building the one-hot, and two products arranged so
 * that only small operands are transposed.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../backend/select.js';
import type { WasmBackend } from '../backend/wasm-backend.js';
import type { TokenRecord } from '../data/records.js';
import type { GPT2 } from '../model/gpt2.js';
import type { TaskLoss } from './step.js';

const KERNEL = 'Gpt2SoftmaxCrossEntropyGrad';
const registered = new WeakSet<object>();

/** out[i, j] = probs[i, j]·coef[i] − (j = label[i] ? coef[i] : 0), in one pass. */
function crossEntropyGrad(probs: Float32Array, labels: Int32Array, coef: Float32Array, out: Float32Array, vocab: number): void {
  for (let i = 0; i < labels.length; i++) {
    const c = coef[i];
    const row = i * vocab;
    if (c === 0) {
      out.fill(0, row, row + vocab);
      continue;
    }
    for (let j = 0; j < vocab; j++) out[row + j] = probs[row + j] * c;
    out[row + labels[i]] -= c;
  }
}

function register(tf: Tf): void {
  if (registered.has(tf)) return;
  registered.add(tf);
  tf.registerKernel({
    kernelName: KERNEL,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend: b }) => {
      const backend = b as unknown as WasmBackend;
      const { probs, labels, coef } = inputs as Record<string, tfjs.TensorInfo>;
      const out = backend.makeOutput(probs.shape, 'float32');
      // Views after the allocation: it may have grown (replaced) the heap.
      const view = <T>(t: tfjs.TensorInfo) => backend.typedArrayFromHeap(t) as unknown as T;
      crossEntropyGrad(view<Float32Array>(probs), view<Int32Array>(labels), view<Float32Array>(coef), view<Float32Array>(out), probs.shape[1]);
      return out;
    },
  });
  tf.registerKernel({
    kernelName: KERNEL,
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend: b }) => {
      const backend = b as unknown as { data: { get(id: object): { values: ArrayLike<number> } }; makeTensorInfo(shape: number[], dtype: string, values: Float32Array): tfjs.TensorInfo };
      const { probs, labels, coef } = inputs as Record<string, tfjs.TensorInfo>;
      const values = (t: tfjs.TensorInfo) => backend.data.get(t.dataId).values;
      const out = new Float32Array(probs.shape[0] * probs.shape[1]);
      crossEntropyGrad(values(probs) as Float32Array, Int32Array.from(values(labels)), values(coef) as Float32Array, out, probs.shape[1]);
      return backend.makeTensorInfo(probs.shape, 'float32', out);
    },
  });
}

/** (softmax − one-hot(labels))·coef, by our kernel where we have one, else with tfjs ops. */
function gradOfLogits(tf: Tf, probs: tfjs.Tensor2D, labels: tfjs.Tensor1D, coef: tfjs.Tensor1D): tfjs.Tensor2D {
  if (tf.getKernel(KERNEL, tf.getBackend())) return tf.engine().runKernel(KERNEL, { probs, labels, coef }) as tfjs.Tensor2D;
  const c = tf.expandDims(coef, 1);
  return tf.mul(tf.sub(probs, tf.oneHot(labels, probs.shape[1])), c) as tfjs.Tensor2D;
}

/**
 * Σᵢ wᵢ·(−log softmax(h·wteᵀ)ᵢ[labelᵢ]) / Σᵢ wᵢ for hidden states h [N, D], with gradients for h
 * and wte. `weights` are 0/1 (the loss mask); all zero gives 0.
 */
export function lmHeadLoss(tf: Tf, h: tfjs.Tensor2D, wte: tfjs.Tensor2D, labels: Int32Array, weights: Float32Array): tfjs.Scalar {
  register(tf);
  const [n] = h.shape;
  const vocab = wte.shape[0];
  const total = weights.reduce((a, b) => a + b, 0);
  const coef = Float32Array.from(weights, (w) => (total > 0 ? w / total : 0));
  const index = Int32Array.from(labels, (label, i) => i * vocab + label);
  const op = tf.customGrad((...args: (tfjs.Tensor | tfjs.GradSaveFunc)[]) => {
    const [x, w, save] = args as [tfjs.Tensor2D, tfjs.Tensor2D, tfjs.GradSaveFunc];
    const probs = tf.softmax(tf.matMul(x, w, false, true)) as tfjs.Tensor2D;
    const picked = tf.gather(tf.reshape(probs, [n * vocab]), tf.tensor1d(index, 'int32'));
    // −log p underflows only past p < 1e-38 (a loss of 87): clamp so it stays finite.
    const value = tf.neg(tf.sum(tf.mul(tf.log(tf.maximum(picked, 1e-38)), tf.tensor1d(coef)))) as tfjs.Scalar;
    save([x, w, probs]);
    return {
      value,
      gradFunc: (dy: tfjs.Tensor, saved: tfjs.Tensor[]) => {
        const [xs, ws, p] = saved as [tfjs.Tensor2D, tfjs.Tensor2D, tfjs.Tensor2D];
        const dLogits = gradOfLogits(tf, p, tf.tensor1d(labels, 'int32'), tf.mul(tf.tensor1d(coef), dy) as tfjs.Tensor1D);
        const dh = tf.matMul(dLogits, ws); // [N, V] · [V, D]
        const dwte = tf.transpose(tf.matMul(xs, dLogits, true, false)); // ([D, N] · [N, V])ᵀ: transposes h, not the logits
        return [dh, dwte];
      },
    };
  });
  return op(h, wte) as tfjs.Scalar;
}

/** Inputs, labels and loss weights of a micro-batch: the seed's shift (ids[:-1], ids[1:], mask[1:]). */
export function shiftBatch(records: TokenRecord[]): { inputs: number[][]; labels: Int32Array; weights: Float32Array } {
  const length = records[0].input_ids.length - 1;
  const labels = new Int32Array(records.length * length);
  const weights = new Float32Array(records.length * length);
  const inputs = records.map((r, b) => {
    for (let t = 0; t < length; t++) {
      labels[b * length + t] = r.labels[t + 1];
      weights[b * length + t] = r.attention_mask[t + 1];
    }
    return Array.from(r.input_ids.subarray(0, length));
  });
  return { inputs, labels, weights };
}

/** The causal-LM task for the step: a micro-batch's masked mean next-token loss; tokens = real targets. */
export function lmLoss(model: GPT2): TaskLoss<TokenRecord> {
  const tf = model.tf;
  return (records) => {
    const { inputs, labels, weights } = shiftBatch(records);
    return {
      tokens: weights.reduce((a, b) => a + b, 0),
      value: (seed) => {
        const { hidden } = model.hidden(inputs, { training: true, seed });
        const [b, t, d] = hidden.shape;
        return lmHeadLoss(tf, tf.reshape(hidden, [b * t, d]) as tfjs.Tensor2D, model.param('wte.weight') as tfjs.Tensor2D, labels, weights);
      },
    };
  };
}
