/**
 * What a `--model` / `--init-from` argument names. A user reads `gpt2` as OpenAI's GPT-2, as
 * `from_pretrained("gpt2")` means everywhere else, so a preset name where weights are expected
 * must find real weights or fail — random weights only when asked for:
 *
 * 1. an existing path: a checkpoint directory (the loader checks what is in it);
 * 2. a preset name: `$GPT2_TOOLCHAIN_HOME/models/<name>` (default `~/.cache/gpt2-toolchain`), a
 *    checkpoint that convert-weights fills once; with `randomInit`, the preset's shape with random
 *    weights instead;
 * 3. anything else: an error that lists the presets.
 */
import { stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ToolError, UsageError } from '../util/errors.js';
import { isPreset, PRESETS } from './config.js';

export type ModelSource = { kind: 'checkpoint'; dir: string } | { kind: 'random'; preset: string };

/** Where pretrained weights for preset names live: $GPT2_TOOLCHAIN_HOME/models/<name>. */
export function modelsHome(): string {
  const home = process.env.GPT2_TOOLCHAIN_HOME || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'gpt2-toolchain');
  return join(home, 'models');
}

const exists = (path: string) => stat(path).then(() => true, () => false);
const presetList = () => Object.keys(PRESETS).join(', ');

export interface ResolveOptions {
  /** The flag or config key the argument came from, for messages (e.g. "--model"). */
  flag: string;
  /** A preset name means its shape with random weights (e.g. --random-init). */
  randomInit?: boolean;
  /** How to ask for random weights instead, for the message when none are found. */
  randomHint?: string;
}

export async function resolveModelSource(arg: string, options: ResolveOptions): Promise<ModelSource> {
  if (options.randomInit) {
    if (!isPreset(arg)) throw new UsageError(`random weights need a preset name (${presetList()}), not ${JSON.stringify(arg)}`);
    return { kind: 'random', preset: arg };
  }
  return { kind: 'checkpoint', dir: await pretrainedDir(arg, options) };
}

/** The checkpoint directory `arg` names: a path, or a preset's installed weights; never random. */
export async function pretrainedDir(arg: string, options: Omit<ResolveOptions, 'randomInit'>): Promise<string> {
  const { flag } = options;
  if (arg.trim() === '') throw new UsageError(`${flag} is empty: give a checkpoint directory or a preset name (${presetList()})`);
  if (await exists(arg)) return arg;
  if (!isPreset(arg)) throw new ToolError(`${flag} ${arg}: no such file or directory, and not a preset (presets: ${presetList()})`);
  const installed = join(modelsHome(), arg);
  if (await exists(installed)) return installed;
  throw new ToolError(
    `${flag} ${arg}: no weights for preset ${arg} in ${installed}; convert a Hugging Face ${arg} there once ` +
      `(convert-weights path/to/hf-${arg} ${installed}; GPT2_TOOLCHAIN_HOME moves it)` +
      (options.randomHint ? `, or ${options.randomHint} for random weights` : ''),
  );
}
