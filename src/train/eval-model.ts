/**
 * gpt2-eval as a library call: a model (checkpoint directory or preset, see model/source.ts) on
 * record shards, through the engine chooseSequenceEngine picks, weights streamed into it.
 */
import type { ShardDataset } from '../data/shard-reader.js';
import { loadModel, tokenizerIdentityOf, type OpenOptions } from '../model/open.js';
import { openEvalEngine } from './engine.js';
import { checkDataFitsModel, evaluate, type EvalOptions, type EvalResult } from './evaluate.js';

export interface EvalModelOptions extends OpenOptions, EvalOptions {
  threads?: number;
  /** Tensors in the checkpoint that are not GPT-2 parameters: reported, not loaded. */
  onIgnored?: (name: string) => void;
}

export async function evaluateModel(source: string, dataset: ShardDataset, options: EvalModelOptions): Promise<EvalResult> {
  const batch = Math.min(options.batchSize ?? 8, dataset.numRecords || 1);
  const opened = await loadModel(source, options, async (config, params) => {
    checkDataFitsModel(dataset, config); // before reading any weights
    return openEvalEngine(config, params, { backend: options.backend, threads: options.threads, batch, length: dataset.blockSize - 1, log: options.log });
  });
  try {
    for (const name of opened.ignored) options.onIgnored?.(name);
    dataset.requireTokenizer(await tokenizerIdentityOf(opened.tokenizerDir), "the model's tokenizer");
    return await evaluate(opened.model, dataset, { ...options, batchSize: batch });
  } finally {
    opened.model.dispose();
  }
}
