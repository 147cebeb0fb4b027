/**
 * Next-token cross-entropy without a one-hot over the vocabulary: log-sum-exp of each row of
 * logits minus the logit of its label (gathered from the flattened logits). The LM head runs on
 * a bounded number of rows at a time, so [rows × 50257] logits never exceed ~rowsPerChunk rows.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { GPT2 } from '../model/gpt2.js';

export interface LossSum {
  /** Σ over counted positions of −log p(label). */
  sum: number;
  /** Positions counted (mask 1). */
  count: number;
}

/**
 * Cross-entropy of hidden states [N, D] against labels, counting rows whose weight is 1.
 * Sums in float64 on the JavaScript side, one chunk of rows at a time.
 */
export async function crossEntropySum(model: GPT2, hidden2d: tfjs.Tensor2D, labels: Int32Array, weights: Uint8Array, rowsPerChunk = 128): Promise<LossSum> {
  const tf = model.tf;
  const [rows] = hidden2d.shape;
  const vocab = model.config.vocab_size;
  let sum = 0;
  let count = 0;
  for (let start = 0; start < rows; start += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, rows - start);
    let any = false;
    for (let r = start; r < start + n; r++) any ||= weights[r] === 1;
    if (!any) continue;
    const index = new Int32Array(n);
    for (let r = 0; r < n; r++) index[r] = r * vocab + labels[start + r];
    const ce = tf.tidy(() => {
      const logits = model.lmHead(tf.slice(hidden2d, [start, 0], [n, -1]));
      const picked = tf.gather(tf.reshape(logits, [n * vocab]), tf.tensor1d(index, 'int32'));
      return tf.sub(tf.logSumExp(logits, 1), picked);
    });
    const values = (await ce.data()) as Float32Array;
    ce.dispose();
    for (let r = 0; r < n; r++) {
      if (weights[start + r] === 1) {
        sum += values[r];
        count++;
      }
    }
  }
  return { sum, count };
}
