/**
 * Where everything of a full-sequence pass lives in one wasm memory (float offsets), llm.c style:
 * one allocation, sized up front for a model config and a micro-batch shape, never grown during a
 * pass (so views of it stay valid, and helper threads can share it).
 *
 * GPT-2 124M training, micro-batch 1 × 1024 positions (`describeLayout`; MiB = 2²⁰ bytes):
 *
 *   region                 what                                                        MiB
 *   parameters             124,439,808 floats, HF layout, each tensor 16-float aligned  474.7
 *   gradients              same layout (accumulated over micro-batches)                  474.7
 *   AdamW first moments    same layout                                                   474.7
 *   AdamW second moments   same layout                                                   474.7
 *   per layer ×12, saved   block input, after attention, attention output [1024×768],    360.8
 *                          q|k|v [1024×2304], MLP pre-activation [1024×3072], LayerNorm
 *                          mean and 1/σ ×2 [1024×2], softmax log-sum-exp [12×1024]
 *   ln_f                   input, statistics, output [1024×768]                            6.0
 *   scratch                LayerNorm output / its gradient [1024×768], MLP activation /   27.0
 *                          its gradient [1024×3072], residual gradient, q|k|v gradient
 *   attention block        scores and their gradient, 64×1024 each                        0.5
 *   logits chunk           166 rows × 50257                                               31.8
 *   total                                                                            2,324.9 (2.27 GiB)
 *
 * So weights + gradients + moments are 1.85 GiB (the issue's "~2 GB") and activations 0.4 GiB,
 * under wasm32's 4 GiB. A 124M training step at 1 × 1024 measured 2.30 GiB RSS in all (the memory
 * and Node; 2.79 GiB while the caller still holds its 0.5 GB copy of the weights), against
 * PyTorch's 4.6 GB for the same run. What keeps it
 * there, against the tfjs path (which aborts):
 *   - no transposed copy of wte (154 MB): the LM head's three products read it in place;
 *   - the [rows, 50257] logits never exist whole: the head runs over chunks of rows, softmax and
 *     the cross-entropy gradient in place (1024 rows would be 206 MB);
 *   - no attention probabilities are kept: B·H·T·T floats would be 12 × 12 × 1024² × 4 B = 604 MB
 *     for 124M; the backward recomputes each block's scores from Q and K and the saved row
 *     log-sum-exp (flash-attention style), at the cost of one more [64 × keys × 64] product per
 *     block: 7 attention products instead of 6, 10 of the 831 GFLOP of a 124M micro-batch of
 *     1 × 1024 (counted through the Gemm interface), 1.2%;
 *   - LayerNorm outputs and the MLP activation are not kept either: the backward recomputes them
 *     from the saved inputs and row statistics (elementwise: a LayerNorm and an activation per
 *     block), saving 6 rows of width n_embd per position per layer (216 MB at 124M × 1024);
 *   - gradients of activations reuse four scratch buffers, whatever the depth.
 * Forward + loss only (gpt2-eval, periodic evaluation): parameters, one layer's slots (reused by
 * every layer), the scratch and one logits chunk: 124M at 8 × 1024 is 0.85 GiB.
 *
 * LoRA (train-lora.ts) freezes the base: gradients and moments mirror only the adapters' A and B.
 * The same run with the seed's LoRA, rank 64 on query + value (MiB):
 *
 *   parameters             124,439,808 floats, HF layout, frozen                        474.7
 *   LoRA A, B              2,359,296 floats (12 layers × 2 targets × (768×64 + 64×768))    9.0
 *   gradients, AdamW m, v  as LoRA A, B (none for the base)                         3 ×    9.0
 *   per layer ×12, saved   as above                                                      360.8
 *   LoRA per layer ×12     u = scale·drop(x)·A [1024×64] per target                        6.0
 *   ln_f, scratch, attention block, logits chunk: as above                               68.3
 *   LoRA scratch           drop(x) [1024×768] (LoRA dropout), frozen LayerNorm gradients   3.0
 *   total                                                                            948.8 (0.93 GiB)
 *
 * against 2,327.9 MiB for full fine-tuning (the table above, with its dropout scratch): the three
 * 474.7 MiB copies of the parameters are what LoRA saves; activations are the same.
 */
