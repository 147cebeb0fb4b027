/**
 * The training config's shape: the TrainConfig type, defaults, and a validator that fills defaults
 * and reports the first problem as (key path, message). Where the problem lives (file or --set) is
 * the caller's business, see config.ts.
 */
import { BACKEND_NAMES, type BackendName } from '../backend/select.js';
import { ACTIVATIONS, PRESETS, type GPT2Config } from '../model/config.js';
import { LORA_TARGETS, type LoraTarget } from '../model/lora.js';

export { LORA_TARGETS, type LoraTarget };

export type Task = 'causal_lm' | 'sequence_classification';
export type LrScheduleType = 'constant' | 'linear' | 'polynomial' | 'cosine';

export const TASKS: readonly Task[] = ['causal_lm', 'sequence_classification'];
export const LR_SCHEDULE_TYPES: readonly LrScheduleType[] = ['constant', 'linear', 'polynomial', 'cosine'];
/** HF GPT2Config keys that model.config may set (config files should be exact, so others are errors). */
export const MODEL_CONFIG_KEYS = [
  'vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head', 'n_inner', 'activation_function', 'resid_pdrop',
  'embd_pdrop', 'attn_pdrop', 'layer_norm_epsilon', 'initializer_range', 'bos_token_id', 'eos_token_id',
] as const;
const SIZE_KEYS = ['vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head'] as const;

/** A validated config: every key present, null only where the schema allows it. */
export interface TrainConfig {
  seed: number;
  output_dir: string;
  backend: BackendName;
  /** sequence_classification is validated but not trained yet. */
  task: Task;
  /** The network: a preset, HF-key overrides, one dropout for all three, optional starting weights. */
  model: {
    preset: string | null;
    config: Partial<GPT2Config>;
    dropout: number | null;
    /** Checkpoint directory or preset name to fine-tune from; null = random init. */
    init_from: string | null;
    num_labels: number;
  };
  /** Batching and run length; max_steps, when set, wins over epochs. */
  runner: { batch_size: number; epochs: number; max_steps: number | null; gradient_accumulation_steps: number };
  /** AdamW; grad_clip is a global-norm clip, 0 disables it. */
  optimizer: { type: 'adamw'; betas: [number, number]; eps: number; weight_decay: number; grad_clip: number };
  /** Warmup then decay from lr to end_lr; decay_steps null = the run's total steps. */
  lr_schedule: {
    type: LrScheduleType;
    lr: number;
    end_lr: number;
    power: number;
    warmup_steps: number;
    warmup_ratio: number | null;
    decay_steps: number | null;
  };
  /** Record-shard directories; the CLI's --train-data/--eval-data fill a null path. */
  train_dataset: { path: string | null; shuffle: boolean; drop_remainder: boolean; repeat: number };
  eval_dataset: { path: string | null } | null;
  /** interval 0 = evaluate only at the end; batch_size null = runner.batch_size. */
  eval: { interval: number; max_records: number | null; batch_size: number | null };
  /** interval 0 = save only at the end. */
  checkpoint: { interval: number; keep_last: number };
  logging: { interval: number };
  /** Single device for now: every degree must be 1; recompute is accepted and only validated. */
  parallel: { data_parallel: number; model_parallel: number; pipeline_stages: number; micro_batch_num: number; recompute: boolean };
  /** LoRA adapters (null = full fine-tuning); validated, not trained yet. */
  lora: { rank: number; alpha: number; dropout: number; target_modules: LoraTarget[] } | null;
}

export type Path = Array<string | number>;

/** A problem at a key path; config.ts adds the file name. */
export class FieldError extends Error {
  constructor(readonly path: Path, readonly reason: string) {
    super(reason);
  }
}

export const formatPath = (path: Path): string =>
  path.reduce<string>((s, seg) => (typeof seg === 'number' ? `${s}[${seg}]` : s ? `${s}.${seg}` : seg), '');

