/**
 * Sequence classification against PyTorch (fixtures/models/tiny-cls, made by
 * test/oracle/make_classification_fixtures.py: HF GPT2ForSequenceClassification semantics in float64)
 * on wasm and cpu: the padded batches (right and left) and their pooling positions, pooled logits
 * within 1e-4 (the model fixtures' tolerance), the loss (relative 1e-5) and every gradient of one
 * step (per tensor ‖ours − torch‖ / ‖torch‖ < 1e-4), as test/train/step.test.ts sets them for the LM.
 * Also: training only some parameters leaves the rest untouched, and the fresh score's statistics.
 */
import { readFileSync } from 'node:fs';
import type * as tfjs from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { loadCheckpoint, type LoadedCheckpoint } from '../../src/formats/checkpoint.js';
import { readSafetensors } from '../../src/formats/safetensors.js';
import { initialScore, padBatch, SCORE, SequenceClassifier } from '../../src/model/classification.js';
import { presetConfig } from '../../src/model/config.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { classificationCrossEntropy, classificationLoss } from '../../src/train/classify-loss.js';
import { trainStep } from '../../src/train/step.js';
import { fixture, normDiffRatio } from '../helpers.js';

interface Batch {
  ids: number[][];
  attention_mask: number[][];
  position_ids?: number[][];
  pool_index: number[];
  logits: number[][];
}
interface Expected {
  pad_token_id: number;
  labels: string[];
  records: number[][];
  targets: number[];
  right: Batch;
  left: Batch;
  loss: number;
}

const fx = JSON.parse(readFileSync(fixture('models', 'tiny-cls', 'expected.json'), 'utf8')) as Expected;
const LOGIT_ABS = 1e-4;
const LOSS_REL = 1e-5;
const GRAD_REL = 1e-4;

const maxAbsDiff = (got: number[][], want: number[][]) => Math.max(...got.flatMap((row, b) => row.map((v, k) => Math.abs(v - want[b][k]))));


describe('padBatch', () => {
  it('pads right and left as the fixture batches are padded: ids, mask, position ids, pooling index', () => {
    for (const side of ['right', 'left'] as const) {
      const want = fx[side];
      const got = padBatch(fx.records, fx.pad_token_id, side);
      expect(got.ids).toEqual(want.ids);
      expect(got.attentionMask).toEqual(want.attention_mask);
      if (side === 'left') expect(got.positionIds).toEqual(want.position_ids);
      else expect(got.positionIds).toBeUndefined(); // HF's default 0, 1, …
      expect(Array.from(got.last)).toEqual(want.pool_index);
      expect(got.tokens).toBe(fx.records.flat().length);
    }
  });

  it('leaves an unpadded batch without a mask, and refuses an empty record', () => {
    expect(padBatch([[1, 2], [3, 4]], 0)).toEqual({ ids: [[1, 2], [3, 4]], last: Int32Array.from([1, 1]), tokens: 4 });
    expect(() => padBatch([[1, 2], []], 0)).toThrow('an empty record has no token to classify');
  });
});

