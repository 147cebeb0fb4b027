/**
 * LoRA adapters in PEFT's format: a directory with `adapter_config.json` and
 * `adapter_model.safetensors` that `peft.PeftModel.from_pretrained(GPT2LMHeadModel, dir)` loads,
 * plus `adapter_base.json` of ours naming the base model the adapter belongs to.
 *
 * PEFT's names and shapes for GPT-2 (peft/tuners/lora/layer.py, utils/save_and_load.py): a
 * Conv1D `transformer.h.<i>.<module>` gets `lora_A` = nn.Linear(in, r) and `lora_B` =
 * nn.Linear(r, out), saved without the adapter name as
 * `base_model.model.transformer.h.<i>.<module>.lora_A.weight` [r, in] and `….lora_B.weight`
 * [out, r]; merging adds scale·(B·A)ᵀ to the [in, out] weight (`fan_in_fan_out: true`, which PEFT
 * forces for Conv1D); scale = lora_alpha / r (rank_pattern / alpha_pattern per module).
 *
 * PEFT adapts whole modules, so query / key / value (column slices of the fused attn.c_attn) are
 * written as ONE adapter on attn.c_attn of rank n·r for n slices: lora_A stacks the slices' A
 * (transposed), lora_B puts each slice's B (transposed) in that slice's rows and its own rank
 * columns, zeros elsewhere, and alpha becomes n·alpha so that alpha/rank, and with it every
 * slice's update, is unchanged. Reading our own export splits it back (adapter_base.json lists the
 * slices); any other PEFT LoRA of GPT-2 is read as the modules' updates it makes.
 */
import { realpath, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ownedEntries, stageDir, type Replaceable } from '../util/atomic-dir.js';
import { fsError, outOfSpace, ToolError } from '../util/errors.js';
import { sha256OfFile } from '../util/sha256-file.js';
import { readJsonFile } from '../util/json-file.js';
import { innerSize, type GPT2Config } from '../model/config.js';
import { LORA_MODULES, LORA_TARGETS, orderedTargets, type LoraModule, type LoraSpec, type LoraTarget } from '../model/lora.js';
import { loraModules, loraUpdates, loraValuesOf, specBlocks, type LowRankUpdate } from '../model/lora-merge.js';
import { PREFIX, type ParameterValues } from '../model/params.js';
import { headFromConfigJson, headToConfigJson, SCORE, scoreShape, type ClassificationHead } from '../model/classification.js';
import { weightsPathIn } from './checkpoint.js';
import { openSafetensors, writeSafetensors, type Tensor32, type TensorToWrite } from './safetensors.js';
import { readWeightsFile } from './weights-file.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
/** Older PEFT versions' weights file (read, never written). */
const ADAPTER_WEIGHTS_BIN = 'adapter_model.bin';
/** Ours, beside PEFT's files (PEFT ignores it): the base model, our LoRA spec, the c_attn slices. */
export const ADAPTER_BASE = 'adapter_base.json';
const CREATED_BY = 'gpt2-toolchain';
const PEFT_PREFIX = 'base_model.model.';

/** The base model an adapter was trained on: where it was and what its weights file hashed to. */
export interface BaseRef {
  /** Absolute path of the base checkpoint directory. */
  path: string;
  /** Its preset name when it was named by one (found again under $GPT2_TOOLCHAIN_HOME if the path has gone). */
  name?: string;
  /** The weights file's name in that directory, its size and sha256. */
  weights: string;
  bytes: number;
  sha256: string;
}

/** The BaseRef of a checkpoint directory (hashes its weights file). */
export async function baseRefOf(dir: string, name?: string): Promise<BaseRef> {
  const weights = await weightsPathIn(dir);
  const bytes = (await stat(weights)).size;
  // The real path: a run's checkpoints/latest is a symlink that moves on as the run goes.
  const path = await realpath(dir).catch((err) => {
    throw fsError(err, dir);
  });
  return { path, ...(name ? { name } : {}), weights: basename(weights), bytes, sha256: await sha256OfFile(weights) };
}

/**
 * Refuses to apply an adapter to a base other than the one it was trained on: the weights file
 * must have the recorded size and sha256 (the size first: a different model is usually told by
 * it without reading a byte).
 */
