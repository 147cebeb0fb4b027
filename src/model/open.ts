/**
 * A model ready to run: a checkpoint directory (or a preset's weights, or with randomInit a preset
 * with random weights; see source.ts) loaded onto the selected backend, with the identity of its
 * tokenizer. Generation opens its models through src/generate/choose.ts, with loadModel.
 *
 * A LoRA adapter (PEFT's format, src/formats/peft.ts) is merged into the base weights here, while
 * they are read, so every tool and engine that loads through loadModel takes `lora` and then runs
 * a plain GPT-2 at full speed. An adapter directory of ours given as the source finds its base by
 * the path it records.
 */
import { join } from 'node:path';
import { readFile, stat } from 'node:fs/promises';
import { selectBackend, type BackendName, type SelectedBackend } from '../backend/select.js';
import { tokenizerSha256 } from '../tokenizer/vocab-files.js';
import { builtinTokenizerDir, GPT2_TOKENIZER_SHA256, GPT2_VOCAB_SIZE, type TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { fsError, ToolError, UsageError } from '../util/errors.js';
import { openCheckpoint, readConfig, weightsPathIn, type StreamedCheckpoint } from '../formats/checkpoint.js';
import { ADAPTER_BASE, adapterHead, checkBase, isAdapterDir, readAdapterBase, readAdapterHead, readLoraAdapter } from '../formats/peft.js';
import { SCORE, type ClassificationHead } from './classification.js';
import { presetConfig, type GPT2Config } from './config.js';
import { GPT2 } from './gpt2.js';
import { mergedSources } from './lora-merge.js';
import { initialSources, sourcesOf, type ParameterSources } from './params.js';
import { pretrainedDir, resolveModelSource } from './source.js';


export interface OpenedModel extends LoadedModel<GPT2> {
  backend: SelectedBackend;
  tokenizer: TokenizerIdentity;
}

export async function tokenizerIdentityOf(dir: string): Promise<TokenizerIdentity> {
  const read = (name: string) => readFile(join(dir, name)).catch((err) => {
    throw fsError(err, join(dir, name));
  });
  const [vocab, merges] = await Promise.all([read('vocab.json'), read('merges.txt')]);
  const sha256 = tokenizerSha256(vocab, merges);
  if (sha256 === GPT2_TOKENIZER_SHA256) return { name: 'gpt2', vocab_size: GPT2_VOCAB_SIZE, sha256 };
  const size = Object.keys(JSON.parse(vocab.toString('utf8')) as object).length;
  return { name: dir, vocab_size: size, sha256 };
}

/** `source` is a checkpoint directory or a preset name (see source.ts; random weights from `seed` with randomInit). */
export async function openModel(source: string, options: OpenOptions = {}): Promise<OpenedModel> {
  const backend = await selectBackend(options.backend, options.log, { gradients: false });
  const opened = await loadModel(source, options, (config, params) => GPT2.fromSources(backend.tf, config, params));
  return { ...opened, backend, tokenizer: await tokenizerIdentityOf(opened.tokenizerDir) };
}

export interface OpenOptions {
  backend?: BackendName | string;
  log?: (m: string) => void;
  /** A preset name means random weights (drawn from `seed`) rather than the preset's pretrained ones. */
  randomInit?: boolean;
  seed?: number;
  /** A LoRA adapter directory (PEFT's format) to merge into the weights as they load. */
  lora?: string;
}

/** A model `build` makes from the weights `source` names, and what came with them. */
export interface LoadedModel<M> {
  model: M;
  /** Directory with vocab.json + merges.txt: the checkpoint's own, else GPT-2's. */
  tokenizerDir: string;
  /** Tensors in the checkpoint that are not GPT-2 parameters (reported, not loaded). */
  ignored: string[];
}

/**
 * Reads the weights `source` names (a checkpoint directory, a preset's installed weights, or with
 * randomInit a preset's random ones; or a LoRA adapter directory of ours, whose recorded base is
 * read) into the model `build` makes from the config, one tensor at a time, with options.lora's
 * (or the source's) adapter merged in: `build` sees the config before any weight is read.
 */
export async function loadModel<M extends { dispose(): void }>(
  source: string,
  options: OpenOptions,
  build: (config: GPT2Config, params: ParameterSources, head?: ClassificationHead) => Promise<M>,
): Promise<LoadedModel<M>> {
  const { base, adapter } = await baseAndAdapter(source, options);
  const resolved = await resolveModelSource(base, { flag: '--model', randomInit: options.randomInit, randomHint: '--random-init' });
  if (resolved.kind === 'random') {
    if (adapter !== undefined) throw new UsageError(`--lora ${adapter}: an adapter is merged into the weights it was trained on, not into random ones`);
    const config = presetConfig(resolved.preset);
    const model = await build(config, initialSources(config, options.seed ?? 0));
    return { model, tokenizerDir: builtinTokenizerDir(), ignored: [] };
  }
  const ck = await openCheckpoint(resolved.dir);
  try {
    if (adapter === undefined) return { model: await build(ck.config, ck.params, ck.head), tokenizerDir: ck.tokenizerDir, ignored: ck.ignored };
    const { params, head, checked, description } = await withAdapter(adapter, resolved.dir, ck, options.log);
    const model = await build(ck.config, params, head);
    try {
      await checked;
    } catch (err) {
      model.dispose();
      throw err;
    }
    options.log?.(`LoRA adapter ${adapter} (${description}) merged into ${resolved.dir} as it loaded`);
    return { model, tokenizerDir: ck.tokenizerDir, ignored: ck.ignored };
  } finally {
    await ck.close();
  }
}

/** The base model and the adapter (if any) that `source` and options.lora name. */
async function baseAndAdapter(source: string, options: OpenOptions): Promise<{ base: string; adapter?: string }> {
  const sourceIsAdapter = !options.randomInit && (await isAdapterDir(source));
  if (options.lora !== undefined) {
    if (!(await isAdapterDir(options.lora))) throw new ToolError(`--lora ${options.lora}: not a LoRA adapter directory (no adapter_config.json)`);
    if (sourceIsAdapter) throw new UsageError(`--model ${source} is a LoRA adapter too: give the base model with --model and the adapter with --lora, or the adapter alone with --model`);
    return { base: source, adapter: options.lora };
  }
  if (!sourceIsAdapter) return { base: source };
  return { base: await recordedBaseDir(source, `--model BASE --lora ${source}`), adapter: source };
}

/**
 * The base model directory an adapter of ours records: its path, else (moved or gone) its preset's
 * installed weights. `give` says how the user names the base instead.
 */
export async function recordedBaseDir(adapterDir: string, give: string): Promise<string> {
  const recorded = await readAdapterBase(adapterDir);
  if (!recorded) throw new ToolError(`${adapterDir}: a PEFT adapter without ${ADAPTER_BASE}, so its base model is not known; give it: ${give}`);
  if (await stat(recorded.path).then(() => true, () => false)) return recorded.path;
  if (recorded.name) return pretrainedDir(recorded.name, { flag: `${adapterDir}'s base` });
  throw new ToolError(`${adapterDir}: its base model ${recorded.path} (recorded in ${ADAPTER_BASE}) is not there; give it: ${give}`);
}

/**
 * The checkpoint's parameters with the adapter merged in as each is read, and the check that the
 * adapter belongs to this base (the sha256 of its weights, on a thread of its own while the model
 * loads: the caller awaits it before using the model).
 */
async function withAdapter(
  dir: string,
  baseDir: string,
  ck: StreamedCheckpoint,
  log?: (m: string) => void,
): Promise<{ params: ParameterSources; head?: ClassificationHead; checked: Promise<void>; description: string }> {
  const base = await readAdapterBase(dir);
  const checked = base ? weightsPathIn(baseDir).then((path) => checkBase(dir, base, path)) : Promise.resolve();
  checked.catch(() => {}); // awaited by the caller, unless reading the adapter fails first
  const adapter = await readLoraAdapter(dir, ck.config);
  const classifier = adapterHead(adapter);
  if (!base) log?.(`${dir}: no ${ADAPTER_BASE}, so nothing says which model this adapter belongs to; applying it to ${baseDir} unchecked`);
  const params = mergedSources(ck.params, adapter.updates);
  // A classifier's adapter brings its trained score (and labels), over whatever head the base has.
  if (classifier) params.set(SCORE, sourcesOf(new Map([[SCORE, classifier.score]])).get(SCORE)!);
  return { params, head: classifier?.head ?? ck.head, checked, description: adapter.description };
}

/**
 * The classification head of the model `source` (and options.lora) name, read without loading
 * weights: a classifier adapter's, else the base checkpoint's; undefined for a language model.
 */
export async function modelHead(source: string, options: OpenOptions): Promise<ClassificationHead | undefined> {
  const { base, adapter } = await baseAndAdapter(source, options);
  const fromAdapter = adapter === undefined ? undefined : await readAdapterHead(adapter);
  if (fromAdapter) return fromAdapter;
  const resolved = await resolveModelSource(base, { flag: '--model', randomInit: options.randomInit, randomHint: '--random-init' });
  if (resolved.kind === 'random') return undefined;
  return (await readConfig(resolved.dir)).head;
}
