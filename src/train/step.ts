/**
 * One optimizer step: gradients of the masked next-token loss over `accumulation` micro-batches
 * (summed with weight 1/accumulation), global-norm clipping, AdamW. Dropout masks are seeded from
 * (seed, step, micro-batch), so a resumed run draws exactly the masks the uninterrupted one did.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { TokenRecord } from '../data/records.js';
import type { GPT2 } from '../model/gpt2.js';
import { lmHeadLoss } from './lm-loss.js';
import { clipByGlobalNorm, type AdamW } from './optimizer.js';

export interface StepResult {
  /** Mean of the micro-batches' losses. */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Target tokens that counted (mask 1). */
  tokens: number;
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

/** A 31-bit seed from integers (for tfjs's seeded dropout). */
export function mixSeed(...parts: number[]): number {
  let h = 0x2545f491;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x9e3779b1);
    h ^= h >>> 15;
  }
  return (h >>> 1) % 2147483647;
}

export async function trainStep(
  model: GPT2,
  optimizer: AdamW,
  microBatches: TokenRecord[][],
  options: { lr: number; gradClip: number; seed: number; step: number },
): Promise<StepResult> {
  const tf = model.tf;
  const variables = [...model.params.values()] as tfjs.Variable[];
  const nameOf = new Map([...model.params].map(([name, v]) => [(v as tfjs.Variable).name, name]));
  const scale = 1 / microBatches.length;
  const summed = new Map<string, tfjs.Tensor>();
  let lossSum = 0;
  let tokens = 0;
  for (const [m, records] of microBatches.entries()) {
    const { inputs, labels, weights } = shiftBatch(records);
    tokens += weights.reduce((a, b) => a + b, 0);
    const seed = mixSeed(options.seed, options.step, m);
    const { value, grads } = tf.variableGrads(() => {
      const { hidden } = model.hidden(inputs, { training: true, seed });
      const [b, t, d] = hidden.shape;
      return lmHeadLoss(tf, tf.reshape(hidden, [b * t, d]) as tfjs.Tensor2D, model.param('wte.weight') as tfjs.Tensor2D, labels, weights);
    }, variables);
    lossSum += (await value.data())[0];
    value.dispose();
    for (const [varName, g] of Object.entries(grads)) {
      const name = nameOf.get(varName)!;
      const part = scale === 1 ? g : tf.tidy(() => tf.mul(g, scale));
      if (part !== g) g.dispose();
      const prev = summed.get(name);
      summed.set(name, prev ? tf.tidy(() => tf.add(prev, part)) : part);
      if (prev) tf.dispose([prev, part]);
    }
  }
  const { grads, norm } = clipByGlobalNorm(tf, summed, options.gradClip);
  const gradNorm = (await norm.data())[0];
  optimizer.update(grads, options.lr);
  tf.dispose([norm, ...grads.values(), ...summed.values()]);
  return { loss: lossSum / microBatches.length, gradNorm, tokens };
}
