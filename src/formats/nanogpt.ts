/**
 * nanoGPT checkpoints (karpathy/nanoGPT's `ckpt.pt`): what train.py saves with torch.save — a dict
 * of `model` (GPT.state_dict()), `optimizer` (AdamW's state_dict()), `model_args` (n_layer, n_head,
 * n_embd, block_size, bias, vocab_size, dropout), `iter_num`, `best_val_loss` and `config` (the
 * run's settings) — read into GPT-2's (HF's) layout, and written back so that train.py resumes
 * from it (`--init_from=resume`) and sample.py samples from it.
 *
 * The mapping, both ways:
 * - nanoGPT's nn.Linear weights are [out, in]; GPT-2's Conv1D weights are [in, out]: transposed.
 * - `lm_head.weight` is tied to `transformer.wte.weight` (read: checked equal; written: one storage).
 * - `_orig_mod.` prefixes (a torch.compile'd model's state dict) are stripped, as train.py does.
 * - `bias: False` models have no Linear or LayerNorm biases: read as zeros (the same function);
 *   a model whose biases are all zero is written as `bias: False`.
 * - model.py's MLP uses nn.GELU() (exact, erf): activation_function `gelu`.
 * - `transformer.h.N.attn.bias` is the causal-mask buffer torch < 2 checkpoints carry: skipped
 *   (written files have the torch >= 2 layout, which is what model.py loads under torch >= 2).
 * - vocab_size is kept from model_args, nanoGPT's padding (50257 → 50304) included.
 */
import { basename, resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import { ToolError } from '../util/errors.js';
import { GPT2_VOCAB_SIZE } from '../tokenizer/tokenizer.js';
import type { GPT2Config } from '../model/config.js';
import { parameterShapes, PREFIX, type ParameterValues } from '../model/params.js';
import { readTorchPickle, type LoadedTensor } from './pytorch-bin.js';
import { PyDict } from './pickle.js';
import { collectTensors, TensorRef } from './state-dict-pickle.js';
import { PyFloat, PyOrderedDict, PyTuple, TorchTensor, writeTorchFile, type PyValue } from './torch-write.js';

export const COMPILED_PREFIX = '_orig_mod.';
const ARGS = ['n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout'] as const;
/** nanoGPT's LayerNorm epsilon (fixed in model.py). */
const EPSILON = 1e-5;
/** Conv1D in GPT-2, nn.Linear in nanoGPT: the weights that are transposed. */
const LINEAR = /\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;
const BUFFER = /^transformer\.h\.\d+\.attn\.bias$/;
/** train.py's defaults, for the fresh optimizer state of a written checkpoint. */
const ADAMW = { lr: 6e-4, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1 };
const NO_BEST_LOSS = 1e9; // train.py's best_val_loss before its first evaluation
const CONVERTED_BY = 'gpt2-toolchain';

export interface NanogptModelArgs {
  n_layer: number;
  n_head: number;
  n_embd: number;
  block_size: number;
  bias: boolean;
  vocab_size: number;
  dropout: number;
}

export interface NanogptCheckpoint {
  path: string;
  args: NanogptModelArgs;
  config: GPT2Config;
  iterNum: unknown;
  bestValLoss: unknown;
}

const isDict = (v: unknown): v is PyDict => v instanceof PyDict;

/**
 * The checkpoint's model_args and GPT-2 config when `path` (a torch zip archive) holds a nanoGPT
 * checkpoint — a dict whose `model` is a dict — else undefined; one without usable model_args is
 * an error. Reads only the pickle, not the tensors.
 */
export async function sniffNanogpt(path: string): Promise<NanogptCheckpoint | undefined> {
  return readTorchPickle(path, async ({ value }) => {
    if (!isDict(value) || !isDict(value.map.get('model'))) return undefined;
    const args = value.map.get('model_args');
    if (!isDict(args)) throw new ToolError(`${path}: a nanoGPT-style checkpoint (a dict with "model") without model_args: the model's shape is unknown`);
    const modelArgs = parseArgs(path, args);
    return { path, args: modelArgs, config: configOf(modelArgs), iterNum: value.map.get('iter_num'), bestValLoss: value.map.get('best_val_loss') };
  });
}

function parseArgs(path: string, dict: PyDict): NanogptModelArgs {
  const get = (key: (typeof ARGS)[number]) => dict.map.get(key);
  const out: Record<string, unknown> = {};
  for (const key of ARGS) {
    const v = get(key);
    if (key === 'bias') {
      if (typeof v !== 'boolean') throw new ToolError(`${path}: model_args.bias must be True or False, found ${describe(v)}`);
    } else if (key === 'dropout') {
      if (v !== undefined && (typeof v !== 'number' || !(v >= 0 && v < 1))) throw new ToolError(`${path}: model_args.dropout must be in [0, 1), found ${describe(v)}`);
    } else if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
      throw new ToolError(`${path}: model_args.${key} must be a positive integer, found ${describe(v)}`);
    }
    out[key] = v ?? 0;
  }
  const args = out as unknown as NanogptModelArgs;
  if (args.n_embd % args.n_head !== 0) throw new ToolError(`${path}: model_args.n_embd (${args.n_embd}) must be divisible by n_head (${args.n_head})`);
  return args;
}

