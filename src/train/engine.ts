/**
 * How training and evaluation run, decided in one place (chooseSequenceEngine) and said on stderr
 * with the reason:
 *
 * - on wasm (asked for, or where 'auto' lands), the full-sequence pass of our own (PassTrainer:
 *   weights, gradients, AdamW's moments and activations in one shared wasm memory, products on
 *   every core through the wasm GEMM; tfjs is not even loaded when wasm was asked for), when it
 *   can run the model (widths in multiples of 4, within wasm's 4 GiB), dropout included;
 * - otherwise GPT2 on the selected tfjs backend (trainStep, AdamW, evaluate's tfjsScorer).
 *
 * Both compute the same step (tested against each other and against PyTorch), and checkpoints
 * from either resume on either.
 */
import { availableParallelism } from 'node:os';
import { pooledGemm } from '../backend/kernel-pool.js';
import { requestsWasm, selectBackend, type BackendName, type SelectedBackend } from '../backend/select.js';
import type { TokenRecord } from '../data/records.js';
import type { GPT2Config } from '../model/config.js';
import { GPT2 } from '../model/gpt2.js';
import type { ParameterSources, ParameterValues } from '../model/params.js';
import type { PassShape } from '../model/train-memory.js';
import { tfjsScorer, type Scorer } from './evaluate.js';
import { AdamW, type AdamWSpec, type AdamWState } from './optimizer.js';
import { passLimit, PassTrainer } from './pass-trainer.js';
import { trainStep, type StepResult } from './step.js';

export type SequenceEngine = 'wasm-pass' | 'tfjs';

/** The engine for a model on a backend at a shape: our pass where it can run the model, else tfjs; and why. */
export function chooseSequenceEngine(config: GPT2Config, backend: string, shape: PassShape): { engine: SequenceEngine; why: string } {
  if (backend !== 'wasm') return { engine: 'tfjs', why: `backend ${backend}` };
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
}

/** A model that trains: what the trainer's loop needs, whichever engine runs it. */
export interface TrainEngine extends Scorer {
  readonly description: string;
  step(microBatches: TokenRecord[][], options: { lr: number; gradClip: number; seed: number; step: number }): Promise<StepResult>;
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

/** A model to train from `values`, on the engine chooseSequenceEngine picks. */
export async function openTrainEngine(config: GPT2Config, values: ParameterValues, adamw: AdamWSpec, options: EngineOptions): Promise<TrainEngine> {
  const { name, selected } = await backendOf(options, true);
  const choice = chooseSequenceEngine(config, name, { batch: options.batch, length: options.length, training: true });
  let engine: TrainEngine;
  if (choice.engine === 'wasm-pass') {
    const threads = options.threads ?? availableParallelism();
    const pass = PassTrainer.create(config, values, { batch: options.batch, length: options.length, optimizer: adamw, gemm: pooledGemm(threads) });
    engine = {
      description: passDescription(threads),
      config,
      step: async (micro, o) => pass.trainStep(micro, o),
      score: (records) => pass.score(records),
      firstNonFinite: () => pass.firstNonFinite(),
      values: async () => pass.values(),
      optimizerState: async () => pass.optimizerState(),
      loadOptimizer: (state) => pass.loadOptimizer(state),
      dispose: () => pass.dispose(),
    };
  } else {
    const { tf } = selected ?? (await selectBackend(options.backend, options.log, { gradients: true }));
    const model = GPT2.fromValues(tf, config, values, { trainable: true });
    const optimizer = new AdamW(tf, model.params as Map<string, never>, adamw);
    const scorer = tfjsScorer(model);
    engine = {
      description: `GPT2 on tfjs (${tf.getBackend()})`,
      ...scorer,
      step: (micro, o) => trainStep(model, optimizer, micro, o),
      values: () => model.values(),
      optimizerState: () => optimizer.state(),
      loadOptimizer: (state) => optimizer.load(state),
      dispose: () => {
        optimizer.dispose();
        model.dispose();
      },
    };
  }
  options.log?.(`training: ${engine.description} (${choice.why})`);
  return engine;
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
