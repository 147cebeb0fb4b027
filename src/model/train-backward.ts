/**
 * The backward of train-forward.ts's pass, llm.c style: from the gradient of ln_f's output (which
 * the fused head leaves in scratch.dx) through every block to the embeddings, adding each
 * parameter's gradient into the layout's gradient region (so micro-batches accumulate; the caller
 * zeroes it once per step). LayerNorm outputs and the MLP activation are recomputed from the saved
 * inputs and statistics; attention recomputes its probabilities (train-attention.ts).
 *
 * Per block, with dx the gradient of the block's output (x' = mid + drop(act(fc)·W₂ + b₂),
 * mid = x + drop(ctx·Wₚ + bₚ); drop(y) = y ∘ mask/(1−p), the identity without dropout):
 *   dy = drop(dx), db₂ += Σdy, dW₂ += act(fc)ᵀ·dy, dfc = (dy·W₂ᵀ) ∘ act′(fc), db_fc += Σdfc,
 *   dW_fc += ln₂(mid)ᵀ·dfc, dx += ln₂′(dfc·W_fcᵀ);
 *   dy = drop(dx), dbₚ += Σdy, dWₚ += ctxᵀ·dy, dqkv = attention′(dy·Wₚᵀ), db_attn += Σdqkv,
 *   dW_attn += ln₁(x)ᵀ·dqkv, dx += ln₁′(dqkv·W_attnᵀ);
 * and the embeddings' gradient is drop(dx). Each mask is drawn again from its key (train-dropout.ts).
 *
 * With LoRA (train-lora.ts) the base is frozen: no products for its weights' gradients (dW, and
 * dwte in the head: 4 of a block's 12 products and 1 of the head's 3), no bias or embedding sums,
 * LayerNorm's γ and β gradients into a sink; LayerNorm outputs and the activation are recomputed
 * only where an adapter reads them. Every input gradient is still computed, but the first
 * block's (x's gradient goes only to the embeddings); the adapters add theirs (drop(du·Aᵀ)) into
 * the same buffer, which the base's dy·Wᵀ then accumulates onto.
 */
import { innerSize } from './config.js';
import { targetSite } from './lora.js';
import { attentionBackward } from './train-attention.js';
import type { SiteDropout } from './train-dropout.js';
import { attentionShape, blockParams, topParam, type PassContext, type PassInput } from './train-forward.js';
import { loraBackward } from './train-lora.js';
import { activate, activateBackward, embedBackward } from './train-ops.js';

export function backward(ctx: PassContext, input: PassInput): void {
  const { heap, gemm, rows, layout } = ctx;
  const { config, layers, final, grads: G } = layout;
  const C = config.n_embd;
  const I = innerSize(config);
  const R = input.B * input.T;
  const { norm, inner, dx, dqkv, scores, dscores } = layout.scratch;
  const frozen = layout.lora !== undefined;
  // dW (m×n) += xᵀ·dy over the R rows (trainable base only); dIn (R×k) (+)= dy·Wᵀ for W [k, n].
  const weightGrad = (x: number, dy: number, w: number, m: number, n: number) => {
    if (!frozen) gemm.gemm({ m, n, k: R, a: x, lda: m, transA: true, b: dy, ldb: n, c: G + w, ldc: n, accumulate: true });
  };
  const inputGrad = (dy: number, w: number, out: number, k: number, n: number, accumulate: boolean) =>
    gemm.gemm({ m: R, n: k, k: n, a: dy, lda: n, b: w, ldb: n, transB: true, c: out, ldc: k, accumulate });
  const biasGrad = (dy: number, b: number, width: number) => {
    if (!frozen) rows.biasBackward(dy, G + b, R, width);
  };
  // LayerNorm's backward: dx from dy, and γ's and β's gradients (thrown away when frozen).
  const sink = layout.lora?.sink ?? -1;
  if (frozen) heap.fill(0, sink, sink + 2 * C);
  const lnGrad = (dy: number, x: number, stats: number, ln: number[], out: number) =>
    rows.layerNormBackward(dy, x, stats, ln[0], out, frozen ? sink : G + ln[0], frozen ? sink + C : G + ln[1], R, C);
  // The gradient of a residual branch's output: dx through the site's mask (the mask drawn again), or dx.
  const branch = (drop?: SiteDropout) => {
    if (!drop) return dx;
    rows.dropout(dx, layout.scratch.dropped, R, C, drop, drop.scale);
    return layout.scratch.dropped;
  };
  const adapts = (module: string) => layout.lora?.spec.targets.some((t) => targetSite(config, t).module === module) ?? false;

  lnGrad(dx, final.input, final.stats, [topParam(layout, 'ln_f.weight'), topParam(layout, 'ln_f.bias')], dx);
  for (let l = config.n_layer - 1; l >= 0; l--) {
    const a = layers[l];
    const w = blockParams(layout, l);
    const dmlp = branch(input.dropout?.at('mlp', l));
    biasGrad(dmlp, w.out[1], C);
    if (!frozen || adapts('mlp.c_proj')) activate(rows, heap, a.fc, inner, R * I, config.activation_function);
    weightGrad(inner, dmlp, w.out[0], I, C);
    inputGrad(dmlp, w.out[0], inner, I, C, loraBackward(ctx, input, l, 'mlp.c_proj', inner, dmlp, inner));
    activateBackward(rows, heap, a.fc, inner, R * I, config.activation_function);
    biasGrad(inner, w.fc[1], I);
    if (!frozen || adapts('mlp.c_fc')) rows.normalize(a.mid, a.ln2, w.ln2[0], w.ln2[1], norm, R, C);
    weightGrad(norm, inner, w.fc[0], C, I);
    inputGrad(inner, w.fc[0], norm, C, I, loraBackward(ctx, input, l, 'mlp.c_fc', norm, inner, norm));
    lnGrad(norm, a.mid, a.ln2, w.ln2, dx);

    const dproj = branch(input.dropout?.at('proj', l));
    biasGrad(dproj, w.proj[1], C);
    weightGrad(a.ctx, dproj, w.proj[0], C, C);
    inputGrad(dproj, w.proj[0], norm, C, C, loraBackward(ctx, input, l, 'attn.c_proj', a.ctx, dproj, norm));
    attentionBackward(attentionShape(ctx, input), a.qkv, a.ctx, a.lse, norm, dqkv, scores, dscores, input.dropout?.at('attn', l));
    biasGrad(dqkv, w.attn[1], 3 * C);
    if (!frozen || adapts('attn.c_attn')) rows.normalize(a.input, a.ln1, w.ln1[0], w.ln1[1], norm, R, C);
    weightGrad(norm, dqkv, w.attn[0], C, 3 * C);
    if (frozen && l === 0) {
      loraBackward(ctx, input, l, 'attn.c_attn', norm, dqkv); // the embeddings' gradient is not needed
      break;
    }
    inputGrad(dqkv, w.attn[0], norm, C, 3 * C, loraBackward(ctx, input, l, 'attn.c_attn', norm, dqkv, norm));
    lnGrad(norm, a.input, a.ln1, w.ln1, dx);
  }
  if (frozen) return;
  const embd = input.dropout?.at('embd', 0);
  if (embd) rows.dropout(dx, dx, R, C, embd, embd.scale);
  embedBackward(heap, dx, G + topParam(layout, 'wte.weight'), G + topParam(layout, 'wpe.weight'), input.ids, input.T, C);
}
