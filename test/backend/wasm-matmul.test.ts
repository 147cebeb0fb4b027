/**
 * The wasm BatchMatMul / _FusedMatMul wrappers against the cpu backend.
 */
import type { Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/index.js';
import { checkKernelLeaks, expectClose, makeRng, normals, onBackend } from './compare.js';

let tf: Tf;
beforeAll(async () => {
  tf = (await selectBackend('cpu')).tf;
  await selectBackend('wasm');
});

const rng = makeRng(3);
const random = (shape: number[]) => ({ values: normals(rng, shape.reduce((a, b) => a * b, 1)), shape });
type Operand = ReturnType<typeof random>;
/** The operand as a tensor; typed as the 2-D case tf.matMul's signature names. */
const t2 = (x: Operand) => tf.tensor(x.values, x.shape) as Tensor as Tensor2D;

/** Stored shape of an operand that multiplies as [.., rows, cols], given the transpose flag. */
const stored = (outer: number[], rows: number, cols: number, transpose: boolean) => [...outer, ...(transpose ? [cols, rows] : [rows, cols])];

async function compare(a: Operand, b: Operand, transposeA: boolean, transposeB: boolean, tol = 1e-5): Promise<number[]> {
  const run = () => tf.matMul(t2(a), t2(b), transposeA, transposeB);
  const want = await onBackend(tf, 'cpu', run);
  const got = await onBackend(tf, 'wasm', run);
  expect(got.shape).toEqual(want.shape);
  expectClose(got.values, want.values, tol);
  return got.shape;
}

describe('BatchMatMul on wasm', () => {
  checkKernelLeaks(() => tf);
  const flags = [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ] as const;

  for (const [tA, tB] of flags) {
    it(`2-D, transposeA=${tA} transposeB=${tB}, several shapes`, async () => {
      for (const [m, k, n] of [
        [7, 5, 3],
        [1, 9, 4],
        [6, 1, 5],
        [4, 8, 1],
        [33, 17, 29],
      ]) {
        await compare(random(stored([], m, k, tA)), random(stored([], k, n, tB)), tA, tB);
      }
    });

    it(`3-D batched, transposeA=${tA} transposeB=${tB}`, async () => {
      expect(await compare(random(stored([4], 6, 5, tA)), random(stored([4], 5, 7, tB)), tA, tB)).toEqual([4, 6, 7]);
    });

    it(`broadcast batches, transposeA=${tA} transposeB=${tB}`, async () => {
      // [B, M, K] × [K, N]: the linear-layer case, folded into one product.
      expect(await compare(random(stored([3], 4, 6, tA)), random(stored([], 6, 5, tB)), tA, tB)).toEqual([3, 4, 5]);
      // [1, M, K] × [B, K, N] and [2, 1, M, K] × [3, K, N]
      expect(await compare(random(stored([1], 4, 6, tA)), random(stored([3], 6, 5, tB)), tA, tB)).toEqual([3, 4, 5]);
    });

    it(`broadcast on both sides, transposeA=${tA} transposeB=${tB}`, async () => {
      // [2, 1, M, K] × [3, K, N] → [2, 3, M, N]; the cpu kernel gets this wrong (it computes only
      // max(2, 3) products), so the reference is a plain loop.
      const [M, K, N] = [3, 4, 2];
      const a = random(stored([2, 1], M, K, tA));
      const b = random(stored([3], K, N, tB));
      const got = await onBackend(tf, 'wasm', () =>
        tf.matMul(t2(a), t2(b), tA, tB),
      );
      expect(got.shape).toEqual([2, 3, M, N]);
      const at = (x: Operand, batch: number, i: number, j: number, rows: number, cols: number, t: boolean) =>
        x.values[batch * rows * cols + (t ? j * rows + i : i * cols + j)];
      const want: number[] = [];
      for (let p = 0; p < 2; p++)
        for (let q = 0; q < 3; q++)
          for (let i = 0; i < M; i++)
            for (let j = 0; j < N; j++) {
              let sum = 0;
              for (let k = 0; k < K; k++) sum += at(a, p, i, k, M, K, tA) * at(b, q, k, j, K, N, tB);
              want.push(sum);
            }
      expectClose(got.values, want, 1e-5);
    });
  }

  it('4-D attention shapes: q·kᵀ and p·v', async () => {
    const [B, H, T, D] = [2, 3, 8, 4];
    await compare(random([B, H, T, D]), random([B, H, T, D]), false, true);
    await compare(random([B, H, T, T]), random([B, H, T, D]), false, false);
  });

  it('empty operands', async () => {
    expect(await compare(random([0, 4]), random([4, 3]), false, false)).toEqual([0, 3]);
    expect(await compare(random([2, 0, 4]), random([2, 4, 3]), false, false)).toEqual([2, 0, 3]);
    // inner dimension 0: zeros, not uninitialised memory
    const zeros = await onBackend(tf, 'wasm', () => tf.matMul(tf.ones([3, 0]) as Tensor2D, tf.ones([0, 2]) as Tensor2D));
    expect(zeros.values).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('refuses mismatched inner dimensions like the original', async () => {
    await expect(onBackend(tf, 'wasm', () => tf.matMul(tf.ones([2, 3]) as Tensor2D, tf.ones([4, 2]) as Tensor2D))).rejects.toThrow(
      /inner shapes \(3\) and \(4\)/,
    );
  });

  it('a buffer reused under another shape is not multiplied with a stale cached operand', async () => {
    // XNNPACK caches the packed right operand by tensor id; a reshape shares the id (the stock
    // kernel returns garbage here).
    const run = () => {
      const w = tf.tensor2d(Array.from({ length: 24 }, (_, i) => i), [6, 4]);
      const first = tf.matMul(tf.ones([2, 6]) as Tensor2D, w);
      const second = tf.matMul(tf.ones([2, 4]) as Tensor2D, tf.reshape(w, [4, 6]) as Tensor2D);
      const third = tf.matMul(tf.ones([1, 6]) as Tensor2D, w);
      return tf.concat([first.flatten(), second.flatten(), third.flatten()]);
    };
    expect((await onBackend(tf, 'wasm', run)).values).toEqual((await onBackend(tf, 'cpu', run)).values);
  });

  it('leaks no tensors or heap buffers', async () => {
    await selectBackend('wasm');
    const a = tf.randomNormal([3, 5, 4]);
    const b = tf.randomNormal([3, 6, 4]);
    const c = tf.randomNormal([3, 5, 2]);
    const w = tf.randomNormal([4, 2]);
    const before = tf.memory().numTensors;
    const dataIds = tf.backend().numDataIds();
    tf.tidy(() => {
      tf.matMul(a, b, false, true);
      tf.matMul(a, c, true, false);
      tf.matMul(a, w.reshape([1, 4, 2]));
      tf.fused.matMul({ a: a as Tensor as Tensor2D, b: w as Tensor2D, bias: tf.zeros([2]), activation: 'relu' });
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.backend().numDataIds()).toBe(dataIds);
    tf.dispose([a, b, c, w]);
  });
});

describe('_FusedMatMul on wasm', () => {
  checkKernelLeaks(() => tf);
  const activations = ['linear', 'relu', 'relu6', 'elu', 'sigmoid', 'leakyrelu', 'prelu'] as const;
  for (const [tA, tB] of [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ] as const) {
    it(`bias and every activation, unbatched and batched, transposeA=${tA} transposeB=${tB}`, async () => {
      const bias = random([4]);
      const alpha = random([4]);
      for (const outer of [[], [2]]) {
        const a = random(stored(outer, 5, 3, tA));
        const b = random(stored([], 3, 4, tB));
        for (const activation of activations) {
          const run = () =>
            tf.fused.matMul({
              a: t2(a),
              b: t2(b),
              bias: t2(bias) as Tensor as Tensor1D,
              transposeA: tA,
              transposeB: tB,
              activation,
              preluActivationWeights: activation === 'prelu' ? (t2(alpha) as Tensor as Tensor1D) : undefined,
              leakyreluAlpha: 0.1,
            }) as Tensor;
          const want = await onBackend(tf, 'cpu', run);
          const got = await onBackend(tf, 'wasm', run);
          expect(got.shape, activation).toEqual([...outer, 5, 4]);
          expectClose(got.values, want.values, 1e-5);
        }
      }
    });
  }
});
