/**
 * A model ready to run: a checkpoint directory (or a preset's weights, or with randomInit a preset
 * with random weights; see source.ts) loaded onto the selected backend, with the identity of its
 * tokenizer. Generation opens its models through src/generate/choose.ts, with loadModel.
 */
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { selectBackend, type BackendName, type SelectedBackend } from '../backend/select.js';
import { tokenizerSha256 } from '../tokenizer/vocab-files.js';
import { builtinTokenizerDir, GPT2_TOKENIZER_SHA256, GPT2_VOCAB_SIZE, type TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { fsError } from '../util/errors.js';
import { openCheckpoint } from '../formats/checkpoint.js';
import { presetConfig, type GPT2Config } from './config.js';
import { GPT2 } from './gpt2.js';
import { initialParameters, sourcesOf, type ParameterSources } from './params.js';
import { resolveModelSource } from './source.js';


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
 * randomInit a preset's random ones) into the model `build` makes from the config, one tensor at a
 * time: `build` sees the config before any weight is read.
 */
export async function loadModel<M>(source: string, options: OpenOptions, build: (config: GPT2Config, params: ParameterSources) => Promise<M>): Promise<LoadedModel<M>> {
  const resolved = await resolveModelSource(source, { flag: '--model', randomInit: options.randomInit, randomHint: '--random-init' });
  if (resolved.kind === 'random') {
    const config = presetConfig(resolved.preset);
    const model = await build(config, sourcesOf(initialParameters(config, options.seed ?? 0)));
    return { model, tokenizerDir: builtinTokenizerDir(), ignored: [] };
  }
  const ck = await openCheckpoint(resolved.dir);
  try {
    const model = await build(ck.config, ck.params);
    return { model, tokenizerDir: ck.tokenizerDir, ignored: ck.ignored };
  } finally {
    await ck.close();
  }
}