const describe = (v: unknown) => (v === undefined ? 'nothing' : v instanceof TensorRef ? 'a tensor' : typeof v === 'string' ? JSON.stringify(v.slice(0, 40)) : String(v));

function configOf(a: NanogptModelArgs): GPT2Config {
  return {
    vocab_size: a.vocab_size,
    n_positions: a.block_size,
    n_embd: a.n_embd,
    n_layer: a.n_layer,
    n_head: a.n_head,
    n_inner: null,
    activation_function: 'gelu',
    resid_pdrop: a.dropout,
    embd_pdrop: a.dropout,
    attn_pdrop: a.dropout,
    layer_norm_epsilon: EPSILON,
    initializer_range: 0.02,
    bos_token_id: 50256,
    eos_token_id: 50256,
  };
}

/** nanoGPT's shape of a GPT-2 parameter: Linear weights transposed. */
const nanoShape = (name: string, shape: number[]) => (LINEAR.test(name) ? [shape[1], shape[0]] : shape);

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

/** The model's parameters in GPT-2's layout; info lines say what was mapped. */
export async function readNanogpt(
  ck: NanogptCheckpoint,
  options: { onProgress?: (done: number, total: number) => void; onInfo?: (message: string) => void } = {},
): Promise<{ values: ParameterValues; ignored: string[] }> {
  const { path, args, config } = ck;
  let prefixed = false;
  const tensors = await readTorchPickle(path, (pickle) =>
    pickle.load(
      (value) =>
        collectTensors(path, (value as PyDict).map.get('model')).map(([name, t]): [string, TensorRef] => {
          if (!name.startsWith(COMPILED_PREFIX)) return [name, t];
          prefixed = true;
          return [name.slice(COMPILED_PREFIX.length), t];
        }),
      { onProgress: options.onProgress },
    ),
  );
  const info = options.onInfo ?? (() => {});
  info(`nanoGPT checkpoint: model_args ${JSON.stringify(args)}, iter_num ${describe(ck.iterNum)}; activation_function gelu (model.py's nn.GELU is exact)`);
  if (prefixed) info(`stripped torch.compile's ${COMPILED_PREFIX} prefix from the tensor names`);
  if (!args.bias) info('bias: False: nanoGPT has no Linear or LayerNorm biases here; loading them as zeros (the same function)');
  if (args.vocab_size > GPT2_VOCAB_SIZE) {
    info(`vocab_size ${args.vocab_size} kept from model_args: rows ${GPT2_VOCAB_SIZE}–${args.vocab_size - 1} of wte are nanoGPT's padding, which GPT-2's tokenizer never produces (HF GPT-2 loads vocab_size ${args.vocab_size} as it is)`);
  }

  const values: ParameterValues = new Map();
  const take = (name: string, shape: number[]): LoadedTensor | undefined => {
    const t = tensors.get(name);
    if (t && t.shape.join(',') !== shape.join(',')) {
      throw new ToolError(`${path}: tensor ${name} has shape [${t.shape.join(', ')}], model_args give [${shape.join(', ')}]`);
    }
    tensors.delete(name);
    return t;
  };
  for (const [name, shape] of parameterShapes(config)) {
    const t = take(name, nanoShape(name, shape));
    if (!t) {
      if (!args.bias && name.endsWith('.bias')) values.set(name, { shape, data: new Float32Array(shape[0]) });
      else throw new ToolError(`${path}: missing tensor ${name}${name.endsWith('.bias') ? ' (model_args say bias: True)' : ''}`);
    } else {
      values.set(name, { shape, data: LINEAR.test(name) ? transpose(t.data, shape[1], shape[0]) : t.data });
    }
  }
  const wte = values.get(`${PREFIX}wte.weight`)!;
  const head = take('lm_head.weight', [config.vocab_size, config.n_embd]);
  if (head && !head.data.every((v, i) => v === wte.data[i])) {
    throw new ToolError(`${path}: lm_head.weight differs from transformer.wte.weight; nanoGPT ties them and an untied head is not supported`);
  }
  const ignored = [...tensors.keys()].filter((name) => !BUFFER.test(name));
  return { values, ignored };
}

