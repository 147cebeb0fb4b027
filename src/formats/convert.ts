/**
 * convert-weights as a library function: a Hugging Face GPT-2 (directory or weights file:
 * model.safetensors, or pytorch_model.bin in the zip or the legacy format) or a MindFormers
 * safetensors file → our checkpoint directory; optionally also the MindFormers names, and
 * optionally with a LoRA adapter merged in (a plain model that needs no adapter afterwards). A
 * GPT2ForSequenceClassification (its config.json says so) keeps its head: score.weight and the
 * labels.
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { checkOutputDir, type Replaceable } from '../util/atomic-dir.js';
import { fsError, ToolError, UsageError } from '../util/errors.js';
import { readJsonFile } from '../util/json-file.js';
import { GPT2_VOCAB_SIZE } from '../tokenizer/tokenizer.js';
import type { ClassificationHead } from '../model/classification.js';
import { isPreset, presetConfig, PRESETS, type GPT2Config } from '../model/config.js';
import { modelConfigFromJson, readConfig, replaceableCheckpoint, saveCheckpoint, stateDictToParameters, TORCH_WEIGHTS_FILE, WEIGHTS_FILE, weightsPathIn } from './checkpoint.js';
import { identifyWeightsFile, readWeightsFile } from './weights-file.js';
import { checkGgufOutput } from './gguf-write.js';
import { ggufConfig, readGgufModel, writeGgufModel } from './gguf-gpt2.js';
import { inConvertWeightOrder, mindformersWeightNames, readMindsporeCheckpoint, writeMindsporeCheckpoint } from './mindspore.js';
import { fromMindformers, isMindformers, toMindformers } from './mindformers.js';
import type { ParameterValues } from '../model/params.js';
import { writeSafetensors } from './safetensors.js';
import { adapterHead, checkBase, readLoraAdapter, type OpenedAdapter } from './peft.js';
import { SCORE } from '../model/classification.js';
import { mergeInto } from '../model/lora-merge.js';
import { checkNanogptOutput, readNanogpt, sniffNanogpt, writeNanogpt, type NanogptCheckpoint } from './nanogpt.js';

export const MINDFORMERS_FILE = 'mindformers.safetensors';

/** A model as any reader gives it and every writer takes it. */
export interface ModelData {
  config: GPT2Config;
  head?: ClassificationHead;
  values: ParameterValues;
  /** Directory with the model's vocab.json + merges.txt; undefined: GPT-2's own. */
  tokenizerDir?: string;
}

export type WeightsDtype = 'f32' | 'f16' | 'q8_0';

export interface WriteOptions {
  dtype: WeightsDtype;
  /** What DST may replace (--overwrite); undefined: DST must not exist. */
  overwrite?: Replaceable;
  /** The weights file it was read from (for metadata). */
  weightsPath: string;
  onInfo?: (message: string) => void;
  onWarning?: (message: string) => void;
}

interface Writer {
  summary: string;
  /** The --dtype values it writes. */
  dtypes: readonly WeightsDtype[];
  /** For a writer of one file: refuses a DST it may not replace (default: checkOutputDir's rules). */
  checkOutput?: (dst: string, overwrite: Replaceable | undefined) => Promise<void>;
  write: (dst: string, model: ModelData, options: WriteOptions) => Promise<void>;
}

/**
 * The formats convert-weights writes (--to), one writer each: adding a format is one entry here.
 * Every writer writes DST atomically (staged, renamed into place) and refuses to replace anything
 * `overwrite` does not allow.
 */
export const WRITERS = {
  hf: {
    dtypes: ['f32', 'f16'],
    summary: 'a Hugging Face checkpoint directory (config.json, model.safetensors, vocab.json, merges.txt)',
    write: (dst: string, model: ModelData, options: WriteOptions) => saveCheckpoint(dst, model.config, model.values, checkpointOptions(model, options)),
  },
  mindformers: {
    dtypes: ['f32', 'f16'],
    summary: 'the same directory plus mindformers.safetensors with the MindFormers names',
    write: (dst: string, model: ModelData, options: WriteOptions) =>
      saveCheckpoint(dst, model.config, model.values, {
        ...checkpointOptions(model, options),
        extra: (staged) =>
          writeSafetensors(join(staged, MINDFORMERS_FILE), toMindformers(model.config, model.values), {
            dtype: options.dtype === 'f16' ? 'F16' : 'F32',
            metadata: { source: basename(options.weightsPath) },
          }),
      }),
  },
  mindspore: {
    dtypes: ['f32', 'f16'],
    summary: 'a MindSpore checkpoint file (.ckpt) with the MindFormers names, which MindFormers loads',
    checkOutput: (dst: string, overwrite: Replaceable | undefined) => checkOutputFile(dst, !!overwrite),
    write: async (dst: string, model: ModelData, options: WriteOptions) => {
      if (model.head) throw new ToolError(`${dst}: MindFormers names hold no classification head; --to mindspore writes language models only`);
      const tensors = inConvertWeightOrder(toMindformers(model.config, model.values), model.config.n_layer);
      await writeMindsporeCheckpoint(dst, tensors, { dtype: options.dtype === 'f16' ? 'F16' : 'F32', inputs: [options.weightsPath] });
    },
  },
  nanogpt: {
    dtypes: ['f32'],
    summary: "a nanoGPT ckpt.pt (model, model_args, a fresh AdamW state) that nanoGPT's train.py resumes from (--init_from=resume)",
    checkOutput: checkNanogptOutput,
    write: (dst: string, model: ModelData, options: WriteOptions) => {
      if (model.head) throw new ToolError(`cannot write a nanoGPT checkpoint: nanoGPT has no classification head (this model has ${model.head.labels.length} labels)`);
      return writeNanogpt(dst, model.config, model.values, options);
    },
  },
  gguf: {
    dtypes: ['f32', 'f16', 'q8_0'],
    summary: "one GGUF file that llama.cpp runs as its gpt2 architecture (tokenizer embedded; q8_0: llama.cpp's 8-bit blocks)",
    checkOutput: (dst: string, overwrite?: Replaceable) => checkGgufOutput(dst, { overwrite: overwrite !== undefined, inputs: overwrite?.inputs }),
    write: async (dst: string, model: ModelData, options: WriteOptions) => {
      if (model.head) throw new ToolError(`${dst}: llama.cpp's gpt2 has no classification head; convert the classifier to hf instead`);
      await writeGgufModel(dst, model, options.dtype, modelName(options.weightsPath));
    },
  },
} satisfies Record<string, Writer>;

