/**
 * GPT-2 on TensorFlow.js, computing what Hugging Face's GPT2LMHeadModel computes: token +
 * position embeddings, pre-LayerNorm blocks (causal self-attention, MLP), final LayerNorm, LM
 * head tied to wte. Parameters keep HF's names. `tf` is passed in (see src/backend): with
 * tfjs-node the whole program must use the instance it registers into.
 *
 * Incremental decoding: run with `useCache` to get each layer's keys and values back, then pass
 * them as `past` with the next tokens; the result equals running the whole sequence at once.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { tensorFromReader } from '../backend/tensor-from-reader.js';
import { ToolError } from '../util/errors.js';
import type { GPT2Config } from './config.js';
import { parameterShapes, PREFIX, sourceOf, tensorValues, type ParameterSources, type ParameterValues } from './params.js';

export type TF = typeof import('@tensorflow/tfjs');
type Tensor = tfjs.Tensor;

/** Keys and values of every layer so far: [B, n_head, length, head_dim] each. */
export interface KVCache {
  layers: { k: Tensor; v: Tensor }[];
  length: number;
}

export interface ForwardOptions {
  /** [B][past + T]: 1 for real tokens, 0 for padding (default: all real). */
  attentionMask?: number[][];
  /** [B][T] absolute positions (default past + 0, 1, …): left-padded batches count from their first real token. */
  positionIds?: number[][];
  /** Cache from an earlier call; the new tokens continue it. */
  past?: KVCache;
  /** Also return the cache extended with these tokens. */
  useCache?: boolean;
  /** Apply dropout (training only). */
  training?: boolean;
  /** Seed for dropout masks. */
  seed?: number;
}

/**
 * Something that adds to a Conv1D's output (LoRA, src/model/lora.ts): the delta [N, out] for the
 * layer `name` (e.g. "h.0.attn.c_attn") given its input rows x2d [N, in], or undefined to add
 * nothing. Called inside the model's tidy scopes; `options` says whether this is training.
 */
export interface LinearAdapter {
  delta(name: string, x2d: tfjs.Tensor2D, options: ForwardOptions): tfjs.Tensor2D | undefined;
}

const NEG = -1e9; // "minus infinity" that stays finite when two masks add up (no NaN rows)
const SCORE_ELEMENTS = 1 << 20; // attention scores computed at once in inference (4 MB)
const MLP_ROWS = 256; // rows through the MLP at once in inference

export class GPT2 {
  private constructor(
    readonly tf: TF,
    readonly config: GPT2Config,
    /** Parameters by HF name (with the "transformer." prefix). */
    readonly params: Map<string, Tensor>,
  ) {}

  /** Adds to the Conv1D outputs (an unmerged LoRA); unset, the model is plain GPT-2. */
  adapter: LinearAdapter | undefined;

  /** A model over tensors made from values (checked against the config's shapes). */
  static fromValues(tf: TF, config: GPT2Config, values: ParameterValues, options: { trainable?: boolean } = {}): GPT2 {
    const params = new Map<string, Tensor>();
    for (const [name, shape] of parameterShapes(config)) {
      const v = values.get(name);
      if (!v) throw new ToolError(`missing tensor ${name}`);
      if (v.shape.join(',') !== shape.join(',')) throw new ToolError(`tensor ${name} has shape [${v.shape.join(', ')}], expected [${shape.join(', ')}]`);
      const t = tf.tensor(v.data, shape, 'float32');
      // Variables stay unnamed: tfjs names must be unique per process, and tests train several models.
      params.set(name, options.trainable ? tf.variable(t, true) : t);
      if (options.trainable) t.dispose();
    }
    return new GPT2(tf, config, params);
  }

  /**
   * A model over tensors read one at a time from `sources` (each read is dropped once its
   * tensor is made), so loading needs little more memory than the weights themselves.
   */
  static async fromSources(tf: TF, config: GPT2Config, sources: ParameterSources): Promise<GPT2> {
    const params = new Map<string, Tensor>();
    try {
      for (const [name, shape] of parameterShapes(config)) {
        const source = sourceOf(sources, name, shape);
        params.set(name, await tensorFromReader(tf, shape, (dest) => source.readInto(dest)));
      }
    } catch (err) {
      tf.dispose([...params.values()]);
      throw err;
    }
    return new GPT2(tf, config, params);
  }

