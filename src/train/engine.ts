/**
 * How training and evaluation run, decided in one place (chooseSequenceEngine) and said on stderr
 * with the reason:
 *
 * - on wasm (asked for, or where 'auto' lands), the full-sequence pass of our own (PassTrainer:
 *   weights, gradients, AdamW's moments and activations in one shared wasm memory, products on
 *   every core through the wasm GEMM; tfjs is not even loaded when wasm was asked for), when it
 *   can run the model (widths in multiples of 4, within wasm's 4 GiB), dropout included — for the
 *   causal-LM task only: it computes no other loss;
 * - otherwise GPT2 on the selected tfjs backend (trainStep with the task's loss, AdamW, evaluate's
 *   tfjsScorer or classify-eval's tfjsClassifier).
 *
 * Both compute the same step (tested against each other and against PyTorch), and checkpoints
 * from either resume on either. With LoRA (options.lora) both train only the adapters (and a
 * classifier's score) over a frozen base, and their values() are what trains.
 */
import { availableParallelism } from 'node:os';
import { pooledGemm } from '../backend/kernel-pool.js';
import { requestsWasm, selectBackend, type BackendName, type SelectedBackend, type Tf } from '../backend/select.js';
import type * as tfjs from '@tensorflow/tfjs';
import type { ShardDataset } from '../data/shard-reader.js';
import type { LabelledRecord, TokenRecord } from '../data/records.js';
import { SCORE, SequenceClassifier, type ClassificationHead } from '../model/classification.js';
import type { GPT2Config } from '../model/config.js';
import { checkWasmHolds } from './fits.js';
import { GPT2 } from '../model/gpt2.js';
import { LoraAdapter, type LoraSpec } from '../model/lora.js';
import type { ParameterSources, ParameterValues } from '../model/params.js';
import type { PassShape } from '../model/train-memory.js';
import { evaluateClassifier, tfjsClassifier, type ClassifierScorer, type ClassifyEvalOptions, type LabelledSource } from './classify-eval.js';
import { classificationLoss } from './classify-loss.js';
import type { Task } from './config-schema.js';
import { evaluate, tfjsScorer, type EvalOptions, type Scorer } from './evaluate.js';
import { lmLoss } from './lm-loss.js';
import { AdamW, type AdamWSpec, type AdamWState } from './optimizer.js';
import { passLimit, PassTrainer } from './pass-trainer.js';
import { trainStep, type StepResult } from './step.js';

export type SequenceEngine = 'wasm-pass' | 'tfjs';

/**
 * The engine for a task's model on a backend at a shape: our pass where it can run the model and
 * the task, else tfjs; and why.
 */
export function chooseSequenceEngine(config: GPT2Config, backend: string, shape: PassShape, task: Task = 'causal_lm'): { engine: SequenceEngine; why: string } {
  if (backend !== 'wasm') return { engine: 'tfjs', why: `backend ${backend}` };
  checkWasmHolds(config);
  if (task !== 'causal_lm') return { engine: 'tfjs', why: `${task.replace('_', ' ')}: the wasm pass computes only the causal-LM loss` };
  const limit = passLimit(config, shape);
  return limit ? { engine: 'tfjs', why: limit } : { engine: 'wasm-pass', why: 'backend wasm' };
}

export interface EngineOptions {
  backend?: BackendName | string;
  /** Threads of the wasm pass (default: one per core). */
  threads?: number;
  /** Records per pass (the micro-batch) and positions per record (block size − 1). */
  batch: number;
  length: number;
  log?: (message: string) => void;
  /** LoRA adapters to train (their A and B to start from) on frozen `values`. */
  lora?: { spec: LoraSpec; values: ParameterValues };
}

/** An evaluation as training records it: the loss (best_eval_loss), the metrics line's fields, a summary for the log. */
export interface TrainEval {
  loss: number;
  metrics: Record<string, unknown>;
  summary: string;
}

/**
 * A model that trains: what the trainer's loop needs, whichever engine and task run it. R is the
 * task's record, D its evaluation data.
 */
export interface TrainEngine<R = TokenRecord, D = ShardDataset> {
  readonly description: string;
  readonly config: GPT2Config;
  /** The classification head, saved with the weights. */
  readonly head?: ClassificationHead;
  step(microBatches: R[][], options: { lr: number; gradClip: number; seed: number; step: number }): Promise<StepResult>;
  evaluate(data: D, options: EvalOptions & ClassifyEvalOptions): Promise<TrainEval>;
  /** What trains, for saving: every parameter (the head's score included), or with LoRA the adapters' A and B (and the score). */
  values(): Promise<ParameterValues>;
  optimizerState(): Promise<AdamWState>;
  loadOptimizer(state: AdamWState): void;
  dispose(): void;
}

