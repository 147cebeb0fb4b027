/**
 * AdamW exactly as PyTorch's torch.optim.AdamW (decoupled weight decay, bias-corrected moments), and
 * global-norm gradient clipping as torch.nn.utils.clip_grad_norm_. Checked against torch in
 * test/train/optimizer.test.ts (fixture from test/oracle/make_adamw_fixture.py).
 *
 * The float32 operations follow torch's single-tensor loop in the same order, with the scalar
 * factors computed in float64 first (as Python does) and rounded to float32 when they meet a
 * tensor, so results agree with torch to about an ulp.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../backend/select.js';
import { ToolError } from '../util/errors.js';

export interface AdamWSpec {
  betas: [number, number];
  eps: number;
  weight_decay: number;
}

/** A tensor's values for saving: exact float32 and its shape. */
export interface SavedTensor {
  shape: number[];
  data: Float32Array;
}

export interface AdamWState {
  /** Optimizer steps taken (torch's state['step']). */
  step: number;
  /** First moments (torch's exp_avg), by parameter name. */
  m: Map<string, SavedTensor>;
  /** Second moments (torch's exp_avg_sq), by parameter name. */
  v: Map<string, SavedTensor>;
}

/** Names of parameters that never decay even when 2-D (MindFormers' filter: LayerNorm and bias). */
const NO_DECAY_NAME = /(^|[._])(bias|ln_\w*|layer_?norm\w*|norm)([._]|$)/i;

export class AdamW {
  /** Optimizer steps taken so far; the next update runs step + 1 (1-based, as torch). */
  step = 0;
  private readonly tf: Tf;
  private readonly params: Map<string, tfjs.Variable>;
  private readonly spec: AdamWSpec;
  private readonly m = new Map<string, tfjs.Variable>();
  private readonly v = new Map<string, tfjs.Variable>();
  private readonly decaySet = new Set<string>();
  private disposed = false;

  constructor(tf: Tf, params: Map<string, tfjs.Variable>, spec: AdamWSpec) {
    const [b1, b2] = spec.betas;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) throw new RangeError(`AdamW: betas must be in [0, 1), got [${b1}, ${b2}]`);
    if (!(spec.eps >= 0) || !(spec.weight_decay >= 0)) throw new RangeError('AdamW: eps and weight_decay must be non-negative');
    this.tf = tf;
    this.params = params;
    this.spec = spec;
    for (const [name, p] of params) {
      if (p.dtype !== 'float32') throw new ToolError(`AdamW: parameter ${name} is ${p.dtype}, expected float32`);
      // Moments start at zero, as torch's lazily created state. Unnamed: tfjs names must be unique
      // per engine, and two optimizers over the same parameters (a test, a restart) must coexist.
      this.m.set(name, zeroVariable(tf, p));
      this.v.set(name, zeroVariable(tf, p));
      if (p.rank >= 2 && !NO_DECAY_NAME.test(name)) this.decaySet.add(name);
    }
  }

  /**
   * Whether weight decay applies to a parameter: only to matrices (rank ≥ 2), never to 1-D
   * parameters (biases, LayerNorm weights) nor to anything named as a bias or norm, as MindFormers'
   * and nanoGPT's decay filters (embeddings decay, as in both).
   */
  decays(name: string): boolean {
    if (!this.params.has(name)) throw new ToolError(`AdamW: no parameter named ${name}`);
    return this.decaySet.has(name);
  }

  /**
   * Applies one update with gradients `grads` (same keys as the parameters) at learning rate lr
   * and increments `step`. The gradients stay the caller's to dispose.
   *
   * Per parameter, with t = step + 1:
   *   p ← p × (1 − lr·wd)                     (decaying parameters only)
   *   m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g·g
   *   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
   */
  update(grads: Map<string, tfjs.Tensor>, lr: number): void {
    this.checkLive();
    if (!Number.isFinite(lr) || lr < 0) throw new RangeError(`AdamW: learning rate must be finite and non-negative, got ${lr}`);
    for (const name of grads.keys()) if (!this.params.has(name)) throw new ToolError(`AdamW: gradient for unknown parameter ${name}`);
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (g === undefined) throw new ToolError(`AdamW: no gradient for parameter ${name}`);
      if (!sameShape(g.shape, p.shape)) throw new ToolError(`AdamW: gradient for ${name} has shape [${g.shape}], parameter has [${p.shape}]`);
    }
    const tf = this.tf;
    const [b1, b2] = this.spec.betas;
    const t = this.step + 1;
    // Float64 scalars, as torch computes them in Python before they meet float32 tensors.
    const decayFactor = 1 - lr * this.spec.weight_decay;
    const stepSize = lr / (1 - b1 ** t);
    const bc2Sqrt = Math.sqrt(1 - b2 ** t);
    const scalars = [b1, b2, 1 - b1, 1 - b2, bc2Sqrt, this.spec.eps, -stepSize, decayFactor].map((x) => tf.scalar(x, 'float32'));
    const [sB1, sB2, s1mB1, s1mB2, sBc2, sEps, sNegStep, sDecay] = scalars;
    try {
      // One tidy per parameter: a model's worth of intermediates never lives at once.
      for (const [name, p] of this.params) {
        tf.tidy(() => {
          const g = grads.get(name)!;
          const m = this.m.get(name)!;
          const v = this.v.get(name)!;
          const decayed = this.decaySet.has(name) && this.spec.weight_decay !== 0 ? tf.mul(p, sDecay) : p;
          const m1 = tf.add(tf.mul(m, sB1), tf.mul(g, s1mB1)); // exp_avg.mul_(β1).add_(g, alpha=1−β1)
          const v1 = tf.add(tf.mul(v, sB2), tf.mul(tf.mul(g, s1mB2), g)); // exp_avg_sq.mul_(β2).addcmul_(g, g, value=1−β2)
          const denom = tf.add(tf.div(tf.sqrt(v1), sBc2), sEps); // (exp_avg_sq.sqrt() / √bc2).add_(eps)
          const p1 = tf.add(decayed, tf.div(tf.mul(m1, sNegStep), denom)); // p.addcdiv_(m, denom, value=−step_size)
          m.assign(m1);
          v.assign(v1);
          p.assign(p1);
        });
      }
    } finally {
      tf.dispose(scalars);
    }
    this.step = t;
  }

  /** The moments as exact float32 arrays, with the step count, for a checkpoint. */
  async state(): Promise<AdamWState> {
    this.checkLive();
    const read = async (moments: Map<string, tfjs.Variable>) => {
      const out = new Map<string, SavedTensor>();
      for (const [name, x] of moments) out.set(name, { shape: [...x.shape], data: (await x.data()) as Float32Array });
      return out;
    };
    return { step: this.step, m: await read(this.m), v: await read(this.v) };
  }

  /** Restores moments and step from `state()`; every parameter's moments must be there, shapes equal. */
  load(state: AdamWState): void {
    this.checkLive();
    if (!Number.isInteger(state.step) || state.step < 0) throw new ToolError(`optimizer state: step must be a non-negative integer, got ${state.step}`);
    for (const [which, saved] of [['m', state.m], ['v', state.v]] as const) {
      for (const name of saved.keys()) if (!this.params.has(name)) throw new ToolError(`optimizer state: ${which} has a tensor ${name} that is not a parameter`);
      for (const [name, p] of this.params) {
        const s = saved.get(name);
        if (s === undefined) throw new ToolError(`optimizer state: ${which} lacks parameter ${name}`);
        if (!sameShape(s.shape, p.shape)) throw new ToolError(`optimizer state: ${which} of ${name} has shape [${s.shape}], parameter has [${p.shape}]`);
        const size = p.shape.reduce((a, b) => a * b, 1);
        if (s.data.length !== size) throw new ToolError(`optimizer state: ${which} of ${name} has ${s.data.length} values, expected ${size}`);
      }
    }
    // Everything checked first: a bad state leaves the optimizer as it was.
    for (const [moments, saved] of [[this.m, state.m], [this.v, state.v]] as const) {
      for (const [name, x] of moments) {
        const s = saved.get(name)!;
        const t = this.tf.tensor(s.data, s.shape, 'float32');
        x.assign(t);
        t.dispose();
      }
    }
    this.step = state.step;
  }

  /** Frees the moments (the parameters stay the caller's). */
  dispose(): void {
    if (this.disposed) return;
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
    this.m.clear();
    this.v.clear();
    this.disposed = true;
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('AdamW: used after dispose()');
  }
}

