/**
 * The seed's (MindFormers') parameter names, both ways (see ../shared/reference/mindformers-gpt2.md):
 * c_attn [D, 3D] is split into q/k/v dense layers stored [out, in] (transposed); LayerNorms are
 * gamma/beta; the other Conv1D weights keep HF's [in, out] layout.
 */
import { ToolError } from '../util/errors.js';
import type { GPT2Config } from '../model/config.js';
import { parameterShapes, PREFIX, type ParameterValues } from '../model/params.js';
import type { TensorToWrite } from './safetensors.js';

type Values = ParameterValues extends Map<string, infer V> ? V : never;

/** Rows × cols matrix transposed. */
function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

/** Columns [from, to) of a rows × cols matrix. */
function columns(data: Float32Array, rows: number, cols: number, from: number, to: number): Float32Array {
  const out = new Float32Array(rows * (to - from));
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * cols + from, r * cols + to), r * (to - from));
  return out;
}

/** HF name (without prefix) → MindFormers name, for everything but c_attn. */
function renames(c: GPT2Config): [string, string][] {
  const pairs: [string, string][] = [
    ['wte.weight', 'backbone.embedding.word_embedding.embedding_table'],
    ['wpe.weight', 'backbone.embedding.position_embedding.embedding_table'],
    ['ln_f.weight', 'backbone.layernorm.gamma'],
    ['ln_f.bias', 'backbone.layernorm.beta'],
  ];
  for (let i = 0; i < c.n_layer; i++) {
    const h = `h.${i}.`;
    const b = `backbone.blocks.${i}.`;
    pairs.push(
      [`${h}ln_1.weight`, `${b}layernorm1.gamma`],
      [`${h}ln_1.bias`, `${b}layernorm1.beta`],
      [`${h}ln_2.weight`, `${b}layernorm2.gamma`],
      [`${h}ln_2.bias`, `${b}layernorm2.beta`],
      [`${h}attn.c_proj.weight`, `${b}attention.projection.weight`],
      [`${h}attn.c_proj.bias`, `${b}attention.projection.bias`],
      [`${h}mlp.c_fc.weight`, `${b}output.mapping.weight`],
      [`${h}mlp.c_fc.bias`, `${b}output.mapping.bias`],
      [`${h}mlp.c_proj.weight`, `${b}output.projection.weight`],
      [`${h}mlp.c_proj.bias`, `${b}output.projection.bias`],
    );
  }
  return pairs;
}

export function toMindformers(c: GPT2Config, values: ParameterValues): TensorToWrite[] {
  const get = (name: string) => values.get(PREFIX + name) as Values;
  const out: TensorToWrite[] = renames(c).map(([hf, mf]) => ({ name: mf, shape: get(hf).shape, data: get(hf).data }));
  const d = c.n_embd;
  for (let i = 0; i < c.n_layer; i++) {
    const w = get(`h.${i}.attn.c_attn.weight`).data;
    const bias = get(`h.${i}.attn.c_attn.bias`).data;
    for (let part = 0; part < 3; part++) {
      const dense = `backbone.blocks.${i}.attention.dense${part + 1}`;
      out.push({ name: `${dense}.weight`, shape: [d, d], data: transpose(columns(w, d, 3 * d, part * d, (part + 1) * d), d, d) });
      out.push({ name: `${dense}.bias`, shape: [d], data: bias.slice(part * d, (part + 1) * d) });
    }
  }
  return out;
}

/** True if the names look like a MindFormers GPT-2 checkpoint. */
export const isMindformers = (names: Iterable<string>): boolean => [...names].some((n) => n.startsWith('backbone.'));

export function fromMindformers(c: GPT2Config, tensors: Map<string, { shape: number[]; data: Float32Array }>, where: string): ParameterValues {
  const need = (name: string, shape: number[]) => {
    const t = tensors.get(name);
    if (!t) throw new ToolError(`${where}: missing tensor ${name}`);
    if (t.shape.join(',') !== shape.join(',')) throw new ToolError(`${where}: tensor ${name} has shape [${t.shape.join(', ')}], the config expects [${shape.join(', ')}]`);
    return t.data;
  };
  const shapes = new Map(parameterShapes(c));
  const values: ParameterValues = new Map();
  for (const [hf, mf] of renames(c)) {
    const shape = shapes.get(PREFIX + hf)!;
    values.set(PREFIX + hf, { shape, data: need(mf, shape) });
  }
  const d = c.n_embd;
  for (let i = 0; i < c.n_layer; i++) {
    const w = new Float32Array(d * 3 * d);
    const bias = new Float32Array(3 * d);
    for (let part = 0; part < 3; part++) {
      const dense = `backbone.blocks.${i}.attention.dense${part + 1}`;
      const q = transpose(need(`${dense}.weight`, [d, d]), d, d); // back to [in, out]
      for (let r = 0; r < d; r++) w.set(q.subarray(r * d, (r + 1) * d), r * 3 * d + part * d);
      bias.set(need(`${dense}.bias`, [d]), part * d);
    }
    values.set(`${PREFIX}h.${i}.attn.c_attn.weight`, { shape: [d, 3 * d], data: w });
    values.set(`${PREFIX}h.${i}.attn.c_attn.bias`, { shape: [3 * d], data: bias });
  }
  return values;
}