/** A model that evaluates (gpt2-eval). */
export interface EvalEngine extends Scorer {
  readonly description: string;
  dispose(): void;
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

/**
 * Asked for wasm: known without loading tfjs. Otherwise selecting the backend loads it, and may
 * land on wasm. Returns the backend's name and, when tfjs was loaded, the selection.
 */
async function backendOf(options: EngineOptions, gradients: boolean): Promise<{ name: string; selected?: SelectedBackend }> {
  if (requestsWasm(options.backend)) return { name: 'wasm' };
  const selected = await selectBackend(options.backend, options.log, { gradients });
  return { name: selected.name, selected };
}

/** The pass trainer's description, for the line on stderr. */
const passDescription = (threads: number) => `wasm pass of our own (SIMD, ${plural(threads, 'thread')})`;

/**
 * GPT-2 on tfjs to train: every parameter a variable, or with LoRA a frozen base with trainable
 * adapters. `trainable` holds the variables by the names the optimizer state and values() use.
 */
function tfjsTrainable(tf: Tf, config: GPT2Config, values: ParameterValues, lora: EngineOptions['lora']) {
  const gpt2 = GPT2.fromValues(tf, config, values, { trainable: !lora });
  if (!lora) return { gpt2, trainable: gpt2.params as Map<string, tfjs.Variable>, values: () => gpt2.values(), dispose: () => gpt2.dispose() };
  const adapter = LoraAdapter.fromValues(tf, config, lora.spec, lora.values, { trainable: true });
  gpt2.adapter = adapter;
  return {
    gpt2,
    trainable: adapter.params as Map<string, tfjs.Variable>,
    values: () => adapter.values(),
    dispose: () => {
      adapter.dispose();
      gpt2.dispose();
    },
  };
}

/** What every task's tfjs engine does alike: what trains and AdamW's state in and out. */
function tfjsState(model: { values(): Promise<ParameterValues>; dispose(): void }, optimizer: AdamW) {
  return {
    values: () => model.values(),
    optimizerState: () => optimizer.state(),
    loadOptimizer: (state: AdamWState) => optimizer.load(state),
    dispose: () => {
      optimizer.dispose();
      model.dispose();
    },
  };
}

/** The LM evaluation as training logs it. */
async function lmEval(scorer: Scorer, data: ShardDataset, options: EvalOptions): Promise<TrainEval> {
  const r = await evaluate(scorer, data, options);
  return {
    loss: r.loss,
    metrics: { eval_loss: r.loss, eval_perplexity: r.perplexity, eval_tokens: r.tokens },
    summary: `eval loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)}`,
  };
}

/** A causal LM to train from `values`, on the engine chooseSequenceEngine picks. */
export async function openTrainEngine(config: GPT2Config, values: ParameterValues, adamw: AdamWSpec, options: EngineOptions): Promise<TrainEngine> {
  const { name, selected } = await backendOf(options, true);
  const choice = chooseSequenceEngine(config, name, { batch: options.batch, length: options.length, training: true });
  let engine: TrainEngine;
  if (choice.engine === 'wasm-pass') {
    const threads = options.threads ?? availableParallelism();
    const pass = PassTrainer.create(config, values, { batch: options.batch, length: options.length, optimizer: adamw, gemm: pooledGemm(threads), lora: options.lora });
    const scorer: Scorer = { config, score: (records) => pass.score(records), firstNonFinite: () => pass.firstNonFinite() };
    engine = {
      description: passDescription(threads),
      config,
      step: async (micro, o) => pass.trainStep(micro, o),
      evaluate: (data, o) => lmEval(scorer, data, o),
      values: async () => (options.lora ? pass.loraValues() : pass.values()),
      optimizerState: async () => pass.optimizerState(),
      loadOptimizer: (state) => pass.loadOptimizer(state),
      dispose: () => pass.dispose(),
    };
  } else {
    const { tf } = selected ?? (await selectBackend(options.backend, options.log, { gradients: true }));
    const model = tfjsTrainable(tf, config, values, options.lora);
    const optimizer = new AdamW(tf, model.trainable, adamw);
    engine = {
      description: `GPT2 on tfjs (${tf.getBackend()})`,
      config,
      step: (micro, o) => trainStep(tf, model.trainable, optimizer, micro, lmLoss(model.gpt2), o),
      evaluate: (data, o) => lmEval(tfjsScorer(model.gpt2), data, o),
      ...tfjsState(model, optimizer),
    };
  }
  options.log?.(`training: ${engine.description} (${choice.why})`);
  return engine;
}

/** A classifier to train from `values` (score.weight included): on tfjs, whatever the backend (see chooseSequenceEngine). */
export async function openClassifierTrainEngine(
  config: GPT2Config,
  head: ClassificationHead,
  values: ParameterValues,
  adamw: AdamWSpec,
  options: EngineOptions,
): Promise<TrainEngine<LabelledRecord, LabelledSource>> {
  const { name, selected } = await backendOf(options, true);
  const choice = chooseSequenceEngine(config, name, { batch: options.batch, length: options.length, training: true }, 'sequence_classification');
  const { tf } = selected ?? (await selectBackend(options.backend, options.log, { gradients: true }));
  const base = tfjsTrainable(tf, config, values, options.lora);
  const model = SequenceClassifier.fromValues(base.gpt2, head, values, { trainable: true });
  // The score trains fully, with LoRA too (PEFT's modules_to_save).
  const trainable = new Map([...base.trainable, [SCORE, model.score as tfjs.Variable]]);
  const optimizer = new AdamW(tf, trainable, adamw);
  const loss = classificationLoss(model);
  const state = {
    values: async () => new Map([...(await base.values()), [SCORE, { shape: model.score.shape, data: (await model.score.data()) as Float32Array }]]),
    dispose: () => {
      model.score.dispose();
      base.dispose();
    },
  };
  const engine: TrainEngine<LabelledRecord, LabelledSource> = {
    description: `GPT2ForSequenceClassification on tfjs (${tf.getBackend()})`,
    config,
    head,
    step: (micro, o) => trainStep(tf, trainable, optimizer, micro, loss, o),
    evaluate: async (data, o) => {
      const r = await evaluateClassifier(tfjsClassifier(model), data, o);
      return {
        loss: r.loss,
        metrics: { eval_loss: r.loss, eval_accuracy: r.accuracy, eval_macro_f1: r.macro_f1, eval_records: r.records, eval_per_class: r.per_class },
        summary: `eval loss ${r.loss.toFixed(4)}, accuracy ${r.accuracy.toFixed(4)}, macro-F1 ${r.macro_f1.toFixed(4)}`,
      };
    },
    ...tfjsState(state, optimizer),
  };
  options.log?.(`training: ${engine.description} (${choice.why})`);
  return engine;
}

/** A classifier to evaluate or run (gpt2-eval, gpt2-classify), its weights read from `params`. */
export async function openClassifierEngine(config: GPT2Config, head: ClassificationHead, params: ParameterSources, options: EngineOptions): Promise<ClassifierScorer & { description: string; dispose(): void }> {
  const { name, selected } = await backendOf(options, false);
  const choice = chooseSequenceEngine(config, name, { batch: options.batch, length: options.length, training: false }, 'sequence_classification');
  const { tf } = selected ?? (await selectBackend(options.backend, options.log, { gradients: false }));
  const model = await SequenceClassifier.fromSources(await GPT2.fromSources(tf, config, params), head, params);
  const description = `GPT2ForSequenceClassification on tfjs (${tf.getBackend()})`;
  options.log?.(`classification: ${description} (${choice.why})`);
  return { description, ...tfjsClassifier(model), dispose: () => model.dispose() };
}

/** A model to evaluate, its weights read from `params` straight into the chosen engine. */
export async function openEvalEngine(config: GPT2Config, params: ParameterSources, options: EngineOptions): Promise<EvalEngine> {
  const { name, selected } = await backendOf(options, false);
  const choice = chooseSequenceEngine(config, name, { batch: options.batch, length: options.length, training: false });
  let engine: EvalEngine;
  if (choice.engine === 'wasm-pass') {
    const threads = options.threads ?? availableParallelism();
    const pass = await PassTrainer.fromSources(config, params, { batch: options.batch, length: options.length, gemm: pooledGemm(threads) });
    engine = { description: passDescription(threads), config, score: (r) => pass.score(r), firstNonFinite: () => pass.firstNonFinite(), dispose: () => pass.dispose() };
  } else {
    const { tf } = selected ?? (await selectBackend(options.backend, options.log, { gradients: false }));
    const model = await GPT2.fromSources(tf, config, params);
    engine = { description: `GPT2 on tfjs (${tf.getBackend()})`, ...tfjsScorer(model), dispose: () => model.dispose() };
  }
  options.log?.(`evaluation: ${engine.description} (${choice.why})`);
  return engine;
}
