/**
 * LoRA in the full-sequence pass (train-forward.ts, train-backward.ts): what lora.ts's
 * LoraAdapter adds to a Conv1D's output, y[:, offset : offset + width] += scale·drop(x)·A·B
 * (PEFT's lora.Linear), and its backward, every product through the Gemm interface on strided
 * slices of the layer's output and its gradient. Per target, with dy the gradient of the layer's
 * output and u = scale·drop(x)·A [R, rank]:
 *   dB += uᵀ·dy_slice,  du = scale·dy_slice·Bᵀ,  dA += drop(x)ᵀ·du,  dx += drop(Σ du·Aᵀ)
 * (drop(z) = z ∘ mask/(1−p): dropout is linear, so the targets of one layer, which share its
 * mask, are masked once after their sum).
 *
 * u is saved by the forward (train-memory.ts: R × rank floats per target and layer, 6 MiB for
 * GPT-2 124M at rank 64 on query + value at 1 × 1024) rather than recomputed: recomputing is one
 * more [R × in × rank] product a target, and the slot then takes du, so the backward needs no
 * buffer of its own. drop(x) is not saved (as wide as x) but drawn again from its key.
 *
 * Dropout is PEFT's lora_dropout, on the adapter's input only and in training only, as a
 * counter-based mask (wasm-dropout.ts) with a key per (seed, step, micro-batch, layer, adapted
 * layer): the targets of one Conv1D (query, key and value on c_attn) share one mask, as
 * LoraAdapter does and as PEFT's single rank-n·r adapter on c_attn (the form we export,
 * src/formats/peft.ts) draws it, so training the slices here is training that adapter.
 */
import type { KeepMask } from '../backend/wasm-dropout.js';
import { LORA_MODULES, loraNames, loraScale, orderedTargets, targetSite, type LoraModule, type LoraSpec, type TargetSite } from './lora.js';
import { mix32, type SiteDropout } from './train-dropout.js';
import type { PassContext, PassInput } from './train-forward.js';
import type { PassLayout } from './train-memory.js';

/** The LoRA dropout masks of one micro-batch of one step. */
export class LoraDraw {
  private constructor(
    private readonly base: number,
    private readonly mask: KeepMask & { scale: number },
  ) {}

  /** The draw for micro-batch `micro` of `step`, or undefined when the spec has no dropout. */
  static of(spec: LoraSpec, seed: number | undefined, step: number | undefined, micro: number): LoraDraw | undefined {
    if (spec.dropout === 0) return undefined;
    if (seed === undefined || step === undefined) throw new RangeError('trainStep: LoRA dropout needs the seed and step that draw its masks');
    // The chain of train-dropout.ts's DropoutDraw from another start: masks independent of the model's.
    let base = 0x4c6f5241;
    for (const part of [seed, seed / 2 ** 32, step, micro]) base = mix32(base ^ Math.floor(part));
    return new LoraDraw(base, { key: 0, threshold: Math.min(2 ** 32 - 1, Math.round(spec.dropout * 2 ** 32)) | 0, scale: 1 / (1 - spec.dropout) });
  }

  /** The mask of the input of `module` in layer `layer`. */
  at(layer: number, module: LoraModule): SiteDropout {
    return { ...this.mask, key: mix32(mix32(this.base ^ layer) ^ LORA_MODULES.indexOf(module)) | 0 };
  }
}

interface Adapted {
  /** Index in the layer's LayerSlots.lora. */
  slot: number;
  site: TargetSite;
  /** Float offsets of A and B, and of their gradients. */
  a: number;
  b: number;
  da: number;
  db: number;
}

/** The targets on `module` of layer l. */
function adapted(layout: PassLayout, l: number, module: LoraModule): Adapted[] {
  const lora = layout.lora;
  if (!lora) return [];
  const shift = layout.grads - layout.trainable.start;
  return orderedTargets(lora.spec).flatMap((target, slot) => {
    const site = targetSite(layout.config, target);
    if (site.module !== module) return [];
    const names = loraNames(l, target);
    const [a, b] = [lora.params.get(names.a)!, lora.params.get(names.b)!];
    return [{ slot, site, a, b, da: shift + a, db: shift + b }];
  });
}

/** x, or drop(x) in the layout's buffer when this micro-batch draws a mask for the module. */
function dropped(ctx: PassContext, input: PassInput, l: number, module: LoraModule, x: number, width: number): { x: number; drop?: SiteDropout } {
  const drop = input.lora?.at(l, module);
  if (!drop) return { x };
  const out = ctx.layout.lora!.dropped;
  ctx.rows.dropout(x, out, input.B * input.T, width, drop, drop.scale);
  return { x: out, drop };
}

/** y [R, out] += each target's scale·drop(x)·A·B in its columns; x [R, in] is the layer's input. */
export function loraForward(ctx: PassContext, input: PassInput, l: number, module: LoraModule, x: number, y: number): void {
  const targets = adapted(ctx.layout, l, module);
  if (targets.length === 0) return;
  const { gemm, rows, layout } = ctx;
  const spec = layout.lora!.spec;
  const r = spec.rank;
  const R = input.B * input.T;
  const { in: k, out } = targets[0].site;
  const from = dropped(ctx, input, l, module, x, k).x;
  for (const t of targets) {
    const u = layout.layers[l].lora[t.slot];
    gemm.gemm({ m: R, n: r, k, a: from, lda: k, b: t.a, ldb: r, c: u, ldc: r });
    rows.scale(u, R * r, loraScale(spec));
    gemm.gemm({ m: R, n: t.site.width, k: r, a: u, lda: r, b: t.b, ldb: t.site.width, c: y + t.site.offset, ldc: out, accumulate: true });
  }
}

/**
 * The backward of loraForward: A's and B's gradients added from dy [R, out] and the layer's input
 * x as the forward read it; with `dx`, the adapters' part of x's gradient written there (over
 * what it held: x itself may be there, read first). False when no target is on the module (dx
 * untouched).
 */
export function loraBackward(ctx: PassContext, input: PassInput, l: number, module: LoraModule, x: number, dy: number, dx?: number): boolean {
  const targets = adapted(ctx.layout, l, module);
  if (targets.length === 0) return false;
  const { gemm, rows, layout } = ctx;
  const spec = layout.lora!.spec;
  const r = spec.rank;
  const R = input.B * input.T;
  const { in: k, out } = targets[0].site;
  const from = dropped(ctx, input, l, module, x, k);
  for (const { slot, site, a, b, da, db } of targets) {
    const u = layout.layers[l].lora[slot];
    gemm.gemm({ m: r, n: site.width, k: R, a: u, lda: r, transA: true, b: dy + site.offset, ldb: out, c: db, ldc: site.width, accumulate: true });
    gemm.gemm({ m: R, n: r, k: site.width, a: dy + site.offset, lda: out, b, ldb: site.width, transB: true, c: u, ldc: r }); // du over u
    rows.scale(u, R * r, loraScale(spec));
    gemm.gemm({ m: k, n: r, k: R, a: from.x, lda: k, transA: true, b: u, ldb: r, c: da, ldc: r, accumulate: true });
  }
  if (dx === undefined) return true;
  targets.forEach(({ slot, a }, i) => gemm.gemm({ m: R, n: k, k: r, a: layout.layers[l].lora[slot], lda: r, b: a, ldb: r, transB: true, c: dx, ldc: k, accumulate: i > 0 }));
  if (from.drop) rows.dropout(dx, dx, R, k, from.drop, from.drop.scale);
  return true;
}
