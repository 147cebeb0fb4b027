/**
 * Checkpoints are Hugging Face model directories: config.json, model.safetensors (F32, HF names,
 * no lm_head: it is tied), vocab.json + merges.txt. HF transformers opens them unchanged; anything
 * only we need (optimizer state, trainer state) lives in other files beside them.
 *
 * Loading is lenient where HF checkpoints differ and strict where a mistake would hide: names with
 * or without "transformer.", the attention-mask buffers ignored, an lm_head.weight accepted only
 * if it equals wte; a missing tensor or a wrong shape is an error naming the tensor.
 *
 * A classification checkpoint is the directory HF's GPT2ForSequenceClassification saves: its
 * config.json says so (architectures, num_labels, id2label/label2id, pad_token_id) and
 * model.safetensors adds score.weight [num_labels, n_embd] (model/classification.ts).
 */
import { copyFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ownedEntries, stageDir, type Replaceable } from '../util/atomic-dir.js';
import { fsError, outOfSpace, ToolError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';
import { builtinTokenizerDir } from '../tokenizer/tokenizer.js';
import { CLASSIFIER_ARCHITECTURE, headFromConfigJson, headToConfigJson, SCORE, scoreShape, type ClassificationHead } from '../model/classification.js';
import { configFromJson, configToJson, type GPT2Config } from '../model/config.js';
import { parameterShapes, PREFIX, type ParameterValues } from '../model/params.js';
import { openSafetensors, writeSafetensors, type LazyTensor, type Tensor32 } from './safetensors.js';
import { identifyWeightsFile, readWeightsFile } from './weights-file.js';

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';
export const TORCH_WEIGHTS_FILE = 'pytorch_model.bin';
/** model.safetensors metadata that marks a checkpoint as ours (HF ignores keys it does not know). */
const CREATED_BY = { created_by: 'gpt2-toolchain' };
/** Every file a checkpoint of ours may hold: the HF files and our own state beside them. */
const CHECKPOINT_FILES = new Set([CONFIG_FILE, WEIGHTS_FILE, 'vocab.json', 'merges.txt', 'mindformers.safetensors', 'optimizer.safetensors', 'trainer_state.json']);

const exists = (path: string) => stat(path).then(() => true, () => false);

/** A config.json's GPT-2 config and, for a classification checkpoint, its head. */
export function modelConfigFromJson(json: unknown, where: string): { config: GPT2Config; head?: ClassificationHead } {
  const config = configFromJson(json, where);
  const head = headFromConfigJson(json as Record<string, unknown>, where);
  return head ? { config, head } : { config };
}

/** Reads config.json of a model directory (a GGUF file: its metadata). */
export async function readConfig(dir: string): Promise<{ config: GPT2Config; head?: ClassificationHead }> {
  if (await isGgufFile(dir)) return { config: await (await import('./gguf-gpt2.js')).ggufConfig(dir) };
  const path = join(dir, CONFIG_FILE);
  return modelConfigFromJson(await readJsonFile(path), path);
}

/** The config.json a checkpoint of `config` (with a classification `head`) holds. */
export function checkpointConfigJson(config: GPT2Config, head?: ClassificationHead): Record<string, unknown> {
  return head ? { ...configToJson(config), ...headToConfigJson(head) } : configToJson(config);
}

/** The weights file of a model directory (model.safetensors, else pytorch_model.bin). */
export async function weightsPathIn(dir: string): Promise<string> {
  for (const name of [WEIGHTS_FILE, TORCH_WEIGHTS_FILE]) if (await exists(join(dir, name))) return join(dir, name);
  throw new ToolError(`${dir}: no ${WEIGHTS_FILE} or ${TORCH_WEIGHTS_FILE} (not a model directory?)`);
}

const BUFFER = /(^|\.)attn\.(bias|masked_bias)$/;

/**
 * Which stored tensor holds each parameter of config (and score.weight with a classification
 * head): names with or without "transformer.", causal-mask buffers skipped, shapes checked. `where`
 * names the source in errors; names that are neither parameters nor known buffers come back as
 * `ignored`.
 */
export function resolveNames<T extends { shape: number[] }>(tensors: Map<string, T>, config: GPT2Config, where: string, head?: ClassificationHead): { params: Map<string, T>; ignored: string[]; lmHead?: T } {
  const byName = new Map<string, T>();
  let lmHead: T | undefined;
  for (const [raw, t] of tensors) {
    if (raw === 'lm_head.weight') lmHead = t;
    else if (raw === SCORE) byName.set(raw, t);
    else if (!BUFFER.test(raw)) byName.set(raw.startsWith(PREFIX) ? raw : PREFIX + raw, t);
  }
  const params = new Map<string, T>();
  const expected = parameterShapes(config);
  if (head) {
    if (!byName.has(SCORE)) throw new ToolError(`${where}: missing tensor ${SCORE} (config.json says ${CLASSIFIER_ARCHITECTURE})`);
    expected.push([SCORE, scoreShape(config, head)]);
  }
  for (const [name, shape] of expected) {
    const t = byName.get(name);
    if (!t) throw new ToolError(`${where}: missing tensor ${name}`);
    if (t.shape.join(',') !== shape.join(',')) {
      throw new ToolError(`${where}: tensor ${name} has shape [${t.shape.join(', ')}], the config expects [${shape.join(', ')}]`);
    }
    params.set(name, t);
    byName.delete(name);
  }
  return { params, ignored: [...byName.keys()], lmHead };
}

/** GPT-2's head is tied: a stored lm_head.weight must equal wte. */
function checkTiedHead(lmHead: Float32Array, wte: Float32Array, where: string): void {
  if (lmHead.length !== wte.length || !lmHead.every((v, k) => v === wte[k])) {
    throw new ToolError(`${where}: lm_head.weight differs from transformer.wte.weight; GPT-2's LM head is tied to the embedding and an untied head is not supported`);
  }
}

/** HF tensors (in memory) → our parameter values for config (and the head's score). */
export function stateDictToParameters(tensors: Map<string, Tensor32>, config: GPT2Config, where: string, head?: ClassificationHead): { values: ParameterValues; ignored: string[] } {
  const { params, ignored, lmHead } = resolveNames(tensors, config, where, head);
  const values: ParameterValues = new Map();
  for (const [name, t] of params) values.set(name, { shape: t.shape, data: t.data });
  if (lmHead) checkTiedHead(lmHead.data, values.get(`${PREFIX}wte.weight`)!.data, where);
  return { values, ignored };
}

export interface LoadedCheckpoint {
  config: GPT2Config;
  /** A classification checkpoint's head (its score.weight is in values). */
  head?: ClassificationHead;
  values: ParameterValues;
  /** Directory holding vocab.json + merges.txt for this model. */
  tokenizerDir: string;
  ignored: string[];
}

async function checkpointDir(dir: string): Promise<void> {
  let isDir = false;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    throw fsError(err, dir);
  }
  if (!isDir) throw new ToolError(`${dir}: not a directory (a checkpoint is a directory with config.json and model.safetensors)`);
}

