/**
 * GPT2Config with Hugging Face's keys (what config.json holds), named presets, and validation
 * with messages that name the key.
 */
import { ToolError } from '../util/errors.js';

export type Activation = 'gelu_new' | 'gelu' | 'fast_gelu';
export const ACTIVATIONS: readonly Activation[] = ['gelu_new', 'gelu', 'fast_gelu'];

export interface GPT2Config {
  vocab_size: number;
  n_positions: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  /** MLP width; null means 4 × n_embd. */
  n_inner: number | null;
  activation_function: Activation;
  resid_pdrop: number;
  embd_pdrop: number;
  attn_pdrop: number;
  layer_norm_epsilon: number;
  initializer_range: number;
  bos_token_id: number;
  eos_token_id: number;
}

const BASE: GPT2Config = {
  vocab_size: 50257,
  n_positions: 1024,
  n_embd: 768,
  n_layer: 12,
  n_head: 12,
  n_inner: null,
  activation_function: 'gelu_new',
  resid_pdrop: 0.1,
  embd_pdrop: 0.1,
  attn_pdrop: 0.1,
  layer_norm_epsilon: 1e-5,
  initializer_range: 0.02,
  bos_token_id: 50256,
  eos_token_id: 50256,
};

const preset = (over: Partial<GPT2Config>): GPT2Config => ({ ...BASE, ...over });

/** OpenAI's four sizes, the seed's two large ones (fast_gelu, as its configs use), tiny ones for tests. */
export const PRESETS: Readonly<Record<string, GPT2Config>> = {
  gpt2: preset({}),
  'gpt2-medium': preset({ n_layer: 24, n_embd: 1024, n_head: 16 }),
  'gpt2-large': preset({ n_layer: 36, n_embd: 1280, n_head: 20 }),
  'gpt2-xl': preset({ n_layer: 48, n_embd: 1600, n_head: 25 }),
  'gpt2-13b': preset({ n_layer: 40, n_embd: 5120, n_head: 40, n_positions: 2048, activation_function: 'fast_gelu' }),
  'gpt2-52b': preset({ n_layer: 64, n_embd: 8192, n_head: 32, activation_function: 'fast_gelu' }),
  'gpt2-tiny': preset({ n_layer: 2, n_embd: 64, n_head: 4, n_positions: 256 }),
  'gpt2-mini': preset({ n_layer: 4, n_embd: 128, n_head: 4, n_positions: 512 }),
};

export const innerSize = (c: GPT2Config): number => c.n_inner ?? 4 * c.n_embd;

/** Parameter count (tied head counted once). */
export function parameterCount(c: GPT2Config): number {
  const d = c.n_embd;
  const block = 2 * 2 * d + d * 3 * d + 3 * d + d * d + d + 2 * d * innerSize(c) + innerSize(c) + d;
  return c.vocab_size * d + c.n_positions * d + c.n_layer * block + 2 * d;
}

/** Own keys only: "constructor" or "toString" are not presets. */
export const isPreset = (name: string): boolean => Object.hasOwn(PRESETS, name);

export function presetConfig(name: string): GPT2Config {
  const c = isPreset(name) ? PRESETS[name] : undefined;
  if (!c) throw new ToolError(`unknown model preset ${JSON.stringify(name)} (presets: ${Object.keys(PRESETS).join(', ')})`);
  return { ...c };
}

/**
 * A config from parsed config.json (HF keys; unknown keys are ignored, as HF keeps many we do not
 * use). `where` names the file in errors.
 */
export function configFromJson(json: unknown, where: string): GPT2Config {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ToolError(`${where}: expected a JSON object`);
  const j = json as Record<string, unknown>;
  if (j.model_type !== undefined && j.model_type !== 'gpt2') throw new ToolError(`${where}: model_type is ${JSON.stringify(j.model_type)}, not "gpt2"`);
  // HF's GPT2Config defaults, for keys a config.json leaves out.
  const c: GPT2Config = { ...BASE };
  const int = (key: keyof GPT2Config, min: number) => {
    const v = j[key];
    if (v === undefined) return;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new ToolError(`${where}: ${key} must be an integer ≥ ${min}, found ${JSON.stringify(v)}`);
    (c as unknown as Record<string, unknown>)[key] = v;
  };
  const prob = (key: keyof GPT2Config) => {
    const v = j[key];
    if (v === undefined) return;
    if (typeof v !== 'number' || !(v >= 0 && v < 1)) throw new ToolError(`${where}: ${key} must be in [0, 1), found ${JSON.stringify(v)}`);
    (c as unknown as Record<string, unknown>)[key] = v;
  };
  (['vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head'] as const).forEach((k) => int(k, 1));
  (['bos_token_id', 'eos_token_id'] as const).forEach((k) => int(k, 0));
  if (j.n_inner !== undefined && j.n_inner !== null) int('n_inner', 1);
  (['resid_pdrop', 'embd_pdrop', 'attn_pdrop'] as const).forEach(prob);
  for (const key of ['layer_norm_epsilon', 'initializer_range'] as const) {
    const v = j[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !(v > 0)) throw new ToolError(`${where}: ${key} must be a positive number, found ${JSON.stringify(v)}`);
    c[key] = v;
  }
  if (j.activation_function !== undefined) {
    const act = j.activation_function;
    if (!ACTIVATIONS.includes(act as Activation)) {
      throw new ToolError(`${where}: activation_function ${JSON.stringify(act)} is not supported (supported: ${ACTIVATIONS.join(', ')})`);
    }
    c.activation_function = act as Activation;
  }
  validateConfig(c, where);
  return c;
}

export function validateConfig(c: GPT2Config, where: string): void {
  if (c.n_embd % c.n_head !== 0) throw new ToolError(`${where}: n_embd (${c.n_embd}) must be divisible by n_head (${c.n_head})`);
}

/** config.json as HF writes it. */
export function configToJson(c: GPT2Config): Record<string, unknown> {
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    ...c,
    n_ctx: c.n_positions,
  };
}
