/**
 * gpt2-train's loop: data → steps → metrics, evaluations and checkpoints, with exact resume.
 * The run directory layout is in run-dir.ts; one step is in step.ts.
 */
import { join } from 'node:path';
import type { ClassificationHead } from '../model/classification.js';
import type { GPT2Config } from '../model/config.js';
import { tokenizerIdentityOf } from '../model/open.js';
import type { ParameterValues } from '../model/params.js';
import { ToolError } from '../util/errors.js';
import { writeFileAtomic } from '../util/output.js';
import { BatchStream, batchesPerEpoch, checkEnoughRecords, type BatchPlan, type OrderedRecords } from './batches.js';
import { loadTrainingCheckpoint, saveTrainingCheckpoint, type SavedRun, type TrainerState } from './checkpoints.js';
import { configToYaml, type Path, type TrainConfig } from './config.js';
import { openClassifierTrainEngine, openTrainEngine, type TrainEngine } from './engine.js';
import type { AdamWState } from './optimizer.js';
import { checkDataFitsModel } from './evaluate.js';
import { lossPlotSvg, readMetrics } from './plot.js';
import { resumeConfig, type ConfigChange } from './resume.js';
import { CONFIG, MetricsLog, METRICS, PLOT, planRun, RunDir, type PlanOptions } from './run-dir.js';
import { classificationHead, initialModel, keepTokenizer, openData, taskData } from './run-start.js';
import { learningRate, warmupSteps, type ScheduleSpec } from './schedule.js';
import type { LoraRun, LoraStart } from './lora-run.js';

export interface TrainOptions {
  config: TrainConfig;
  resume?: boolean;
  overwrite?: boolean;
  /** Stop (with a checkpoint) after this step, leaving the schedule as configured. */
  stopAt?: number;
  /** For messages: where a config key's value came from (a config file, or the flag that set it). */
  sourceOf?: (key: Path) => string;
  /** Further input paths of the command (config files): a directory holding one is never replaced. */
  inputs?: readonly string[];
  /** Progress details (a caller showing a progress bar may drop them). */
  log?: (message: string) => void;
  /** What the user must see even beside a progress bar: the resume and what it changes. */
  info?: (message: string) => void;
  /** What the user must see, and may not expect: a run started again, a checkpoint other than latest. */
  warn?: (message: string) => void;
  /** Called after each step (progress bars). */
  onStep?: (info: { step: number; total: number; loss: number; lr: number; tokensPerS: number }) => void;
  /** Threads of the wasm training pass (default: one per core). */
  threads?: number;
  /** Polled after each step: a signal name asks the run to checkpoint and stop. */
  interrupted?: () => 'SIGINT' | 'SIGTERM' | undefined;
}

export interface TrainResult {
  steps: number;
  /** The last step's loss; NaN when no step ran (an already complete run). */
  finalLoss: number;
  bestEvalLoss: number | null;
  stoppedBy?: 'SIGINT' | 'SIGTERM' | 'stop-at';
  /** A resumed run that had already reached its last step: nothing was done. */
  alreadyComplete?: boolean;
  checkpoint?: string;
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const log = options.log ?? (() => {});
  const given = options.config;
  if (given.train_dataset.path === null) throw new ToolError('no training data: give --train-data DIR or train_dataset.path');
  const out = given.output_dir;

  // Everything is read and checked before anything is written: a start that fails on its inputs
  // leaves the output directory as it was.
  const inputs = [given.train_dataset.path, given.eval_dataset?.path, given.model.init_from, ...(options.inputs ?? [])].filter((p): p is string => !!p);
  const planOptions: PlanOptions = { resume: !!options.resume, overwrite: !!options.overwrite, inputs };
  const plan = await planRun(out, planOptions);
  let saved = plan.kind === 'resume' ? await loadTrainingCheckpoint(out, plan.step) : undefined;
  const resumed = saved && { state: saved.state, dir: saved.dir };
  const { config, changes } = resumed ? resumeConfig(resumed.state.config, given, out) : { config: given, changes: [] };
  // The weights (and a checkpoint's moments) are held only until the engine has its copy: for 124M
  // that is 0.5 GB (1.5 GB on a resume) that would otherwise stay alive beside it.
  let start: { modelConfig: GPT2Config; values?: ParameterValues; optimizer?: AdamWState; tokenizerDir: string; head?: ClassificationHead; lora?: LoraStart['lora'] } =
    saved ?? (await initialModel(config, options.info ?? log));
  saved = undefined;
  const { modelConfig, tokenizerDir: tokenizerFrom } = start;
  const lora: LoraRun | undefined = start.lora && { spec: start.lora.spec, base: start.lora.base };

