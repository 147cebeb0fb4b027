/**
 * LoRA (Hu et al., 2021) on GPT-2's Conv1D layers, computing what PEFT's `lora.Linear` computes:
 * y = x·W + b + scale · dropout(x)·A·B, scale = alpha / rank. Targets: `query`, `key`, `value`
 * (column slices of the fused attn.c_attn), `attn_proj` (attn.c_proj), `mlp_fc`, `mlp_proj`.
 *
 * A and B are kept in the Conv1D layout of the weight they adapt, W [in, out]: A [in, rank] and
 * B [rank, width], so the update scale·A·B lands on W's columns as it is. PEFT stores the
 * transposes (lora_A.weight [rank, in], lora_B.weight [out, rank]; src/formats/peft.ts converts).
 * Initialisation is PEFT's default (`init_lora_weights=True`): A by kaiming_uniform_(a=√5) of a
 * [rank, in] weight, i.e. U(−1/√in, 1/√in), B zero, so a new adapter changes nothing.
 *
 * Used two ways: unmerged, as the LinearAdapter GPT2 adds to its Conv1D outputs (training, here),
 * and merged at load time as low-rank updates added to the base weights while they are read
 * (lora-merge.ts), after which every engine runs a plain GPT-2 at full speed.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { ToolError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { innerSize, type GPT2Config } from './config.js';
import type { ForwardOptions, LinearAdapter, TF } from './gpt2.js';
import { tensorValues, type ParameterValues } from './params.js';

export const LORA_TARGETS = ['query', 'key', 'value', 'attn_proj', 'mlp_fc', 'mlp_proj'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];
/** The Conv1D layers of a block that LoRA can adapt (HF names after `h.<i>.`). */
export const LORA_MODULES = ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

export interface LoraSpec {
  rank: number;
  alpha: number;
  /** Dropout on the adapter's input, in training only (PEFT's lora_dropout). */
  dropout: number;
  targets: readonly LoraTarget[];
}

/** Where a target sits: the Conv1D it adds to, its input width, and its columns of that layer's output. */
export interface TargetSite {
  module: LoraModule;
  in: number;
  /** The module's whole output width. */
  out: number;
  offset: number;
  width: number;
}

/** The Conv1D each target adapts. */
export const TARGET_MODULE: Record<LoraTarget, LoraModule> = {
  query: 'attn.c_attn',
  key: 'attn.c_attn',
  value: 'attn.c_attn',
  attn_proj: 'attn.c_proj',
  mlp_fc: 'mlp.c_fc',
  mlp_proj: 'mlp.c_proj',
};

export function targetSite(c: GPT2Config, target: LoraTarget): TargetSite {
  const d = c.n_embd;
  const inner = innerSize(c);
  switch (target) {
    case 'query':
    case 'key':
    case 'value':
      return { module: 'attn.c_attn', in: d, out: 3 * d, offset: ['query', 'key', 'value'].indexOf(target) * d, width: d };
    case 'attn_proj':
      return { module: 'attn.c_proj', in: d, out: d, offset: 0, width: d };
    case 'mlp_fc':
      return { module: 'mlp.c_fc', in: d, out: inner, offset: 0, width: inner };
    case 'mlp_proj':
      return { module: 'mlp.c_proj', in: inner, out: d, offset: 0, width: d };
  }
}

export const loraScale = (spec: LoraSpec): number => spec.alpha / spec.rank;

/** Targets in a fixed order (query, key, value, attn_proj, mlp_fc, mlp_proj), whatever order the config lists them in. */
export const orderedTargets = (spec: LoraSpec): LoraTarget[] => LORA_TARGETS.filter((t) => spec.targets.includes(t));

/** Names of a target's A and B in layer i (apart from the model's "transformer." names). */
export const loraNames = (i: number, target: LoraTarget) => ({ a: `h.${i}.${target}.lora_A`, b: `h.${i}.${target}.lora_B` });

/** Refuses a spec that cannot be built: bad numbers, an unknown or repeated target, a rank beyond a layer's smaller side. */
export function checkLoraSpec(c: GPT2Config, spec: LoraSpec): void {
  if (!Number.isInteger(spec.rank) || spec.rank < 1) throw new ToolError(`LoRA rank must be a positive integer, got ${spec.rank}`);
  if (!(spec.alpha > 0) || !Number.isFinite(spec.alpha)) throw new ToolError(`LoRA alpha must be a positive number, got ${spec.alpha}`);
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw new ToolError(`LoRA dropout must be in [0, 1), got ${spec.dropout}`);
  if (spec.targets.length === 0) throw new ToolError(`LoRA needs at least one target module (${LORA_TARGETS.join(', ')})`);
  spec.targets.forEach((t, k) => {
    if (!LORA_TARGETS.includes(t)) throw new ToolError(`unknown LoRA target ${JSON.stringify(t)} (targets: ${LORA_TARGETS.join(', ')})`);
    if (spec.targets.indexOf(t) !== k) throw new ToolError(`LoRA target ${t} is listed twice`);
    const site = targetSite(c, t);
    const side = Math.min(site.in, site.width);
    if (spec.rank > side) {
      const where = site.width === site.out ? site.module : `columns ${site.offset}–${site.offset + site.width - 1} of ${site.module}`;
      throw new ToolError(`LoRA rank ${spec.rank} is larger than ${t}'s smaller dimension: ${t} is ${site.in} × ${site.width} (${where}), so rank ≤ ${side}`);
    }
  });
}