export async function checkBase(adapterDir: string, base: BaseRef, weightsPath: string): Promise<void> {
  const bytes = (await stat(weightsPath).catch((err) => { throw fsError(err, weightsPath); })).size;
  const sha = bytes === base.bytes ? await sha256OfFile(weightsPath) : undefined;
  if (sha !== base.sha256) {
    throw new ToolError(`${adapterDir}: this adapter was trained on ${base.path} (${base.weights}: ${base.bytes} bytes, sha256 ${base.sha256.slice(0, 12)}…); ${weightsPath} is another model (${bytes} bytes${sha ? `, sha256 ${sha.slice(0, 12)}…` : ''}): refusing to apply it`);
  }
}

// ----------------------------------------------------------------------------------------- writing

/** PEFT's adapter_config.json and tensors for an adapter of ours (see the file's comment for c_attn). */
export function toPeft(c: GPT2Config, spec: LoraSpec, values: ParameterValues, base: BaseRef, head?: ClassificationHead): { config: Record<string, unknown>; tensors: TensorToWrite[] } {
  const r = spec.rank;
  const modules = loraModules(spec);
  const tensors = loraUpdates(c, spec, values).flatMap((u): TensorToWrite[] => {
    const name = `${PEFT_PREFIX}${u.param.slice(0, -'.weight'.length)}`;
    return [
      { name: `${name}.lora_A.weight`, shape: [u.rank, u.a.length / u.rank], data: u.a },
      { name: `${name}.lora_B.weight`, shape: [u.b.length / u.rank, u.rank], data: u.b },
    ];
  });
  if (head) {
    const score = values.get(SCORE);
    const shape = scoreShape(c, head);
    if (!score || score.shape.join(',') !== shape.join(',')) throw new ToolError(`cannot save the adapter: ${SCORE} [${shape.join(', ')}] is missing`);
    tensors.push({ name: `${PEFT_PREFIX}${SCORE}`, shape, data: score.data });
  }
  // One rank for every module unless attn.c_attn holds several slices next to other modules.
  const ranks = new Map(modules.map((m) => [m.module, m.targets.length * r]));
  const uniform = new Set(ranks.values()).size === 1;
  const rank = uniform ? [...ranks.values()][0] : r;
  const patterned = uniform ? [] : modules.filter((m) => m.targets.length > 1);
  const config = {
    peft_type: 'LORA',
    task_type: head ? 'SEQ_CLS' : 'CAUSAL_LM',
    base_model_name_or_path: base.path,
    revision: null,
    inference_mode: true,
    r: rank,
    lora_alpha: (spec.alpha * rank) / r,
    lora_dropout: spec.dropout,
    target_modules: modules.map((m) => m.module),
    fan_in_fan_out: true,
    bias: 'none',
    use_rslora: false,
    modules_to_save: head ? [SCORE.slice(0, -'.weight'.length)] : null,
    init_lora_weights: true,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: Object.fromEntries(patterned.map((m) => [m.module, m.targets.length * r])),
    alpha_pattern: Object.fromEntries(patterned.map((m) => [m.module, m.targets.length * spec.alpha])),
  };
  return { config, tensors };
}

/** What overwrite may replace: an adapter directory we wrote (adapter_base.json says so) holding only adapter files and `extraFiles`. */
export function replaceableAdapter(inputs: readonly string[] = [], extraFiles: readonly string[] = []): Replaceable {
  const ours = new Set([ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_BASE, ...extraFiles]);
  const marked = async (dir: string) => {
    try {
      return ((await readJsonFile(join(dir, ADAPTER_BASE))) as { created_by?: unknown }).created_by === CREATED_BY;
    } catch {
      return false;
    }
  };
  return { inputs, foreign: ownedEntries('this toolchain', (name) => (ours.has(name) ? 'file' : undefined), ADAPTER_BASE, marked) };
}

export interface SaveAdapterOptions {
  /**
   * A classifier's head: its score (values' score.weight) is saved as PEFT's modules_to_save
   * (`base_model.model.score.weight`, task SEQ_CLS), and its labels in adapter_base.json, since
   * PEFT leaves them to the base model's config, which a language model base does not have.
   */
  head?: ClassificationHead;
  overwrite?: Replaceable;
  /** Writes further files (optimizer state, …) into the staged directory before it is renamed. */
  extra?: (stagedDir: string) => Promise<void>;
}

