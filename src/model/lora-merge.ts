/**
 * LoRA merged into weights: an adapter as low-rank updates of its Conv1D weights in PEFT's
 * orientation (what its files hold), the conversion from and to our per-target A and B, and the
 * merge itself, done on the wasm GEMM while the base weights are read (mergedSources) or in
 * memory (mergeInto).
 */
import { MAX_PAGES, wasmApi, type WasmMemory } from '../backend/wasm-asm.js';
import { gemm, GEMM_SCRATCH_BYTES } from '../backend/wasm-gemm.js';
import { ToolError } from '../util/errors.js';
import type { GPT2Config } from './config.js';
import { checkLoraValues, loraNames, loraScale, LORA_MODULES, orderedTargets, TARGET_MODULE, targetSite, type LoraModule, type LoraSpec, type LoraTarget } from './lora.js';
import { PREFIX, type ParameterSources, type ParameterValues } from './params.js';

/** Where an update's b·a can be nonzero: output columns [offset, offset + width) from ranks [from, from + count). */
export interface UpdateBlock {
  offset: number;
  width: number;
  from: number;
  count: number;
}

/**
 * One low-rank update of a Conv1D weight W [in, out], in PEFT's orientation (what its files hold):
 * W += scale · (b·a)ᵀ with a = lora_A.weight [rank, in] and b = lora_B.weight [out, rank]. An
 * adapter of ours puts its query / key / value slices on one such update of attn.c_attn (see
 * src/formats/peft.ts), whose `blocks` say where each slice's ranks land.
 */
export interface LowRankUpdate {
  /** The weight's parameter name ("transformer.h.0.attn.c_attn.weight"). */
  param: string;
  rank: number;
  a: Float32Array;
  b: Float32Array;
  scale: number;
  /** The nonzero blocks, when known; default: all of b·a. */
  blocks?: UpdateBlock[];
}

/** The Conv1D layers an adapter adapts, in LORA_MODULES order, with their targets (several only on attn.c_attn). */
export function loraModules(spec: LoraSpec): { module: LoraModule; targets: LoraTarget[] }[] {
  const targets = orderedTargets(spec);
  return LORA_MODULES.map((module) => ({ module, targets: targets.filter((t) => TARGET_MODULE[t] === module) })).filter((m) => m.targets.length > 0);
}

/**
 * The updates an adapter of ours makes, one per layer and module: the targets of a module
 * stacked along the rank (n targets at rank r: rank n·r), each target's Bᵀ in its own columns'
 * rows and its own ranks, zeros elsewhere; scale alpha/r for all, so every target's own update
 * is unchanged.
 */
export function loraUpdates(c: GPT2Config, spec: LoraSpec, values: ParameterValues): LowRankUpdate[] {
  checkLoraValues(c, spec, values);
  const r = spec.rank;
  const updates: LowRankUpdate[] = [];
  for (let i = 0; i < c.n_layer; i++) {
    for (const { module, targets } of loraModules(spec)) {
      const sites = targets.map((t) => targetSite(c, t));
      const { in: inDim, out } = sites[0];
      const rank = targets.length * r;
      const a = new Float32Array(rank * inDim);
      const b = new Float32Array(out * rank);
      targets.forEach((t, s) => {
        const { offset, width } = sites[s];
        const names = loraNames(i, t);
        const A = values.get(names.a)!.data; // [in, r]
        const B = values.get(names.b)!.data; // [r, width]
        for (let x = 0; x < inDim; x++) for (let k = 0; k < r; k++) a[(s * r + k) * inDim + x] = A[x * r + k];
        for (let j = 0; j < width; j++) for (let k = 0; k < r; k++) b[(offset + j) * rank + s * r + k] = B[k * width + j];
      });
      const blocks = sites.map(({ offset, width }, s) => ({ offset, width, from: s * r, count: r }));
      updates.push({ param: `${PREFIX}h.${i}.${module}.weight`, rank, a, b, scale: loraScale(spec), blocks });
    }
  }
  return updates;
}

