/**
 * Our wasm kernels against the cpu backend on the same inputs, and the training graph's kernels.
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

/**
 * Segment sums by the definition, in float64 JavaScript: the cpu backend's own UnsortedSegmentSum
 * is replaced by ours too (its stock kernel takes ~15 s for an embedding), so it is no oracle.
 */
function segmentSumReference(values: number[], shape: number[], ids: number[], numSegments: number): { values: number[]; shape: number[] } {
  const inner = shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float64Array(numSegments * inner);
  ids.forEach((s, row) => {
    if (s < 0 || s >= numSegments) return;
    for (let j = 0; j < inner; j++) out[s * inner + j] += values[row * inner + j];
  });
  return { values: Array.from(out, (v) => Math.fround(v)), shape: [numSegments, ...shape.slice(1)] };
}

describe('UnsortedSegmentSum on wasm and cpu', () => {
  checkKernelLeaks(() => tf);
  const rng = makeRng(1);
  const cases: Array<{ label: string; xShape: number[]; ids: number[]; numSegments: number; dtype?: 'float32' | 'int32' | 'bool' }> = [
    { label: 'rows, repeated ids', xShape: [6, 3], ids: [0, 2, 0, 2, 2, 1], numSegments: 3 },
    { label: 'empty segments', xShape: [4, 5], ids: [7, 1, 7, 3], numSegments: 9 },
    { label: 'negative and out-of-range ids are dropped', xShape: [5, 2], ids: [-1, 4, 1, -7, 2], numSegments: 3 },
    { label: '1-D x', xShape: [7], ids: [3, 3, 0, 1, 3, 0, 2], numSegments: 4 },
    { label: '3-D x (a batch of rows per id)', xShape: [4, 2, 3], ids: [1, 0, 1, 1], numSegments: 2 },
    { label: 'no rows', xShape: [0, 3], ids: [], numSegments: 2 },
    { label: 'empty rows', xShape: [3, 0], ids: [0, 1, 0], numSegments: 2 },
    { label: 'one segment', xShape: [5, 4], ids: [0, 0, 0, 0, 0], numSegments: 1 },
    { label: 'int32 x gives float32, as on cpu', xShape: [4, 2], ids: [1, 0, 1, 1], numSegments: 2, dtype: 'int32' },
    { label: 'bool x gives float32, as on cpu', xShape: [4, 2], ids: [1, 0, 1, 1], numSegments: 2, dtype: 'bool' },
  ];
  for (const c of cases) {
    it(c.label, async () => {
      const size = c.xShape.reduce((a, b) => a * b, 1);
      const values = c.dtype ? Array.from({ length: size }, () => Math.floor(rng() * 3)) : normals(rng, size);
      const run = () => tf.unsortedSegmentSum(tf.tensor(values, c.xShape, c.dtype ?? 'float32'), tf.tensor1d(c.ids, 'int32'), c.numSegments);
      const want = segmentSumReference(c.dtype === 'bool' ? values.map((v) => (v ? 1 : 0)) : values, c.xShape, c.ids, c.numSegments);
      for (const backend of ['wasm', 'cpu'] as const) {
        const got = await onBackend(tf, backend, run);
        expect(got.dtype).toBe('float32');
        expect(got.shape).toEqual(want.shape);
        expectClose(got.values, want.values, 1e-5);
      }
    });
  }

  it('random shapes, sums within 1e-5 of the definition', async () => {
    for (let trial = 0; trial < 20; trial++) {
      const rows = 1 + Math.floor(rng() * 40);
      const inner = Math.floor(rng() * 6);
      const numSegments = 1 + Math.floor(rng() * 12);
      const ids = Array.from({ length: rows }, () => Math.floor(rng() * (numSegments + 4)) - 2);
      const values = normals(rng, rows * inner);
      const run = () => tf.unsortedSegmentSum(tf.tensor2d(values, [rows, inner]), tf.tensor1d(ids, 'int32'), numSegments);
      const want = segmentSumReference(values, [rows, inner], ids, numSegments).values;
      for (const backend of ['wasm', 'cpu'] as const) expectClose((await onBackend(tf, backend, run)).values, want, 1e-5);
    }
  });

  it('integer-valued inputs sum exactly', async () => {
    const values = Array.from({ length: 300 }, (_, i) => (i % 17) - 8);
    const ids = Array.from({ length: 100 }, (_, i) => (i * 7) % 13);
    const run = () => tf.unsortedSegmentSum(tf.tensor2d(values, [100, 3]), tf.tensor1d(ids, 'int32'), 13);
    const want = segmentSumReference(values, [100, 3], ids, 13).values;
    for (const backend of ['wasm', 'cpu'] as const) expect((await onBackend(tf, backend, run)).values).toEqual(want);
  });

  it('numSegments 0 gives an empty result (the cpu kernel crashes)', async () => {
    const got = await onBackend(tf, 'wasm', () => tf.unsortedSegmentSum(tf.ones([2, 3]), tf.tensor1d([0, 1], 'int32'), 0));
    expect(got.shape).toEqual([0, 3]);
  });

  it('refuses segment ids that are not one per row', async () => {
    await expect(onBackend(tf, 'wasm', () => tf.unsortedSegmentSum(tf.ones([2, 2]), tf.tensor2d([0, 1, 1, 0], [2, 2], 'int32') as Tensor as Tensor1D, 2))).rejects.toThrow(
      /segmentIds must be 1-D with one id per row of x, got segmentIds \[2,2\] and x \[2,2\]/,
    );
  });

  it('leaks no tensors or heap buffers', async () => {
    await selectBackend('wasm');
    const x = tf.randomNormal([50, 8]);
    const ids = tf.tensor1d(Array.from({ length: 50 }, (_, i) => i % 5), 'int32');
    const before = tf.memory().numTensors;
    const dataIds = tf.backend().numDataIds();
    tf.unsortedSegmentSum(x, ids, 5).dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.backend().numDataIds()).toBe(dataIds);
    tf.dispose([x, ids]);
  });
});

