/**
 * Perplexity of a model on record shards (gpt2-eval, and periodic evaluation in training): the
 * token-weighted mean next-token cross-entropy over every position whose target is real
 * (attention_mask 1), with the seed's shift: inputs = ids[:-1], labels = ids[1:].
 * (MindFormers averages per-batch losses instead; that equals ours for equal, unpadded blocks.)
 */
import type { Manifest, Task } from '../data/manifest.js';
import type { ShardDataset } from '../data/shard-reader.js';
import type { TokenRecord } from '../data/records.js';
import type { GPT2Config } from '../model/config.js';
import type { Tensor } from '@tensorflow/tfjs';
import type { GPT2, TF } from '../model/gpt2.js';
import { ToolError } from '../util/errors.js';
import { crossEntropySum, type LossSum } from './loss.js';

export interface EvalResult {
  loss: number;
  perplexity: number;
  tokens: number;
  records: number;
}

export interface EvalOptions {
  batchSize?: number;
  maxRecords?: number;
  /** Only the records at positions [start, end) of the (maxRecords-capped) data set: one part of a split evaluation (eval-parts.ts). */
  range?: { start: number; end: number };
  onProgress?: (records: number, total: number) => void;
  /** How messages name the model (default "the model"). */
  modelName?: string;
}

/**
 * What evaluation needs of a model, whichever engine runs it (the tfjs GPT2 here, the wasm pass in
 * pass-trainer.ts): the summed loss of a batch of equal-length records, with the seed's shift.
 */
export interface Scorer {
  readonly config: GPT2Config;
  /** Σ −log p(ids[t+1] | ids[..t]) over the positions whose target is real (mask[t+1] = 1), and their count. */
  score(records: TokenRecord[]): Promise<LossSum>;
  /** The first parameter holding a NaN or an infinity, as "<name> holds <value> (element k of n)". */
  firstNonFinite(): Promise<string | undefined>;
}

/**
 * Checks that a data set fits a model: records within the context (an LM block's inputs, a labelled
 * text's max_length), ids within the vocabulary.
 */
export function checkDataFitsModel(dataset: ShardDataset<Task>, c: GPT2Config): void {
  const m = dataset.manifest as Manifest;
  const { tokenizer } = m;
  if (m.task === 'classification' && m.max_length > c.n_positions) {
    throw new ToolError(`${dataset.dir}: records of up to ${m.max_length} tokens (max_length); the model has ${c.n_positions} positions (encode with --max-length ≤ ${c.n_positions})`);
  }
  if (m.task === 'causal_lm' && m.block_size - 1 > c.n_positions) {
    throw new ToolError(`${dataset.dir}: block size ${m.block_size} needs ${m.block_size - 1} positions; the model has ${c.n_positions} (use --block-size ≤ ${c.n_positions + 1})`);
  }
  if (tokenizer.vocab_size > c.vocab_size) {
    throw new ToolError(`${dataset.dir}: tokenizer vocabulary (${tokenizer.vocab_size}) is larger than the model's (${c.vocab_size})`);
  }
}

export async function evaluate(scorer: Scorer, dataset: ShardDataset, options: EvalOptions = {}): Promise<EvalResult> {
  const { loss_sum, tokens, records } = await evaluateSums(scorer, dataset, options);
  if (tokens === 0) throw new ToolError(`${dataset.dir}: no tokens to evaluate (${records} records)`);
  const loss = loss_sum / tokens;
  return { loss, perplexity: Math.exp(loss), tokens, records };
}

/** What an evaluation adds up: Σ −log p over the counted positions, their count, the records. Parts of one add up to it. */
export interface EvalSums {
  loss_sum: number;
  tokens: number;
  records: number;
}

export async function evaluateSums(scorer: Scorer, dataset: ShardDataset, options: EvalOptions = {}): Promise<EvalSums> {
  checkDataFitsModel(dataset, scorer.config);
  const batchSize = options.batchSize ?? 8;
  const capped = Math.min(dataset.numRecords, options.maxRecords ?? Infinity);
  const start = Math.min(options.range?.start ?? 0, capped);
  const total = Math.min(options.range?.end ?? capped, capped) - start;
  let sum = 0;
  let tokens = 0;
  let records = 0;
  let batch: { record: TokenRecord; where: string }[] = [];

  const run = async () => {
    const part = await scorer.score(batch.map((b) => b.record));
    if (!Number.isFinite(part.sum)) {
      // A NaN or infinite loss is no result: say where it comes from, the weights if they hold one.
      const span = batch.length === 1 ? batch[0].where : `${batch[0].where} to ${batch[batch.length - 1].where}`;
      const bad = await scorer.firstNonFinite();
      const name = options.modelName ?? 'the model';
      throw new ToolError(`loss is ${part.sum} on the batch of ${dataset.dir} ${span}; ${bad ? `${name}: tensor ${bad}` : `every tensor of ${name} is finite: the activations overflow`}`);
    }
    sum += part.sum;
    tokens += part.count;
    batch = [];
  };

  for await (const { record, shard, index } of dataset.iterate({ start })) {
    if (records >= total) break;
    // Ids within the model's vocabulary: the reader checks them against the tokenizer's,
    // checkDataFitsModel the tokenizer's against the model's.
    batch.push({ record, where: `shard ${shard} record ${index}` });
    records++;
    if (batch.length === batchSize) {
      await run();
      options.onProgress?.(records, total);
    }
  }
  if (batch.length > 0) {
    await run();
    options.onProgress?.(records, total);
  }
  return { loss_sum: sum, tokens, records };
}

/** GPT2 on its tfjs backend as a Scorer: hidden states, then the loss a few rows of logits at a time. */
export function tfjsScorer(model: GPT2): Scorer {
  return {
    config: model.config,
    async score(records) {
      const length = records[0].input_ids.length - 1;
      const { hidden } = model.hidden(records.map((r) => Array.from(r.input_ids.subarray(0, length))));
      const labels = new Int32Array(records.length * length);
      const weights = new Uint8Array(records.length * length);
      records.forEach((r, b) => {
        labels.set(r.input_ids.subarray(1, length + 1), b * length);
        weights.set(r.attention_mask.subarray(1, length + 1), b * length);
      });
      const flat = model.tf.reshape(hidden, [records.length * length, model.config.n_embd]);
      hidden.dispose();
      try {
        return await crossEntropySum(model, flat as never, labels, weights);
      } finally {
        flat.dispose();
      }
    },
    firstNonFinite: () => firstNonFiniteParameter(model.tf, model.params),
  };
}

/** The first of `params` holding a NaN or an infinity, as "<name> holds <value> (element k of n)". */
export async function firstNonFiniteParameter(tf: TF, params: Map<string, Tensor>): Promise<string | undefined> {
  for (const [name, t] of params) {
    // Reduced on the backend: only a tensor that has one is read back.
    const flag = tf.tidy(() => tf.any(tf.logicalNot(tf.isFinite(t))));
    const has = (await flag.data())[0] === 1;
    flag.dispose();
    if (!has) continue;
    const values = (await t.data()) as Float32Array;
    const k = values.findIndex((v) => !Number.isFinite(v));
    return `${name} holds ${values[k]} (element ${k} of ${values.length})`;
  }
  return undefined;
}