/**
 * The blocks an update of module `module` has under spec, if its rank and scale are the spec's and
 * b is zero outside them (an adapter of ours as written; one trained further by PEFT as a whole
 * module is not): undefined otherwise.
 */
export function specBlocks(c: GPT2Config, spec: LoraSpec, module: LoraModule, u: LowRankUpdate): UpdateBlock[] | undefined {
  const targets = orderedTargets(spec).filter((t) => TARGET_MODULE[t] === module);
  const r = spec.rank;
  if (targets.length * r !== u.rank || Math.abs(u.scale - loraScale(spec)) > 1e-9 * loraScale(spec)) return undefined;
  const blocks = targets.map((t, s) => ({ offset: targetSite(c, t).offset, width: targetSite(c, t).width, from: s * r, count: r }));
  const out = u.b.length / u.rank;
  // The ranks row j of b may use: its block's, or none.
  const first = new Int32Array(out);
  const last = new Int32Array(out);
  for (const k of blocks) for (let j = k.offset; j < k.offset + k.width; j++) [first[j], last[j]] = [k.from, k.from + k.count];
  for (let j = 0; j < out; j++) {
    const row = j * u.rank;
    for (let k = 0; k < u.rank; k++) if (u.b[row + k] !== 0 && (k < first[j] || k >= last[j])) return undefined;
  }
  return blocks;
}

/** Our per-target values (A [in, r], B [r, width]) from updates whose blocks are the spec's targets, in loraModules order. */
export function loraValuesOf(c: GPT2Config, spec: LoraSpec, updates: LowRankUpdate[]): ParameterValues {
  const r = spec.rank;
  const values: ParameterValues = new Map();
  let next = 0;
  for (let i = 0; i < c.n_layer; i++) {
    for (const { module, targets } of loraModules(spec)) {
      const u = updates[next++];
      if (u?.param !== `${PREFIX}h.${i}.${module}.weight` || u.blocks?.length !== targets.length) throw new ToolError(`LoRA update ${u?.param ?? `for h.${i}.${module}`} does not hold ${targets.join(', ')} of layer ${i}`);
      targets.forEach((t, s) => {
        const { in: inDim, offset, width } = targetSite(c, t);
        const A = new Float32Array(inDim * r);
        const B = new Float32Array(r * width);
        for (let x = 0; x < inDim; x++) for (let k = 0; k < r; k++) A[x * r + k] = u.a[(s * r + k) * inDim + x];
        for (let j = 0; j < width; j++) for (let k = 0; k < r; k++) B[k * width + j] = u.b[(offset + j) * u.rank + s * r + k];
        const names = loraNames(i, t);
        values.set(names.a, { shape: [inDim, r], data: A });
        values.set(names.b, { shape: [r, width], data: B });
      });
    }
  }
  return values;
}

/**
 * Adds updates to weights on the wasm GEMM, in a memory of its own: per block, the weight's
 * columns are copied in, the GEMM adds (scale·a)ᵀ·bᵀ of the block's ranks to them, and they are
 * copied back. Each element is then w + Σ_k scale·a·b summed in float32 in rank order onto w,
 * where PEFT sums B·A first and adds once: a few float32 ulps of w apart (√rank of them typically;
 * the tests hold it to PEFT's merge within 2e-6). Query + value of rank 64 on gpt2 (1.8 GFLOP): a
 * JavaScript loop with float64 sums took 4 s of the load, this ~0.15 s.
 */
export class Merger {
  private memory: WasmMemory | undefined;

