/**
 * gpt2-train's loop: data → steps → metrics, evaluations and checkpoints, with exact resume.
 * The run directory layout is in run-dir.ts; one step is in step.ts.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { selectBackend } from '../backend/select.js';
import { ShardDataset } from '../data/shard-reader.js';
import { GPT2 } from '../model/gpt2.js';
import type { GPT2Config } from '../model/config.js';
import { pretrainedDir } from '../model/source.js';
import { loadCheckpoint } from '../formats/checkpoint.js';
import { tokenizerIdentityOf } from '../model/open.js';
import { initialParameters, type ParameterValues } from '../model/params.js';
import { builtinTokenizerDir } from '../tokenizer/tokenizer.js';
import { ToolError } from '../util/errors.js';
import { BatchStream, batchesPerEpoch, type BatchPlan } from './batches.js';
import { configToYaml, resolveModelConfig, type TrainConfig } from './config.js';
import { checkDataFitsModel, evaluate } from './evaluate.js';
import { AdamW } from './optimizer.js';
import { lossPlotSvg, readMetrics } from './plot.js';
import { CONFIG, loadLatest, MetricsLog, METRICS, prepareRunDir, saveTrainingCheckpoint, type TrainerState } from './run-dir.js';
import { learningRate, warmupSteps, type ScheduleSpec } from './schedule.js';
import { trainStep } from './step.js';

export interface TrainOptions {
  config: TrainConfig;
  resume?: boolean;
  overwrite?: boolean;
  /** Stop (with a checkpoint) after this step, leaving the schedule as configured. */
  stopAt?: number;
  log?: (message: string) => void;
  warn?: (message: string) => void;
  /** Called after each step (progress bars). */
  onStep?: (info: { step: number; total: number; loss: number; lr: number; tokensPerS: number }) => void;
  /** Polled after each step: a signal name asks the run to checkpoint and stop. */
  interrupted?: () => 'SIGINT' | 'SIGTERM' | undefined;
}

export interface TrainResult {
  steps: number;
  finalLoss: number;
  bestEvalLoss: number | null;
  stoppedBy?: 'SIGINT' | 'SIGTERM' | 'stop-at';
  checkpoint?: string;
}

/**
 * The model's config and starting weights: random from model.preset/model.config, or pretrained
 * from --init-from (a checkpoint, or a preset's installed weights: never random, see source.ts).
 */
async function initialModel(config: TrainConfig): Promise<{ modelConfig: GPT2Config; values: ParameterValues; tokenizerDir: string }> {
  const from = config.model.init_from;
  if (from !== null) {
    const dir = await pretrainedDir(from, { flag: 'model.init_from (--init-from)', randomHint: `set model.preset: ${from} without init_from` });
    const ck = await loadCheckpoint(dir);
    const modelConfig = { ...ck.config, ...dropoutOverride(config) };
    return { modelConfig, values: ck.values, tokenizerDir: ck.tokenizerDir };
  }
  const modelConfig = resolveModelConfig(config);
  return { modelConfig, values: initialParameters(modelConfig, config.seed), tokenizerDir: builtinTokenizerDir() };
}

/** OUTPUT/tokenizer: vocab.json + merges.txt copied from `from` unless already there. */
async function keepTokenizer(out: string, from: string): Promise<string> {
  const { copyFile, mkdir, stat } = await import('node:fs/promises');
  const dir = join(out, 'tokenizer');
  if (await stat(join(dir, 'merges.txt')).then(() => true, () => false)) return dir;
  await mkdir(dir, { recursive: true });
  for (const name of ['vocab.json', 'merges.txt']) await copyFile(join(from, name), join(dir, name));
  return dir;
}

const dropoutOverride = (c: TrainConfig): Partial<GPT2Config> =>
  c.model.dropout === null ? {} : { resid_pdrop: c.model.dropout, embd_pdrop: c.model.dropout, attn_pdrop: c.model.dropout };