export const isMapping = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function describe(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

type Check = (v: unknown, path: Path) => unknown;
/** `def` is used when the key is absent; mappings are filled from their own entries. */
interface Entry {
  check: Check;
  def?: unknown;
  /** A mapping's entries (for listCapacity). */
  fields?: Spec;
  /** A list's longest allowed length. */
  maxItems?: number;
}
type Spec = Record<string, Entry>;

const bad = (path: Path, want: string, v: unknown): never => {
  throw new FieldError(path, `must be ${want}, got ${describe(v)}`);
};
const orNull = (want: string, nullable: boolean) => (nullable ? `${want} or null` : want);

function int(min: number, def: number | null, nullable = false): Entry {
  return {
    def,
    check: (v, p) => {
      if (v === null && nullable) return null;
      return typeof v === 'number' && Number.isSafeInteger(v) && v >= min ? v : bad(p, orNull(`an integer ≥ ${min}`, nullable), v);
    },
  };
}

/** A finite number in a range: `gt` excludes the lower bound, `below` is an excluded upper bound. */
function num(def: number | null, range: { ge?: number; gt?: number; below?: number }, nullable = false): Entry {
  const { ge, gt, below } = range;
  const want =
    ge !== undefined && below !== undefined ? `in [${ge}, ${below})` : gt !== undefined ? `a number > ${gt}` : `a number ≥ ${ge}`;
  return {
    def,
    check: (v, p) => {
      if (v === null && nullable) return null;
      const ok =
        typeof v === 'number' && Number.isFinite(v) && (ge === undefined || v >= ge) && (gt === undefined || v > gt) && (below === undefined || v < below);
      return ok ? v : bad(p, orNull(want, nullable), v);
    },
  };
}
const prob = (def: number | null, nullable = false) => num(def, { ge: 0, below: 1 }, nullable);

function oneOf(values: readonly string[], def: string | null, nullable = false): Entry {
  return {
    def,
    check: (v, p) => {
      if (v === null && nullable) return null;
      return typeof v === 'string' && values.includes(v) ? v : bad(p, orNull(`one of ${values.join(', ')}`, nullable), v);
    },
  };
}

function str(def: string | null, nullable: boolean): Entry {
  return {
    def,
    check: (v, p) => {
      if (v === null && nullable) return null;
      return typeof v === 'string' && v !== '' ? v : bad(p, orNull('a non-empty string', nullable), v);
    },
  };
}

const bool = (def: boolean): Entry => ({ def, check: (v, p) => (typeof v === 'boolean' ? v : bad(p, 'true or false', v)) });

/** Parallel degrees: typed like any integer, then refused unless 1. */
const single: Entry = {
  def: 1,
  check: (v, p) => {
    int(1, 1).check(v, p);
    if (v !== 1) throw new FieldError(p, 'only 1 (single device) is supported for now');
    return v;
  },
};

const betas: Entry = {
  def: [0.9, 0.95],
  maxItems: 2,
  check: (v, p) => {
    if (!Array.isArray(v) || v.length !== 2) return bad(p, 'a list of 2 numbers', v);
    return v.map((b, i) => prob(null).check(b, [...p, i]));
  },
};

const loraTargets: Entry = {
  def: ['query', 'value'],
  maxItems: LORA_TARGETS.length,
  check: (v, p) => {
    if (!Array.isArray(v) || v.length === 0) return bad(p, `a non-empty list of ${LORA_TARGETS.join(', ')}`, v);
    v.forEach((t, i) => {
      oneOf(LORA_TARGETS, null).check(t, [...p, i]);
      if (v.indexOf(t) !== i) throw new FieldError([...p, i], `${t} is listed twice`);
    });
    return [...v];
  },
};

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/** "unknown key (did you mean betas?)" for a near miss, else the list of known keys. */
export function unknownKey(key: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = levenshtein(key.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  const close = best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3));
  return close ? `unknown key (did you mean ${best}?)` : `unknown key (known keys: ${known.join(', ')})`;
}

/**
 * A mapping: unknown keys are errors; absent keys take their default (or stay absent when the
 * entry has none, as in model.config). `def` of the mapping itself: {} = fill from entries.
 */
function mapping(spec: Spec, opts: { nullable?: boolean; def?: null } = {}): Entry {
  return {
    def: opts.def === null ? null : {},
    fields: spec,
    check: (v, p) => {
      if (v === null && opts.nullable) return null;
      if (!isMapping(v)) return bad(p, orNull('a mapping', opts.nullable ?? false), v);
      const known = Object.keys(spec);
      for (const key of Object.keys(v)) if (!known.includes(key)) throw new FieldError([...p, key], unknownKey(key, known));
      const out: Record<string, unknown> = {};
      for (const [key, entry] of Object.entries(spec)) {
        const given = v[key];
        if (given !== undefined) out[key] = entry.check(given, [...p, key]);
        else if ('def' in entry) out[key] = isMapping(entry.def) ? entry.check({}, [...p, key]) : structuredClone(entry.def);
      }
      return out;
    },
  };
}

const modelConfig = mapping(
  Object.fromEntries(
    MODEL_CONFIG_KEYS.map((k): [string, Entry] => {
      const drop = (e: Entry): Entry => ({ check: e.check }); // no default: absent keys stay absent
      if ((SIZE_KEYS as readonly string[]).includes(k)) return [k, drop(int(1, null))];
      if (k === 'n_inner') return [k, drop(int(1, null, true))];
      if (k === 'bos_token_id' || k === 'eos_token_id') return [k, drop(int(0, null))];
      if (k === 'activation_function') return [k, drop(oneOf(ACTIVATIONS, null))];
      if (k.endsWith('_pdrop')) return [k, drop(prob(null))];
      return [k, drop(num(null, { gt: 0 }))];
    }),
  ),
);