  /** Adds u to w ([in, out] row-major). */
  add(w: Float32Array, out: number, u: LowRankUpdate): void {
    const inDim = u.a.length / u.rank;
    const blocks = u.blocks ?? [{ offset: 0, width: out, from: 0, count: u.rank }];
    const a = 0;
    const b = a + 4 * u.a.length;
    const c = b + 4 * u.b.length;
    const scratch = Math.ceil((c + 4 * inDim * Math.max(...blocks.map((k) => k.width))) / 16) * 16;
    const bytes = scratch + GEMM_SCRATCH_BYTES;
    this.memory ??= new wasmApi.Memory({ initial: Math.ceil(bytes / 65536), maximum: MAX_PAGES });
    const have = this.memory.buffer.byteLength;
    if (bytes > have) this.memory.grow(Math.ceil((bytes - have) / 65536));
    const heap = new Float32Array(this.memory.buffer);
    // (scale·a)ᵀ [in, rank] and bᵀ [rank, out] as plain row-major operands (the GEMM packs
    // transposed ones ~2× slower); the copies are a few hundred thousand floats a layer.
    const R = u.rank;
    for (let k = 0; k < R; k++) for (let x = 0; x < inDim; x++) heap[x * R + k] = u.scale * u.a[k * inDim + x];
    for (let j = 0; j < out; j++) for (let k = 0; k < R; k++) heap[b / 4 + k * out + j] = u.b[j * R + k];
    for (const { offset, width, from, count } of blocks) {
      const block = heap.subarray(c / 4, c / 4 + inDim * width);
      for (let i = 0; i < inDim; i++) block.set(w.subarray(i * out + offset, i * out + offset + width), i * width);
      gemm(this.memory, { m: inDim, n: width, k: count, a: a + 4 * from, lda: R, b: b + 4 * (from * out + offset), ldb: out, c, ldc: width, accumulate: true }, scratch);
      for (let i = 0; i < inDim; i++) w.set(block.subarray(i * width, (i + 1) * width), i * out + offset);
    }
  }
}

function updatesByParam(shapes: Map<string, number[]>, updates: LowRankUpdate[]): Map<string, LowRankUpdate[]> {
  const byParam = new Map<string, LowRankUpdate[]>();
  for (const u of updates) {
    const shape = shapes.get(u.param);
    if (!shape || shape.length !== 2) throw new ToolError(`LoRA update for ${u.param}: the model has no such matrix`);
    const blocksFit = (u.blocks ?? []).every((k) => k.offset + k.width <= shape[1] && k.from + k.count <= u.rank);
    if (u.a.length !== u.rank * shape[0] || u.b.length !== shape[1] * u.rank || !blocksFit) {
      throw new ToolError(`LoRA update for ${u.param} [${shape.join(', ')}] does not fit: lora_A has ${u.a.length} values and lora_B ${u.b.length} for rank ${u.rank}`);
    }
    byParam.set(u.param, [...(byParam.get(u.param) ?? []), u]);
  }
  return byParam;
}

/**
 * Sources that read each base weight and add its updates in place before handing it on: the
 * merge streams with the load, tensor by tensor, and never holds a second copy of the model.
 */
export function mergedSources(sources: ParameterSources, updates: LowRankUpdate[]): ParameterSources {
  const byParam = updatesByParam(new Map([...sources].map(([n, s]) => [n, s.shape])), updates);
  const merged: ParameterSources = new Map(sources);
  const merger = new Merger();
  for (const [name, list] of byParam) {
    const source = sources.get(name)!;
    merged.set(name, {
      shape: source.shape,
      async readInto(dest: Float32Array) {
        await source.readInto(dest);
        for (const u of list) merger.add(dest, source.shape[1], u);
      },
    });
  }
  return merged;
}

/** Adds the updates to weights in memory, in place. */
export function mergeInto(values: ParameterValues, updates: LowRankUpdate[]): void {
  const merger = new Merger();
  for (const [name, list] of updatesByParam(new Map([...values].map(([n, v]) => [n, v.shape])), updates)) {
    const v = values.get(name)!;
    for (const u of list) merger.add(v.data, v.shape[1], u);
  }
}