  const data = taskData(
    config,
    await openData(config.train_dataset.path!, 'train_dataset', options.sourceOf),
    config.eval_dataset?.path ? await openData(config.eval_dataset.path, 'eval_dataset', options.sourceOf) : undefined,
  );
  const { train: trainData, eval: evalData } = data;
  const tokenizer = await tokenizerIdentityOf(tokenizerFrom);
  for (const data of [trainData, evalData]) data?.requireTokenizer(tokenizer, "the model's tokenizer");
  const batchPlan: BatchPlan = {
    batchSize: config.runner.batch_size,
    shuffle: config.train_dataset.shuffle,
    seed: config.seed,
    repeat: config.train_dataset.repeat,
    dropRemainder: config.train_dataset.drop_remainder,
  };
  checkEnoughRecords(trainData, batchPlan);
  const accumulation = config.runner.gradient_accumulation_steps;
  const total = config.runner.max_steps ?? Math.ceil((config.runner.epochs * batchesPerEpoch(trainData, batchPlan)) / accumulation);
  if (resumed && resumed.state.step >= total) {
    return { steps: resumed.state.step, finalLoss: NaN, bestEvalLoss: resumed.state.best_eval_loss, alreadyComplete: true, checkpoint: resumed.dir };
  }

  for (const data of [trainData, evalData]) if (data) checkDataFitsModel(data, modelConfig);
  const adamw = { betas: config.optimizer.betas, eps: config.optimizer.eps, weight_decay: config.optimizer.weight_decay };
  const length = Math.max(trainData.blockSize, evalData?.blockSize ?? 0) - 1;
  const engineOptions = { backend: config.backend, threads: options.threads, batch: batchPlan.batchSize, length, log: options.info ?? log, lora: start.lora };
  const common = { config, changes, resumed, batchPlan, total, tokenizerFrom, lora };
  // The task picks the engine and the records; the loop is the same for every task.
  const task =
    data.task === 'classification'
      ? {
          engine: await openClassifierTrainEngine(modelConfig, classificationHead(config, start, data.train), start.values!, adamw, engineOptions),
          trainData: data.train,
          evalData: data.eval,
          records: `labelled records of up to ${data.train.manifest.max_length} tokens`,
        }
      : { engine: await openTrainEngine(modelConfig, start.values!, adamw, engineOptions), trainData: data.train, evalData: data.eval, records: `records of ${data.train.blockSize - 1} tokens` };
  const engine: { loadOptimizer(state: AdamWState): void; dispose(): void } = task.engine;
  try {
    if (start.optimizer) engine.loadOptimizer(start.optimizer);
    start = { modelConfig, tokenizerDir: tokenizerFrom };
    const run = await RunDir.begin(out, plan, planOptions);
    if (plan.note) options.warn?.(plan.note);
    try {
      const result = await loop({ ...options, log }, { ...common, run, ...(task as Task<unknown, unknown>) });
      await run.release();
      return result;
    } catch (err) {
      await run.abandon();
      throw err;
    }
  } finally {
    engine.dispose();
  }
}

/** A task's engine and data: records of type R to train on, evaluation data of type D. */
interface Task<R, D> {
  engine: TrainEngine<R, D>;
  trainData: OrderedRecords<R>;
  evalData?: D;
  /** What a record is, for the log. */
  records: string;
}

interface Loop<R, D> extends Task<R, D> {
  config: TrainConfig;
  changes: ConfigChange[];
  resumed?: Pick<SavedRun, 'state' | 'dir'>;
  run: RunDir;
  batchPlan: BatchPlan;
  total: number;
  tokenizerFrom: string;
  /** A LoRA run's adapters: what its checkpoints save (the engine's values are their A and B). */
  lora?: LoraRun;
}

