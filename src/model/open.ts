/**
 * A model ready to run: a checkpoint directory (or a preset with random weights) loaded onto the
 * selected backend, with the identity of its tokenizer.
 */
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { selectBackend, type BackendName, type SelectedBackend } from '../backend/select.js';
import { tokenizerSha256 } from '../tokenizer/vocab-files.js';
import { builtinTokenizerDir, GPT2_TOKENIZER_SHA256, type TokenizerIdentity } from '../tokenizer/tokenizer.js';
import { fsError } from '../util/errors.js';
import { openCheckpoint } from './checkpoint.js';
import { presetConfig, PRESETS } from './config.js';
import { GPT2 } from './gpt2.js';
import { initialParameters } from './params.js';

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

/** `source` is a checkpoint directory or a preset name (random weights from `seed`). */
export async function openModel(source: string, options: { backend?: BackendName | string; log?: (m: string) => void; seed?: number } = {}): Promise<OpenedModel> {
  const backend = await selectBackend(options.backend, options.log, { gradients: false });
  if (source in PRESETS) {
    const config = presetConfig(source);
    const model = GPT2.fromValues(backend.tf, config, initialParameters(config, options.seed ?? 0));
    const tokenizerDir = builtinTokenizerDir();
    return { model, backend, tokenizerDir, tokenizer: await tokenizerIdentityOf(tokenizerDir), ignored: [] };
  }
  const ck = await openCheckpoint(source);
  try {
    const model = await GPT2.fromSources(backend.tf, ck.config, ck.params);
    return { model, backend, tokenizerDir: ck.tokenizerDir, tokenizer: await tokenizerIdentityOf(ck.tokenizerDir), ignored: ck.ignored };
  } finally {
    await ck.close();
  }
}
