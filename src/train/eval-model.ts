/**
 * gpt2-eval (and gpt2-classify's model) as library calls: a model (checkpoint directory or preset,
 * see model/source.ts) on record shards, through the engine chooseSequenceEngine picks, weights
 * streamed into it. A classification checkpoint is evaluated as a classifier, a plain one as a
 * language model; data made for the other task is refused.
 */
import type { Task } from '../data/manifest.js';
import { requireTask, type ShardDataset } from '../data/shard-reader.js';
import { loadModel, tokenizerIdentityOf, type OpenOptions } from '../model/open.js';
import { ToolError } from '../util/errors.js';
import { evaluateClassifier, type ClassifierScorer, type ClassifyEvalOptions } from './classify-eval.js';
import { openClassifierEngine, openEvalEngine, type EvalEngine } from './engine.js';
import { partRange, type PartSpec } from '../util/parts.js';
import { checkDataFitsModel, evaluate, evaluateSums, type EvalOptions, type EvalResult, type EvalSums } from './evaluate.js';
import { CLASSIFIER, LM } from './run-start.js';

export interface EvalModelOptions extends OpenOptions, EvalOptions {
  threads?: number;
  /** Tensors in the checkpoint that are not GPT-2 parameters: reported, not loaded. */
  onIgnored?: (name: string) => void;
}

export async function evaluateModel(source: string, data: ShardDataset<Task>, options: EvalModelOptions): Promise<EvalResult> {
  return withLanguageModel(source, data, options, (scorer, dataset, batchSize) => evaluate(scorer, dataset, { ...options, batchSize }));
}

/** Part `part` of a split evaluation (eval-parts.ts): its slice of the (--max-records-capped) records, as sums. */
export async function evaluateModelPart(source: string, data: ShardDataset<Task>, options: EvalModelOptions & { part: PartSpec }): Promise<EvalSums> {
  const total = Math.min(data.numRecords, options.maxRecords ?? Infinity);
  const range = partRange(options.part, total);
  return withLanguageModel(source, data, options, (scorer, dataset, batchSize) => evaluateSums(scorer, dataset, { ...options, batchSize, range }));
}

/** The language model `source` names on the engine chosen for `data`, given to `run`, disposed after. */
async function withLanguageModel<T>(source: string, data: ShardDataset<Task>, options: EvalModelOptions, run: (scorer: EvalEngine, dataset: ShardDataset, batchSize: number) => Promise<T>): Promise<T> {
  const dataset = requireTask(data, 'causal_lm', LM);
  const batch = Math.min(options.batchSize ?? 8, dataset.numRecords || 1);
  const opened = await loadModel(source, options, async (config, params) => {
    checkDataFitsModel(dataset, config); // before reading any weights
    return openEvalEngine(config, params, { backend: options.backend, threads: options.threads, batch, length: dataset.blockSize - 1, log: options.log });
  });
  try {
    for (const name of opened.ignored) options.onIgnored?.(name);
    dataset.requireTokenizer(await tokenizerIdentityOf(opened.tokenizerDir), "the model's tokenizer");
    return await run(opened.model, dataset, batch);
  } finally {
    opened.model.dispose();
  }
}

/** A classification checkpoint, opened to classify. */
export interface OpenedClassifier {
  model: ClassifierScorer & { description: string; dispose(): void };
  tokenizerDir: string;
  ignored: string[];
}

/**
 * Opens the classifier `source` names (a classification checkpoint, or a classifier's LoRA adapter
 * with options.lora or as the source); anything else (a language model, a random preset) is refused.
 */
export async function openClassifierModel(source: string, options: OpenOptions & { threads?: number; batch: number }): Promise<OpenedClassifier> {
  const notClassifier = `${source}${options.lora ? ` with --lora ${options.lora}` : ''} is not a classifier (no GPT2ForSequenceClassification in its config.json, nor a classifier's adapter); train one with gpt2-train and task: sequence_classification`;
  if (options.randomInit) throw new ToolError(notClassifier);
  return loadModel(source, options, async (config, params, head) => {
    if (!head) throw new ToolError(notClassifier);
    return openClassifierEngine(config, head, params, { backend: options.backend, threads: options.threads, batch: options.batch, length: config.n_positions, log: options.log });
  });
}

/** gpt2-eval's line for a classifier. */
export interface ClassifierEvalResult {
  accuracy: number;
  loss: number;
  macro_f1: number;
  records: number;
}

export async function evaluateClassifierModel(source: string, data: ShardDataset<Task>, options: EvalModelOptions & ClassifyEvalOptions): Promise<ClassifierEvalResult> {
  const dataset = requireTask(data, 'classification', CLASSIFIER);
  const batch = Math.min(options.batchSize ?? 8, dataset.numRecords || 1);
  const opened = await openClassifierModel(source, { ...options, batch });
  try {
    for (const name of opened.ignored) options.onIgnored?.(name);
    dataset.requireTokenizer(await tokenizerIdentityOf(opened.tokenizerDir), "the model's tokenizer");
    checkDataFitsModel(dataset, opened.model.config);
    const r = await evaluateClassifier(opened.model, dataset, { ...options, batchSize: batch });
    return { accuracy: r.accuracy, loss: r.loss, macro_f1: r.macro_f1, records: r.records };
  } finally {
    opened.model.dispose();
  }
}