/** Writes an adapter directory atomically: PEFT's two files and adapter_base.json. */
export async function saveLoraAdapter(dir: string, c: GPT2Config, spec: LoraSpec, values: ParameterValues, base: BaseRef, options: SaveAdapterOptions = {}): Promise<void> {
  const { config, tensors } = toPeft(c, spec, values, base, options.head);
  const ours: Ours = {
    created_by: CREATED_BY,
    base,
    lora: { rank: spec.rank, alpha: spec.alpha, dropout: spec.dropout, target_modules: orderedTargets(spec) },
    ...(options.head ? { head: headToConfigJson(options.head) } : {}),
  };
  const staged = await stageDir(dir, { what: 'adapter directory', overwrite: options.overwrite });
  try {
    const json = async (name: string, value: unknown) =>
      writeFile(join(staged.path, name), `${JSON.stringify(value, null, 2)}\n`).catch((err) => {
        throw fsError(err, join(dir, name));
      });
    await json(ADAPTER_CONFIG, config);
    await writeSafetensors(join(staged.path, ADAPTER_WEIGHTS), tensors);
    await json(ADAPTER_BASE, ours);
    await options.extra?.(staged.path);
    await staged.commit();
  } catch (err) {
    await staged.abort();
    throw outOfSpace(err, dir) ?? err;
  }
}

// ----------------------------------------------------------------------------------------- reading

export interface OpenedAdapter {
  dir: string;
  /** What merging the adapter adds to the base weights. */
  updates: LowRankUpdate[];
  /** The recorded base (adapters of ours); undefined for PEFT adapters from elsewhere. */
  base?: BaseRef;
  /** Our spec, when the adapter is ours and still has its block structure (then adapterValues gives the per-target A and B). */
  spec?: LoraSpec;
  /** Tensors that are not LoRA weights of GPT-2's Conv1D layers (modules_to_save, …), PEFT's prefix removed. */
  extra: Map<string, Tensor32>;
  /** A classifier adapter's head (ours: adapter_base.json); its score.weight is in extra. */
  head?: ClassificationHead;
  /** For a log line: "rank 4, alpha 8 on query, value" (ours), "rank 8 on attn.c_attn" (PEFT's view). */
  description: string;
}

export async function isAdapterDir(dir: string): Promise<boolean> {
  return stat(join(dir, ADAPTER_CONFIG)).then((s) => s.isFile(), () => false);
}

const TENSOR = /^base_model\.model\.(?:transformer\.)?h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.lora_([AB])\.weight$/;

/** PEFT's rank_pattern / alpha_pattern lookup: the first key k with `(.*\.)?(k)$` matching the module's name. */
function patternValue(pattern: unknown, moduleName: string): number | undefined {
  if (pattern === null || typeof pattern !== 'object') return undefined;
  for (const [key, value] of Object.entries(pattern)) if (new RegExp(`^(.*\\.)?(${key})$`).test(moduleName)) return Number(value);
  return undefined;
}

function moduleDims(c: GPT2Config, module: LoraModule): [number, number] {
  const d = c.n_embd;
  return { 'attn.c_attn': [d, 3 * d], 'attn.c_proj': [d, d], 'mlp.c_fc': [d, innerSize(c)], 'mlp.c_proj': [innerSize(c), d] }[module] as [number, number];
}