export interface NanogptWriteOptions {
  /** What `dst` may replace: an existing file, with --overwrite, when it is not an input. */
  overwrite?: { inputs?: readonly string[] };
  weightsPath: string;
  onInfo?: (message: string) => void;
  onWarning?: (message: string) => void;
}

/**
 * Refuses a `dst` that exists unless overwrite allows it: a regular file that is no input of the
 * command and a nanoGPT checkpoint this toolchain wrote (its config says converted_by).
 */
export async function checkNanogptOutput(dst: string, overwrite: NanogptWriteOptions['overwrite']): Promise<void> {
  let isFile: boolean;
  try {
    isFile = (await stat(dst)).isFile();
  } catch {
    return; // missing: written fresh (a bad path fails when the file is created)
  }
  if (!isFile) throw new ToolError(`${dst}: exists and is not a file (a nanoGPT checkpoint is one file, ckpt.pt)`);
  if (!overwrite) throw new ToolError(`${dst}: exists (use --overwrite to replace a ckpt.pt this toolchain wrote)`);
  if ((overwrite.inputs ?? []).some((input) => resolve(input) === resolve(dst))) throw new ToolError(`${dst}: refusing to replace it: it is an input of this command`);
  const ours = await readTorchPickle(dst, async ({ value }) => {
    const config = isDict(value) ? value.map.get('config') : undefined;
    return isDict(config) && config.map.get('converted_by') === CONVERTED_BY;
  }).catch(() => false);
  if (!ours) throw new ToolError(`${dst}: not replacing it with --overwrite: it is not a nanoGPT checkpoint written by ${CONVERTED_BY}`);
}