  param(name: string): Tensor {
    const p = this.params.get(PREFIX + name);
    if (!p) throw new Error(`no parameter ${PREFIX + name}`);
    return p;
  }

  /** Values of every parameter, read back from the backend (for saving). */
  values(): Promise<ParameterValues> {
    return tensorValues(this.params);
  }

  dispose(): void {
    for (const t of this.params.values()) t.dispose();
  }

  /** Final hidden states [B, T, n_embd] (after ln_f), and the extended cache if asked. */
  hidden(ids: number[][], options: ForwardOptions = {}): { hidden: tfjs.Tensor3D; cache?: KVCache } {
    const tf = this.tf;
    const c = this.config;
    const batch = ids.length;
    const length = ids[0]?.length ?? 0;
    const past = options.past?.length ?? 0;
    this.checkInputs(ids, past, options);
    return tf.tidy(() => {
      const flatIds = tf.tensor2d(ids.flat(), [batch, length], 'int32');
      const positions = options.positionIds ?? ids.map(() => Array.from({ length }, (_, t) => past + t));
      const pos = tf.tensor2d(positions.flat(), [batch, length], 'int32');
      let x = tf.add(tf.gather(this.param('wte.weight'), flatIds), tf.gather(this.param('wpe.weight'), pos)) as tfjs.Tensor3D;
      x = this.dropout(x, c.embd_pdrop, options, 0);
      const bias = this.attentionBias(batch, length, past, options.attentionMask);
      const layers: KVCache['layers'] = [];
      for (let i = 0; i < c.n_layer; i++) {
        // A scope per block: a block's intermediates (attention scores are [B, heads, T, S]) are
        // freed before the next block runs, not at the end of the whole pass.
        const input = x;
        const block = tf.tidy(() => {
          // In inference each intermediate is freed as soon as the next step has it (a scope
          // alone would keep them all to the block's end); training keeps them for the gradients.
          const done = (...ts: Tensor[]) => options.training || tf.dispose(ts);
          const normed = this.layerNorm(input, `h.${i}.ln_1`);
          const { out, k, v } = this.attention(i, normed, bias, options.past?.layers[i], options);
          done(normed);
          const mid = tf.add(input, out) as tfjs.Tensor3D;
          done(out);
          const ff = this.feedForward(i, mid, options);
          const y = tf.add(mid, ff) as tfjs.Tensor3D;
          done(mid, ff);
          if (options.useCache) return { y, k, v };
          done(k, v);
          return { y };
        });
        if (block.k && block.v) layers.push({ k: block.k, v: block.v });
        if (i > 0) input.dispose();
        x = block.y;
      }
      const hidden = this.layerNorm(x, 'ln_f');
      return options.useCache ? { hidden, cache: { layers, length: past + length } } : { hidden };
    });
  }

  /**
   * LM head: logits [N, vocab] of hidden states [N, n_embd] (tied to wte). Computed as
   * (wte · hᵀ)ᵀ: the product then transposes the small hidden states, where h · wteᵀ would
   * transpose (and on wasm repack) the 150 MB embedding on every call.
   */
  lmHead(hidden2d: tfjs.Tensor2D): tfjs.Tensor2D {
    const tf = this.tf;
    return tf.tidy(() => tf.transpose(tf.matMul(this.param('wte.weight') as tfjs.Tensor2D, hidden2d, false, true)) as tfjs.Tensor2D);
  }

  /** Logits [B, T, vocab] and, with useCache, the extended cache. */
  forward(ids: number[][], options: ForwardOptions = {}): { logits: tfjs.Tensor3D; cache?: KVCache } {
    const { hidden, cache } = this.hidden(ids, options);
    const [b, t, d] = hidden.shape;
    const tf = this.tf;
    const logits = tf.tidy(() => tf.reshape(this.lmHead(tf.reshape(hidden, [b * t, d])), [b, t, this.config.vocab_size]) as tfjs.Tensor3D);
    hidden.dispose();
    return { logits, cache };
  }

