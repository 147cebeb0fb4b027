/**
 * GPT-2 as llama.cpp's architecture `gpt2` holds it in GGUF, both ways, as llama.cpp's
 * convert_hf_to_gguf.py (GPT2Model) writes it and llama-model.cpp (LLM_ARCH_GPT2) loads it:
 *
 * - names: wte → token_embd, wpe → position_embd, h.N.ln_1 → blk.N.attn_norm, attn.c_attn →
 *   attn_qkv, attn.c_proj → attn_output, ln_2 → ffn_norm, mlp.c_fc → ffn_up, mlp.c_proj →
 *   ffn_down, ln_f → output_norm; `output` is wte again (llama.cpp of early 2025 requires it; the
 *   converter writes the tied copy), and reading refuses an `output` that differs from token_embd.
 * - layout: HF's Conv1D weights are [in, out]; the converter transposes them to [out, in] (ggml
 *   dims {in, out}), so each row (the unit Q8_0 blocks run along) is one output's weights.
 * - dtypes (the converter's rules): norms, biases and position_embd always F32; the matrices
 *   (token_embd, output, the four per-layer weights) F16 or Q8_0 per --dtype, F16 where a row is
 *   not whole Q8_0 blocks (the converter's fallback).
 * - metadata: gpt2.{context_length, embedding_length, feed_forward_length, block_count,
 *   attention.head_count, attention.layer_norm_epsilon}, general.file_type, and the tokenizer:
 *   tokenizer.ggml.model "gpt2", pre "gpt-2" (llama.cpp's GPT-2 pre-tokenizer regex), tokens
 *   (vocab.json's strings by id), token_type (NORMAL; CONTROL for special tokens such as
 *   <|endoftext|>; UNUSED for ids no token has), merges (merges.txt's lines), bos/eos ids.
 */
import { ToolError } from '../util/errors.js';
import { ENDOFTEXT } from '../tokenizer/tokenizer.js';
import { configFromJson, innerSize, type GPT2Config } from '../model/config.js';
import { PREFIX, type ParameterValues } from '../model/params.js';
import { encodeF16 } from './dtypes.js';
import { metaValue, openGguf, ValueType, type GgmlType, type GgufFile, type GgufTensor, type GgufValue } from './gguf.js';
import { writeGguf, type GgufTensorToWrite } from './gguf-write.js';
import type { EncodedTensor } from '../backend/encoded-weights.js';
import { Q8_0_BLOCK, quantizeQ8_0 } from './q8_0.js';
import { ggufTokenizerFromDir, TOKEN_NORMAL, tokenizerDirFor, type GgufTokenizer } from './gguf-tokenizer.js';

export const ARCH = 'gpt2';
export type GgufDtype = 'f32' | 'f16' | 'q8_0';
/** llama.cpp's LlamaFileType for each --dtype (general.file_type). */
const FILE_TYPES: Record<GgufDtype, number> = { f32: 0, f16: 1, q8_0: 7 };
/** ggml's GGML_QNT_VERSION, which the converter records. */
const QUANTIZATION_VERSION = 2;

/** HF name (without "transformer.") → GGUF name, and whether HF stores it transposed (Conv1D). */
function names(config: GPT2Config): [hf: string, gguf: string, transposed: boolean][] {
  const out: [string, string, boolean][] = [
    ['wte.weight', 'token_embd.weight', false],
    ['wpe.weight', 'position_embd.weight', false],
  ];
  for (let i = 0; i < config.n_layer; i++) {
    for (const [hf, gguf] of [['ln_1', 'attn_norm'], ['attn.c_attn', 'attn_qkv'], ['attn.c_proj', 'attn_output'], ['ln_2', 'ffn_norm'], ['mlp.c_fc', 'ffn_up'], ['mlp.c_proj', 'ffn_down']]) {
      const matrix = !hf.startsWith('ln_');
      out.push([`h.${i}.${hf}.weight`, `blk.${i}.${gguf}.weight`, matrix], [`h.${i}.${hf}.bias`, `blk.${i}.${gguf}.bias`, false]);
    }
  }
  out.push(['ln_f.weight', 'output_norm.weight', false], ['ln_f.bias', 'output_norm.bias', false]);
  return out;
}

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

