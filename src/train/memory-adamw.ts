/**
 * Global-norm clipping and AdamW over parameters, gradients and moments in one wasm memory (for
 * the full-sequence pass, the regions of src/model/train-memory.ts), computing what
 * src/train/optimizer.ts computes on tfjs tensors: the same per-element float32 operations in the
 * same order (the adamw row kernel, src/backend/wasm-rows.ts), with the scalar factors made in
 * float64 and rounded to float32 where they meet a tensor. So for equal gradients the weights and
 * moments are bit-identical to the tfjs path's, and within about an ulp of torch's.
 *
 * The moments go in and out as the AdamWState that src/train/checkpoints.ts saves, so a
 * checkpoint of either path resumes on either.
 */
import type { RowKernels } from '../backend/wasm-rows.js';
import { ToolError } from '../util/errors.js';
import type { AdamWSpec, AdamWState, SavedTensor } from './optimizer.js';

/** Never decayed even when 2-D: the rule of AdamW.decays (optimizer.ts), checked equal in the tests. */
const NO_DECAY_NAME = /(^|[._])(bias|ln_\w*|layer_?norm\w*|norm)([._]|$)/i;

/** A parameter in the heap: name, shape and float offset. */
export interface HeapTensor {
  name: string;
  shape: number[];
  at: number;
}

/** Where a parameter's gradient and moments are: its offset plus these. */
export interface MomentShifts {
  grad: number;
  m: number;
  v: number;
}

interface Tensor extends HeapTensor {
  size: number;
  decays: boolean;
}

export class MemoryAdamW {
  /** Optimizer steps taken; the next update runs step + 1, as torch. */
  step = 0;
  private readonly tensors: Tensor[];

  /** Moments start as they are in the heap (zero in a fresh memory), as torch's lazily made state. */
  constructor(
    private readonly rows: RowKernels,
    private readonly heap: Float32Array,
    tensors: HeapTensor[],
    private readonly shift: MomentShifts,
    private readonly spec: AdamWSpec,
  ) {
    const [b1, b2] = spec.betas;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) throw new RangeError(`AdamW: betas must be in [0, 1), got [${b1}, ${b2}]`);
    if (!(spec.eps >= 0) || !(spec.weight_decay >= 0)) throw new RangeError('AdamW: eps and weight_decay must be non-negative');
    this.tensors = tensors.map((t) => ({ ...t, size: t.shape.reduce((a, b) => a * b, 1), decays: t.shape.length >= 2 && !NO_DECAY_NAME.test(t.name) }));
  }

  /** Whether weight decay applies to a parameter (as AdamW.decays). */
  decays(name: string): boolean {
    const t = this.tensors.find((x) => x.name === name);
    if (!t) throw new ToolError(`AdamW: no parameter named ${name}`);
    return t.decays;
  }

  /**
   * The gradients' global L2 norm (float64), and with maxNorm > 0 the gradients scaled by
   * min(1, maxNorm / (norm + 1e-6)) in float32, as torch.nn.utils.clip_grad_norm_.
   */
  clip(maxNorm: number): number {
    if (!Number.isFinite(maxNorm) || maxNorm < 0) throw new RangeError(`clipByGlobalNorm: maxNorm must be finite and non-negative, got ${maxNorm}`);
    const G = this.shift.grad;
    const norm = Math.sqrt(this.tensors.reduce((sum, t) => sum + this.rows.sumSquares(G + t.at, t.size), 0));
    if (maxNorm === 0) return norm;
    const f = Math.fround;
    const scale = Math.min(f(f(maxNorm) / f(f(norm) + f(1e-6))), 1);
    if (scale !== 1) for (const t of this.tensors) this.rows.scale(G + t.at, t.size, scale);
    return norm;
  }

  /**
   * One AdamW update from the gradient region at learning rate lr, then step + 1. Per element,
   * with t = step + 1 (optimizer.ts's update, operation for operation):
   *   p ← p × (1 − lr·wd) (decaying parameters);  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g·g;
   *   p ← p + (−lr/(1 − β1^t))·m / (√v / √(1 − β2^t) + eps)
   * (a parameter that does not decay is multiplied by exactly 1, which changes no bit).
   */
  update(lr: number): void {
    if (!Number.isFinite(lr) || lr < 0) throw new RangeError(`AdamW: learning rate must be finite and non-negative, got ${lr}`);
    const { shift } = this;
    const [b1, b2] = this.spec.betas;
    const t = this.step + 1;
    const consts = [b1, b2, 1 - b1, 1 - b2, Math.sqrt(1 - b2 ** t), this.spec.eps, -(lr / (1 - b1 ** t))];
    const decay = 1 - lr * this.spec.weight_decay;
    for (const tensor of this.tensors) {
      const at = tensor.at;
      this.rows.adamw(at, shift.grad + at, shift.m + at, shift.v + at, tensor.size, [...consts, tensor.decays ? decay : 1]);
    }
    this.step = t;
  }

  /**
   * The moments and step for a checkpoint. The tensors are views of the memory, not copies (a
   * copy of 124M's moments is 1 GB more at every checkpoint): valid until the next update.
   */
  state(): AdamWState {
    const views = (base: number) => new Map<string, SavedTensor>(this.tensors.map((t) => [t.name, { shape: [...t.shape], data: this.heap.subarray(base + t.at, base + t.at + t.size) }]));
    return { step: this.step, m: views(this.shift.m), v: views(this.shift.v) };
  }

  /** Restores moments and step from a state (this path's or AdamW's); a bad state changes nothing. */
  load(state: AdamWState): void {
    if (!Number.isInteger(state.step) || state.step < 0) throw new ToolError(`optimizer state: step must be a non-negative integer, got ${state.step}`);
    const names = new Set(this.tensors.map((t) => t.name));
    for (const [which, saved] of [['m', state.m], ['v', state.v]] as const) {
      for (const name of saved.keys()) if (!names.has(name)) throw new ToolError(`optimizer state: ${which} has a tensor ${name} that is not a parameter`);
      for (const t of this.tensors) {
        const s = saved.get(t.name);
        if (s === undefined) throw new ToolError(`optimizer state: ${which} lacks parameter ${t.name}`);
        if (s.shape.join(',') !== t.shape.join(',')) throw new ToolError(`optimizer state: ${which} of ${t.name} has shape [${s.shape}], parameter has [${t.shape}]`);
        if (s.data.length !== t.size) throw new ToolError(`optimizer state: ${which} of ${t.name} has ${s.data.length} values, expected ${t.size}`);
      }
    }
    for (const [base, saved] of [[this.shift.m, state.m], [this.shift.v, state.v]] as const) {
      for (const t of this.tensors) this.heap.set(saved.get(t.name)!.data, base + t.at);
    }
    this.step = state.step;
  }
}