describe('gradients on wasm equal those on cpu', () => {
  it('embedding + matmul + logSoftmax + label gather, within 1e-4', async () => {
    const rng = makeRng(7);
    const [V, C, N] = [11, 6, 9];
    const wte = normals(rng, V * C, 0.5);
    const w = normals(rng, C * C, 0.5);
    const ids = Array.from({ length: N }, () => Math.floor(rng() * V));
    const labels = Array.from({ length: N }, () => Math.floor(rng() * V));
    const run = () => {
      const loss = (...params: Tensor[]) => {
        const [e, m] = params as Tensor2D[];
        const h = tf.tanh(tf.matMul(tf.gather(e, tf.tensor1d(ids, 'int32')), m));
        const logits = tf.matMul(h, e, false, true); // tied output embedding: transposeB
        const logp = tf.logSoftmax(logits);
        const flat = tf.tensor1d(labels.map((l, i) => i * V + l), 'int32');
        return tf.neg(tf.mean(tf.gather(tf.reshape(logp, [-1]), flat)));
      };
      const [gE, gW] = tf.grads(loss)([tf.tensor2d(wte, [V, C]), tf.tensor2d(w, [C, C])]);
      return tf.concat([tf.reshape(gE, [-1]), tf.reshape(gW, [-1])]);
    };
    const want = await onBackend(tf, 'cpu', run);
    const got = await onBackend(tf, 'wasm', run);
    expect(want.values.some((v) => Math.abs(v) > 1e-3)).toBe(true);
    expectClose(got.values, want.values, 1e-4);
  });
});