async function tokenizerDirFor(dir: string): Promise<string> {
  const hasTokenizer = (await exists(join(dir, 'vocab.json'))) && (await exists(join(dir, 'merges.txt')));
  return hasTokenizer ? dir : builtinTokenizerDir();
}

/** A GGUF file given where a checkpoint directory is expected: it holds config and tokenizer itself. */
export const isGgufFile = async (path: string) => (await stat(path).then((s) => s.isFile(), () => false)) && (await identifyWeightsFile(path)) === 'gguf';

/** Loads a checkpoint directory (ours or HF's), or a GGUF file, into memory. */
export async function loadCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  if (await isGgufFile(dir)) return (await import('./gguf-gpt2.js')).readGgufModel(dir);
  await checkpointDir(dir);
  const { config, head } = await readConfig(dir);
  const path = await weightsPathIn(dir);
  const { values, ignored } = stateDictToParameters(await readWeightsFile(path), config, path, head);
  return { config, ...(head ? { head } : {}), values, tokenizerDir: await tokenizerDirFor(dir), ignored };
}

export interface StreamedCheckpoint {
  config: GPT2Config;
  /** A classification checkpoint's head (its score.weight is in params). */
  head?: ClassificationHead;
  /** Each parameter's values, read when asked (from safetensors, one tensor at a time). */
  params: Map<string, LazyTensor>;
  tokenizerDir: string;
  ignored: string[];
  close(): Promise<void>;
}

/**
 * A checkpoint whose tensors are read one by one as the model takes them, so loading never holds
 * the weights twice (file + backend). PyTorch .bin files are read whole (convert them once). A
 * GGUF file is a checkpoint of its own (config and tokenizer from its metadata).
 */