for (const backendName of ['wasm', 'cpu'] as const) {
  describe(`GPT2ForSequenceClassification on ${backendName} against PyTorch`, () => {
    let tf: Tf;
    let ck: LoadedCheckpoint;
    const classifier = (trainable = false) => {
      const config = { ...ck.config, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
      return SequenceClassifier.fromValues(GPT2.fromValues(tf, config, ck.values, { trainable }), ck.head!, ck.values, { trainable });
    };
    beforeAll(async () => {
      tf = (await selectBackend(backendName)).tf;
      ck = await loadCheckpoint(fixture('models', 'tiny-cls'));
    });

    it.each(['right', 'left'] as const)('%s-padded batch: pooled logits within 1e-4, and equal to the other side’s', async (side) => {
      const m = classifier();
      const logits = m.logits(m.pad(fx.records, side));
      expect(maxAbsDiff((await logits.array()) as number[][], fx[side].logits)).toBeLessThan(LOGIT_ABS);
      const other = m.logits(m.pad(fx.records, side === 'right' ? 'left' : 'right'));
      expect(maxAbsDiff((await other.array()) as number[][], (await logits.array()) as number[][])).toBeLessThan(1e-5);
      tf.dispose([logits, other]);
      m.dispose();
    });

    it('the loss and every gradient of one step equal PyTorch’s', async () => {
      const m = classifier(true);
      const logits = m.logits(m.pad(fx.records));
      const loss = classificationCrossEntropy(tf, logits, Int32Array.from(fx.targets));
      expect(Math.abs((await loss.data())[0] - fx.loss) / fx.loss).toBeLessThan(LOSS_REL);
      tf.dispose([logits, loss]);

      const got = new Map<string, Float32Array>();
      const recorder = { update: (grads: Map<string, tfjs.Tensor>) => grads.forEach((g, name) => got.set(name, g.dataSync() as Float32Array)) };
      const records = fx.records.map((ids, k) => ({ input_ids: Int32Array.from(ids), label: fx.targets[k] }));
      const result = await trainStep(tf, m.params as Map<string, tfjs.Variable>, recorder, [records], classificationLoss(m), { lr: 0, gradClip: 0, seed: 1, step: 0 });
      expect(Math.abs(result.loss - fx.loss) / fx.loss).toBeLessThan(LOSS_REL);
      expect(result.tokens).toBe(fx.records.flat().length);
      const want = (await readSafetensors(fixture('models', 'tiny-cls', 'grads.safetensors'))).tensors;
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [name, w] of want) expect(normDiffRatio(got.get(name)!, w.data), name).toBeLessThan(GRAD_REL);
      m.dispose();
    });

    it('trains only the parameters it is given: the score alone moves, the rest stays bit for bit', async () => {
      const m = classifier(true);
      const before = await m.values();
      const trainable = new Map([[SCORE, m.score as tfjs.Variable]]);
      const sgd = { update: (grads: Map<string, tfjs.Tensor>) => grads.forEach((g, name) => trainable.get(name)!.assign(tf.sub(trainable.get(name)!, tf.mul(g, 0.1)))) };
      const records = fx.records.map((ids, k) => ({ input_ids: Int32Array.from(ids), label: fx.targets[k] }));
      const first = await trainStep(tf, trainable, sgd, [records], classificationLoss(m), { lr: 0, gradClip: 0, seed: 1, step: 0 });
      const second = await trainStep(tf, trainable, sgd, [records], classificationLoss(m), { lr: 0, gradClip: 0, seed: 1, step: 1 });
      expect(second.loss).toBeLessThan(first.loss);
      const after = await m.values();
      for (const [name, v] of before) {
        const same = Buffer.from(after.get(name)!.data.buffer).equals(Buffer.from(v.data.buffer));
        expect(same, name).toBe(name !== SCORE);
      }
      m.dispose();
    });
  });
}

describe('initialScore', () => {
  it('draws N(0, initializer_range) from the seed', () => {
    const c = presetConfig('gpt2-tiny');
    const a = initialScore(c, { num_labels: 4 }, 7);
    expect(a.shape).toEqual([4, c.n_embd]);
    expect(initialScore(c, { num_labels: 4 }, 7).data).toEqual(a.data);
    expect(initialScore(c, { num_labels: 4 }, 8).data).not.toEqual(a.data);
    const n = a.data.length;
    const mean = a.data.reduce((s, x) => s + x, 0) / n;
    const std = Math.sqrt(a.data.reduce((s, x) => s + (x - mean) ** 2, 0) / n);
    // 256 draws: the sample std's relative error has a deviation of 1/√512 ≈ 4.4% and the mean one of
    // 0.02/16 = 0.00125; the bounds are 4.5 and 4 of them (a wrong std, 0.01 or 1, is far outside)
    expect(Math.abs(std - c.initializer_range) / c.initializer_range).toBeLessThan(0.2);
    expect(Math.abs(mean)).toBeLessThan(0.005);
  });
});
