/**
 * A model ready to run: a checkpoint directory (or a preset's weights, or with randomInit a preset
 * with random weights; see source.ts) loaded onto the selected backend, with the identity of its
 * tokenizer.
 */
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { requestsWasm, selectBackend, type BackendName, type SelectedBackend } from '../backend/select.js';
import { tokenizerSha256 } from '../tokenizer/vocab-files.js';
import { builtinTokenizerDir, GPT2_TOKENIZER_SHA256, type TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { fsError } from '../util/errors.js';
import { openCheckpoint, type StreamedCheckpoint } from '../formats/checkpoint.js';
import { presetConfig, type GPT2Config } from './config.js';
import { DecodeModel } from './decode-model.js';
import { decoderSupports } from './wasm-decoder.js';
import { GPT2 } from './gpt2.js';
import { initialParameters, type ParameterValues } from './params.js';
import { resolveModelSource } from './source.js';

/** Entries of GPT-2's vocab.json (known from its hash, so the 1 MB file need not be parsed). */
const GPT2_VOCAB_SIZE = 50257;

export interface OpenedModel {
  model: GPT2;
  backend: SelectedBackend;
  tokenizerDir: string;
  tokenizer: TokenizerIdentity;
  /** Tensors in the checkpoint that are not GPT-2 parameters (reported, not loaded). */
  ignored: string[];
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
  const opened = await openOn(source, options, backend, (config, values) => GPT2.fromValues(backend.tf, config, values), (config, params) => GPT2.fromSources(backend.tf, config, params));
  return { ...opened, tokenizer: await tokenizerIdentityOf(opened.tokenizerDir) };
}

/** As OpenedModel, without the tokenizer's identity: the caller loads the tokenizer itself. */
export interface OpenedForGeneration extends Omit<OpenedModel, 'model' | 'backend' | 'tokenizer'> {
  model: GPT2 | DecodeModel;
  backend: { name: string; description: string };
}

/**
 * A model for gpt2-generate: on wasm with the key/value cache, a DecodeModel (weights in a shared
 * memory, products on every core; tfjs is not even loaded) when WasmDecoder can run the model's
 * shapes; otherwise a GPT2 on the selected backend.
 */
export async function openForGeneration(source: string, options: OpenOptions & { useCache: boolean; threads?: number }): Promise<OpenedForGeneration> {
  if (!options.useCache || !requestsWasm(options.backend)) return openModel(source, options);
  let backend: OpenedForGeneration['backend'] | undefined;
  const tfjs = async () => {
    const selected = await selectBackend(options.backend, options.log, { gradients: false });
    backend = selected;
    return selected.tf;
  };
  const opened = await openOn<GPT2 | DecodeModel, undefined>(
    source,
    options,
    undefined,
    async (config, values) => (decoderSupports(config) ? DecodeModel.fromValues(config, values, options.threads) : GPT2.fromValues(await tfjs(), config, values)),
    async (config, params) => (decoderSupports(config) ? DecodeModel.fromSources(config, params, options.threads) : GPT2.fromSources(await tfjs(), config, params)),
  );
  if (opened.model instanceof DecodeModel) {
    const threads = opened.model.threads;
    backend = { name: 'wasm', description: `wasm (decode kernels of our own, SIMD, ${threads} thread${threads === 1 ? '' : 's'})` };
    options.log?.(`backend: ${backend.description}`);
  }
  return { ...opened, backend: backend! };
}

interface OpenOptions {
  backend?: BackendName | string;
  log?: (m: string) => void;
  /** A preset name means random weights (drawn from `seed`) rather than the preset's pretrained ones. */
  randomInit?: boolean;
  seed?: number;
}

async function openOn<M, B = SelectedBackend>(
  source: string,
  options: OpenOptions,
  backend: B,
  fromValues: (config: GPT2Config, values: ParameterValues) => M | Promise<M>,
  fromSources: (config: GPT2Config, params: StreamedCheckpoint['params']) => Promise<M>,
): Promise<Omit<OpenedModel, 'model' | 'backend' | 'tokenizer'> & { model: M; backend: B }> {
  const resolved = await resolveModelSource(source, { flag: '--model', randomInit: options.randomInit, randomHint: '--random-init' });
  if (resolved.kind === 'random') {
    const config = presetConfig(resolved.preset);
    const model = await fromValues(config, initialParameters(config, options.seed ?? 0));
    return { model, backend, tokenizerDir: builtinTokenizerDir(), ignored: [] };
  }
  const ck = await openCheckpoint(resolved.dir);
  try {
    const model = await fromSources(ck.config, ck.params);
    return { model, backend, tokenizerDir: ck.tokenizerDir, ignored: ck.ignored };
  } finally {
    await ck.close();
  }
}