import { ToolError } from '../util/errors.js';
import { MAX_PAGES } from '../backend/wasm-asm.js';
import { innerSize, type GPT2Config } from './config.js';
import { loraShapes, orderedTargets, targetSite, type LoraSpec } from './lora.js';
import { parameterShapes } from './params.js';

export interface PassShape {
  /** Sequences per pass (a micro-batch). */
  batch: number;
  /** Positions per sequence (a record's length − 1). */
  length: number;
  /** Gradients, AdamW's moments and every layer's saved activations; else forward + loss only. */
  training: boolean;
  /** Rows of logits at once in the fused LM head (default: as many as fit in 32 MiB). */
  headRows?: number;
  /** Query rows per attention block (default 64). */
  queryBlock?: number;
  /** Floats of scratch the GEMM kernel needs (GemmProvider.scratchFloats; default 0). */
  gemmScratch?: number;
  /** LoRA adapters (lora.ts): their A and B are then what trains, and the base is frozen. */
  lora?: LoraSpec;
}

/** A layer's saved activations, [rows, width] row-major. */
export interface LayerSlots {
  /** The residual stream entering the block [R, C]. */
  input: number;
  /** ln_1's row mean and 1/σ [R, 2]. */
  ln1: number;
  /** c_attn's output, q | k | v unscaled [R, 3C]. */
  qkv: number;
  /** Log-sum-exp of each softmax row, scaled scores [B, H, T]. */
  lse: number;
  /** Attention output, heads merged [R, C]. */
  ctx: number;
  /** The residual stream after attention [R, C]. */
  mid: number;
  /** ln_2's row statistics [R, 2]. */
  ln2: number;
  /** c_fc's output before the activation [R, n_inner]. */
  fc: number;
  /**
   * Per LoRA target (orderedTargets order): u = scale·drop(x)·A [R, rank], kept from the forward
   * for B's gradient, then its gradient du in the backward. Empty without LoRA.
   */
  lora: number[];
}

/** Where the LoRA parameters and buffers are. */
export interface LoraLayout {
  spec: LoraSpec;
  /** Float offset of each A and B by lora.ts's names (loraNames). */
  params: Map<string, number>;
  /** drop(x) of an adapted layer's input [R, widest input] (training with LoRA dropout; else −1). */
  dropped: number;
  /** Where a frozen LayerNorm's γ and β gradients go, to be thrown away [2, C] (training; else −1). */
  sink: number;
}

export interface PassLayout {
  readonly config: GPT2Config;
  readonly shape: Required<Omit<PassShape, 'lora'>>;
  /** Float offset of each parameter by HF name (with "transformer."); the region starts at 0. */
  readonly params: Map<string, number>;
  /** Floats in the parameter region (alignment included). */
  readonly paramFloats: number;
  /** LoRA's A and B (after the parameters) and buffers; then the base is frozen. */
  readonly lora?: LoraLayout;
  /**
   * What trains: the parameter region, or with LoRA only its A and B. The gradient and moment
   * regions mirror it: a trainable tensor at offset o has its gradient at grads + o − start.
   */
  readonly trainable: { start: number; floats: number };
  /** Starts of the gradient and moment regions (−1 without training). */
  readonly grads: number;
  readonly m: number;
  readonly v: number;
  /** n_layer entries; forward-only layouts give every layer the same slots. */
  readonly layers: LayerSlots[];
  /** ln_f: its input (the last block's output), row statistics, output. */
  readonly final: { input: number; stats: number; hidden: number };
  readonly scratch: {
    /** A LayerNorm output, then its gradient; also the attention output's gradient [R, C]. */
    norm: number;
    /** The MLP activation, then its gradient [R, n_inner]. */
    inner: number;
    /** Gradient of the residual stream [R, C] (training). */
    dx: number;
    /** Gradient of q | k | v [R, 3C] (training). */
    dqkv: number;
    /** dx through a residual dropout's mask [R, C] (training with resid_pdrop > 0; else −1). */
    dropped: number;
    /** A block of attention scores [queryBlock, T], and their gradient (training). */
    scores: number;
    dscores: number;
    /** A chunk of logits, then their gradient [headRows, V]. */
    logits: number;
    /** 16 floats where the row kernels leave results and take AdamW's constants. */
    args: number;
    /** The GEMM kernel's own scratch. */
    gemm: number;
  };
  /** Total floats. */
  readonly floats: number;
  /** What describeLayout prints: [region, what, floats]. */
  readonly regions: [string, string, number][];
}

