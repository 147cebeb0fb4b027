/**
 * Dropout of the full-sequence pass, where GPT2 (gpt2.ts) and HF's GPT-2 apply it in training:
 *   embd  embd_pdrop on wte + wpe, before the first block;
 *   attn  attn_pdrop on the attention probabilities, after the softmax, before ·V;
 *   proj  resid_pdrop on the attention's output projection (bias included), before the residual;
 *   mlp   resid_pdrop on the MLP's output projection (bias included), before the residual;
 * kept values × 1/(1−p). The masks are hashes of (key, row, column) (wasm-dropout.ts), drawn in the
 * row kernels that touch those values anyway: the forward's addBias and softmax scaling, the
 * backward's softmax gradient, and one pass over the gradient of each residual site.
 *
 * Each site of each layer of a micro-batch has its own key: lowbias32 chained over (seed, step,
 * micro-batch, layer, site), so a resumed run draws what the uninterrupted one did. The tfjs path
 * seeds tf.dropout from (seed, step, micro-batch) too (step.ts), but with other masks: the two
 * paths are each deterministic, not equal to each other, with dropout on.
 */
import type { KeepMask } from '../backend/wasm-dropout.js';
import type { GPT2Config } from './config.js';

/** lowbias32, as SimdCode.mix32 computes it in the kernels: an unsigned 32-bit result. */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

export const SITES = ['embd', 'attn', 'proj', 'mlp'] as const;
export type Site = (typeof SITES)[number];
const RATE: Record<Site, 'embd_pdrop' | 'attn_pdrop' | 'resid_pdrop'> = { embd: 'embd_pdrop', attn: 'attn_pdrop', proj: 'resid_pdrop', mlp: 'resid_pdrop' };

/** A site's mask and the factor of kept values, 1/(1−p). */
export interface SiteDropout extends KeepMask {
  scale: number;
}

/** The masks of one micro-batch of one step. */
export class DropoutDraw {
  private constructor(
    private readonly config: GPT2Config,
    private readonly base: number,
  ) {}

  /** The draw for micro-batch `micro` of `step`, or undefined when the config has no dropout. */
  static of(config: GPT2Config, seed: number | undefined, step: number | undefined, micro: number): DropoutDraw | undefined {
    if (SITES.every((s) => config[RATE[s]] === 0)) return undefined;
    if (seed === undefined || step === undefined) throw new RangeError('trainStep: a model with dropout needs the seed and step that draw its masks');
    let base = 0x2545f491;
    for (const part of [seed, seed / 2 ** 32, step, micro]) base = mix32(base ^ Math.floor(part));
    return new DropoutDraw(config, base);
  }

  /** Site `site` of layer `layer` (0 for embd), or undefined where its rate is 0. */
  at(site: Site, layer: number): SiteDropout | undefined {
    const p = this.config[RATE[site]];
    if (p === 0) return undefined;
    return {
      key: mix32(mix32(this.base ^ layer) ^ SITES.indexOf(site)) | 0,
      threshold: Math.min(2 ** 32 - 1, Math.round(p * 2 ** 32)) | 0,
      scale: 1 / (1 - p),
    };
  }
}