  private checkInputs(ids: number[][], past: number, options: ForwardOptions): void {
    const c = this.config;
    const length = ids[0]?.length ?? 0;
    if (ids.length === 0 || length === 0) throw new ToolError('empty input: no tokens to run');
    for (const row of ids) {
      if (row.length !== length) throw new ToolError('all sequences of a batch must have the same length (pad them)');
      for (const id of row) {
        if (!Number.isInteger(id) || id < 0 || id >= c.vocab_size) throw new ToolError(`token id ${id} is outside the vocabulary (vocab_size ${c.vocab_size})`);
      }
    }
    const maxPos = options.positionIds ? Math.max(...options.positionIds.flat()) : past + length - 1;
    if (maxPos >= c.n_positions) throw new ToolError(`position ${maxPos} is beyond the model's context of ${c.n_positions} tokens`);
    if (options.attentionMask && options.attentionMask.some((m) => m.length !== past + length)) {
      throw new ToolError(`attention mask rows must cover past + new tokens (${past + length})`);
    }
  }

  /** Additive attention bias [B or 1, 1, T, past + T]: causal, plus padded keys if masked. */
  private attentionBias(batch: number, length: number, past: number, mask?: number[][]): Tensor {
    const tf = this.tf;
    const keys = past + length;
    const causal = new Float32Array(length * keys);
    for (let i = 0; i < length; i++) for (let j = past + i + 1; j < keys; j++) causal[i * keys + j] = NEG;
    const bias = tf.tensor4d(causal, [1, 1, length, keys]);
    if (!mask) return bias;
    const padding = tf.tensor4d(mask.flat().map((m) => (m ? 0 : NEG)), [batch, 1, 1, keys]);
    return tf.add(bias, padding);
  }

