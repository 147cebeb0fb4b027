/**
 * Perplexity of a model on record shards (gpt2-eval, and periodic evaluation in training): the
 * token-weighted mean next-token cross-entropy over every position whose target is real
 * (attention_mask 1), with the seed's shift: inputs = ids[:-1], labels = ids[1:].
 * (MindFormers averages per-batch losses instead; that equals ours for equal, unpadded blocks.)
 */
import type { ShardDataset } from '../data/shard-reader.js';
import type { GPT2 } from '../model/gpt2.js';
import { ToolError } from '../util/errors.js';
import { crossEntropySum } from './loss.js';

export interface EvalResult {
  loss: number;
  perplexity: number;
  tokens: number;
  records: number;
}

export interface EvalOptions {
  batchSize?: number;
  maxRecords?: number;
  onProgress?: (records: number, total: number) => void;
  /** How messages name the model (default "the model"). */
  modelName?: string;
}

/** Checks that a data set fits a model: block size within the context, ids within the vocabulary. */
export function checkDataFitsModel(dataset: ShardDataset, model: GPT2): void {
  const { block_size: block, tokenizer } = dataset.manifest;
  const c = model.config;
  if (block - 1 > c.n_positions) {
    throw new ToolError(`${dataset.dir}: block size ${block} needs ${block - 1} positions; the model has ${c.n_positions} (use --block-size ≤ ${c.n_positions + 1})`);
  }
  if (tokenizer.vocab_size > c.vocab_size) {
    throw new ToolError(`${dataset.dir}: tokenizer vocabulary (${tokenizer.vocab_size}) is larger than the model's (${c.vocab_size})`);
  }
}

export async function evaluate(model: GPT2, dataset: ShardDataset, options: EvalOptions = {}): Promise<EvalResult> {
  checkDataFitsModel(dataset, model);
  const batchSize = options.batchSize ?? 8;
  const total = Math.min(dataset.numRecords, options.maxRecords ?? Infinity);
  let sum = 0;
  let tokens = 0;
  let records = 0;
  let batch: { ids: number[]; mask: Uint8Array; where: string }[] = [];

  // A NaN or infinite loss is no result: say where it comes from, the weights if they hold one.
  const nonFinite = async (loss: number): Promise<never> => {
    const span = batch.length === 1 ? batch[0].where : `${batch[0].where} to ${batch[batch.length - 1].where}`;
    const bad = await firstNonFiniteParameter(model);
    const cause = bad ? `${options.modelName ?? 'the model'}: tensor ${bad}` : `every tensor of ${options.modelName ?? 'the model'} is finite: the activations overflow`;
    throw new ToolError(`loss is ${loss} on the batch of ${dataset.dir} ${span}; ${cause}`);
  };

  const run = async () => {
    const length = batch[0].ids.length - 1;
    const { hidden } = model.hidden(batch.map((r) => r.ids.slice(0, length)));
    const labels = new Int32Array(batch.length * length);
    const weights = new Uint8Array(batch.length * length);
    batch.forEach((r, b) => {
      for (let t = 0; t < length; t++) {
        labels[b * length + t] = r.ids[t + 1];
        weights[b * length + t] = r.mask[t + 1];
      }
    });
    const flat = model.tf.reshape(hidden, [batch.length * length, model.config.n_embd]);
    hidden.dispose();
    try {
      const part = await crossEntropySum(model, flat as never, labels, weights);
      if (!Number.isFinite(part.sum)) await nonFinite(part.sum);
      sum += part.sum;
      tokens += part.count;
    } finally {
      flat.dispose();
    }
    batch = [];
  };

  for await (const { record, shard, index } of dataset.iterate()) {
    if (records >= total) break;
    // Ids within the model's vocabulary: the reader checks them against the tokenizer's,
    // checkDataFitsModel the tokenizer's against the model's.
    const ids = Array.from(record.input_ids);
    batch.push({ ids, mask: record.attention_mask, where: `shard ${shard} record ${index}` });
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
  if (tokens === 0) throw new ToolError(`${dataset.dir}: no tokens to evaluate (${records} records)`);
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), tokens, records };
}

/** The first parameter holding a NaN or an infinity, as "<name> holds <value> (element k of n)". */
async function firstNonFiniteParameter(model: GPT2): Promise<string | undefined> {
  const tf = model.tf;
  for (const [name, t] of model.params) {
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