/**
 * Scales gradients so that their global L2 norm is at most maxNorm, as
 * torch.nn.utils.clip_grad_norm_: norm = ‖(‖g₁‖, ‖g₂‖, …)‖, scale = min(1, maxNorm / (norm + 1e-6)).
 * maxNorm 0 turns clipping off (the norm is still computed, for logging).
 *
 * Returns new tensors (the inputs stay the caller's to dispose) and the pre-clip norm as a scalar
 * tensor, so nothing waits for the device: the caller reads the norm when it logs.
 */
export function clipByGlobalNorm(tf: Tf, grads: Map<string, tfjs.Tensor>, maxNorm: number): { grads: Map<string, tfjs.Tensor>; norm: tfjs.Scalar } {
  if (!Number.isFinite(maxNorm) || maxNorm < 0) throw new RangeError(`clipByGlobalNorm: maxNorm must be finite and non-negative, got ${maxNorm}`);
  // Per-tensor norms first (each in its own tidy, so squares of a whole model never coexist),
  // then the norm of those, in torch's order.
  const norms = [...grads.values()].map((g) => tf.tidy(() => tf.sqrt(tf.sum(tf.square(g)))));
  const norm = tf.tidy(() => (norms.length === 0 ? tf.scalar(0) : tf.sqrt(tf.sum(tf.square(tf.stack(norms)))))) as tfjs.Scalar;
  tf.dispose(norms);
  const out = new Map<string, tfjs.Tensor>();
  if (maxNorm === 0) {
    for (const [name, g] of grads) out.set(name, tf.clone(g));
  } else {
    // min(1, …) on the device: no read-back; multiplying by exactly 1 changes nothing.
    const scale = tf.tidy(() => tf.minimum(tf.div(tf.scalar(maxNorm), tf.add(norm, tf.scalar(1e-6))), tf.scalar(1)));
    for (const [name, g] of grads) out.set(name, tf.mul(g, scale));
    scale.dispose();
  }
  return { grads: out, norm };
}

/** A non-trainable zero variable shaped like p, without leaving its initial tensor behind. */
function zeroVariable(tf: Tf, p: tfjs.Tensor): tfjs.Variable {
  const zeros = tf.zerosLike(p);
  const variable = tf.variable(zeros, false);
  zeros.dispose();
  return variable;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
