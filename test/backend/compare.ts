/** Helpers for comparing kernels between backends in one process. */
import { afterAll, beforeAll, expect } from 'vitest';
import { selectBackend, type ResolvedBackendName, type Tf } from '../../src/backend/index.js';
import { Rng } from '../../src/util/rng.js';

export interface Result {
  values: number[];
  shape: number[];
  dtype: string;
}

type TensorLike = ReturnType<Tf['tensor']>;

/** Runs `fn` on `backend` (inside tidy) and reads its result back as plain numbers. */
export async function onBackend(tf: Tf, backend: ResolvedBackendName, fn: () => TensorLike): Promise<Result> {
  await selectBackend(backend);
  const out = tf.tidy(fn);
  try {
    return { values: Array.from(out.dataSync() as ArrayLike<number>), shape: out.shape.slice(), dtype: out.dtype };
  } finally {
    out.dispose();
  }
}

/** |got − want| ≤ tol·(1 + |want|) everywhere; NaN only where NaN is expected. */
export function expectClose(got: number[], want: number[], tol: number): void {
  expect(got.length).toBe(want.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(want[i]) || Number.isNaN(got[i])) {
      expect(Number.isNaN(got[i]), `NaN mismatch at ${i}`).toBe(Number.isNaN(want[i]));
      continue;
    }
    const err = Math.abs(got[i] - want[i]) / (1 + Math.abs(want[i]));
    if (err > worst) [worst, at] = [err, i];
  }
  expect(worst, `worst relative error at ${at}: got ${got[at]}, want ${want[at]}`).toBeLessThanOrEqual(tol);
}

export function makeRng(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.nextFloat();
}

/** Normally distributed values (Box–Muller), scaled. */
export function normals(rng: () => number, n: number, scale = 1): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const u = 1 - rng();
    out.push(scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng()));
  }
  return out;
}

/**
 * Within a describe block: the engine checks every kernel for leaked data ids (its IS_TEST mode).
 * Not for whole graphs: custom ops such as logSoftmax trip the check falsely.
 */
export function checkKernelLeaks(getTf: () => Tf): void {
  beforeAll(() => getTf().env().set('IS_TEST', true));
  afterAll(() => getTf().env().set('IS_TEST', false));
}
