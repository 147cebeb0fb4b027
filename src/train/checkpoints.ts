/**
 * A training run's checkpoints: checkpoints/step-NNNNNN/ — each an HF model directory (a LoRA
 * run's: a PEFT adapter directory, lora-run.ts) plus optimizer.safetensors (Adam moments of what
 * trains) and trainer_state.json (step, data position, lr, best eval loss, config), staged and
 * renamed into place whole. checkpoints/latest is a symlink to the newest,
 * swapped atomically; the last keep_last are kept. A run killed between a checkpoint and the swap,
 * or copied without its symlinks, has no (or an older) latest: its step directories still count.
 */
import { readdir, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsError, ToolError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';
import { CONFIG_FILE, loadCheckpoint, replaceableCheckpoint, saveCheckpoint, WEIGHTS_FILE } from '../formats/checkpoint.js';
import { tempPathFor } from '../util/staging.js';
import type { ClassificationHead } from '../model/classification.js';
import type { GPT2Config } from '../model/config.js';
import type { ParameterValues } from '../model/params.js';
import { readSafetensors, writeSafetensors } from '../formats/safetensors.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, isAdapterDir, replaceableAdapter, saveLoraAdapter } from '../formats/peft.js';
import type { AdamWState, SavedTensor } from './optimizer.js';
import { modelOverrides, validateTrainConfig, type TrainConfig } from './config.js';
import { loraSpecOf, loraTrainable, startLora, type LoraRun, type LoraStart } from './lora-run.js';

export const CHECKPOINTS = 'checkpoints';
export const LATEST = 'latest';
const OPTIMIZER_FILE = 'optimizer.safetensors';
const STATE_FILE = 'trainer_state.json';
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
/** The step a checkpoints/ entry is named for (step-NNNNNN); undefined for any other name. */
export function stepOf(name: string): number | undefined {
  const m = /^step-(\d+)$/.exec(name);
  return m && checkpointName(Number(m[1])) === name ? Number(m[1]) : undefined;
}
const exists = (path: string) => stat(path).then(() => true, () => false);
/** What every checkpoint a run can resume from holds: a model's, or a LoRA run's. */
const COMPLETE = [
  [CONFIG_FILE, WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE],
  [ADAPTER_CONFIG, ADAPTER_WEIGHTS, OPTIMIZER_FILE, STATE_FILE],
];

async function isComplete(dir: string): Promise<boolean> {
  for (const files of COMPLETE) if ((await Promise.all(files.map((name) => exists(join(dir, name))))).every(Boolean)) return true;
  return false;
}

export interface RunCheckpoints {
  /** Every checkpoints/step-* entry, complete or not, oldest first. */
  names: string[];
  /** The step to resume from: latest's, else the newest complete step directory's. */
  step?: number;
  /** Set when `step` does not come from latest: why not. */
  latestProblem?: string;
}

/** The checkpoints of a run directory, read only. */
export async function findCheckpoints(runDir: string): Promise<RunCheckpoints> {
  const root = join(runDir, CHECKPOINTS);
  const names = (await readdir(root).catch(() => [] as string[])).filter((n) => stepOf(n) !== undefined).sort((a, b) => stepOf(a)! - stepOf(b)!);
  const target = await readlink(join(root, LATEST)).catch(() => undefined);
  const linked = target === undefined ? undefined : stepOf(target);
  if (linked !== undefined && names.includes(target!) && (await isComplete(join(root, target!)))) return { names, step: linked };
  const latestProblem = target === undefined ? `${join(CHECKPOINTS, LATEST)} is missing` : `${join(CHECKPOINTS, LATEST)} points to ${target}, which is not a complete checkpoint`;
  for (const name of [...names].reverse()) {
    if (await isComplete(join(root, name))) return { names, step: stepOf(name), latestProblem };
  }
  return { names, latestProblem };
}

export interface SavedRun {
  modelConfig: GPT2Config;
  /** A classifier's head (its score.weight is in values). */
  head?: ClassificationHead;
  /** Every parameter; a LoRA run's: the base's (and the score), with its adapters in lora. */
  values: ParameterValues;
  lora?: LoraStart['lora'];
  optimizer: AdamWState;
  state: TrainerState;
  tokenizerDir: string;
  dir: string;
}

/**
 * Writes checkpoint step-N of a run: `values` are what trains (every parameter, or with `lora` the
 * adapters' A and B and a classifier's score), saved with the moments and the trainer state.
 */
export async function saveTrainingCheckpoint(
  runDir: string,
  run: Omit<SavedRun, 'dir' | 'tokenizerDir' | 'lora'> & { tokenizerDir: string; keepLast: number; lora?: LoraRun },
): Promise<string> {
  const root = join(runDir, CHECKPOINTS);
  const name = checkpointName(run.state.step);
  const dir = join(root, name);
  const extra = async (staged: string) => {
    const tensors = [...run.optimizer.m].flatMap(([param, m]) => [
      { name: `exp_avg.${param}`, shape: m.shape, data: m.data },
      { name: `exp_avg_sq.${param}`, shape: m.shape, data: run.optimizer.v.get(param)!.data },
    ]);
    await writeSafetensors(join(staged, OPTIMIZER_FILE), tensors, { metadata: { step: String(run.optimizer.step) } });
    const state = join(staged, STATE_FILE);
    await writeFile(state, `${JSON.stringify({ format: STATE_FORMAT, version: 1, ...run.state }, null, 2)}\n`).catch((err) => {
      throw fsError(err, join(dir, STATE_FILE));
    });
  };
  if (run.lora) {
    await saveLoraAdapter(dir, run.modelConfig, run.lora.spec, run.values, run.lora.base, { head: run.head, overwrite: replaceableAdapter([], [OPTIMIZER_FILE, STATE_FILE]), extra });
  } else {
    await saveCheckpoint(dir, run.modelConfig, run.values, { head: run.head, tokenizerDir: run.tokenizerDir, overwrite: replaceableCheckpoint(), extra });
  }
  // Point latest at it (a new symlink renamed over the old one: never a moment without one).
  const temp = tempPathFor(join(root, LATEST));
  try {
    await symlink(name, temp);
    await rename(temp, join(root, LATEST));
    await prune(root, run.keepLast);
  } catch (err) {
    throw fsError(err, join(root, LATEST));
  }
  return dir;
}

/**
 * Removes all but the newest keepLast step-* checkpoints, each renamed to a temporary name first:
 * a kill while deleting leaves a stale temporary, never a step directory with files missing.
 */
async function prune(root: string, keepLast: number): Promise<void> {
  const steps = (await readdir(root)).filter((n) => stepOf(n) !== undefined).sort((a, b) => stepOf(a)! - stepOf(b)!);
  for (const old of steps.slice(0, Math.max(0, steps.length - keepLast))) {
    const doomed = tempPathFor(join(root, old));
    await rename(join(root, old), doomed);
    await rm(doomed, { recursive: true, force: true });
  }
}

/** A run's checkpoint of `step`: model (a LoRA run's: base and adapters), optimizer moments, trainer state. */
export async function loadTrainingCheckpoint(runDir: string, step: number): Promise<SavedRun> {
  const dir = join(runDir, CHECKPOINTS, checkpointName(step));
  const state = await readState(join(dir, STATE_FILE));
  const spec = loraSpecOf(state.config);
  if ((await isAdapterDir(dir)) !== !!spec) throw new ToolError(`${dir}: ${spec ? 'a LoRA run holds adapter checkpoints' : 'a LoRA adapter in a run without a lora: section'}`);
  if (spec) {
    const numLabels = state.config.task === 'sequence_classification' ? state.config.model.num_labels : undefined;
    const start = await startLora(dir, spec, { what: dir, seed: state.config.seed, modelOverrides: modelOverrides(state.config), numLabels, backend: state.config.backend });
    const optimizer = await readOptimizer(join(dir, OPTIMIZER_FILE), loraTrainable(start.lora, start.values, start.head));
    return { ...start, optimizer, state, dir };
  }
  const ck = await loadCheckpoint(dir);
  const optimizer = await readOptimizer(join(dir, OPTIMIZER_FILE), ck.values);
  return { modelConfig: ck.config, ...(ck.head ? { head: ck.head } : {}), values: ck.values, optimizer, state, tokenizerDir: ck.tokenizerDir, dir };
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