/** Reads a PEFT LoRA adapter directory for a model of config c. */
export async function readLoraAdapter(dir: string, c: GPT2Config): Promise<OpenedAdapter> {
  const configPath = join(dir, ADAPTER_CONFIG);
  const cfg = (await readJsonFile(configPath)) as Record<string, unknown>;
  const fail = (what: string) => new ToolError(`${configPath}: ${what}`);
  if (cfg === null || typeof cfg !== 'object') throw fail('not a JSON object');
  if (cfg.peft_type !== undefined && cfg.peft_type !== 'LORA') throw fail(`peft_type ${JSON.stringify(cfg.peft_type)}: only LORA adapters are supported`);
  if (cfg.use_dora) throw fail('DoRA (use_dora) is not supported');
  if (cfg.lora_bias) throw fail('lora_bias is not supported');
  if (cfg.bias !== undefined && cfg.bias !== 'none') throw fail(`bias ${JSON.stringify(cfg.bias)}: only "none" is supported`);
  const r = Number(cfg.r);
  const alpha = Number(cfg.lora_alpha ?? 8);
  if (!(r >= 1) || !(alpha > 0)) throw fail(`r ${JSON.stringify(cfg.r)} and lora_alpha ${JSON.stringify(cfg.lora_alpha)} must be positive`);

  const weightsPath = (await stat(join(dir, ADAPTER_WEIGHTS)).then(() => true, () => false)) ? join(dir, ADAPTER_WEIGHTS) : join(dir, ADAPTER_WEIGHTS_BIN);
  const tensors = await readAdapterTensors(weightsPath);
  const pairs = new Map<string, { layer: number; module: LoraModule; A?: Tensor32; B?: Tensor32 }>();
  const extra = new Map<string, Tensor32>();
  for (const [name, t] of tensors) {
    const m = TENSOR.exec(name);
    if (!m) {
      extra.set(name.startsWith(PEFT_PREFIX) ? name.slice(PEFT_PREFIX.length) : name, t);
      continue;
    }
    const key = `h.${m[1]}.${m[2]}`;
    const entry = pairs.get(key) ?? { layer: Number(m[1]), module: m[2] as LoraModule };
    entry[m[3] as 'A' | 'B'] = t;
    pairs.set(key, entry);
  }
  if (pairs.size === 0) throw new ToolError(`${weightsPath}: no LoRA weights of GPT-2's layers (base_model.model.transformer.h.<i>.<module>.lora_A.weight)`);

  const updates: LowRankUpdate[] = [];
  const modules: LoraModule[] = [];
  const ranks = new Set<number>();
  for (const [key, { layer, module, A, B }] of pairs) {
    if (!A || !B) throw new ToolError(`${weightsPath}: ${key} has lora_${A ? 'A' : 'B'} but no lora_${A ? 'B' : 'A'}`);
    if (layer >= c.n_layer) throw new ToolError(`${weightsPath}: ${key}: the model has ${c.n_layer} layers`);
    const [inDim, outDim] = moduleDims(c, module);
    const rank = A.shape[0];
    if (A.shape.join(',') !== `${rank},${inDim}` || B.shape.join(',') !== `${outDim},${rank}`) {
      throw new ToolError(`${weightsPath}: ${key}: lora_A [${A.shape.join(', ')}] and lora_B [${B.shape.join(', ')}] do not fit a [${inDim}, ${outDim}] Conv1D (expected [r, ${inDim}] and [${outDim}, r])`);
    }
    const moduleName = `${PREFIX}${key}`;
    const wantRank = patternValue(cfg.rank_pattern, moduleName) ?? r;
    if (rank !== wantRank) throw new ToolError(`${weightsPath}: ${key} has rank ${rank}, ${ADAPTER_CONFIG} says ${wantRank}`);
    const a = patternValue(cfg.alpha_pattern, moduleName) ?? alpha;
    ranks.add(rank);
    updates.push({ param: `${moduleName}.weight`, rank, a: A.data, b: B.data, scale: cfg.use_rslora ? a / Math.sqrt(rank) : a / rank });
    modules.push(module);
  }
  const ours = await readOurs(dir);
  const spec = ours && ourSpec(ours, c, modules, updates);
  const head = ours?.head && headFromConfigJson(ours.head, join(dir, ADAPTER_BASE));
  if (head) {
    const score = extra.get(SCORE);
    const shape = scoreShape(c, head);
    if (score?.shape.join(',') !== shape.join(',')) throw new ToolError(`${weightsPath}: a classifier's adapter needs ${PEFT_PREFIX}${SCORE} [${shape.join(', ')}] (modules_to_save)${score ? `, found [${score.shape.join(', ')}]` : ''}`);
  }
  const description = spec
    ? `rank ${spec.rank}, alpha ${spec.alpha} on ${orderedTargets(spec).join(', ')}`
    : `rank ${[...ranks].join('/')} on ${[...new Set(modules)].join(', ')}`;
  return { dir, updates, base: ours?.base, spec, extra, ...(head ? { head } : {}), description };
}

interface Ours {
  created_by: string;
  base: BaseRef;
  lora?: { rank: number; alpha: number; dropout: number; target_modules: LoraTarget[] };
  /** A classifier's head as config.json would say it (architectures, num_labels, id2label, …). */
  head?: Record<string, unknown>;
}

