/**
 * What a training run starts from: the model's config and weights (random, or --init-from), the
 * classification head when the task has one, the data (checked against the task), and the run's
 * own copy of the tokenizer.
 */
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Task } from '../data/manifest.js';
import { openShards, requireTask, type ShardDataset } from '../data/shard-reader.js';
import { loadCheckpoint, readConfig } from '../formats/checkpoint.js';
import { isAdapterDir } from '../formats/peft.js';
import { orderedTargets } from '../model/lora.js';
import { initialScore, SCORE, type ClassificationHead } from '../model/classification.js';
import type { GPT2Config } from '../model/config.js';
import { initialParameters, type ParameterValues } from '../model/params.js';
import { pretrainedDir } from '../model/source.js';
import { builtinTokenizerDir } from '../tokenizer/tokenizer.js';
import { fsError, ToolError } from '../util/errors.js';
import { copyFileAtomic } from '../util/output.js';
import { modelOverrides, resolveModelConfig, type Path, type TrainConfig } from './config.js';
import { checkTrainingFits } from './fits.js';
import { loraSpecOf, presetNameOf, startLora, type LoraStart } from './lora-run.js';
import { TOKENIZER } from './run-dir.js';

export interface StartingModel {
  modelConfig: GPT2Config;
  /** Every parameter; with LoRA, the frozen base's (and a classifier's score). */
  values: ParameterValues;
  tokenizerDir: string;
  /** The head of a classification checkpoint it came from (init_from, or a resumed run). */
  head?: ClassificationHead;
  /** LoRA's adapters to train on the base, and the base's identity. */
  lora?: LoraStart['lora'];
}

/**
 * The model's config and starting weights: random from model.preset/model.config, or pretrained
 * from --init-from (a checkpoint, or a preset's installed weights: never random, see source.ts).
 * With a lora: section, init_from is the frozen base (or an adapter of ours to train further;
 * lora-run.ts); without one, the preset's pretrained weights are. A classifier needs score.weight: a classification checkpoint (or adapter) brings
 * its own (with as many labels as model.num_labels), anything else gets a fresh one,
 * N(0, initializer_range) from the seed, said in one line through `info`.
 */
export async function initialModel(config: TrainConfig, info: (m: string) => void): Promise<StartingModel> {
  const from = config.model.init_from;
  const spec = loraSpecOf(config);
  const numLabels = config.task === 'sequence_classification' ? config.model.num_labels : undefined;
  let start: StartingModel;
  if (spec) {
    // The base: init_from, else the preset's pretrained weights (run_gpt2_lora.yaml names gpt2).
    const preset = config.model.preset;
    const baseArg = from ?? preset;
    if (baseArg === null) throw new ToolError('LoRA trains adapters on a frozen pretrained model: set model.init_from (--init-from CHECKPOINT); on random weights they would learn nothing a full run would not');
    const key = from === null ? `model.preset ${preset} (LoRA's base: its pretrained weights; --init-from names another)` : 'model.init_from (--init-from)';
    const dir = await pretrainedDir(baseArg, { flag: key });
    start = await startLora(dir, spec, { what: `${from === null ? 'model.preset' : 'model.init_from'} ${baseArg}`, name: presetNameOf(baseArg, dir), seed: config.seed, modelOverrides: modelOverrides(config), numLabels, backend: config.backend });
    const trained = [...start.lora!.values.values()].reduce((n, v) => n + v.data.length, 0);
    info(`LoRA rank ${spec.rank}, alpha ${spec.alpha} on ${orderedTargets(spec).join(', ')}: ${trained} adapter parameters train, the base ${start.lora!.base.path} stays frozen`);
  } else if (from !== null) {
    const dir = await pretrainedDir(from, { flag: 'model.init_from (--init-from)', randomHint: `set model.preset: ${from} without init_from` });
    if (await isAdapterDir(dir)) throw new ToolError(`model.init_from ${from} is a LoRA adapter: train it further with a lora: section, or start from the merged model (convert-weights BASE OUT --lora ${from})`);
    checkTrainingFits((await readConfig(dir)).config, `model.init_from ${from}`, { backend: config.backend });
    const ck = await loadCheckpoint(dir);
    start = { modelConfig: { ...ck.config, ...modelOverrides(config) }, values: ck.values, tokenizerDir: ck.tokenizerDir, ...(ck.head ? { head: ck.head } : {}) };
  } else {
    const modelConfig = resolveModelConfig(config);
    checkTrainingFits(modelConfig, config.model.preset === null ? 'the model' : `model.preset ${config.model.preset}`, { backend: config.backend });
    start = { modelConfig, values: initialParameters(modelConfig, config.seed), tokenizerDir: builtinTokenizerDir() };
  }
  if (config.task !== 'sequence_classification') return start;
  const n = config.model.num_labels;
  if (start.head) {
    if (start.head.num_labels !== n) throw new ToolError(`model.init_from ${from}: its score head has ${start.head.num_labels} labels, model.num_labels is ${n}`);
    return start;
  }
  const score = initialScore(start.modelConfig, { num_labels: n }, config.seed);
  start.values.set(SCORE, score);
  const std = start.modelConfig.initializer_range;
  info(`${from === null ? 'random init' : `init_from ${from}: a language model`}; ${SCORE} [${score.shape.join(', ')}] initialised N(0, ${std}) from seed ${config.seed}`);
  return start;
}

