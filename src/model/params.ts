/**
 * GPT-2's parameters by their Hugging Face names (as save_pretrained writes them), their shapes,
 * and HF's initialisation. Conv1D weights are [in, out]: y = x · W + b.
 */
import { ToolError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { innerSize, type GPT2Config } from './config.js';

export const PREFIX = 'transformer.';

/** [name, shape] of every parameter, in HF's order. The LM head is tied to wte and not listed. */
export function parameterShapes(c: GPT2Config): [string, number[]][] {
  const d = c.n_embd;
  const inner = innerSize(c);
  const out: [string, number[]][] = [
    [`${PREFIX}wte.weight`, [c.vocab_size, d]],
    [`${PREFIX}wpe.weight`, [c.n_positions, d]],
  ];
  for (let i = 0; i < c.n_layer; i++) {
    const h = `${PREFIX}h.${i}.`;
    out.push(
      [`${h}ln_1.weight`, [d]],
      [`${h}ln_1.bias`, [d]],
      [`${h}attn.c_attn.weight`, [d, 3 * d]],
      [`${h}attn.c_attn.bias`, [3 * d]],
      [`${h}attn.c_proj.weight`, [d, d]],
      [`${h}attn.c_proj.bias`, [d]],
      [`${h}ln_2.weight`, [d]],
      [`${h}ln_2.bias`, [d]],
      [`${h}mlp.c_fc.weight`, [d, inner]],
      [`${h}mlp.c_fc.bias`, [inner]],
      [`${h}mlp.c_proj.weight`, [inner, d]],
      [`${h}mlp.c_proj.bias`, [d]],
    );
  }
  out.push([`${PREFIX}ln_f.weight`, [d]], [`${PREFIX}ln_f.bias`, [d]]);
  return out;
}

/** A parameter's values as a flat Float32Array. */
export type ParameterValues = Map<string, { shape: number[]; data: Float32Array }>;

/** Parameters a model reads one at a time into memory of its own (a checkpoint's lazy tensors). */
export interface ParameterSource {
  shape: number[];
  readInto(dest: Float32Array): Promise<void>;
}
export type ParameterSources = Map<string, ParameterSource>;

/** The source of parameter `name`, checked against the shape the config gives it. */
export function sourceOf(sources: ParameterSources, name: string, shape: number[]): ParameterSource {
  const source = sources.get(name);
  if (!source) throw new ToolError(`missing tensor ${name}`);
  if (source.shape.join(',') !== shape.join(',')) throw new ToolError(`tensor ${name} has shape [${source.shape.join(', ')}], expected [${shape.join(', ')}]`);
  return source;
}

/** Values of tensors read back from the backend (for saving); any tfjs tensor fits. */
export async function tensorValues(tensors: Map<string, { shape: number[]; data(): Promise<unknown> }>): Promise<ParameterValues> {
  const out: ParameterValues = new Map();
  for (const [name, t] of tensors) out.set(name, { shape: t.shape, data: (await t.data()) as Float32Array });
  return out;
}

/** Values in memory as sources. */
export function sourcesOf(values: ParameterValues): ParameterSources {
  return new Map([...values].map(([name, v]) => [name, { shape: v.shape, readInto: async (dest: Float32Array) => dest.set(v.data) }]));
}

/**
 * HF's GPT-2 initialisation, from our seeded RNG (so a preset's random model is the same on every
 * backend): N(0, initializer_range) for weights and embeddings, the residual projections
 * (c_proj) scaled by 1/√(2·n_layer), zero biases, LayerNorm weight 1.
 */
export function initialParameters(c: GPT2Config, seed: number): ParameterValues {
  return new Map([...initialTensors(c, seed)].map(([name, shape, data]) => [name, { shape, data }]));
}

/**
 * initialParameters' values drawn as they are read, one tensor at a time (a model quantised at
 * load, such as gpt2-xl's 6.2 GB of float32, never holds them all); read out of order, the draws
 * start again from the seed.
 */
export function initialSources(c: GPT2Config, seed: number): ParameterSources {
  let tensors = initialTensors(c, seed);
  let done: string[] = [];
  const read = async (name: string, dest: Float32Array) => {
    if (done.includes(name)) [tensors, done] = [initialTensors(c, seed), []];
    for (let next = tensors.next(); !next.done; next = tensors.next()) {
      const [drawn, , data] = next.value; // (not for…of: leaving it would close the generator)
      done.push(drawn);
      if (drawn === name) return void dest.set(data);
    }
  };
  return new Map(parameterShapes(c).map(([name, shape]) => [name, { shape, readInto: (dest: Float32Array) => read(name, dest) }]));
}

function* initialTensors(c: GPT2Config, seed: number): Generator<[string, number[], Float32Array]> {
  const rng = new Rng(seed, 0x6770);
  const normal = gaussian(rng);
  for (const [name, shape] of parameterShapes(c)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.endsWith('ln_1.weight') || name.endsWith('ln_2.weight') || name.endsWith('ln_f.weight')) {
      data.fill(1);
    } else if (name.endsWith('.weight')) {
      const std = name.endsWith('c_proj.weight') ? c.initializer_range / Math.sqrt(2 * c.n_layer) : c.initializer_range;
      for (let k = 0; k < data.length; k++) data[k] = std * normal();
    }
    yield [name, shape, data];
  }
}

/** Standard normal samples (Box–Muller, both outputs used). */
export function gaussian(rng: Rng): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = 1 - rng.nextFloat();
    const v = rng.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}
