/**
 * One optimizer step, whatever the task: gradients of a task's loss (lm-loss.ts, classify-loss.ts)
 * over `accumulation` micro-batches (summed with weight 1/accumulation) with respect to the trainable
 * parameters only, global-norm clipping, AdamW. Dropout masks are seeded from (seed, step,
 * micro-batch), so a resumed run draws exactly the masks the uninterrupted one did.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../backend/select.js';
import { clipByGlobalNorm } from './optimizer.js';

export interface StepResult {
  /** Mean of the micro-batches' losses. */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Tokens that counted: targets of the LM loss, input tokens of a classifier. */
  tokens: number;
}

/** A micro-batch prepared by a task: its loss (on the gradient tape) and the tokens it counts. */
export interface MicroBatchLoss {
  tokens: number;
  /** The micro-batch's mean loss, computed with dropout masks drawn from `seed`. */
  value(seed: number): tfjs.Scalar;
}

/** A task head's training loss: what a micro-batch of its records costs. */
export type TaskLoss<R> = (records: R[]) => MicroBatchLoss;

/** What the step updates: AdamW, or anything that takes the clipped gradients by parameter name. */
export interface ParameterUpdate {
  update(grads: Map<string, tfjs.Tensor>, lr: number): void;
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

/**
 * One step of `loss` over `microBatches`, differentiating with respect to `trainable` (parameters by
 * name; everything else the loss touches stays as it is) and updating them with `optimizer`.
 */
export async function trainStep<R>(
  tf: Tf,
  trainable: Map<string, tfjs.Variable>,
  optimizer: ParameterUpdate,
  microBatches: R[][],
  loss: TaskLoss<R>,
  options: { lr: number; gradClip: number; seed: number; step: number },
): Promise<StepResult> {
  const variables = [...trainable.values()];
  const nameOf = new Map([...trainable].map(([name, v]) => [v.name, name]));
  const scale = 1 / microBatches.length;
  const summed = new Map<string, tfjs.Tensor>();
  let lossSum = 0;
  let tokens = 0;
  for (const [m, records] of microBatches.entries()) {
    const batch = loss(records);
    tokens += batch.tokens;
    const seed = mixSeed(options.seed, options.step, m);
    const { value, grads } = tf.variableGrads(() => batch.value(seed), variables);
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