const f32Bytes = (data: Float32Array) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

/** The stored type of a tensor of `shape` (numpy order) under --dtype, by the converter's rules. */
export function storedType(ggufName: string, shape: number[], dtype: GgufDtype): GgmlType {
  if (dtype === 'f32' || shape.length < 2 || ggufName === 'position_embd.weight') return 'F32';
  if (dtype === 'q8_0' && shape[shape.length - 1] % Q8_0_BLOCK === 0) return 'Q8_0';
  return 'F16';
}

function encoder(type: GgmlType, data: () => Float32Array): () => Uint8Array {
  if (type === 'F32') return () => f32Bytes(data());
  if (type === 'F16') return () => { const h = encodeF16(data()); return new Uint8Array(h.buffer, h.byteOffset, h.byteLength); };
  return () => quantizeQ8_0(data());
}

const u32 = (value: number): GgufValue => ({ type: ValueType.UINT32, value });
const str = (value: string): GgufValue => ({ type: ValueType.STRING, value });

/** A GPT-2 model → the metadata and tensors of its GGUF file. */
export function gpt2ToGguf(config: GPT2Config, values: ParameterValues, tokenizer: GgufTokenizer, dtype: GgufDtype, name: string): { metadata: [string, GgufValue][]; tensors: GgufTensorToWrite[] } {
  if (config.activation_function !== 'gelu_new') {
    throw new ToolError(`${name}: activation_function ${config.activation_function}; llama.cpp's gpt2 computes GELU's tanh approximation (gelu_new) only`);
  }
  if (tokenizer.tokens.length !== config.vocab_size) throw new Error(`tokenizer of ${tokenizer.tokens.length} tokens for a vocabulary of ${config.vocab_size}`);
  const metadata: [string, GgufValue][] = [
    ['general.architecture', str(ARCH)],
    ['general.name', str(name)],
    [`${ARCH}.block_count`, u32(config.n_layer)],
    [`${ARCH}.context_length`, u32(config.n_positions)],
    [`${ARCH}.embedding_length`, u32(config.n_embd)],
    [`${ARCH}.feed_forward_length`, u32(innerSize(config))],
    [`${ARCH}.attention.head_count`, u32(config.n_head)],
    [`${ARCH}.attention.layer_norm_epsilon`, { type: ValueType.FLOAT32, value: config.layer_norm_epsilon }],
    ['general.file_type', u32(FILE_TYPES[dtype])],
    ['general.quantization_version', u32(QUANTIZATION_VERSION)],
    ['tokenizer.ggml.model', str('gpt2')],
    ['tokenizer.ggml.pre', str('gpt-2')],
    ['tokenizer.ggml.tokens', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: tokenizer.tokens }],
    ['tokenizer.ggml.token_type', { type: ValueType.ARRAY, itemType: ValueType.INT32, value: tokenizer.types }],
    ['tokenizer.ggml.merges', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: tokenizer.merges }],
    ...specialIds(config, tokenizer),
  ];
  const tensors: GgufTensorToWrite[] = [];
  for (const [hf, gguf, transposed] of names(config)) {
    const v = values.get(PREFIX + hf);
    if (!v) throw new ToolError(`cannot write ${name}: missing tensor ${PREFIX + hf}`);
    const shape = transposed ? [v.shape[1], v.shape[0]] : v.shape;
    const data = transposed ? () => transpose(v.data, v.shape[0], v.shape[1]) : () => v.data;
    const type = storedType(gguf, shape, dtype);
    tensors.push({ name: gguf, type, shape, encode: encoder(type, data) });
    if (gguf === 'token_embd.weight') tensors.push({ name: 'output.weight', type, shape, encode: encoder(type, data) });
  }
  return { metadata, tensors };
}

/**
 * bos/eos ids: the config's, unless they lie outside the vocabulary (a small model keeping GPT-2's
 * 50256, as HF's default config does): then <|endoftext|>'s id, or none. llama.cpp would otherwise
 * warn and fall back to its own default, id 11.
 */
