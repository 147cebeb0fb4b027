/**
 * LoRA fine-tuning in gpt2-train (a `lora:` section): the base model (model.init_from) is frozen
 * and only the adapters train, and a classifier's score head fully, as PEFT's modules_to_save.
 *
 * A run starts from a base checkpoint with PEFT's initialisation (A uniform from the seed, B zero),
 * or from an adapter directory of ours given as init_from, which continues its A, B (and score) on
 * the base it records. Its checkpoints hold what trains only: a PEFT adapter directory
 * (src/formats/peft.ts) naming its base by path and sha256, with optimizer.safetensors and
 * trainer_state.json beside it (PEFT ignores them). A resume starts from its checkpoint the same
 * way: the base is read again and must hash as recorded, and A and B come back bit for bit (the
 * export's transposes and rank blocks are copies).
 */
import { resolve } from 'node:path';
import { loadCheckpoint, readConfig, weightsPathIn } from '../formats/checkpoint.js';
import { adapterValues, baseRefOf, checkBase, isAdapterDir, readLoraAdapter, readAdapterBase, type BaseRef } from '../formats/peft.js';
import { SCORE, type ClassificationHead } from '../model/classification.js';
import type { GPT2Config } from '../model/config.js';
import { checkLoraSpec, initialLora, loraShapes, orderedTargets, type LoraSpec } from '../model/lora.js';
import { recordedBaseDir } from '../model/open.js';
import type { ParameterValues } from '../model/params.js';
import { ToolError } from '../util/errors.js';
import type { TrainConfig } from './config.js';
import { checkTrainingFits } from './fits.js';

/** What a LoRA run's checkpoints record beside A and B. */
export interface LoraRun {
  spec: LoraSpec;
  base: BaseRef;
}

/** The adapters a config's `lora:` section asks for; undefined for full fine-tuning. */
export function loraSpecOf(config: TrainConfig): LoraSpec | undefined {
  const l = config.lora;
  return l ? { rank: l.rank, alpha: l.alpha, dropout: l.dropout, targets: l.target_modules } : undefined;
}

const describe = (spec: Pick<LoraSpec, 'rank' | 'alpha' | 'targets'>) => `rank ${spec.rank}, alpha ${spec.alpha} on ${orderedTargets(spec as LoraSpec).join(', ')}`;

/** A LoRA run's starting point: the frozen base, and the adapters (with their base's identity) to train on it. */
export interface LoraStart {
  modelConfig: GPT2Config;
  /** The base's parameters, and a classifier's score when the base or the adapter has one. */
  values: ParameterValues;
  tokenizerDir: string;
  head?: ClassificationHead;
  lora: LoraRun & { values: ParameterValues };
}

export interface LoraStartOptions {
  /** For messages: what named `dir` ("model.init_from runs/a", a checkpoint's path). */
  what: string;
  /** The preset name `dir` was found by, recorded so the base is found again if its path goes. */
  name?: string;
  /** Seeds A of fresh adapters. */
  seed: number;
  /** Applied over the base's config (the run's dropout). */
  modelOverrides: Partial<GPT2Config>;
  /** A classifier's labels: its score [num_labels, n_embd] trains too (counted for the memory check). */
  numLabels?: number;
  /** The run's backend, for the memory check (see fits.ts). */
  backend?: string;
}

/**
 * From `dir`, a base checkpoint (fresh adapters) or an adapter directory of ours (its adapters, on
 * the base it records, checked by sha256). The memory check counts the base's weights and what
 * trains; an adapter's rank, alpha and targets must be `spec`'s (its dropout is the run's).
 */
export async function startLora(dir: string, spec: LoraSpec, options: LoraStartOptions): Promise<LoraStart> {
  const adapterDir = (await isAdapterDir(dir)) ? dir : undefined;
  const baseDir = adapterDir ? await recordedBaseDir(adapterDir, 'the base model as model.init_from, to start new adapters') : dir;
  const { config } = await readConfig(baseDir);
  checkLoraSpec(config, spec);
  const trainable = loraShapes(config, spec).reduce((n, [, [rows, cols]]) => n + rows * cols, 0) + (options.numLabels ?? 0) * config.n_embd;
  checkTrainingFits(config, options.what, { trainable, backend: options.backend });
  const weights = await weightsPathIn(baseDir);
  const recorded = adapterDir && (await readAdapterBase(adapterDir))!;
  const base = recorded ? checkBase(adapterDir!, recorded, weights).then(() => recorded) : baseRefOf(baseDir, options.name);
  base.catch(() => {}); // awaited below, after the load it overlaps
  const ck = await loadCheckpoint(baseDir);
  const start = { modelConfig: { ...ck.config, ...options.modelOverrides }, values: ck.values, tokenizerDir: ck.tokenizerDir, head: ck.head };
  if (!adapterDir) return { ...start, lora: { spec, base: await base, values: initialLora(config, spec, options.seed) } };

  const adapter = await readLoraAdapter(adapterDir, config);
  const values = adapterValues(adapter, config);
  const had = adapter.spec;
  if (!values || !had) throw new ToolError(`${options.what}: the adapter's layers are not in the form gpt2-toolchain writes (changed by other tools?), so its per-target A and B cannot be trained further`);
  if (had.rank !== spec.rank || had.alpha !== spec.alpha || orderedTargets(had).join() !== orderedTargets(spec).join()) {
    throw new ToolError(`${options.what}: the adapter is ${describe(had)}; the lora: section asks for ${describe(spec)} (set it to the adapter's to train it further)`);
  }
  if (adapter.head) {
    start.values.set(SCORE, adapter.extra.get(SCORE)!);
    start.head = adapter.head;
  }
  return { ...start, lora: { spec, base: await base, values } };
}

/** The name a base was given by, when it was a preset's installed weights rather than a path. */
export const presetNameOf = (arg: string, dir: string): string | undefined => (resolve(arg) === resolve(dir) ? undefined : arg);

/** What trains in a LoRA run, by the names the optimizer state uses: A and B, and a classifier's score. */
export function loraTrainable(lora: LoraStart['lora'], values: ParameterValues, head: ClassificationHead | undefined): ParameterValues {
  const out = new Map(lora.values);
  if (head) out.set(SCORE, values.get(SCORE)!);
  return out;
}
