/**
 * The sequence-classification task's training loss: records padded (right) to the longest of the
 * micro-batch, logits pooled at each last real token (model/classification.ts), mean cross-entropy
 * over the records, as HF's CrossEntropyLoss on pooled_logits. The logits are [B, num_labels]:
 * small enough that tfjs's autodiff of logSoftmax costs nothing worth a kernel of our own.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { TF } from '../model/gpt2.js';
import type { SequenceClassifier } from '../model/classification.js';
import type { LabelledRecord } from '../data/records.js';
import type { TaskLoss } from './step.js';

/** Mean over rows of −log softmax(logits)[label]. */
export function classificationCrossEntropy(tf: TF, logits: tfjs.Tensor2D, labels: Int32Array): tfjs.Scalar {
  return tf.tidy(() => {
    const picked = tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.tensor1d(labels, 'int32'), logits.shape[1]));
    return tf.neg(tf.div(tf.sum(picked), labels.length)) as tfjs.Scalar;
  });
}

/** The classification task for the step; tokens = the real input tokens (for tokens/s). */
export function classificationLoss(model: SequenceClassifier): TaskLoss<LabelledRecord> {
  return (records) => {
    const batch = model.pad(records.map((r) => r.input_ids));
    const labels = Int32Array.from(records, (r) => r.label);
    return {
      tokens: batch.tokens,
      value: (seed) => classificationCrossEntropy(model.tf, model.logits(batch, { training: true, seed }), labels),
    };
  };
}
