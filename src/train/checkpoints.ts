/**
 * A training run's checkpoints: checkpoints/step-NNNNNN/ — each an HF model directory plus
 * optimizer.safetensors (Adam moments) and trainer_state.json (step, data position, lr, best eval
 * loss, config). checkpoints/latest is a symlink to the newest complete checkpoint, swapped
 * atomically; the last keep_last are kept.
 */
import { readdir, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsError, ToolError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';
import { loadCheckpoint, replaceableCheckpoint, saveCheckpoint } from '../formats/checkpoint.js';
import type { GPT2Config } from '../model/config.js';
import type { ParameterValues } from '../model/params.js';
import { readSafetensors, writeSafetensors } from '../formats/safetensors.js';
import type { AdamWState, SavedTensor } from './optimizer.js';
import { validateTrainConfig, type TrainConfig } from './config.js';

export const CHECKPOINTS = 'checkpoints';
export const LATEST = 'latest';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'trainer_state.json';
const STATE_FORMAT = 'gpt2-toolchain.trainer-state';

export interface TrainerState {
  /** Optimizer steps done. */
  step: number;
  /** Data position: epoch and records of it consumed. */
  epoch: number;
  offset: number;
  lr: number;
  best_eval_loss: number | null;
  tokens_seen: number;
  elapsed_s: number;
  config: TrainConfig;
}

export const checkpointName = (step: number) => `step-${String(step).padStart(6, '0')}`;
const exists = (path: string) => stat(path).then(() => true, () => false);

/** The step of the checkpoint checkpoints/latest points at; undefined when there is none. */
export async function latestStep(runDir: string): Promise<number | undefined> {
  const target = await readlink(join(runDir, CHECKPOINTS, LATEST)).catch(() => undefined);
  const m = target === undefined ? null : /^step-(\d+)$/.exec(target);
  return m ? Number(m[1]) : undefined;
}

export interface SavedRun {
  modelConfig: GPT2Config;
  values: ParameterValues;
  optimizer: AdamWState;
  state: TrainerState;
  tokenizerDir: string;
  dir: string;
}

export async function saveTrainingCheckpoint(
  runDir: string,
  run: Omit<SavedRun, 'dir' | 'tokenizerDir'> & { tokenizerDir: string; keepLast: number },
): Promise<string> {
  const root = join(runDir, CHECKPOINTS);
  const name = checkpointName(run.state.step);
  const dir = join(root, name);
  await saveCheckpoint(dir, run.modelConfig, run.values, {
    tokenizerDir: run.tokenizerDir,
    overwrite: replaceableCheckpoint(),
    extra: async (staged) => {
      const tensors = [...run.optimizer.m].flatMap(([param, m]) => [
        { name: `exp_avg.${param}`, shape: m.shape, data: m.data },
        { name: `exp_avg_sq.${param}`, shape: m.shape, data: run.optimizer.v.get(param)!.data },
      ]);
      await writeSafetensors(join(staged, OPTIMIZER_FILE), tensors, { metadata: { step: String(run.optimizer.step) } });
      const state = join(staged, STATE_FILE);
      await writeFile(state, `${JSON.stringify({ format: STATE_FORMAT, version: 1, ...run.state }, null, 2)}\n`).catch((err) => {
        throw fsError(err, join(dir, STATE_FILE));
      });
    },
  });
  // Point latest at it (a new symlink renamed over the old one: never a moment without one).
  const temp = join(root, `.${LATEST}.tmp-${process.pid}`);
  try {
    await rm(temp, { force: true });
    await symlink(name, temp);
    await rename(temp, join(root, LATEST));
    await prune(root, run.keepLast);
  } catch (err) {
    throw fsError(err, join(root, LATEST));
  }
  return dir;
}

/** Removes all but the newest keepLast step-* checkpoints. */
async function prune(root: string, keepLast: number): Promise<void> {
  const steps = (await readdir(root)).filter((n) => /^step-\d+$/.test(n)).sort();
  for (const old of steps.slice(0, Math.max(0, steps.length - keepLast))) await rm(join(root, old), { recursive: true, force: true });
}

/** The run's latest checkpoint: model, optimizer moments, trainer state. */
export async function loadLatest(runDir: string): Promise<SavedRun> {
  const link = join(runDir, CHECKPOINTS, LATEST);
  let target: string;
  try {
    target = await readlink(link);
  } catch {
    throw new ToolError(`${runDir}: no checkpoint to resume from (${join(CHECKPOINTS, LATEST)} is missing)`);
  }
  const dir = join(runDir, CHECKPOINTS, target);
  if (!(await exists(dir))) throw new ToolError(`${link} points to ${target}, which is missing`);
  const ck = await loadCheckpoint(dir);
  const state = await readState(join(dir, STATE_FILE));
  const optimizer = await readOptimizer(join(dir, OPTIMIZER_FILE), ck.values);
  return { modelConfig: ck.config, values: ck.values, optimizer, state, tokenizerDir: ck.tokenizerDir, dir };
}

async function readState(path: string): Promise<TrainerState> {
  const json = (await readJsonFile(path)) as Record<string, unknown>;
  if (json?.format !== STATE_FORMAT || json.version !== 1) throw new ToolError(`${path}: not a trainer state of this version`);
  const int = (key: string) => {
    const v = json[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new ToolError(`${path}: ${key} must be a non-negative integer`);
    return v;
  };
  const config = validateTrainConfig(json.config, `${path} (config)`);
  return {
    step: int('step'),
    epoch: int('epoch'),
    offset: int('offset'),
    lr: Number(json.lr),
    best_eval_loss: typeof json.best_eval_loss === 'number' ? json.best_eval_loss : null,
    tokens_seen: int('tokens_seen'),
    elapsed_s: Number(json.elapsed_s) || 0,
    config,
  };
}

async function readOptimizer(path: string, params: ParameterValues): Promise<AdamWState> {
  const file = await readSafetensors(path);
  const step = Number(file.metadata.step);
  if (!Number.isSafeInteger(step) || step < 0) throw new ToolError(`${path}: metadata has no valid step`);
  const m = new Map<string, SavedTensor>();
  const v = new Map<string, SavedTensor>();
  for (const [name, p] of params) {
    for (const [prefix, into] of [['exp_avg', m], ['exp_avg_sq', v]] as const) {
      const t = file.tensors.get(`${prefix}.${name}`);
      if (!t) throw new ToolError(`${path}: missing tensor ${prefix}.${name}`);
      if (t.shape.join(',') !== p.shape.join(',')) throw new ToolError(`${path}: tensor ${prefix}.${name} has shape [${t.shape.join(', ')}], the parameter has [${p.shape.join(', ')}]`);
      into.set(name, { shape: t.shape, data: t.data });
    }
  }
  return { step, m, v };
}
