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
 */
import { innerSize } from './config.js';
import { attentionBackward } from './train-attention.js';
import type { SiteDropout } from './train-dropout.js';
import { attentionShape, blockParams, topParam, type PassContext, type PassInput } from './train-forward.js';
import { activate, activateBackward, embedBackward } from './train-ops.js';

export function backward(ctx: PassContext, input: PassInput): void {
  const { heap, gemm, rows, layout } = ctx;
  const { config, layers, final, grads: G } = layout;
  const C = config.n_embd;
  const I = innerSize(config);
  const R = input.B * input.T;
  const { norm, inner, dx, dqkv, scores, dscores } = layout.scratch;
  // dW (m×n) += xᵀ·dy over the R rows; dIn (R×k) = dy·Wᵀ for W [k, n].
  const weightGrad = (x: number, dy: number, dw: number, m: number, n: number) =>
    gemm.gemm({ m, n, k: R, a: x, lda: m, transA: true, b: dy, ldb: n, c: dw, ldc: n, accumulate: true });
  const inputGrad = (dy: number, w: number, out: number, k: number, n: number) => gemm.gemm({ m: R, n: k, k: n, a: dy, lda: n, b: w, ldb: n, transB: true, c: out, ldc: k });
  // The gradient of a residual branch's output: dx through the site's mask (the mask drawn again), or dx.
  const branch = (drop?: SiteDropout) => {
    if (!drop) return dx;
    rows.dropout(dx, layout.scratch.dropped, R, C, drop, drop.scale);
    return layout.scratch.dropped;
  };

  const lnF = [topParam(layout, 'ln_f.weight'), topParam(layout, 'ln_f.bias')];
  rows.layerNormBackward(dx, final.input, final.stats, lnF[0], dx, G + lnF[0], G + lnF[1], R, C);
  for (let l = config.n_layer - 1; l >= 0; l--) {
    const a = layers[l];
    const w = blockParams(layout, l);
    const dmlp = branch(input.dropout?.at('mlp', l));
    rows.biasBackward(dmlp, G + w.out[1], R, C);
    activate(rows, heap, a.fc, inner, R * I, config.activation_function);
    weightGrad(inner, dmlp, G + w.out[0], I, C);
    inputGrad(dmlp, w.out[0], inner, I, C);
    activateBackward(rows, heap, a.fc, inner, R * I, config.activation_function);
    rows.biasBackward(inner, G + w.fc[1], R, I);
    rows.normalize(a.mid, a.ln2, w.ln2[0], w.ln2[1], norm, R, C);
    weightGrad(norm, inner, G + w.fc[0], C, I);
    inputGrad(inner, w.fc[0], norm, C, I);
    rows.layerNormBackward(norm, a.mid, a.ln2, w.ln2[0], dx, G + w.ln2[0], G + w.ln2[1], R, C);

    const dproj = branch(input.dropout?.at('proj', l));
    rows.biasBackward(dproj, G + w.proj[1], R, C);
    weightGrad(a.ctx, dproj, G + w.proj[0], C, C);
    inputGrad(dproj, w.proj[0], norm, C, C);
    attentionBackward(attentionShape(ctx, input), a.qkv, a.ctx, a.lse, norm, dqkv, scores, dscores, input.dropout?.at('attn', l));
    rows.biasBackward(dqkv, G + w.attn[1], R, 3 * C);
    rows.normalize(a.input, a.ln1, w.ln1[0], w.ln1[1], norm, R, C);
    weightGrad(norm, dqkv, G + w.attn[0], C, 3 * C);
    inputGrad(dqkv, w.attn[0], norm, C, 3 * C);
    rows.layerNormBackward(norm, a.input, a.ln1, w.ln1[0], dx, G + w.ln1[0], G + w.ln1[1], R, C);
  }
  const embd = input.dropout?.at('embd', 0);
  if (embd) rows.dropout(dx, dx, R, C, embd, embd.scale);
  embedBackward(heap, dx, G + topParam(layout, 'wte.weight'), G + topParam(layout, 'wpe.weight'), input.ids, input.T, C);
}