describe('a GPT-2 block trains on wasm', () => {
  // Every op family the model uses, forward and backward plus an Adam step: a kernel missing on
  // wasm shows up here as "Kernel X not registered for backend wasm".
  it('loss, gradients and Adam updates equal those on cpu within 1e-4', async () => {
    const rng = makeRng(11);
    const [B, T, C, H, V] = [2, 5, 8, 2, 13];
    const D = C / H;
    const init: Record<string, { values: number[]; shape: number[] }> = {};
    const param = (name: string, shape: number[], scale: number, offset = 0) => {
      const size = shape.reduce((a, b) => a * b, 1);
      init[name] = { values: normals(rng, size, scale).map((v) => v + offset), shape };
    };
    param('wte', [V, C], 0.3);
    param('wpe', [T + 3, C], 0.1);
    param('gain', [C], 0.1, 1);
    param('bias', [C], 0.1);
    param('wqkv', [C, 3 * C], 0.3);
    param('wproj', [C, C], 0.3);
    const ids = Array.from({ length: B * T }, () => Math.floor(rng() * V));
    const labels = Array.from({ length: B * T }, () => Math.floor(rng() * V));

    const run = () => {
      const p = Object.fromEntries(Object.entries(init).map(([k, v]) => [k, tf.variable(tf.tensor(v.values, v.shape), true, `block-test/${k}`)]));
      const loss = () => {
        const x0 = tf.add(tf.gather(p.wte, tf.tensor2d(ids, [B, T], 'int32')), tf.slice(p.wpe, [0, 0], [T, C]));
        const { mean, variance } = tf.moments(x0, -1, true);
        const x = tf.add(tf.mul(tf.mul(tf.sub(x0, mean), tf.rsqrt(tf.add(variance, 1e-5))), p.gain), p.bias);
        // 2-D products with weights: tfjs's matMul gradient does not sum over broadcast batch dims.
        const qkv = tf.reshape(tf.matMul(tf.reshape(x, [B * T, C]) as Tensor2D, p.wqkv as Tensor as Tensor2D), [B, T, 3 * C]);
        const heads = (t: Tensor) => tf.transpose(tf.reshape(t, [B, T, H, D]), [0, 2, 1, 3]);
        const [q, k, v] = tf.split(qkv, 3, -1).map(heads);
        const scores = tf.mul(tf.matMul(q as Tensor2D, k as Tensor2D, false, true), 1 / Math.sqrt(D));
        const causal = tf.cast(tf.linalg.bandPart(tf.ones([T, T]), -1, 0), 'bool');
        const att = tf.softmax(tf.where(causal, scores, tf.fill([B, H, T, T], -1e9)));
        const y = tf.reshape(tf.transpose(tf.matMul(att as Tensor2D, v as Tensor2D), [0, 2, 1, 3]), [B * T, C]);
        const z = tf.matMul(y as Tensor2D, p.wproj as Tensor as Tensor2D);
        const geluTanh = tf.mul(tf.mul(0.5, z), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(z, tf.mul(0.044715, tf.pow(z, 3)))))));
        const geluErf = tf.mul(tf.mul(0.5, z), tf.add(1, tf.erf(tf.div(z, Math.SQRT2))));
        const h = tf.add(tf.add(geluTanh, geluErf), tf.mul(z, tf.sigmoid(tf.mul(1.702, z))));
        const logits = tf.matMul(h as Tensor2D, p.wte as Tensor as Tensor2D, false, true); // tied
        const logp = tf.logSoftmax(logits);
        const picked = tf.gather(tf.reshape(logp, [-1]), tf.tensor1d(labels.map((l, i) => i * V + l), 'int32'));
        const logZ = tf.add(tf.max(logits, -1), tf.log(tf.sum(tf.exp(tf.sub(logits, tf.max(logits, -1, true))), -1)));
        return tf.add(tf.neg(tf.mean(picked)), tf.mul(1e-3, tf.mean(logZ))) as Tensor as ReturnType<Tf['scalar']>;
      };
      const { value, grads } = tf.variableGrads(loss);
      const optimizer = tf.train.adam(1e-2);
      const names = Object.keys(init);
      optimizer.applyGradients(names.map((n) => ({ name: p[n].name, tensor: grads[p[n].name] })));
      const out = tf.concat([tf.reshape(value, [1]), ...names.map((n) => tf.reshape(grads[p[n].name], [-1])), ...names.map((n) => tf.reshape(p[n], [-1]))]);
      optimizer.dispose();
      for (const v of Object.values(p)) v.dispose();
      return out;
    };
    const want = await onBackend(tf, 'cpu', run);
    const got = await onBackend(tf, 'wasm', run);
    expectClose(got.values, want.values, 1e-4);
  });
});
