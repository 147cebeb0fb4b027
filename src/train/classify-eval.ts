/**
 * Evaluation of a classifier (gpt2-eval on a classification checkpoint, and periodic evaluation in
 * training): mean cross-entropy over records, accuracy, per-class counts and macro-F1.
 *
 * Macro-F1 is scikit-learn's f1_score(average="macro") without `labels`: the mean of each class's
 * F1 = 2·TP / (2·TP + FP + FN) over the classes that occur among the true labels or the
 * predictions (a class nobody has nor predicts has no F1 and is left out). A prediction is the
 * arg max of the logits, the lowest label on ties (as torch.argmax). Losses are summed in float64
 * from the float32 logits.
 */
import type { GPT2Config } from '../model/config.js';
import type { ClassificationHead, SequenceClassifier } from '../model/classification.js';
import { ToolError } from '../util/errors.js';
import type { LabelledRecord } from '../data/records.js';
import { firstNonFiniteParameter } from './evaluate.js';

export interface ClassCounts {
  label: string;
  /** Records whose true label this is. */
  support: number;
  /** Records predicted as this label. */
  predicted: number;
  /** Records of this label predicted as it. */
  correct: number;
  f1: number | null;
}

export interface ClassificationResult {
  accuracy: number;
  loss: number;
  macro_f1: number;
  records: number;
  per_class: ClassCounts[];
}

/** Accumulates predictions batch by batch. */
export class ClassificationTally {
  private readonly support: number[];
  private readonly predicted: number[];
  private readonly correct: number[];
  private lossSum = 0;
  private records = 0;

  constructor(private readonly labels: readonly string[]) {
    this.support = labels.map(() => 0);
    this.predicted = labels.map(() => 0);
    this.correct = labels.map(() => 0);
  }

  /** Logits [B × num_labels] (row-major) of records with these true labels; returns the batch's loss sum. */
  add(logits: ArrayLike<number>, truth: ArrayLike<number>): number {
    const n = this.labels.length;
    let batchLoss = 0;
    for (let b = 0; b < truth.length; b++) {
      let best = 0;
      for (let k = 1; k < n; k++) if (logits[b * n + k] > logits[b * n + best]) best = k;
      const max = logits[b * n + best];
      let sum = 0;
      for (let k = 0; k < n; k++) sum += Math.exp(logits[b * n + k] - max);
      batchLoss += max + Math.log(sum) - logits[b * n + truth[b]];
      this.support[truth[b]]++;
      this.predicted[best]++;
      if (best === truth[b]) this.correct[best]++;
    }
    this.lossSum += batchLoss;
    this.records += truth.length;
    return batchLoss;
  }

  result(): ClassificationResult {
    const perClass = this.labels.map((label, k): ClassCounts => {
      const [tp, fp, fn] = [this.correct[k], this.predicted[k] - this.correct[k], this.support[k] - this.correct[k]];
      return { label, support: this.support[k], predicted: this.predicted[k], correct: tp, f1: tp + fp + fn === 0 ? null : (2 * tp) / (2 * tp + fp + fn) };
    });
    const scored = perClass.filter((c) => c.f1 !== null);
    return {
      accuracy: this.correct.reduce((a, b) => a + b, 0) / this.records,
      loss: this.lossSum / this.records,
      macro_f1: scored.reduce((a, c) => a + c.f1!, 0) / scored.length,
      records: this.records,
      per_class: perClass,
    };
  }
}

/** What classification evaluation needs of a model. */
export interface ClassifierScorer {
  readonly config: GPT2Config;
  readonly head: ClassificationHead;
  /** Logits [B × num_labels], row-major. */
  classify(records: ArrayLike<number>[]): Promise<Float32Array>;
  /** The first parameter holding a NaN or an infinity, as "<name> holds <value> (element k of n)". */
  firstNonFinite(): Promise<string | undefined>;
}

/** Records of a labelled data set, in file order, with where each is. */
export interface LabelledSource {
  readonly dir: string;
  readonly numRecords: number;
  iterate(): AsyncIterable<{ record: LabelledRecord; shard: number; index: number }>;
}

export interface ClassifyEvalOptions {
  batchSize?: number;
  maxRecords?: number;
  onProgress?: (records: number, total: number) => void;
  /** How messages name the model (default "the model"). */
  modelName?: string;
}

export async function evaluateClassifier(scorer: ClassifierScorer, data: LabelledSource, options: ClassifyEvalOptions = {}): Promise<ClassificationResult> {
  const batchSize = options.batchSize ?? 8;
  const total = Math.min(data.numRecords, options.maxRecords ?? Infinity);
  const { n_positions: context } = scorer.config;
  const tally = new ClassificationTally(scorer.head.labels);
  let records = 0;
  let batch: { record: LabelledRecord; where: string }[] = [];
  const run = async () => {
    const logits = await scorer.classify(batch.map((b) => b.record.input_ids));
    const loss = tally.add(logits, batch.map((b) => b.record.label));
    if (!Number.isFinite(loss)) {
      const span = batch.length === 1 ? batch[0].where : `${batch[0].where} to ${batch[batch.length - 1].where}`;
      const bad = await scorer.firstNonFinite();
      const name = options.modelName ?? 'the model';
      throw new ToolError(`loss is ${loss} on the batch of ${data.dir} ${span}; ${bad ? `${name}: tensor ${bad}` : `every tensor of ${name} is finite: the activations overflow`}`);
    }
    batch = [];
    options.onProgress?.(records, total);
  };
  for await (const { record, shard, index } of data.iterate()) {
    if (records >= total) break;
    const where = `shard ${shard} record ${index}`;
    if (record.input_ids.length > context) throw new ToolError(`${data.dir} ${where}: ${record.input_ids.length} tokens, more than the model's context of ${context}`);
    if (record.label >= scorer.head.num_labels) throw new ToolError(`${data.dir} ${where}: label ${record.label}, but the model has ${scorer.head.num_labels} labels`);
    batch.push({ record, where });
    records++;
    if (batch.length === batchSize) await run();
  }
  if (batch.length > 0) await run();
  if (records === 0) throw new ToolError(`${data.dir}: no records to evaluate`);
  return tally.result();
}

/** A SequenceClassifier on its tfjs backend as a ClassifierScorer. */
export function tfjsClassifier(model: SequenceClassifier): ClassifierScorer {
  return {
    config: model.config,
    head: model.head,
    async classify(records) {
      const logits = model.logits(model.pad(records));
      try {
        return (await logits.data()) as Float32Array;
      } finally {
        logits.dispose();
      }
    },
    firstNonFinite: () => firstNonFiniteParameter(model.tf, model.params),
  };
}