export type TargetFormat = keyof typeof WRITERS;
export const TARGET_FORMATS = Object.keys(WRITERS) as TargetFormat[];

/** general.name: the model directory's name (its weights file's when given alone). */
const modelName = (weightsPath: string) =>
  [WEIGHTS_FILE, TORCH_WEIGHTS_FILE].includes(basename(weightsPath)) ? basename(dirname(weightsPath)) : basename(weightsPath).replace(/\.[^.]*$/, '');

const checkpointOptions = (model: ModelData, options: WriteOptions) => ({
  head: model.head,
  overwrite: options.overwrite,
  dtype: options.dtype === 'f16' ? ('F16' as const) : ('F32' as const),
  tokenizerDir: model.tokenizerDir,
});

export interface ConvertOptions {
  /** Preset name or path of a config.json; default: SRC's config.json. */
  config?: string;
  to?: TargetFormat;
  dtype?: WeightsDtype;
  overwrite?: boolean;
  /** A LoRA adapter directory (PEFT's format) to merge into the weights. */
  lora?: string;
  onProgress?: (done: number, total: number) => void;
  onInfo?: (message: string) => void;
  onWarning?: (message: string) => void;
}

export interface ConvertResult {
  config: GPT2Config;
  head?: ClassificationHead;
  /** The names it was read by, for the log ("HF names", "MindFormers names", "nanoGPT names"). */
  source: string;
  weightsPath: string;
  ignored: string[];
}

const exists = (path: string) => stat(path).then(() => true, () => false);

async function configFor(option: string | undefined, srcDir: string): Promise<{ config: GPT2Config; head?: ClassificationHead }> {
  if (option !== undefined) {
    if (isPreset(option)) return { config: presetConfig(option) };
    if (!(await exists(option))) throw new ToolError(`--config ${option}: neither a preset (${Object.keys(PRESETS).join(', ')}) nor a file`);
    return modelConfigFromJson(await readJsonFile(option), option);
  }
  if (await exists(join(srcDir, 'config.json'))) return readConfig(srcDir);
  throw new ToolError(`${srcDir}: no config.json; give --config PRESET or --config FILE`);
}