async function readOurs(dir: string): Promise<Ours | undefined> {
  const path = join(dir, ADAPTER_BASE);
  if (!(await stat(path).then(() => true, () => false))) return undefined;
  const ours = (await readJsonFile(path)) as Partial<Ours> | null;
  const base = ours?.base;
  if (ours?.created_by !== CREATED_BY || !base || typeof base.path !== 'string' || typeof base.sha256 !== 'string' || typeof base.bytes !== 'number') {
    throw new ToolError(`${path}: not an ${ADAPTER_BASE} of ${CREATED_BY} (created_by, base.path, base.bytes, base.sha256)`);
  }
  return ours as Ours;
}

/** The base an adapter directory records (adapter_base.json); undefined for PEFT adapters from elsewhere. */
export async function readAdapterBase(dir: string): Promise<BaseRef | undefined> {
  return (await readOurs(dir))?.base;
}

/** The classification head an adapter directory of ours records (a classifier's adapter); undefined otherwise. */
export async function readAdapterHead(dir: string): Promise<ClassificationHead | undefined> {
  const head = (await readOurs(dir))?.head;
  return head && headFromConfigJson(head, join(dir, ADAPTER_BASE));
}

/**
 * What an adapter brings beside its low-rank updates: a classifier's head and trained score
 * (modules_to_save, in adapters of ours). Any other tensor that is not a LoRA weight is refused.
 */
export function adapterHead(adapter: OpenedAdapter): { head: ClassificationHead; score: Tensor32 } | undefined {
  const extra = [...adapter.extra.keys()].filter((name) => !(adapter.head && name === SCORE));
  if (extra.length > 0) {
    throw new ToolError(`${adapter.dir}: tensor ${extra[0]} is not a LoRA weight of GPT-2's layers (${extra.length} such; beside them only a classifier's score, with its labels in ${ADAPTER_BASE}, is read)`);
  }
  return adapter.head && { head: adapter.head, score: adapter.extra.get(SCORE)! };
}

async function readAdapterTensors(path: string): Promise<Map<string, Tensor32>> {
  if (!path.endsWith(ADAPTER_WEIGHTS)) return readWeightsFile(path);
  const file = await openSafetensors(path);
  try {
    const out = new Map<string, Tensor32>();
    for (const [name, t] of file.tensors) out.set(name, { shape: t.shape, dtype: t.dtype, data: await t.read() });
    return out;
  } finally {
    await file.close();
  }
}

/**
 * Our spec from adapter_base.json, when the updates are still what our export wrote (every layer
 * and target, b zero outside each target's block): their blocks are then set, so a merge computes
 * only the targets' own products (a third of the work for query + value on c_attn), and the
 * per-target values come back (adapterValues). An adapter trained further by PEFT as whole
 * modules is merged as it is, without a spec.
 */
function ourSpec(ours: Ours, c: GPT2Config, modules: LoraModule[], updates: LowRankUpdate[]): LoraSpec | undefined {
  const l = ours.lora;
  if (!l || !Array.isArray(l.target_modules) || !l.target_modules.every((t) => LORA_TARGETS.includes(t))) return undefined;
  const spec: LoraSpec = { rank: l.rank, alpha: l.alpha, dropout: l.dropout, targets: l.target_modules };
  if (updates.length !== c.n_layer * loraModules(spec).length) return undefined;
  const blocks = updates.map((u, k) => specBlocks(c, spec, modules[k], u));
  if (blocks.some((b) => b === undefined)) return undefined;
  updates.forEach((u, k) => (u.blocks = blocks[k]));
  // loraValuesOf takes them layer by layer in LORA_MODULES order; a file may list them otherwise ("h.10" before "h.2")
  const order = updates.map((u, k) => Number(/^transformer\.h\.(\d+)\./.exec(u.param)![1]) * LORA_MODULES.length + LORA_MODULES.indexOf(modules[k]));
  const sorted = updates.map((u, k) => ({ u, at: order[k] })).sort((x, y) => x.at - y.at);
  sorted.forEach(({ u }, k) => (updates[k] = u));
  return spec;
}

/** The separate per-target A and B of an adapter of ours (undefined for others): what training resumes from. */
export function adapterValues(adapter: OpenedAdapter, c: GPT2Config): ParameterValues | undefined {
  return adapter.spec && loraValuesOf(c, adapter.spec, adapter.updates);
}