  private layerNorm(x: tfjs.Tensor3D, name: string): tfjs.Tensor3D {
    const tf = this.tf;
    const { mean, variance } = tf.moments(x, -1, true);
    const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, this.config.layer_norm_epsilon)));
    return tf.add(tf.mul(normed, this.param(`${name}.weight`)), this.param(`${name}.bias`)) as tfjs.Tensor3D;
  }

  /** x [B, T, in] · W [in, out] + b, as HF's Conv1D, plus the adapter's delta if there is one. */
  private conv1d(x: tfjs.Tensor3D, name: string, options: ForwardOptions): tfjs.Tensor3D {
    const tf = this.tf;
    const [b, t, d] = x.shape;
    const w = this.param(`${name}.weight`) as tfjs.Tensor2D;
    const x2d = tf.reshape(x, [b * t, d]) as tfjs.Tensor2D;
    const y = tf.add(tf.matMul(x2d, w), this.param(`${name}.bias`));
    const delta = this.adapter?.delta(name, x2d, options);
    return tf.reshape(delta ? tf.add(y, delta) : y, [b, t, w.shape[1]]);
  }

  private attention(i: number, x: tfjs.Tensor3D, bias: Tensor, past: { k: Tensor; v: Tensor } | undefined, options: ForwardOptions) {
    const tf = this.tf;
    const { n_head: heads, n_embd: d } = this.config;
    const hd = d / heads;
    const [b, t] = x.shape;
    const [q, k, v] = tf.tidy(() => {
      const qkv = this.conv1d(x, `h.${i}.attn.c_attn`, options);
      const [qh, kNew, vNew] = tf.split(qkv, 3, 2).map((part) => tf.transpose(tf.reshape(part, [b, t, heads, hd]), [0, 2, 1, 3]));
      return [tf.mul(qh, 1 / Math.sqrt(hd)), past ? tf.concat([past.k, kNew], 2) : kNew, past ? tf.concat([past.v, vNew], 2) : vNew];
    });
    const s = k.shape[2] as number;
    const rows = b * heads;
    const q3 = tf.reshape(q, [rows, t, hd]);
    const k3 = tf.reshape(k, [rows, s, hd]);
    const v3 = tf.reshape(v, [rows, s, hd]);
    // Scores are [batch·heads, T, S]: 50 MB a layer for one 1024-token prompt. Inference takes them
    // a few (batch, head) rows at a time so they never dominate memory; training keeps one product.
    const group = options.training ? rows : Math.max(1, Math.floor(SCORE_ELEMENTS / (t * s)));
    const biasRows = bias.shape[0] === 1 ? undefined : tf.reshape(bias, [b, t, s]);
    const parts: Tensor[] = [];
    for (let g = 0; g < rows; g += group) {
      const n = Math.min(group, rows - g);
      parts.push(
        tf.tidy(() => {
          const scores = tf.matMul(tf.slice(q3, [g, 0, 0], [n, -1, -1]), tf.slice(k3, [g, 0, 0], [n, -1, -1]), false, true);
          const rowBias = biasRows ? tf.gather(biasRows, tf.tensor1d(Array.from({ length: n }, (_, r) => Math.floor((g + r) / heads)), 'int32')) : tf.reshape(bias, [1, t, s]);
          const probs = this.dropout(tf.softmax(tf.add(scores, rowBias)), this.config.attn_pdrop, options, 1 + 2 * i);
          return tf.matMul(probs, tf.slice(v3, [g, 0, 0], [n, -1, -1]));
        }),
      );
    }
    if (!options.training) tf.dispose([q, q3]);
    const out = tf.tidy(() => {
      const ctx = parts.length === 1 ? parts[0] : tf.concat(parts, 0);
      const merged = tf.reshape(tf.transpose(tf.reshape(ctx, [b, heads, t, hd]), [0, 2, 1, 3]), [b, t, d]) as tfjs.Tensor3D;
      return this.dropout(this.conv1d(merged, `h.${i}.attn.c_proj`, options), this.config.resid_pdrop, options, 2 + 2 * i);
    });
    return { out, k, v };
  }

  /**
   * ln_2 → MLP. Its activation is a chain of ~9 elementwise ops on [rows, 4·n_embd], all alive
   * until the block's scope ends, so inference runs it on slices of MLP_ROWS rows at a time
   * (a 1024-token prompt would otherwise hold ~110 MB of them per block).
   */
  private feedForward(i: number, x: tfjs.Tensor3D, options: ForwardOptions): tfjs.Tensor3D {
    const tf = this.tf;
    const [b, t, d] = x.shape;
    const rows = b * t;
    if (options.training || rows <= MLP_ROWS) return this.mlp(i, this.layerNorm(x, `h.${i}.ln_2`), options);
    const flat = tf.reshape(x, [1, rows, d]) as tfjs.Tensor3D;
    const parts: Tensor[] = [];
    for (let r = 0; r < rows; r += MLP_ROWS) {
      const n = Math.min(MLP_ROWS, rows - r);
      parts.push(tf.tidy(() => this.mlp(i, this.layerNorm(tf.slice(flat, [0, r, 0], [1, n, d]), `h.${i}.ln_2`), options)));
    }
    return tf.reshape(tf.concat(parts, 1), [b, t, d]);
  }

  private mlp(i: number, x: tfjs.Tensor3D, options: ForwardOptions): tfjs.Tensor3D {
    const h = this.activation(this.conv1d(x, `h.${i}.mlp.c_fc`, options));
    return this.dropout(this.conv1d(h, `h.${i}.mlp.c_proj`, options), this.config.resid_pdrop, options, 1000 + i);
  }

  private activation(x: tfjs.Tensor3D): tfjs.Tensor3D {
    const tf = this.tf;
    switch (this.config.activation_function) {
      case 'gelu_new': // GPT-2's tanh approximation, as x·σ(2z) = ½x(1 + tanh z): wasm's sigmoid is vectorised, its tanh is not
        return tf.mul(x, tf.sigmoid(tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)), 2 * Math.sqrt(2 / Math.PI)))) as tfjs.Tensor3D;
      case 'gelu': // exact, with erf
        return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)) as tfjs.Tensor3D;
      case 'fast_gelu': // x·σ(1.702x), the seed's xl/13b/52b configs
        return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702))) as tfjs.Tensor3D;
    }
  }

  private dropout<T extends Tensor>(x: T, rate: number, options: ForwardOptions, salt: number): T {
    if (!options.training || rate === 0) return x;
    return this.tf.dropout(x, rate, undefined, options.seed === undefined ? undefined : options.seed * 7919 + salt) as T;
  }
}
