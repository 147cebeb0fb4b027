/**
 * What a training run starts from: the model's config and weights (random, or --init-from), the
 * classification head when the task has one, the data (checked against the task), and the run's
 * own copy of the tokenizer.
 */
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ShardDataset } from '../data/shard-reader.js';
import { loadCheckpoint } from '../formats/checkpoint.js';
import { initialScore, SCORE, type ClassificationHead, defaultLabels } from '../model/classification.js';
import type { GPT2Config } from '../model/config.js';
import { initialParameters, type ParameterValues } from '../model/params.js';
import { pretrainedDir } from '../model/source.js';
import { builtinTokenizerDir } from '../tokenizer/tokenizer.js';
import { fsError, ToolError } from '../util/errors.js';
import { copyFileAtomic } from '../util/output.js';
import { resolveModelConfig, type Path, type TrainConfig } from './config.js';
import { TOKENIZER } from './run-dir.js';

export interface StartingModel {
  modelConfig: GPT2Config;
  values: ParameterValues;
  tokenizerDir: string;
  /** The head of a classification checkpoint it came from (init_from, or a resumed run). */
  head?: ClassificationHead;
}

const dropoutOverride = (c: TrainConfig): Partial<GPT2Config> =>
  c.model.dropout === null ? {} : { resid_pdrop: c.model.dropout, embd_pdrop: c.model.dropout, attn_pdrop: c.model.dropout };

/**
 * The model's config and starting weights: random from model.preset/model.config, or pretrained
 * from --init-from (a checkpoint, or a preset's installed weights: never random, see source.ts).
 * A classifier needs score.weight: a classification checkpoint brings its own (with as many labels
 * as model.num_labels), anything else gets a fresh one, N(0, initializer_range) from the seed, said
 * in one line through `info`.
 */
export async function initialModel(config: TrainConfig, info: (m: string) => void): Promise<StartingModel> {
  const from = config.model.init_from;
  let start: StartingModel;
  if (from !== null) {
    const dir = await pretrainedDir(from, { flag: 'model.init_from (--init-from)', randomHint: `set model.preset: ${from} without init_from` });
    const ck = await loadCheckpoint(dir);
    start = { modelConfig: { ...ck.config, ...dropoutOverride(config) }, values: ck.values, tokenizerDir: ck.tokenizerDir, ...(ck.head ? { head: ck.head } : {}) };
  } else {
    const modelConfig = resolveModelConfig(config);
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

/** A record-shard manifest's task fields (bpe-encode writes them for labelled input). */
interface TaskManifest {
  task?: string;
  num_labels?: number;
  labels?: string[];
}

const DATA_TASK = { causal_lm: 'causal_lm', sequence_classification: 'classification' } as const;

/** Refuses data made for another task, or with another number of labels than the model's. */
export function checkDataTask(data: ShardDataset, config: TrainConfig, key: string): void {
  const m = data.manifest as unknown as TaskManifest;
  const has = m.task ?? 'causal_lm';
  const want = DATA_TASK[config.task];
  if (has !== want) {
    const hint = want === 'classification' ? 'encode labelled input (bpe-encode --input-format tsv --label-column …)' : 'encode plain text (bpe-encode without --label-column)';
    throw new ToolError(`${data.dir}: holds ${has} records (manifest task), but task is ${config.task}; ${hint} for ${key}`);
  }
  if (want === 'classification' && m.num_labels !== config.model.num_labels) {
    throw new ToolError(`${data.dir}: ${m.num_labels} labels (manifest num_labels), but model.num_labels is ${config.model.num_labels}; set --set model.num_labels=${m.num_labels}`);
  }
}

/** The head a classifier trains with: labels named by the data (or the starting checkpoint), GPT-2's pad = eos. */
export function classificationHead(config: TrainConfig, start: Pick<StartingModel, 'head' | 'modelConfig'>, data: ShardDataset): ClassificationHead {
  const named = (data.manifest as unknown as TaskManifest).labels;
  const had = start.head?.labels;
  if (named && had && named.join('\u0000') !== had.join('\u0000')) {
    throw new ToolError(`${data.dir}: labels ${named.join(', ')}, but the model's head has ${had.join(', ')}`);
  }
  const n = config.model.num_labels;
  return { num_labels: n, labels: named ?? had ?? defaultLabels(n), pad_token_id: start.head?.pad_token_id ?? start.modelConfig.eos_token_id };
}

/**
 * Opens the shards a config key names; a failure says which key gave the path, from where, and
 * which flag overrides it.
 */
export async function openData(path: string, key: 'train_dataset' | 'eval_dataset', sourceOf: ((key: Path) => string) | undefined): Promise<ShardDataset> {
  try {
    return await ShardDataset.open(path);
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