const ALIGN = 16; // floats: 64-byte lines for the kernels
const HEAD_FLOATS = 1 << 23; // 32 MiB of logits per chunk
const QUERY_BLOCK = 64;
const aligned = (floats: number) => Math.ceil(floats / ALIGN) * ALIGN;

/** The layout of a pass for `config` at `shape`; throws a ToolError when it exceeds wasm's 4 GiB. */
export function passLayout(config: GPT2Config, shape: PassShape): PassLayout {
  const { n_embd: C, n_head: H, vocab_size: V, n_layer: L } = config;
  const I = innerSize(config);
  const { batch: B, length: T, training } = shape;
  const R = B * T;
  const s: Required<Omit<PassShape, 'lora'>> = {
    batch: B,
    length: T,
    training,
    headRows: Math.max(1, Math.min(R, shape.headRows ?? Math.floor(HEAD_FLOATS / V))),
    queryBlock: Math.max(1, Math.min(T, shape.queryBlock ?? QUERY_BLOCK)),
    gemmScratch: shape.gemmScratch ?? 0,
  };
  const regions: [string, string, number][] = [];
  let next = 0;
  const take = (floats: number) => {
    const at = next;
    next += aligned(floats);
    return at;
  };

  const size = (dims: number[]) => dims.reduce((a, b) => a * b, 1);
  const params = new Map<string, number>();
  for (const [name, dims] of parameterShapes(config)) params.set(name, take(size(dims)));
  const paramFloats = next;
  const count = [...parameterShapes(config)].reduce((sum, [, dims]) => sum + size(dims), 0);
  regions.push(['parameters', `${count.toLocaleString('en-US')} floats, HF layout${shape.lora ? ', frozen' : ''}`, paramFloats]);
  const loraParams = new Map<string, number>();
  const spec = shape.lora;
  if (spec) {
    const shapes = loraShapes(config, spec);
    for (const [name, dims] of shapes) loraParams.set(name, take(size(dims)));
    const what = `${shapes.reduce((sum, [, dims]) => sum + size(dims), 0).toLocaleString('en-US')} floats, rank ${spec.rank} on ${orderedTargets(spec).join(', ')}`;
    regions.push(['LoRA A, B', what, next - paramFloats]);
  }
  const trainable = spec ? { start: paramFloats, floats: next - paramFloats } : { start: 0, floats: paramFloats };
  const [grads, m, v] = training ? [take(trainable.floats), take(trainable.floats), take(trainable.floats)] : [-1, -1, -1];
  const mirror = spec ? 'as LoRA A, B (none for the frozen base)' : 'same layout';
  if (training) regions.push(['gradients', mirror, trainable.floats], ['AdamW first moments', mirror, trainable.floats], ['AdamW second moments', mirror, trainable.floats]);

  const args = take(16);
  const layerStart = next;
  const slots = (): LayerSlots => ({
    input: take(R * C),
    ln1: take(2 * R),
    qkv: take(R * 3 * C),
    lse: take(B * H * T),
    ctx: take(R * C),
    mid: take(R * C),
    ln2: take(2 * R),
    fc: take(R * I),
    lora: [],
  });
  const first = slots();
  const layers = training ? [first, ...Array.from({ length: L - 1 }, slots)] : new Array<LayerSlots>(L).fill(first);
  regions.push([training ? `per layer ×${L}, saved` : 'one layer (reused)', `input, mid, ctx [${R}×${C}], qkv [${R}×${3 * C}], fc [${R}×${I}], stats, lse`, next - layerStart]);
  if (spec) {
    const loraStart = next;
    for (const slot of new Set(layers)) slot.lora = orderedTargets(spec).map(() => take(R * spec.rank));
    regions.push([training ? `LoRA per layer ×${L}, saved` : 'LoRA, one layer', `scale·drop(x)·A [${R}×${spec.rank}] per target`, next - loraStart]);
  }

  const finalStart = next;
  const finalInput = training ? take(R * C) : first.input;
  const stats = take(2 * R);
  const finalOutput = training ? take(R * C) : -1;
  regions.push(['ln_f', training ? `input, statistics, output [${R}×${C}]` : 'statistics', next - finalStart]);

  const scratchStart = next;
  const norm = take(R * C);
  const inner = take(R * I);
  const dx = training ? take(R * C) : -1;
  const dqkv = training ? take(R * 3 * C) : -1;
  const dropped = training && config.resid_pdrop > 0 ? take(R * C) : -1;
  regions.push(['scratch', `LayerNorm out/grad [${R}×${C}], MLP act/grad [${R}×${I}]${training ? ', dx, dqkv' : ''}${dropped >= 0 ? ', dx dropped' : ''}`, next - scratchStart]);
  let lora: LoraLayout | undefined;
  if (spec) {
    const loraStart = next;
    const widest = Math.max(...orderedTargets(spec).map((t) => targetSite(config, t).in));
    lora = { spec, params: loraParams, dropped: training && spec.dropout > 0 ? take(R * widest) : -1, sink: training ? take(2 * C) : -1 };
    if (training) regions.push(['LoRA scratch', `${lora.dropped >= 0 ? `drop(x) [${R}×${widest}], ` : ''}frozen LayerNorm gradients`, next - loraStart]);
  }
  const scores = take(s.queryBlock * T);
  const dscores = training ? take(s.queryBlock * T) : -1;
  regions.push(['attention block', `${training ? 'scores and gradient' : 'scores'}, ${s.queryBlock}×${T}`, next - scores]);
  const logits = take(s.headRows * V);
  regions.push(['logits chunk', `${s.headRows} rows × ${V}`, next - logits]);
  const gemm = take(s.gemmScratch);
  if (s.gemmScratch > 0) regions.push(['GEMM scratch', 'packed panels of every thread', next - gemm]);

  const layout: PassLayout = {
    config,
    shape: s,
    params,
    paramFloats,
    lora,
    trainable,
    grads,
    m,
    v,
    layers,
    final: { input: finalInput, stats, hidden: training ? finalOutput : norm },
    scratch: { norm, inner, dx, dqkv, dropped, scores, dscores, logits, args, gemm },
    floats: next,
    regions,
  };
  if (next * 4 > MAX_PAGES * 65536) {
    throw new ToolError(`${training ? 'training' : 'evaluating'} this model at ${B}×${T} positions needs ${(next * 4 / 2 ** 30).toFixed(2)} GiB, more than wasm's 4 GiB memory`);
  }
  return layout;
}

/** The table at the top of this file, for a layout. */
export function describeLayout(layout: PassLayout): string {
  const mib = (floats: number) => ((floats * 4) / 2 ** 20).toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const rows = [...layout.regions, ['total', `${((layout.floats * 4) / 2 ** 30).toFixed(2)} GiB`, layout.floats] as [string, string, number]];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  return rows.map(([name, what, floats]) => `${name.padEnd(w0)}  ${what.padEnd(w1)}  ${mib(floats).padStart(9)} MiB`).join('\n');
}