/** [name, shape] of every LoRA parameter: per layer, per target (in orderedTargets order), A [in, rank] then B [rank, width]. */
export function loraShapes(c: GPT2Config, spec: LoraSpec): [string, number[]][] {
  checkLoraSpec(c, spec);
  const out: [string, number[]][] = [];
  for (let i = 0; i < c.n_layer; i++) {
    for (const t of orderedTargets(spec)) {
      const site = targetSite(c, t);
      const { a, b } = loraNames(i, t);
      out.push([a, [site.in, spec.rank]], [b, [spec.rank, site.width]]);
    }
  }
  return out;
}

/** PEFT's default initialisation from our seeded RNG: A ~ U(−1/√in, 1/√in) (kaiming_uniform_ with a = √5), B = 0. */
export function initialLora(c: GPT2Config, spec: LoraSpec, seed: number): ParameterValues {
  const rng = new Rng(seed, 0x4c6f5241);
  const values: ParameterValues = new Map();
  for (const [name, shape] of loraShapes(c, spec)) {
    const data = new Float32Array(shape[0] * shape[1]);
    if (name.endsWith('lora_A')) {
      const bound = 1 / Math.sqrt(shape[0]);
      for (let k = 0; k < data.length; k++) data[k] = (2 * rng.nextFloat() - 1) * bound;
    }
    values.set(name, { shape, data });
  }
  return values;
}

/** Values checked against the spec's shapes. */
export function checkLoraValues(c: GPT2Config, spec: LoraSpec, values: ParameterValues): void {
  for (const [name, shape] of loraShapes(c, spec)) {
    const v = values.get(name);
    if (!v) throw new ToolError(`missing LoRA tensor ${name}`);
    if (v.shape.join(',') !== shape.join(',')) throw new ToolError(`LoRA tensor ${name} has shape [${v.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
}

/** Salt of a layer's LoRA dropout (clear of GPT2's own: 0, 1 + 2i, 2 + 2i, 1000 + i). */
const DROPOUT_SALT = 3000;

/**
 * LoRA as GPT2's LinearAdapter, over tensors (variables when trainable). A layer's targets share
 * one dropout mask on its input, as PEFT's single adapter on the fused c_attn does, so training
 * query + value here is training PEFT's rank-2r c_attn adapter (src/formats/peft.ts).
 */
export class LoraAdapter implements LinearAdapter {
  /** Per Conv1D ("h.0.attn.c_attn"): its targets' A and B in orderedTargets order. */
  private readonly sites = new Map<string, { layer: number; module: number; parts: { site: TargetSite; a: tfjs.Tensor2D; b: tfjs.Tensor2D }[] }>();

  private constructor(
    readonly tf: TF,
    readonly config: GPT2Config,
    readonly spec: LoraSpec,
    /** A and B by loraNames. */
    readonly params: Map<string, tfjs.Tensor>,
  ) {
    for (let i = 0; i < config.n_layer; i++) {
      for (const t of orderedTargets(spec)) {
        const site = targetSite(config, t);
        const key = `h.${i}.${site.module}`;
        const entry = this.sites.get(key) ?? { layer: i, module: LORA_MODULES.indexOf(site.module), parts: [] };
        const { a, b } = loraNames(i, t);
        entry.parts.push({ site, a: params.get(a) as tfjs.Tensor2D, b: params.get(b) as tfjs.Tensor2D });
        this.sites.set(key, entry);
      }
    }
  }

  static fromValues(tf: TF, config: GPT2Config, spec: LoraSpec, values: ParameterValues, options: { trainable?: boolean } = {}): LoraAdapter {
    checkLoraValues(config, spec, values);
    const params = new Map<string, tfjs.Tensor>();
    for (const [name, shape] of loraShapes(config, spec)) {
      const t = tf.tensor(values.get(name)!.data, shape, 'float32');
      params.set(name, options.trainable ? tf.variable(t, true) : t);
      if (options.trainable) t.dispose();
    }
    return new LoraAdapter(tf, config, spec, params);
  }

  delta(name: string, x2d: tfjs.Tensor2D, options: ForwardOptions): tfjs.Tensor2D | undefined {
    const entry = this.sites.get(name);
    if (!entry) return undefined;
    const tf = this.tf;
    const p = this.spec.dropout;
    const seed = options.seed === undefined ? undefined : options.seed * 7919 + DROPOUT_SALT + 4 * entry.layer + entry.module;
    const x = options.training && p > 0 ? (tf.dropout(x2d, p, undefined, seed) as tfjs.Tensor2D) : x2d;
    const scale = loraScale(this.spec);
    const rows = x2d.shape[0];
    const pieces: tfjs.Tensor2D[] = [];
    let column = 0;
    for (const { site, a, b } of entry.parts) {
      if (site.offset > column) pieces.push(tf.zeros([rows, site.offset - column]));
      pieces.push(tf.mul(tf.matMul(tf.matMul(x, a), b), scale));
      column = site.offset + site.width;
    }
    const out = entry.parts[0].site.out;
    if (column < out) pieces.push(tf.zeros([rows, out - column]));
    return pieces.length === 1 ? pieces[0] : (tf.concat(pieces, 1) as tfjs.Tensor2D);
  }

  /** A and B read back from the backend (for saving). */
  values(): Promise<ParameterValues> {
    return tensorValues(this.params);
  }

  dispose(): void {
    this.tf.dispose([...this.params.values()]);
  }
}