function specialIds(config: GPT2Config, tokenizer: GgufTokenizer): [string, GgufValue][] {
  const endoftext = tokenizer.tokens.indexOf(ENDOFTEXT);
  const out: [string, GgufValue][] = [];
  for (const [key, id] of [['bos', config.bos_token_id], ['eos', config.eos_token_id]] as const) {
    const valid = id < config.vocab_size ? id : endoftext;
    if (valid >= 0) out.push([`tokenizer.ggml.${key}_token_id`, u32(valid)]);
  }
  return out;
}

/** A u32-ish metadata number (any integer type), checked. */
function intMeta(file: GgufFile, key: string, min: number): number {
  const v = metaValue(file.metadata, key, [ValueType.UINT32, ValueType.INT32, ValueType.UINT64, ValueType.INT64, ValueType.UINT16, ValueType.UINT8], file.path);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new ToolError(`${file.path}: GGUF metadata ${key} is ${String(v)}, expected an integer ≥ ${min}`);
  return v;
}

/** The shortest decimal that is the same float32 (1e-5, not 9.999999747378752e-6). */
function shortestF32(v: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

/** The GPT-2 config a GGUF file's metadata (and token_embd's shape) describe. */
export function gpt2ConfigOf(file: GgufFile): GPT2Config {
  const arch = metaValue(file.metadata, 'general.architecture', [ValueType.STRING], file.path);
  if (arch !== ARCH) throw new ToolError(`${file.path}: a GGUF of architecture ${JSON.stringify(arch)}; only GPT-2 (${ARCH}) is supported`);
  const embd = file.tensors.get('token_embd.weight');
  if (!embd || embd.shape.length !== 2) throw new ToolError(`${file.path}: GGUF tensor token_embd.weight is missing or not 2-D`);
  const n_embd = intMeta(file, `${ARCH}.embedding_length`, 1);
  const ff = intMeta(file, `${ARCH}.feed_forward_length`, 1);
  const eps = metaValue(file.metadata, `${ARCH}.attention.layer_norm_epsilon`, [ValueType.FLOAT32, ValueType.FLOAT64], file.path) as number;
  const id = (key: string, fallback: number) => (file.metadata.has(key) ? intMeta(file, key, 0) : fallback);
  return configFromJson(
    {
      vocab_size: embd.shape[0],
      n_positions: intMeta(file, `${ARCH}.context_length`, 1),
      n_embd,
      n_layer: intMeta(file, `${ARCH}.block_count`, 1),
      n_head: intMeta(file, `${ARCH}.attention.head_count`, 1),
      n_inner: ff === 4 * n_embd ? null : ff,
      layer_norm_epsilon: shortestF32(eps),
      activation_function: 'gelu_new',
      bos_token_id: id('tokenizer.ggml.bos_token_id', embd.shape[0] - 1),
      eos_token_id: id('tokenizer.ggml.eos_token_id', embd.shape[0] - 1),
    },
    file.path,
  );
}

/** One GPT-2 parameter read from a GGUF tensor: HF's name, shape and layout, as float32. */
export interface GgufParameter {
  shape: number[];
  /** What read() hands out: the stored float type, and F32 for Q8_0 (dequantised). */
  dtype: 'F32' | 'F16' | 'BF16';
  /** The GGUF tensor it comes from (raw blocks: `tensor.read()`); HF's Conv1D weights are its transpose. */
  tensor: GgufTensor;
  transposed: boolean;
  read(): Promise<Float32Array>;
  readInto(dest: Float32Array): Promise<void>;
  /**
   * The stored bytes when they are already `want` (an F16 or Q8_0 tensor), in GGUF's layout, for a
   * decoder that keeps weights encoded (src/model/decode-model.ts): no dequantising and quantising
   * again. Undefined otherwise.
   */
  readEncoded(want: 'f16' | 'q8_0'): Promise<EncodedTensor | undefined>;
}

async function encodedOf(tensor: GgufTensor, want: 'f16' | 'q8_0'): Promise<EncodedTensor | undefined> {
  if (want === 'q8_0' && tensor.type === 'Q8_0') return { dtype: 'q8_0', blocks: await tensor.read() };
  if (want !== 'f16' || tensor.type !== 'F16') return undefined;
  const bytes = await tensor.read();
  // A copy: the bytes need not sit at an even offset of their buffer.
  return { dtype: 'f16', bits: new Uint16Array(bytes.slice().buffer, 0, bytes.length / 2) };
}

/**
 * Each HF GPT-2 parameter (with "transformer.") from the file's tensors, shapes checked against
 * config; an `output` tensor must equal token_embd (GPT-2's head is tied). Names that are not
 * GPT-2's come back as `ignored`.
 */
export async function gpt2ParametersOf(file: GgufFile, config: GPT2Config): Promise<{ params: Map<string, GgufParameter>; ignored: string[] }> {
  const params = new Map<string, GgufParameter>();
  const left = new Set(file.tensors.keys());
  const inner = innerSize(config);
  for (const [hf, gguf, transposed] of names(config)) {
    const tensor = file.tensors.get(gguf);
    if (!tensor) throw new ToolError(`${file.path}: missing GGUF tensor ${gguf}`);
    left.delete(gguf);
    const expected = expectedShape(hf, config, inner);
    const shape = transposed ? [tensor.shape[1], tensor.shape[0]] : tensor.shape;
    if (shape.join(',') !== expected.join(',')) {
      throw new ToolError(`${file.path}: GGUF tensor ${gguf} has shape [${tensor.shape.join(', ')}] (ggml {${[...tensor.shape].reverse().join(', ')}}), the metadata implies ${transposed ? `[${expected[1]}, ${expected[0]}]` : `[${expected.join(', ')}]`}`);
    }
    const read = async () => {
      const data = await tensor.toFloat32();
      return transposed ? transpose(data, tensor.shape[0], tensor.shape[1]) : data;
    };
    const dtype = tensor.type === 'Q8_0' ? 'F32' : tensor.type;
    params.set(PREFIX + hf, { shape, dtype, tensor, transposed, read, readInto: async (dest) => dest.set(await read()), readEncoded: (want) => encodedOf(tensor, want) });
  }
  const output = file.tensors.get('output.weight');
  if (output) {
    left.delete('output.weight');
    const embd = file.tensors.get('token_embd.weight')!;
    const same = output.shape.join(',') === embd.shape.join(',') && (output.type === embd.type ? Buffer.from(await output.read()).equals(await embd.read()) : sameValues(await output.toFloat32(), await embd.toFloat32()));
    if (!same) throw new ToolError(`${file.path}: GGUF tensor output.weight differs from token_embd.weight; GPT-2's LM head is tied to the embedding and an untied head is not supported`);
  }
  return { params, ignored: [...left] };
}

const sameValues = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => v === b[i]);

