/**
 * GPT-2's forward pass over whole sequences on a wasm heap laid out by train-memory.ts, llm.c
 * style: a list of calls, every product through the Gemm interface, everything else a row kernel
 * (src/backend/wasm-rows.ts) or a short loop (train-ops.ts, train-attention.ts). Computes what
 * GPT2.hidden computes, with dropout where the input carries a draw (train-dropout.ts) and LoRA's
 * additions where the layout has adapters (train-lora.ts); a
 * training layout keeps what train-backward.ts needs, a forward-only one reuses one layer's slots.
 */
import type { Gemm } from '../backend/gemm.js';
import type { RowKernels } from '../backend/wasm-rows.js';
import { innerSize } from './config.js';
import { attentionForward, type AttentionShape } from './train-attention.js';
import type { DropoutDraw, SiteDropout } from './train-dropout.js';
import { headLoss, type Head, type HeadGradient } from './train-head.js';
import { loraForward, type LoraDraw } from './train-lora.js';
import type { PassLayout } from './train-memory.js';
import { activate, embed } from './train-ops.js';

export interface PassContext {
  heap: Float32Array;
  gemm: Gemm;
  rows: RowKernels;
  layout: PassLayout;
}

/** Token ids of B sequences of T positions (B ≤ the layout's batch, T ≤ its length), row-major. */
export interface PassInput {
  ids: Int32Array;
  B: number;
  T: number;
  /** The micro-batch's dropout masks (training); none: no dropout. */
  dropout?: DropoutDraw;
  /** Its LoRA dropout masks (training with lora dropout); none: no LoRA dropout. */
  lora?: LoraDraw;
}

/** Float offsets of a block's parameters (add layout.grads for their gradients). */
export function blockParams(layout: PassLayout, l: number) {
  const at = (name: string) => layout.params.get(`transformer.h.${l}.${name}`)!;
  return {
    ln1: [at('ln_1.weight'), at('ln_1.bias')],
    attn: [at('attn.c_attn.weight'), at('attn.c_attn.bias')],
    proj: [at('attn.c_proj.weight'), at('attn.c_proj.bias')],
    ln2: [at('ln_2.weight'), at('ln_2.bias')],
    fc: [at('mlp.c_fc.weight'), at('mlp.c_fc.bias')],
    out: [at('mlp.c_proj.weight'), at('mlp.c_proj.bias')],
  };
}

export const topParam = (layout: PassLayout, name: 'wte.weight' | 'wpe.weight' | 'ln_f.weight' | 'ln_f.bias'): number => layout.params.get(`transformer.${name}`)!;

export function attentionShape(ctx: PassContext, input: PassInput): AttentionShape {
  const { n_embd: C, n_head: H } = ctx.layout.config;
  return { heap: ctx.heap, gemm: ctx.gemm, rows: ctx.rows, B: input.B, T: input.T, C, H, queryBlock: ctx.layout.shape.queryBlock };
}

/** ln_f(blocks(embeddings)) into layout.final.hidden [B·T, C]. */
export function forward(ctx: PassContext, input: PassInput): void {
  const { heap, gemm, rows, layout } = ctx;
  const { config, layers, final } = layout;
  const { n_embd: C, layer_norm_epsilon: eps } = config;
  const I = innerSize(config);
  const R = input.B * input.T;
  const { norm, inner, scores } = layout.scratch;
  const mm = (a: number, b: number, c: number, k: number, n: number, bias?: number) => gemm.gemm({ m: R, n, k, a, lda: k, b, ldb: n, c, ldc: n, bias });
  // out = res + drop(out + bias)
  const residual = (out: number, bias: number, res: number, drop?: SiteDropout) =>
    drop ? rows.addBiasDropout(out, bias, R, C, res, drop, drop.scale) : rows.addBias(out, bias, R, C, res);
  embed(heap, layers[0].input, topParam(layout, 'wte.weight'), topParam(layout, 'wpe.weight'), input.ids, input.T, C);
  const embd = input.dropout?.at('embd', 0);
  if (embd) rows.dropout(layers[0].input, layers[0].input, R, C, embd, embd.scale);
  for (let l = 0; l < config.n_layer; l++) {
    const a = layers[l];
    const w = blockParams(layout, l);
    const next = l + 1 < config.n_layer ? layers[l + 1].input : final.input;
    rows.layerNorm(a.input, a.ln1, w.ln1[0], w.ln1[1], norm, R, C, eps);
    mm(norm, w.attn[0], a.qkv, C, 3 * C, w.attn[1]);
    loraForward(ctx, input, l, 'attn.c_attn', norm, a.qkv);
    attentionForward(attentionShape(ctx, input), a.qkv, a.ctx, a.lse, scores, input.dropout?.at('attn', l));
    mm(a.ctx, w.proj[0], a.mid, C, C);
    loraForward(ctx, input, l, 'attn.c_proj', a.ctx, a.mid);
    residual(a.mid, w.proj[1], a.input, input.dropout?.at('proj', l));
    rows.layerNorm(a.mid, a.ln2, w.ln2[0], w.ln2[1], norm, R, C, eps);
    mm(norm, w.fc[0], a.fc, C, I, w.fc[1]);
    loraForward(ctx, input, l, 'mlp.c_fc', norm, a.fc);
    activate(rows, heap, a.fc, inner, R * I, config.activation_function);
    mm(inner, w.out[0], next, I, C); // forward-only: next is this block's input, no longer needed
    loraForward(ctx, input, l, 'mlp.c_proj', inner, next);
    residual(next, w.out[1], a.mid, input.dropout?.at('mlp', l));
  }
  rows.layerNorm(final.input, final.stats, topParam(layout, 'ln_f.weight'), topParam(layout, 'ln_f.bias'), final.hidden, R, C, eps);
}

/** The fused LM head + cross-entropy over the forward's output (see train-head.ts). */
export function lossOf(ctx: PassContext, labels: Int32Array, weights: ArrayLike<number>, grad?: HeadGradient): number {
  const { layout } = ctx;
  const head: Head = {
    heap: ctx.heap,
    gemm: ctx.gemm,
    rows: ctx.rows,
    C: layout.config.n_embd,
    V: layout.config.vocab_size,
    chunkRows: layout.shape.headRows,
    logits: layout.scratch.logits,
    hidden: layout.final.hidden,
    wte: topParam(layout, 'wte.weight'),
  };
  return headLoss(head, labels, weights, grad);
}