/** Writes a ckpt.pt that nanoGPT's train.py resumes from (see the file comment for the mapping). */
export async function writeNanogpt(dst: string, config: GPT2Config, values: ParameterValues, options: NanogptWriteOptions): Promise<void> {
  if (config.n_inner !== null && config.n_inner !== 4 * config.n_embd) {
    throw new ToolError(`cannot write a nanoGPT checkpoint: n_inner is ${config.n_inner}, and nanoGPT's MLP is always 4 × n_embd (${4 * config.n_embd})`);
  }
  if (config.activation_function !== 'gelu') {
    options.onWarning?.(`nanoGPT's model.py computes exact GELU; this model uses ${config.activation_function}, so nanoGPT's logits will differ slightly (as they do for GPT-2 weights in nanoGPT's own from_pretrained)`);
  }
  if (config.layer_norm_epsilon !== EPSILON) {
    options.onWarning?.(`nanoGPT's LayerNorm uses epsilon ${EPSILON}; this model uses ${config.layer_norm_epsilon}, so nanoGPT's logits will differ slightly`);
  }
  const shapes = parameterShapes(config);
  const bias = shapes.some(([name]) => name.endsWith('.bias') && values.get(name)!.data.some((v) => v !== 0));
  if (!bias) options.onInfo?.('every bias is zero: writing a bias: False model (nanoGPT without Linear and LayerNorm biases; the same function)');
  const args: NanogptModelArgs = {
    n_layer: config.n_layer,
    n_head: config.n_head,
    n_embd: config.n_embd,
    block_size: config.n_positions,
    bias,
    vocab_size: config.vocab_size,
    dropout: config.resid_pdrop,
  };
  const state: Array<[PyValue, PyValue]> = [];
  let decay = 0;
  let wte: TorchTensor | undefined;
  for (const [name, shape] of shapes) {
    if (!bias && name.endsWith('.bias')) continue;
    const v = values.get(name);
    if (!v) throw new ToolError(`cannot write a nanoGPT checkpoint: missing tensor ${name}`);
    const tensor = LINEAR.test(name) ? new TorchTensor(transpose(v.data, shape[0], shape[1]), [shape[1], shape[0]]) : new TorchTensor(v.data, shape);
    if (name === `${PREFIX}wte.weight`) wte = tensor;
    if (shape.length >= 2) decay++;
    state.push([name, tensor]);
  }
  state.push(['lm_head.weight', wte!]); // the same storage: torch.load gives back the tie
  // configure_optimizers' two groups: weight decay for the tensors of rank ≥ 2, none for the rest;
  // state_dict() numbers the parameters group after group, each in named_parameters() order.
  const count = state.length - 1;
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
  const group = (params: number[], weightDecay: number) =>
    new Map<PyValue, PyValue>([
      ['lr', new PyFloat(ADAMW.lr)],
      ['betas', new PyTuple(ADAMW.betas.map((b) => new PyFloat(b)))],
      ['eps', new PyFloat(ADAMW.eps)],
      ['weight_decay', new PyFloat(weightDecay)],
      ['amsgrad', false],
      ['foreach', null],
      ['maximize', false],
      ['capturable', false],
      ['differentiable', false],
      ['fused', null],
      ['params', params],
    ]);
  const modelArgs = new Map<PyValue, PyValue>(ARGS.map((k) => [k, k === 'dropout' ? new PyFloat(args.dropout) : args[k]]));
  const checkpoint = new Map<PyValue, PyValue>([
    ['model', new PyOrderedDict(state)],
    // An AdamW state with no moments yet: train.py's optimizer.load_state_dict accepts it (same
    // groups, same sizes) and AdamW starts its moments at zero, as a fresh run does.
    ['optimizer', new Map<PyValue, PyValue>([['state', new Map()], ['param_groups', [group(range(0, decay), ADAMW.weight_decay), group(range(decay, count), 0)]]])],
    ['model_args', modelArgs],
    ['iter_num', 0],
    ['best_val_loss', new PyFloat(NO_BEST_LOSS)],
    ['config', new Map<PyValue, PyValue>([...modelArgs, ['converted_from', basename(options.weightsPath)], ['converted_by', CONVERTED_BY]])],
  ]);
  await checkNanogptOutput(dst, options.overwrite);
  await writeTorchFile(dst, checkpoint);
  options.onInfo?.(
    `wrote a nanoGPT checkpoint (iter_num 0; a fresh AdamW state with train.py's defaults: betas (0.9, 0.95), weight_decay 0.1, eps 1e-8, which a resumed run keeps; lr is set by train.py every step)`,
  );
}