function expectedShape(hf: string, c: GPT2Config, inner: number): number[] {
  const d = c.n_embd;
  if (hf === 'wte.weight') return [c.vocab_size, d];
  if (hf === 'wpe.weight') return [c.n_positions, d];
  if (hf.endsWith('c_attn.weight')) return [d, 3 * d];
  if (hf.endsWith('c_attn.bias')) return [3 * d];
  if (hf.endsWith('attn.c_proj.weight')) return [d, d];
  if (hf.endsWith('c_fc.weight')) return [d, inner];
  if (hf.endsWith('c_fc.bias')) return [inner];
  if (hf.endsWith('mlp.c_proj.weight')) return [inner, d];
  return [d];
}

/** The tokenizer a GGUF file embeds (tokenizer.ggml.model must be gpt2: byte-level BPE). */
export function ggufTokenizerOf(file: GgufFile): GgufTokenizer {
  const model = metaValue(file.metadata, 'tokenizer.ggml.model', [ValueType.STRING], file.path);
  if (model !== 'gpt2') throw new ToolError(`${file.path}: GGUF tokenizer.ggml.model is ${JSON.stringify(model)}; only GPT-2's byte-level BPE ("gpt2") is supported`);
  const strings = (key: string) => {
    const v = metaValue(file.metadata, key, [ValueType.ARRAY], file.path) as unknown[];
    if (file.metadata.get(key)!.itemType !== ValueType.STRING) throw new ToolError(`${file.path}: GGUF metadata ${key} is not an array of strings`);
    return v as string[];
  };
  const tokens = strings('tokenizer.ggml.tokens');
  const merges = strings('tokenizer.ggml.merges');
  const types = file.metadata.has('tokenizer.ggml.token_type') ? (metaValue(file.metadata, 'tokenizer.ggml.token_type', [ValueType.ARRAY], file.path) as number[]) : tokens.map(() => TOKEN_NORMAL);
  if (types.length !== tokens.length) throw new ToolError(`${file.path}: GGUF tokenizer.ggml.token_type has ${types.length} entries for ${tokens.length} tokens`);
  return { tokens, types, merges };
}