/** What needs the data, in requireTask's message ("<dir> holds …; a causal LM needs …"). */
export const LM = 'a causal LM';
export const CLASSIFIER = 'a classifier';

/** A run's data, of its task's kind. */
export type TaskData =
  | { task: 'causal_lm'; train: ShardDataset<'causal_lm'>; eval?: ShardDataset<'causal_lm'> }
  | { task: 'classification'; train: ShardDataset<'classification'>; eval?: ShardDataset<'classification'> };

/**
 * The data as the task's: data made for the other task is refused, and for a classifier data with
 * another number of labels than model.num_labels.
 */
export function taskData(config: TrainConfig, train: ShardDataset<Task>, evalData: ShardDataset<Task> | undefined): TaskData {
  // The message names the directory, so it says which of the two is wrong.
  if (config.task === 'causal_lm') {
    return { task: 'causal_lm', train: requireTask(train, 'causal_lm', LM), eval: evalData && requireTask(evalData, 'causal_lm', LM) };
  }
  const data = { task: 'classification' as const, train: requireTask(train, 'classification', CLASSIFIER), eval: evalData && requireTask(evalData, 'classification', CLASSIFIER) };
  for (const d of [data.train, data.eval]) {
    if (d && d.manifest.num_labels !== config.model.num_labels) {
      throw new ToolError(`${d.dir}: ${d.manifest.num_labels} labels (manifest num_labels), but model.num_labels is ${config.model.num_labels}; set --set model.num_labels=${d.manifest.num_labels}`);
    }
  }
  return data;
}

/** The head a classifier trains with: labels named by the data (they must be the starting checkpoint's), GPT-2's pad = eos. */
export function classificationHead(config: TrainConfig, start: Pick<StartingModel, 'head' | 'modelConfig'>, data: ShardDataset<'classification'>): ClassificationHead {
  const named = data.manifest.labels;
  const had = start.head?.labels;
  if (had && named.join('\u0000') !== had.join('\u0000')) {
    throw new ToolError(`${data.dir}: labels ${named.join(', ')}, but the model's head has ${had.join(', ')}`);
  }
  return { num_labels: config.model.num_labels, labels: named, pad_token_id: start.head?.pad_token_id ?? start.modelConfig.eos_token_id };
}

/**
 * Opens the shards a config key names (either task's; see taskData); a failure says which key
 * gave the path, from where, and which flag overrides it.
 */
export async function openData(path: string, key: 'train_dataset' | 'eval_dataset', sourceOf: ((key: Path) => string) | undefined): Promise<ShardDataset<Task>> {
  try {
    return await openShards(path);
  } catch (err) {
    const source = sourceOf?.([key, 'path']);
    if (!(err instanceof ToolError) || source === undefined || source.startsWith('--')) throw err;
    const flag = key === 'train_dataset' ? '--train-data' : '--eval-data';
    const skip = key === 'eval_dataset' ? ', or --set eval_dataset=null trains without evaluation' : '';
    throw new ToolError(`${err.message} (${key}.path in ${source}; ${flag} DIR overrides it${skip})`, { cause: err });
  }
}

/** OUT/tokenizer: vocab.json + merges.txt copied from `from` unless already there (each file atomically). */
export async function keepTokenizer(out: string, from: string): Promise<string> {
  const dir = join(out, TOKENIZER);
  for (const name of ['vocab.json', 'merges.txt']) {
    const path = join(dir, name);
    if (await stat(path).then(() => true, () => false)) continue;
    await mkdir(dir, { recursive: true }).catch((err) => {
      throw fsError(err, dir);
    });
    await copyFileAtomic(join(from, name), path);
  }
  return dir;
}