export async function convertWeights(src: string, dst: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  let srcIsDir: boolean;
  try {
    srcIsDir = (await stat(src)).isDirectory();
  } catch (err) {
    throw fsError(err, src);
  }
  const to = options.to ?? 'hf';
  const dtype = options.dtype ?? 'f32';
  const writer: Writer = WRITERS[to];
  if (!writer.dtypes.includes(dtype)) {
    const takes = TARGET_FORMATS.filter((f) => (WRITERS[f] as Writer).dtypes.includes(dtype));
    throw new UsageError(`--dtype ${dtype} is not written with --to ${to} (${writer.dtypes.join(', ')}); ${dtype} is for --to ${takes.join(', ')}`);
  }
  const srcDir = srcIsDir ? src : dirname(src);
  const weightsPath = srcIsDir ? await weightsPathIn(src) : src;
  // A nanoGPT ckpt.pt (its model_args) and a GGUF file carry their config (a nanoGPT's: only its pickle is read here).
  const format = await identifyWeightsFile(weightsPath);
  const nanogpt = !srcIsDir && format === 'zip' ? await sniffNanogpt(src) : undefined;
  const gguf = !srcIsDir && format === 'gguf';
  if ((nanogpt || gguf) && options.config !== undefined) throw new UsageError(`--config: ${src} is a ${gguf ? 'GGUF file' : 'nanoGPT checkpoint'}, which carries its own config`);
  const { config, head: baseHead } = nanogpt ? { config: nanogpt.config, head: undefined } : gguf ? { config: await ggufConfig(src), head: undefined } : await configFor(options.config, srcDir);
  const inputs = [src, ...(options.config && !isPreset(options.config) ? [options.config] : []), ...(options.lora ? [options.lora] : [])];
  const overwrite = options.overwrite ? replaceableCheckpoint(inputs) : undefined;
  // Before reading gigabytes; a writer of a single file says what it may replace.
  await (writer.checkOutput ? writer.checkOutput(dst, overwrite) : checkOutputDir(dst, { what: 'checkpoint directory', overwrite }));
  const adapter = options.lora === undefined ? undefined : await adapterFor(options.lora, config, weightsPath, options);
  options.onInfo?.(`reading ${weightsPath}`);
  let values: ParameterValues;
  let ignored: string[] = [];
  let ggufTokenizer: string | undefined;
  let source: string;
  if (nanogpt) {
    source = 'nanoGPT names';
    ({ values, ignored } = await readNanogpt(nanogpt, options));
  } else if (gguf) {
    source = "GGUF (llama.cpp's names)";
    ({ values, ignored, tokenizerDir: ggufTokenizer } = await readGgufModel(weightsPath));
  } else {
    // A MindSpore checkpoint also holds what is no tensor (strings, MapTensors): reported as ignored.
    const { tensors, skipped } =
      format === 'mindspore'
        ? await readMindsporeCheckpoint(weightsPath, options.onProgress)
        : { tensors: await readWeightsFile(weightsPath, options.onProgress), skipped: [] };
    if (isMindformers(tensors.keys())) {
      source = 'MindFormers names';
      if (baseHead) throw new ToolError(`${weightsPath}: MindFormers names hold no classification head; give a GPT-2 config without GPT2ForSequenceClassification`);
      values = fromMindformers(config, tensors, weightsPath);
      // A training checkpoint also holds optimizer moments (adam_m.*, adam_v.*), global_step, …
      const weights = new Set(mindformersWeightNames(config.n_layer));
      ignored = [...tensors.keys()].filter((name) => !weights.has(name));
    } else {
      source = 'HF names';
      ({ values, ignored } = stateDictToParameters(tensors, config, weightsPath, baseHead));
    }
    ignored.push(...skipped);
  }
  // A classifier's adapter brings its head and trained score: DST is then that classifier.
  const classifier = adapter && adapterHead(adapter);
  const head = classifier?.head ?? baseHead;
  if (adapter) {
    mergeInto(values, adapter.updates);
    if (classifier) values.set(SCORE, classifier.score);
    options.onInfo?.(`merged LoRA adapter ${adapter.dir} (${adapter.description}${classifier ? `; its score head, labels ${classifier.head.labels.join(', ')}` : ''})`);
  }
  const hasTokenizer = ggufTokenizer !== undefined || ((await exists(join(srcDir, 'vocab.json'))) && (await exists(join(srcDir, 'merges.txt'))));
  if (!hasTokenizer && config.vocab_size !== GPT2_VOCAB_SIZE && !isNanogptPadding(nanogpt)) {
    options.onWarning?.(`${src} has no vocab.json/merges.txt; copying GPT-2's (${GPT2_VOCAB_SIZE} tokens) although the model has ${config.vocab_size}`);
  }
  const model: ModelData = { config, ...(head ? { head } : {}), values, tokenizerDir: ggufTokenizer ?? (hasTokenizer ? srcDir : undefined) };
  await WRITERS[to].write(dst, model, { dtype, overwrite, weightsPath, onInfo: options.onInfo, onWarning: options.onWarning });
  return { config, ...(head ? { head } : {}), source, weightsPath, ignored };
}

/** nanoGPT pads GPT-2's vocabulary to a multiple of 64 (50304): the reader says so in an info line. */
const isNanogptPadding = (ck: NanogptCheckpoint | undefined) => ck !== undefined && ck.config.vocab_size > GPT2_VOCAB_SIZE && ck.config.vocab_size % 64 === 0;

/**
 * Refuses a DST file that exists, unless --overwrite and it is a weights file (never a directory or
 * anything else); writing over an input is refused by the writer.
 */
async function checkOutputFile(dst: string, overwrite: boolean): Promise<void> {
  const stats = await stat(dst).catch(() => undefined);
  if (!stats) return;
  if (!stats.isFile()) throw new ToolError(`${dst}: exists and is not a file; this format is written as one file`);
  if (!overwrite) throw new ToolError(`${dst}: exists (use --overwrite to replace it)`);
  await identifyWeightsFile(dst).catch(() => {
    throw new ToolError(`${dst}: not replacing it with --overwrite: it is not a weights file`);
  });
}

/** The adapter, once it is known to belong to the weights at weightsPath (checked before they are read). */
async function adapterFor(dir: string, config: GPT2Config, weightsPath: string, options: ConvertOptions): Promise<OpenedAdapter> {
  const adapter = await readLoraAdapter(dir, config);
  adapterHead(adapter); // refuses tensors it cannot merge before the weights are read
  if (adapter.base) await checkBase(dir, adapter.base, weightsPath);
  else options.onWarning?.(`${dir} does not record its base model: merging it into ${weightsPath} unchecked`);
  return adapter;
}