export async function openCheckpoint(dir: string): Promise<StreamedCheckpoint> {
  if (await isGgufFile(dir)) return (await import('./gguf-gpt2.js')).openGgufModel(dir);
  await checkpointDir(dir);
  const { config, head } = await readConfig(dir);
  const path = await weightsPathIn(dir);
  const tokenizerDir = await tokenizerDirFor(dir);
  const withHead = head ? { head } : {};
  if ((await identifyWeightsFile(path)) !== 'safetensors') {
    const { values, ignored } = stateDictToParameters(await readWeightsFile(path), config, path, head);
    const params = new Map([...values].map(([name, v]) => [name, { shape: v.shape, dtype: 'F32' as const, read: async () => v.data, readInto: async (dest: Float32Array) => dest.set(v.data) }]));
    return { config, ...withHead, params, tokenizerDir, ignored, close: async () => {} };
  }
  const file = await openSafetensors(path);
  try {
    const { params, ignored, lmHead } = resolveNames(file.tensors, config, path, head);
    if (lmHead) checkTiedHead(await lmHead.read(), await params.get(`${PREFIX}wte.weight`)!.read(), path);
    return { config, ...withHead, params, tokenizerDir, ignored, close: file.close };
  } catch (err) {
    await file.close();
    throw err;
  }
}

/**
 * What `overwrite` may replace: a checkpoint directory this toolchain wrote (its model.safetensors
 * says so) holding only checkpoint files — never a Hugging Face download or a directory of the
 * user's — and none of the command's `inputs`.
 */
export function replaceableCheckpoint(inputs: readonly string[] = []): Replaceable {
  const marked = async (dir: string) => {
    try {
      const file = await openSafetensors(join(dir, WEIGHTS_FILE));
      await file.close();
      return file.metadata.created_by === CREATED_BY.created_by;
    } catch {
      return false;
    }
  };
  return { inputs, foreign: ownedEntries('this toolchain', (name) => (CHECKPOINT_FILES.has(name) ? 'file' : undefined), WEIGHTS_FILE, marked) };
}

export interface SaveOptions {
  /** Where vocab.json + merges.txt come from (default: the built-in GPT-2 files). */
  tokenizerDir?: string;
  dtype?: 'F32' | 'F16';
  /** Replace an existing checkpoint of ours (see replaceableCheckpoint). */
  overwrite?: Replaceable;
  /** Writes further files (optimizer state, …) into the staged directory before it is renamed. */
  extra?: (stagedDir: string) => Promise<void>;
  /** A classification head: config.json says GPT2ForSequenceClassification and values hold its score.weight. */
  head?: ClassificationHead;
}

/** Writes an HF model directory atomically (staged beside dir, renamed into place). */
export async function saveCheckpoint(dir: string, config: GPT2Config, values: ParameterValues, options: SaveOptions = {}): Promise<void> {
  const staged = await stageDir(dir, { what: 'checkpoint directory', overwrite: options.overwrite });
  try {
    const config_ = `${JSON.stringify(checkpointConfigJson(config, options.head), null, 2)}\n`;
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(staged.path, CONFIG_FILE), config_).catch((err) => {
      throw fsError(err, join(dir, CONFIG_FILE));
    });
    const shapes = parameterShapes(config);
    if (options.head) shapes.push([SCORE, scoreShape(config, options.head)]);
    const tensors = shapes.map(([name, shape]) => {
      const v = values.get(name);
      if (!v) throw new ToolError(`cannot save: missing tensor ${name}`);
      return { name, shape, data: v.data };
    });
    await writeSafetensors(join(staged.path, WEIGHTS_FILE), tensors, { dtype: options.dtype, metadata: CREATED_BY });
    const tokenizerDir = options.tokenizerDir ?? builtinTokenizerDir();
    for (const name of ['vocab.json', 'merges.txt']) {
      await copyFile(join(tokenizerDir, name), join(staged.path, name)).catch((err) => {
        throw fsError(err, join(tokenizerDir, name));
      });
    }
    await options.extra?.(staged.path);
    await staged.commit();
  } catch (err) {
    await staged.abort();
    // The failing call names a file in the hidden staging directory (or the tokenizer file being
    // copied); a full disk is the checkpoint's, so say that.
    throw outOfSpace(err, dir) ?? err;
  }
}
