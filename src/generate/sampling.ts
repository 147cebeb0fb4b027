/** Choosing the next token from processed logits: greedy or seeded sampling. */
import type { Rng } from '../util/rng.js';
import { softmax } from './processors.js';

/** Index of the largest logit; the lowest index on ties (as torch.argmax). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** A token drawn from softmax(logits) by inverse CDF with one uniform draw from rng. */
export function sample(logits: ArrayLike<number>, rng: Rng): number {
  const probs = softmax(logits);
  const u = rng.nextFloat();
  let acc = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    acc += probs[i];
    last = i;
    if (u < acc) return i;
  }
  return last; // rounding left u ≥ Σp: the last possible token
}
