/**
 * Learning-rate schedules: linear warmup, then constant, polynomial (linear = power 1) or cosine
 * decay from `lr` to `end_lr`. Pure functions of the step, so a resumed run recomputes the same rate
 * from the saved step and needs no scheduler state.
 */

export type ScheduleType = 'constant' | 'linear' | 'polynomial' | 'cosine';

export interface ScheduleSpec {
  type: ScheduleType;
  /** Peak rate, reached at the end of warmup. */
  lr: number;
  /** Final rate, held after `decay_steps` (ignored by 'constant'). */
  end_lr: number;
  /** Exponent of 'polynomial' (ignored otherwise; 'linear' is power 1). */
  power: number;
  warmup_steps: number;
  /** The step at which decay ends, counted from step 0 (warmup included), as HF's num_training_steps. */
  decay_steps: number;
}

/**
 * The learning rate for optimizer step `step` (0-based index of the step about to run).
 *
 * - Warmup, step < warmup_steps: lr × (step + 1) / warmup_steps, rising linearly from
 *   lr / warmup_steps to lr. HF and MindFormers use step / warmup_steps, whose first step runs at
 *   lr 0 and so is wasted; the +1 is our choice so that every step trains.
 * - After warmup, with t = step − warmup_steps, T = max(1, decay_steps − warmup_steps) and progress
 *   p = min(t / T, 1) (p = 1 outright when decay_steps ≤ warmup_steps: decay already ended):
 *   - constant:   lr
 *   - polynomial: (lr − end_lr) × (1 − p)^power + end_lr   (linear: power 1)
 *   - cosine:     end_lr + (lr − end_lr) × ½ (1 + cos(π p))
 * - So from step decay_steps on the rate stays at end_lr (constant stays at lr).
 *
 * This is MindFormers' polynomial-with-warmup and HF's get_polynomial_decay_schedule_with_warmup /
 * get_cosine_schedule_with_warmup (with end_lr as lr_end, or as HF's 0 for cosine) except for the +1.
 */
export function learningRate(spec: ScheduleSpec, step: number): number {
  if (!Number.isInteger(step) || step < 0) throw new RangeError(`learningRate: step must be a non-negative integer, got ${step}`);
  const { lr, end_lr: endLr, warmup_steps: warmup, decay_steps: decay } = spec;
  if (step < warmup) return (lr * (step + 1)) / warmup;
  if (spec.type === 'constant') return lr;
  const p = decay <= warmup ? 1 : Math.min((step - warmup) / Math.max(1, decay - warmup), 1);
  switch (spec.type) {
    case 'linear':
      return (lr - endLr) * (1 - p) + endLr;
    case 'polynomial':
      // 0^0 = 1 would keep lr forever with power 0; at p = 1 decay has ended whatever the power.
      return p >= 1 ? endLr : (lr - endLr) * Math.pow(1 - p, spec.power) + endLr;
    case 'cosine':
      return p >= 1 ? endLr : endLr + (lr - endLr) * 0.5 * (1 + Math.cos(Math.PI * p));
    default:
      throw new RangeError(`learningRate: unknown schedule type ${JSON.stringify((spec as { type: unknown }).type)}`);
  }
}

/**
 * Warmup length: a ratio of the total steps when given (round(ratio × total), as HF's
 * warmup_ratio and MindFormers' warmup_ratio), else the explicit step count.
 */
export function warmupSteps(warmupSteps: number, warmupRatio: number | null, totalSteps: number): number {
  return warmupRatio ? Math.round(warmupRatio * totalSteps) : warmupSteps;
}
