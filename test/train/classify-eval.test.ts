/**
 * Classification metrics against values worked out by hand in the comments (accuracy, per-class
 * counts, F1, macro-F1 as scikit-learn's f1_score(average="macro")), and evaluateClassifier's
 * batching, limits and errors with a stand-in model.
 */
import { describe, expect, it } from 'vitest';
import { presetConfig } from '../../src/model/config.js';
import { ClassificationTally, evaluateClassifier, type ClassifierScorer, type LabelledSource } from '../../src/train/classify-eval.js';

/** One row of logits predicting `k` among n (2 for it, a little below 0 elsewhere). */
const predicting = (k: number, n: number) => Array.from({ length: n }, (_, j) => (j === k ? 2 : -0.5 + 0.1 * j));

describe('ClassificationTally', () => {
  // truth     0 0 0 1 1 2 2 2
  // predicted 0 1 0 1 2 2 2 0
  // class 0: TP 2 (records 0, 2), FP 1 (record 7), FN 1 (record 1): F1 = 4/6
  // class 1: TP 1 (record 3), FP 1 (record 1), FN 1 (record 4): F1 = 2/4
  // class 2: TP 2 (records 5, 6), FP 1 (record 4), FN 1 (record 7): F1 = 4/6
  // accuracy 5/8; macro-F1 (2/3 + 1/2 + 2/3) / 3 = 11/18
  const truth = [0, 0, 0, 1, 1, 2, 2, 2];
  const predicted = [0, 1, 0, 1, 2, 2, 2, 0];

  it('counts, F1 per class, accuracy and macro-F1 as worked out by hand', () => {
    const tally = new ClassificationTally(['a', 'b', 'c']);
    tally.add(predicted.slice(0, 3).flatMap((k) => predicting(k, 3)), truth.slice(0, 3));
    tally.add(predicted.slice(3).flatMap((k) => predicting(k, 3)), truth.slice(3));
    const r = tally.result();
    expect(r.records).toBe(8);
    expect(r.accuracy).toBe(5 / 8);
    expect(r.per_class).toEqual([
      { label: 'a', support: 3, predicted: 3, correct: 2, f1: 4 / 6 },
      { label: 'b', support: 2, predicted: 2, correct: 1, f1: 2 / 4 },
      { label: 'c', support: 3, predicted: 3, correct: 2, f1: 4 / 6 },
    ]);
    expect(r.macro_f1).toBeCloseTo(11 / 18, 15);
  });

  it('leaves out of macro-F1 a class nobody has nor predicts, and counts one only predicted as F1 0', () => {
    const absent = new ClassificationTally(['a', 'b', 'c', 'd']);
    absent.add(predicted.flatMap((k) => predicting(k, 4)), truth);
    expect(absent.result().per_class[3]).toEqual({ label: 'd', support: 0, predicted: 0, correct: 0, f1: null });
    expect(absent.result().macro_f1).toBeCloseTo(11 / 18, 15);
    // Predicting d for record 0 instead: class 0 has TP 1, FP 1, FN 2 (F1 2/5); d has FP 1 (F1 0).
    const only = new ClassificationTally(['a', 'b', 'c', 'd']);
    only.add([3, ...predicted.slice(1)].flatMap((k) => predicting(k, 4)), truth);
    expect(only.result().per_class.map((c) => c.f1)).toEqual([2 / 5, 2 / 4, 4 / 6, 0]);
    expect(only.result().macro_f1).toBeCloseTo((2 / 5 + 1 / 2 + 2 / 3 + 0) / 4, 15);
    expect(only.result().accuracy).toBe(4 / 8);
  });

  it('takes the lowest label on a tie, and the mean cross-entropy in float64', () => {
    const tally = new ClassificationTally(['a', 'b']);
    // row 0: a tie, predicted a (true b): −log(1/2); row 1: logits (0, ln 3) → p(b) = 3/4 (true b): −log(3/4)
    const loss = tally.add([1, 1, 0, Math.log(3)], [1, 1]);
    expect(loss).toBeCloseTo(Math.log(2) + Math.log(4 / 3), 7); // logits are float32 in use; here float64
    const r = tally.result();
    expect(r.per_class.map((c) => c.predicted)).toEqual([1, 1]);
    expect(r.loss).toBeCloseTo((Math.log(2) + Math.log(4 / 3)) / 2, 7);
  });
});

describe('evaluateClassifier', () => {
  const config = { ...presetConfig('gpt2-tiny'), n_positions: 6 };
  const head = { num_labels: 2, labels: ['no', 'yes'], pad_token_id: null };
  /** Predicts "yes" for records whose first id is odd. */
  const scorer = (batches: number[]): ClassifierScorer => ({
    config,
    head,
    classify: async (records) => {
      batches.push(records.length);
      return Float32Array.from(records.flatMap((r) => predicting(r[0] % 2, 2)));
    },
    firstNonFinite: async () => undefined,
  });
  const source = (records: { ids: number[]; label: number }[]): LabelledSource => ({
    dir: 'mem',
    numRecords: records.length,
    async *iterate() {
      for (const [index, r] of records.entries()) yield { record: { input_ids: Int32Array.from(r.ids), label: r.label }, shard: 0, index };
    },
  });
  const data = Array.from({ length: 8 }, (_, k) => ({ ids: [k, 1, 2].slice(0, 1 + (k % 3)), label: k < 4 ? 1 : 0 }));

  it('runs batches of batchSize (the last one short) and stops at maxRecords', async () => {
    const sizes: number[] = [];
    const r = await evaluateClassifier(scorer(sizes), source(data), { batchSize: 3 });
    expect(sizes).toEqual([3, 3, 2]);
    // predictions (first id odd): 0 1 0 1 | 0 1 0 1 against labels 1 1 1 1 | 0 0 0 0: 4 right
    expect(r.accuracy).toBe(4 / 8);
    expect(r.per_class).toEqual([
      { label: 'no', support: 4, predicted: 4, correct: 2, f1: 0.5 },
      { label: 'yes', support: 4, predicted: 4, correct: 2, f1: 0.5 },
    ]);
    const limited: number[] = [];
    expect((await evaluateClassifier(scorer(limited), source(data), { batchSize: 3, maxRecords: 4 })).records).toBe(4);
    expect(limited).toEqual([3, 1]);
  });

  it('names the record whose label the model does not have, or which does not fit its context', async () => {
    await expect(evaluateClassifier(scorer([]), source([{ ids: [1], label: 0 }, { ids: [2], label: 2 }]))).rejects.toThrow('mem shard 0 record 1: label 2, but the model has 2 labels');
    await expect(evaluateClassifier(scorer([]), source([{ ids: [1, 2, 3, 4, 5, 6, 7], label: 0 }]))).rejects.toThrow("mem shard 0 record 0: 7 tokens, more than the model's context of 6");
    await expect(evaluateClassifier(scorer([]), source([]))).rejects.toThrow('mem: no records to evaluate');
  });
});