/** A GGUF GPT-2 opened as a checkpoint: config, parameters read on demand, its tokenizer as a directory. */
export interface GgufModel {
  config: GPT2Config;
  params: Map<string, GgufParameter>;
  tokenizerDir: string;
  ignored: string[];
  /** The file itself (raw tensors, metadata). */
  file: GgufFile;
  close(): Promise<void>;
}

export async function openGgufModel(path: string): Promise<GgufModel> {
  const file = await openGguf(path);
  try {
    const config = gpt2ConfigOf(file);
    const { params, ignored } = await gpt2ParametersOf(file, config);
    const tokenizer = ggufTokenizerOf(file);
    if (tokenizer.tokens.length !== config.vocab_size) throw new ToolError(`${path}: GGUF tokenizer has ${tokenizer.tokens.length} tokens, token_embd.weight ${config.vocab_size} rows`);
    return { config, params, tokenizerDir: await tokenizerDirFor(tokenizer, path), ignored, file, close: file.close };
  } catch (err) {
    await file.close();
    throw err;
  }
}

/** The GPT-2 config of a GGUF file, from its header alone. */
export async function ggufConfig(path: string): Promise<GPT2Config> {
  const file = await openGguf(path);
  try {
    return gpt2ConfigOf(file);
  } finally {
    await file.close();
  }
}

async function valuesOf(params: Map<string, GgufParameter>): Promise<ParameterValues> {
  const values: ParameterValues = new Map();
  for (const [name, p] of params) values.set(name, { shape: p.shape, data: await p.read() });
  return values;
}

/** A GGUF GPT-2's parameters read whole into float32 values (Q8_0 dequantised); its tokenizer is left alone. */
export async function readGgufWeights(path: string): Promise<{ config: GPT2Config; values: ParameterValues; ignored: string[] }> {
  const file = await openGguf(path);
  try {
    const config = gpt2ConfigOf(file);
    const { params, ignored } = await gpt2ParametersOf(file, config);
    return { config, values: await valuesOf(params), ignored };
  } finally {
    await file.close();
  }
}

/** A GGUF GPT-2 read whole: float32 values (Q8_0 dequantised) and its tokenizer as a directory. */
export async function readGgufModel(path: string): Promise<{ config: GPT2Config; values: ParameterValues; tokenizerDir: string; ignored: string[] }> {
  const model = await openGgufModel(path);
  try {
    return { config: model.config, values: await valuesOf(model.params), tokenizerDir: model.tokenizerDir, ignored: model.ignored };
  } finally {
    await model.close();
  }
}

/** Writes a GPT-2 (tokenizer from `tokenizerDir`, GPT-2's when undefined) as a GGUF file llama.cpp runs. */
export async function writeGgufModel(path: string, model: { config: GPT2Config; values: ParameterValues; tokenizerDir?: string }, dtype: GgufDtype, name: string): Promise<void> {
  const tokenizer = await ggufTokenizerFromDir(model.tokenizerDir, model.config.vocab_size);
  const { metadata, tensors } = gpt2ToGguf(model.config, model.values, tokenizer, dtype, name);
  await writeGguf(path, metadata, tensors);
}