/** The steps, evaluations and checkpoints, in a run directory begun for them. */
async function loop<R, D>(options: TrainOptions & { log: (m: string) => void }, it: Loop<R, D>): Promise<TrainResult> {
  const { log } = options;
  const info = options.info ?? log;
  const { config, resumed, engine, trainData, evalData, total } = it;
  const out = it.run.dir;
  // The run keeps its own copy of the tokenizer files: checkpoints come and go (keep_last).
  const tokenizerDir = await keepTokenizer(out, it.tokenizerFrom);
  const s = config.lr_schedule;
  const schedule: ScheduleSpec = {
    type: s.type,
    lr: s.lr,
    end_lr: s.end_lr,
    power: s.power,
    warmup_steps: warmupSteps(s.warmup_steps, s.warmup_ratio, total),
    decay_steps: s.decay_steps ?? total,
  };

  const metrics = new MetricsLog(join(out, METRICS));
  if (resumed) {
    info(`resuming ${out} from step ${resumed.state.step} (${resumed.dir})`);
    await metrics.truncateAfter(resumed.state.step);
    if (it.changes.length > 0) {
      for (const c of it.changes) info(`resume changes ${c.key}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`);
      await metrics.append({ step: resumed.state.step, event: 'resume', changes: it.changes });
    }
  }
  // Always: an earlier resume from this checkpoint may have recorded changes this one does not make.
  await writeFileAtomic(join(out, CONFIG), configToYaml(config));
  const stream = new BatchStream(trainData, it.batchPlan, { epoch: resumed?.state.epoch ?? 0, offset: resumed?.state.offset ?? 0 });
  const accumulation = config.runner.gradient_accumulation_steps;
  let step = resumed?.state.step ?? 0;
  let best = resumed?.state.best_eval_loss ?? null;
  let tokensSeen = resumed?.state.tokens_seen ?? 0;
  const elapsedBefore = resumed?.state.elapsed_s ?? 0;
  const began = performance.now();
  const elapsed = () => elapsedBefore + (performance.now() - began) / 1000;
  let lastLoss = NaN;
  let lastCheckpoint: string | undefined;
  let lr = learningRate(schedule, Math.min(step, total - 1));
  const modelConfig = engine.config;
  log(`training ${modelConfig.n_layer} layers × ${modelConfig.n_embd} (vocab ${modelConfig.vocab_size}) for ${total} steps of ${it.batchPlan.batchSize}×${accumulation} ${it.records}`);

  const checkpoint = async () => {
    const state: TrainerState = { step, epoch: stream.position.epoch, offset: stream.position.offset, lr, best_eval_loss: best, tokens_seen: tokensSeen, elapsed_s: elapsed(), config };
    lastCheckpoint = await saveTrainingCheckpoint(out, {
      modelConfig,
      head: engine.head,
      lora: it.lora,
      values: await engine.values(),
      optimizer: await engine.optimizerState(),
      state,
      tokenizerDir,
      keepLast: config.checkpoint.keep_last,
    });
    log(`checkpoint ${lastCheckpoint}`);
  };
  const runEval = async () => {
    if (!evalData) return;
    const r = await engine.evaluate(evalData, { batchSize: config.eval.batch_size ?? it.batchPlan.batchSize, maxRecords: config.eval.max_records ?? undefined });
    if (best === null || r.loss < best) best = r.loss;
    await metrics.append({ step, ...r.metrics });
    log(`step ${step}: ${r.summary}`);
  };

  let stoppedBy: TrainResult['stoppedBy'];
  while (step < total) {
    const t0 = performance.now();
    lr = learningRate(schedule, step);
    const micro = [];
    for (let m = 0; m < accumulation; m++) micro.push(await stream.next());
    const result = await engine.step(micro, { lr, gradClip: config.optimizer.grad_clip, seed: config.seed, step });
    if (!Number.isFinite(result.loss)) {
      throw new ToolError(`loss is ${result.loss} at step ${step + 1}; stopping${lastCheckpoint || resumed ? ` (the last checkpoint, ${lastCheckpoint ?? resumed!.dir}, is kept)` : ''}`);
    }
    step++;
    it.run.started();
    lastLoss = result.loss;
    tokensSeen += result.tokens;
    const tokensPerS = result.tokens / ((performance.now() - t0) / 1000);
    if (step % config.logging.interval === 0 || step === total) {
      await metrics.append({ step, epoch: stream.position.epoch, loss: result.loss, lr, grad_norm: result.gradNorm, tokens_per_s: tokensPerS, elapsed_s: elapsed() });
    }
    options.onStep?.({ step, total, loss: result.loss, lr, tokensPerS });
    if (step === total) break; // the last step ends the run as usual, whatever asked it to stop
    if (config.eval.interval > 0 && step % config.eval.interval === 0) await runEval();
    const signal = options.interrupted?.();
    if (signal || step === options.stopAt) {
      stoppedBy = signal ?? 'stop-at';
      break;
    }
    if (config.checkpoint.interval > 0 && step % config.checkpoint.interval === 0) await checkpoint();
  }
  if (!stoppedBy) await runEval();
  await checkpoint();
  await plot(out);
  return { steps: step, finalLoss: lastLoss, bestEvalLoss: best, stoppedBy, checkpoint: lastCheckpoint };
}

/** loss.svg from metrics.jsonl. */
export async function plot(runDir: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const path = join(runDir, METRICS);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new ToolError(`${runDir}: no ${METRICS} (not a training run directory?)`);
  }
  const { train, eval: evalPoints } = readMetrics(text);
  const svg = lossPlotSvg(
    [
      { name: 'train', points: train },
      { name: 'eval', points: evalPoints },
    ],
    { title: `loss — ${runDir}` },
  );
  const out = join(runDir, PLOT);
  await writeFileAtomic(out, svg);
  return out;
}