export async function train(options: TrainOptions): Promise<TrainResult> {
  const log = options.log ?? (() => {});
  let config = options.config;
  if (config.task !== 'causal_lm') throw new ToolError(`task ${config.task} is not implemented yet (only causal_lm)`);
  if (config.lora !== null) throw new ToolError('LoRA fine-tuning is not implemented yet (lora: must be null)');
  const out = config.output_dir;
  await prepareRunDir(out, { resume: !!options.resume, overwrite: !!options.overwrite });

  const resumed = options.resume ? await loadLatest(out) : undefined;
  if (resumed) {
    // The run continues as configured when it started; only how far it goes may change.
    const { max_steps } = config.runner;
    config = { ...resumed.state.config, runner: { ...resumed.state.config.runner, max_steps: max_steps ?? resumed.state.config.runner.max_steps } };
    log(`resuming ${out} from step ${resumed.state.step} (${resumed.dir})`);
  }
  const start = resumed ? { modelConfig: resumed.modelConfig, values: resumed.values, tokenizerDir: resumed.tokenizerDir } : await initialModel(config);
  const { modelConfig } = start;
  // The run keeps its own copy of the tokenizer files: checkpoints come and go (keep_last).
  const tokenizerDir = await keepTokenizer(out, start.tokenizerDir);

  if (config.train_dataset.path === null) throw new ToolError('no training data: give --train-data DIR or train_dataset.path');
  const trainData = await ShardDataset.open(config.train_dataset.path);
  const evalData = config.eval_dataset?.path ? await ShardDataset.open(config.eval_dataset.path) : undefined;
  const tokenizer = await tokenizerIdentityOf(tokenizerDir);
  for (const data of [trainData, evalData]) data?.requireTokenizer(tokenizer, "the model's tokenizer");

  const backend = await selectBackend(config.backend, log);
  const tf = backend.tf;
  const model = GPT2.fromValues(tf, modelConfig, start.values, { trainable: true });
  for (const data of [trainData, evalData]) if (data) checkDataFitsModel(data, model);
  const optimizer = new AdamW(tf, model.params as Map<string, never>, {
    betas: config.optimizer.betas,
    eps: config.optimizer.eps,
    weight_decay: config.optimizer.weight_decay,
  });
  if (resumed) optimizer.load(resumed.optimizer);

  const plan: BatchPlan = {
    batchSize: config.runner.batch_size,
    shuffle: config.train_dataset.shuffle,
    seed: config.seed,
    repeat: config.train_dataset.repeat,
    dropRemainder: config.train_dataset.drop_remainder,
  };
  const accumulation = config.runner.gradient_accumulation_steps;
  const total = config.runner.max_steps ?? Math.ceil((config.runner.epochs * batchesPerEpoch(trainData, plan)) / accumulation);
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
  if (resumed) await metrics.truncateAfter(resumed.state.step);
  else await writeFile(join(out, CONFIG), configToYaml(config));
  const stream = new BatchStream(trainData, plan, { epoch: resumed?.state.epoch ?? 0, offset: resumed?.state.offset ?? 0 });
  let step = resumed?.state.step ?? 0;
  let best = resumed?.state.best_eval_loss ?? null;
  let tokensSeen = resumed?.state.tokens_seen ?? 0;
  const elapsedBefore = resumed?.state.elapsed_s ?? 0;
  const began = performance.now();
  const elapsed = () => elapsedBefore + (performance.now() - began) / 1000;
  let lastLoss = NaN;
  let lastCheckpoint: string | undefined;
  let lr = learningRate(schedule, Math.min(step, total - 1));
  log(`training ${modelConfig.n_layer} layers × ${modelConfig.n_embd} (vocab ${modelConfig.vocab_size}) for ${total} steps of ${plan.batchSize}×${accumulation} records of ${trainData.blockSize - 1} tokens`);

  const checkpoint = async () => {
    const state: TrainerState = { step, epoch: stream.position.epoch, offset: stream.position.offset, lr, best_eval_loss: best, tokens_seen: tokensSeen, elapsed_s: elapsed(), config };
    lastCheckpoint = await saveTrainingCheckpoint(out, {
      modelConfig,
      values: await model.values(),
      optimizer: await optimizer.state(),
      state,
      tokenizerDir,
      keepLast: config.checkpoint.keep_last,
    });
    log(`checkpoint ${lastCheckpoint}`);
  };
  const runEval = async () => {
    if (!evalData) return;
    const r = await evaluate(model, evalData, { batchSize: config.eval.batch_size ?? plan.batchSize, maxRecords: config.eval.max_records ?? undefined });
    if (best === null || r.loss < best) best = r.loss;
    await metrics.append({ step, eval_loss: r.loss, eval_perplexity: r.perplexity, eval_tokens: r.tokens });
    log(`step ${step}: eval loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)}`);
  };

  let stoppedBy: TrainResult['stoppedBy'];
  try {
    while (step < total) {
      const t0 = performance.now();
      lr = learningRate(schedule, step);
      const micro = [];
      for (let m = 0; m < accumulation; m++) micro.push(await stream.next());
      const result = await trainStep(model, optimizer, micro, { lr, gradClip: config.optimizer.grad_clip, seed: config.seed, step });
      if (!Number.isFinite(result.loss)) {
        throw new ToolError(`loss is ${result.loss} at step ${step + 1}; stopping${lastCheckpoint || resumed ? ` (the last checkpoint, ${lastCheckpoint ?? resumed!.dir}, is kept)` : ''}`);
      }
      step++;
      lastLoss = result.loss;
      tokensSeen += result.tokens;
      const tokensPerS = result.tokens / ((performance.now() - t0) / 1000);
      if (step % config.logging.interval === 0 || step === total) {
        await metrics.append({ step, epoch: stream.position.epoch, loss: result.loss, lr, grad_norm: result.gradNorm, tokens_per_s: tokensPerS, elapsed_s: elapsed() });
      }
      options.onStep?.({ step, total, loss: result.loss, lr, tokensPerS });
      if (config.eval.interval > 0 && step % config.eval.interval === 0 && step < total) await runEval();
      const signal = options.interrupted?.();
      if (signal || step === options.stopAt) {
        stoppedBy = signal ?? 'stop-at';
        break;
      }
      if (config.checkpoint.interval > 0 && step % config.checkpoint.interval === 0 && step < total) await checkpoint();
    }
    if (!stoppedBy) await runEval();
    await checkpoint();
    await plot(out);
  } finally {
    optimizer.dispose();
    model.dispose();
  }
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
  const out = join(runDir, 'loss.svg');
  await writeFile(out, svg);
  return out;
}
