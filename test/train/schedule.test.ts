/**
 * Learning-rate schedules: hand-computed values (the arithmetic is in the comments) at warmup and
 * decay boundaries for every type, the seed's polynomial 1e-4 → 1e-5, degenerate lengths, and
 * monotonicity properties with fast-check.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { learningRate, warmupSteps, type ScheduleSpec, type ScheduleType } from '../../src/train/schedule.js';

const spec = (type: ScheduleType, over: Partial<ScheduleSpec> = {}): ScheduleSpec => ({
  type,
  lr: 1e-3,
  end_lr: 0,
  power: 1,
  warmup_steps: 0,
  decay_steps: 100,
  ...over,
});
const close = (got: number, want: number) => expect(got).toBeCloseTo(want, 15);

describe('learningRate', () => {
  it('warms up linearly with the +1 so step 0 does not run at lr 0', () => {
    const s = spec('constant', { warmup_steps: 4 });
    close(learningRate(s, 0), 2.5e-4); // 1e-3 × 1/4
    close(learningRate(s, 1), 5e-4); // 1e-3 × 2/4
    close(learningRate(s, 2), 7.5e-4); // 1e-3 × 3/4
    close(learningRate(s, 3), 1e-3); // 1e-3 × 4/4: warmup's last step reaches lr
    close(learningRate(s, 4), 1e-3); // constant after warmup
    close(learningRate(s, 1_000_000), 1e-3); // constant never decays, whatever decay_steps says
  });

  it('linear: lr → end_lr between warmup_steps and decay_steps, then end_lr', () => {
    const s = spec('linear', { warmup_steps: 10, decay_steps: 110, end_lr: 1e-4, power: 3 /* ignored */ });
    close(learningRate(s, 0), 1e-4); // warmup: 1e-3 × 1/10
    close(learningRate(s, 9), 1e-3); // 1e-3 × 10/10
    close(learningRate(s, 10), 1e-3); // t = 0, T = 100, p = 0: (1e-3 − 1e-4)(1 − 0) + 1e-4
    close(learningRate(s, 35), 7.75e-4); // p = 25/100: 9e-4 × 0.75 + 1e-4 = 6.75e-4 + 1e-4
    close(learningRate(s, 60), 5.5e-4); // p = 0.5: 9e-4 × 0.5 + 1e-4
    close(learningRate(s, 109), 1.09e-4); // p = 0.99: 9e-4 × 0.01 + 1e-4 = 9e-6 + 1e-4
    close(learningRate(s, 110), 1e-4); // p = 1: end_lr
    close(learningRate(s, 500), 1e-4); // p clamped at 1
  });

  it("polynomial: the seed's 1e-4 → 1e-5, power 1, no warmup, over 100 steps", () => {
    const s = spec('polynomial', { lr: 1e-4, end_lr: 1e-5, decay_steps: 100 });
    close(learningRate(s, 0), 1e-4); // p = 0: 9e-5 × 1 + 1e-5
    close(learningRate(s, 1), 9.91e-5); // p = 0.01: 9e-5 × 0.99 + 1e-5 = 8.91e-5 + 1e-5
    close(learningRate(s, 50), 5.5e-5); // p = 0.5: 4.5e-5 + 1e-5
    close(learningRate(s, 99), 1.09e-5); // p = 0.99: 9e-7 + 1e-5
    close(learningRate(s, 100), 1e-5); // p = 1
    close(learningRate(s, 101), 1e-5);
    // 'linear' is polynomial with power 1.
    for (const step of [0, 1, 37, 50, 99, 100, 150]) close(learningRate({ ...s, type: 'linear' }, step), learningRate(s, step));
  });

  it('polynomial with power 2 and warmup', () => {
    const s = spec('polynomial', { lr: 1e-3, end_lr: 1e-5, power: 2, warmup_steps: 20, decay_steps: 120 });
    close(learningRate(s, 4), 2.5e-4); // warmup: 1e-3 × 5/20
    close(learningRate(s, 19), 1e-3); // 1e-3 × 20/20
    close(learningRate(s, 20), 1e-3); // p = 0: 9.9e-4 × 1² + 1e-5
    close(learningRate(s, 70), 2.575e-4); // p = 50/100: 9.9e-4 × 0.25 + 1e-5 = 2.475e-4 + 1e-5
    close(learningRate(s, 110), 1.99e-5); // p = 0.9: 9.9e-4 × 0.1² + 1e-5 = 9.9e-6 + 1e-5
    close(learningRate(s, 120), 1e-5);
  });

  it('polynomial with power 0 still ends at end_lr (0^0 is not taken as 1)', () => {
    const s = spec('polynomial', { power: 0, end_lr: 1e-5 });
    close(learningRate(s, 99), 1e-3); // p = 0.99: 9.9e-4 × 0.01^0 + 1e-5 = 1e-3
    close(learningRate(s, 100), 1e-5); // p = 1: decay over
  });

  it('cosine: half a cosine from lr to end_lr', () => {
    const s = spec('cosine', { lr: 1e-3, end_lr: 1e-4, warmup_steps: 10, decay_steps: 110 });
    close(learningRate(s, 4), 5e-4); // warmup: 1e-3 × 5/10
    close(learningRate(s, 10), 1e-3); // p = 0: 1e-4 + 9e-4 × ½(1 + cos 0) = 1e-4 + 9e-4
    close(learningRate(s, 35), 1e-4 + 9e-4 * 0.5 * (1 + Math.SQRT1_2)); // p = 0.25: cos(π/4) = √½ → ≈ 8.6820e-4
    expect(learningRate(s, 35)).toBeCloseTo(8.682e-4, 7);
    close(learningRate(s, 60), 5.5e-4); // p = 0.5: cos(π/2) = 0 → 1e-4 + 9e-4 × ½
    close(learningRate(s, 85), 1e-4 + 9e-4 * 0.5 * (1 - Math.SQRT1_2)); // p = 0.75: cos(3π/4) = −√½ → ≈ 2.3180e-4
    close(learningRate(s, 110), 1e-4); // p = 1: cos π = −1 → end_lr
    close(learningRate(s, 1000), 1e-4);
  });

  it('decay_steps shorter than the run: end_lr from decay_steps to the last step', () => {
    const s = spec('linear', { lr: 1e-3, end_lr: 2e-4, decay_steps: 40 }); // a run of, say, 100 steps
    close(learningRate(s, 20), 6e-4); // p = 0.5: 8e-4 × 0.5 + 2e-4
    for (const step of [40, 41, 70, 99]) close(learningRate(s, step), 2e-4);
  });

  it('warmup ≥ decay_steps: warmup to lr, then end_lr at once', () => {
    for (const type of ['linear', 'polynomial', 'cosine'] as const) {
      const s = spec(type, { lr: 1e-3, end_lr: 1e-5, warmup_steps: 10, decay_steps: 10 });
      close(learningRate(s, 9), 1e-3); // warmup's last step: 1e-3 × 10/10
      close(learningRate(s, 10), 1e-5); // decay_steps ≤ warmup_steps: decay already over
      const longer = { ...s, decay_steps: 5 };
      close(learningRate(longer, 4), 5e-4); // warmup goes on regardless: 1e-3 × 5/10
      close(learningRate(longer, 10), 1e-5);
    }
    close(learningRate(spec('constant', { warmup_steps: 10, decay_steps: 5 }), 10), 1e-3);
  });

  it('decay_steps = warmup_steps + 1: one decay step of T = 1', () => {
    const s = spec('linear', { lr: 1e-3, end_lr: 0, warmup_steps: 2, decay_steps: 3 });
    close(learningRate(s, 2), 1e-3); // t = 0, T = 1, p = 0
    close(learningRate(s, 3), 0); // p = 1
  });

  it('rejects a negative or fractional step', () => {
    expect(() => learningRate(spec('constant'), -1)).toThrow(RangeError);
    expect(() => learningRate(spec('constant'), 1.5)).toThrow(/non-negative integer/);
  });

  const specs = fc.record({
    type: fc.constantFrom<ScheduleType>('linear', 'polynomial', 'cosine'),
    lr: fc.double({ min: 1e-6, max: 1, noNaN: true }),
    endFraction: fc.double({ min: 0, max: 1, noNaN: true }),
    power: fc.double({ min: 0.1, max: 4, noNaN: true }),
    warmup_steps: fc.integer({ min: 0, max: 50 }),
    decayLength: fc.integer({ min: 0, max: 200 }),
  });
  type Drawn = typeof specs extends fc.Arbitrary<infer T> ? T : never;
  const build = (r: Drawn): ScheduleSpec => ({
    type: r.type,
    lr: r.lr,
    end_lr: r.lr * r.endFraction,
    power: r.power,
    warmup_steps: r.warmup_steps,
    decay_steps: r.warmup_steps + r.decayLength,
  });

  it('property: non-decreasing during warmup, non-increasing after, within [end_lr, lr]', () => {
    fc.assert(
      fc.property(specs, (r) => {
        const s = build(r);
        const last = s.decay_steps + 10;
        let prev = learningRate(s, 0);
        for (let step = 0; step <= last; step++) {
          const v = learningRate(s, step);
          const tol = 1e-12 * s.lr;
          if (step < s.warmup_steps) {
            if (v < prev - tol || v > s.lr + tol || v <= 0) return false;
          } else {
            if (step > s.warmup_steps && v > prev + tol) return false;
            if (v < s.end_lr - tol || v > s.lr + tol) return false;
          }
          if (step >= Math.max(s.decay_steps, s.warmup_steps + 1) && Math.abs(v - s.end_lr) > tol) return false;
          prev = v;
        }
        return true;
      }),
      { numRuns: 300 },
    );
  });

  it('property: constant is lr after warmup; warmup reaches lr on its last step', () => {
    fc.assert(
      fc.property(specs, fc.integer({ min: 0, max: 10_000 }), (r, extra) => {
        const s = build(r);
        const c = { ...s, type: 'constant' as const };
        if (learningRate(c, s.warmup_steps + extra) !== s.lr) return false;
        return s.warmup_steps === 0 || Math.abs(learningRate(s, s.warmup_steps - 1) - s.lr) <= 1e-15 * s.lr;
      }),
    );
  });
});

describe('warmupSteps', () => {
  it('takes the ratio of the total when given, else the step count', () => {
    expect(warmupSteps(100, null, 1000)).toBe(100);
    expect(warmupSteps(100, 0, 1000)).toBe(100); // ratio 0 is "not set", as HF
    expect(warmupSteps(0, 0.1, 1000)).toBe(100);
    expect(warmupSteps(7, 0.03, 1234)).toBe(37); // 0.03 × 1234 = 37.02 → 37
    expect(warmupSteps(0, 0.05, 1010)).toBe(51); // 50.5 rounds half up → 51
  });
});