const SCHEMA = mapping({
  seed: int(0, 1234),
  output_dir: str('runs/gpt2', false),
  backend: oneOf(BACKEND_NAMES, 'auto'),
  task: oneOf(TASKS, 'causal_lm'),
  model: mapping({
    preset: oneOf(Object.keys(PRESETS), 'gpt2', true),
    config: modelConfig,
    dropout: prob(null, true),
    init_from: str(null, true),
    num_labels: int(2, 2),
  }),
  runner: mapping({
    batch_size: int(1, 4),
    epochs: int(1, 1),
    max_steps: int(1, null, true),
    gradient_accumulation_steps: int(1, 1),
  }),
  optimizer: mapping({
    type: oneOf(['adamw'], 'adamw'),
    betas,
    eps: num(1e-8, { gt: 0 }),
    weight_decay: num(0.1, { ge: 0 }),
    grad_clip: num(1.0, { ge: 0 }),
  }),
  lr_schedule: mapping({
    type: oneOf(LR_SCHEDULE_TYPES, 'polynomial'),
    lr: num(1e-4, { gt: 0 }),
    end_lr: num(1e-5, { ge: 0 }),
    power: num(1.0, { gt: 0 }),
    warmup_steps: int(0, 0),
    warmup_ratio: prob(null, true),
    decay_steps: int(1, null, true),
  }),
  train_dataset: mapping({ path: str(null, true), shuffle: bool(true), drop_remainder: bool(true), repeat: int(1, 1) }),
  eval_dataset: mapping({ path: str(null, true) }, { nullable: true }),
  eval: mapping({ interval: int(0, 0), max_records: int(1, null, true), batch_size: int(1, null, true) }),
  checkpoint: mapping({ interval: int(0, 0), keep_last: int(1, 3) }),
  logging: mapping({ interval: int(1, 1) }),
  parallel: mapping({ data_parallel: single, model_parallel: single, pipeline_stages: single, micro_batch_num: single, recompute: bool(false) }),
  lora: mapping(
    { rank: int(1, 64), alpha: num(128, { gt: 0 }), dropout: prob(0.1), target_modules: loraTargets },
    { nullable: true, def: null },
  ),
});

/** The fully defaulted config, with lora filled in too (applyOverride materializes lists from it). */
export const DEFAULT_SHAPE = SCHEMA.check({ lora: {} }, []) as Record<string, unknown>;

/** How many items the schema allows in the list at `path`; undefined where it has no list. */
export function listCapacity(path: Path): number | undefined {
  let entry: Entry | undefined = SCHEMA;
  for (const seg of path) entry = typeof seg === 'string' && entry?.fields && Object.hasOwn(entry.fields, seg) ? entry.fields[seg] : undefined;
  return entry?.maxItems;
}

/** Validates and fills defaults; throws FieldError at the first problem. */
export function checkTrainConfig(raw: unknown): TrainConfig {
  const c = SCHEMA.check(raw, []) as TrainConfig;
  crossCheck(c);
  return c;
}

/** The model's GPT2Config: preset, then model.config, then model.dropout for all three rates. */
export function resolveModelConfig(c: TrainConfig): GPT2Config {
  const base = c.model.preset === null ? undefined : PRESETS[c.model.preset];
  const merged = { ...base, ...c.model.config } as GPT2Config;
  merged.n_inner ??= null;
  if (c.model.dropout !== null) merged.resid_pdrop = merged.embd_pdrop = merged.attn_pdrop = c.model.dropout;
  // A preset-less config may leave these out: HF's defaults, as configFromJson takes them.
  const hfDefaults = PRESETS.gpt2;
  for (const k of MODEL_CONFIG_KEYS) if (merged[k] === undefined) (merged as unknown as Record<string, unknown>)[k] = hfDefaults[k];
  return merged;
}

function crossCheck(c: TrainConfig): void {
  if (c.model.preset === null) {
    const missing = SIZE_KEYS.filter((k) => c.model.config[k] === undefined);
    if (missing.length > 0) throw new FieldError(['model', 'preset'], `is null, so model.config must give ${missing.join(', ')}`);
  }
  const m = resolveModelConfig(c);
  if (m.n_embd % m.n_head !== 0) {
    const key = c.model.config.n_head !== undefined ? 'n_head' : 'n_embd';
    throw new FieldError(['model', 'config', key], `n_embd (${m.n_embd}) must be divisible by n_head (${m.n_head})`);
  }
  const s = c.lr_schedule;
  if (s.warmup_steps > 0 && s.warmup_ratio !== null) {
    throw new FieldError(['lr_schedule', 'warmup_ratio'], `give warmup_steps (${s.warmup_steps}) or warmup_ratio, not both`);
  }
  if (s.type !== 'constant' && s.end_lr > s.lr) throw new FieldError(['lr_schedule', 'end_lr'], `must be ≤ lr (${s.lr}), got ${s.end_lr}`);
}
