/**
 * One-token decode steps on the wasm backend, outside the tfjs engine (llm.c style: the whole
 * step in view). A step through GPT2.hidden is ~900 tfjs ops, and at ~35 µs of engine bookkeeping
 * each that costs a third of the step; here the matrix products are calls into the streaming
 * kernels of src/backend/wasm-gemv.ts on the weights where tfjs keeps them, and everything else is
 * a short loop over a row of floats. The key/value cache lives in one preallocated heap buffer.
 *
 * Computes what GPT2.hidden + lmHead compute (same formulas, float32 products; sums of layer norm
 * and softmax in float64), for a batch whose sequences are independent: a sequence's logits do not
 * depend on the others in the batch. The prompt goes through GPT2.hidden (prefill); `load` takes
 * the cache it returns.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { heapOffset, type WasmBackend } from '../backend/wasm-backend.js';
import { smallMatMul, type SmallMatMul } from '../backend/wasm-gemv.js';
import type { WasmMemory } from '../backend/wasm-asm.js';
import type { GPT2, KVCache } from './gpt2.js';

interface LayerPointers {
  ln1: [number, number];
  attn: [number, number];
  proj: [number, number];
  ln2: [number, number];
  fc: [number, number];
  out: [number, number];
}

export class WasmDecoder {
  private heap: Float32Array;
  private length = 0;
  /** Float offsets into the heap of the scratch rows, the cache and the logits. */
  private readonly at: Record<'x' | 'h' | 'qkv' | 'ctx' | 'tmp' | 'fc' | 'scores' | 'logits' | 'kv', number>;
  private readonly layers: LayerPointers[];
  private readonly wte: number;
  private readonly wpe: number;
  private readonly lnF: [number, number];

  private constructor(
    private readonly model: GPT2,
    private readonly memory: WasmMemory,
    private readonly kernels: SmallMatMul,
    private readonly arena: tfjs.Tensor,
    private readonly batch: number,
    private readonly capacity: number,
    /** Per sequence: cache positions before this index are padding (masked out). */
    private readonly padding: number[],
  ) {
    const backend = model.tf.backend() as unknown as WasmBackend;
    const p = (name: string) => heapOffset(backend, model.param(name)) / 4;
    const pair = (name: string): [number, number] => [p(`${name}.weight`), p(`${name}.bias`)];
    this.wte = p('wte.weight');
    this.wpe = p('wpe.weight');
    this.lnF = pair('ln_f');
    this.layers = Array.from({ length: model.config.n_layer }, (_, i) => ({
      ln1: pair(`h.${i}.ln_1`),
      attn: pair(`h.${i}.attn.c_attn`),
      proj: pair(`h.${i}.attn.c_proj`),
      ln2: pair(`h.${i}.ln_2`),
      fc: pair(`h.${i}.mlp.c_fc`),
      out: pair(`h.${i}.mlp.c_proj`),
    }));
    const { n_embd: d, vocab_size: vocab } = model.config;
    let next = heapOffset(backend, arena) / 4;
    const take = (n: number) => ((next += n), next - n);
    this.at = { x: take(batch * d), h: take(batch * d), qkv: take(batch * 3 * d), ctx: take(batch * d), tmp: take(batch * d), fc: take(batch * 4 * d), scores: take(capacity), logits: take(batch * vocab), kv: next };
    this.heap = new Float32Array(memory.buffer);
  }

  /** Floats the arena needs: scratch rows, the scores of one head, logits, keys and values. */
  private static arenaSize(model: GPT2, batch: number, capacity: number): number {
    const { n_embd: d, vocab_size: vocab, n_layer: layers } = model.config;
    return batch * 11 * d + capacity + batch * vocab + layers * 2 * batch * capacity * d;
  }

  /**
   * A decoder for `batch` sequences of up to `capacity` positions, or undefined where it does not
   * apply (another backend, head size or width not a multiple of 4) and GPT2.hidden should run.
   */
  static create(model: GPT2, batch: number, capacity: number, padding: number[]): WasmDecoder | undefined {
    const tf = model.tf;
    const { n_embd: d, n_head: heads } = model.config;
    if (tf.getBackend() !== 'wasm' || d % 4 !== 0 || (d / heads) % 4 !== 0) return undefined;
    const backend = tf.backend() as unknown as WasmBackend;
    const memory = backend.wasm.asm?.memory;
    if (!memory) return undefined;
    const arena = tf.zeros([WasmDecoder.arenaSize(model, batch, capacity)]);
    return new WasmDecoder(model, memory, smallMatMul(memory), arena, batch, capacity, padding);
  }

  /** Takes over the cache of a prefill (GPT2.hidden with useCache) for the same batch. */
  load(cache: KVCache): void {
    const { n_head: heads } = this.model.config;
    const hd = this.model.config.n_embd / heads;
    if (cache.length > this.capacity) throw new Error(`cache of ${cache.length} positions exceeds the decoder's ${this.capacity}`);
    for (const [l, { k, v }] of cache.layers.entries()) {
      for (const [which, t] of [k, v].entries()) {
        const values = t.dataSync() as Float32Array; // [B, heads, length, hd]
        this.refresh();
        for (let bh = 0; bh < this.batch * heads; bh++) {
          const src = values.subarray(bh * cache.length * hd, (bh + 1) * cache.length * hd);
          this.heap.set(src, this.cacheAt(l, which, bh));
        }
      }
    }
    this.length = cache.length;
  }

  /** Appends one token per sequence (at the given positions) and returns logits [B · vocab]. */
  step(ids: number[], positions: number[]): Float32Array {
    const { n_embd: d, n_head: heads, vocab_size: vocab, layer_norm_epsilon: eps } = this.model.config;
    if (this.length >= this.capacity) throw new Error(`decoder is full (${this.capacity} positions)`);
    const B = this.batch;
    const hd = d / heads;
    const { x, h, qkv, ctx, tmp, fc, scores, logits } = this.at;
    this.refresh();
    const heap = this.heap;
    const mm = (kernel: 'nn' | 'nt', a: number, b: number, out: number, m: number, k: number, n: number) => this.kernels[kernel](a * 4, b * 4, out * 4, m, k, n);
    for (let b = 0; b < B; b++) {
      const e = this.wte + ids[b] * d;
      const p = this.wpe + positions[b] * d;
      for (let j = 0; j < d; j++) heap[x + b * d + j] = heap[e + j] + heap[p + j];
    }
    const t = this.length;
    const keys = t + 1;
    const scale = 1 / Math.sqrt(hd);
    for (const [l, layer] of this.layers.entries()) {
      this.layerNorm(x, h, layer.ln1, d, eps);
      mm('nn', h, layer.attn[0], qkv, B, d, 3 * d);
      addBias(heap, qkv, layer.attn[1], B, 3 * d);
      for (let b = 0; b < B; b++) {
        for (let head = 0; head < heads; head++) {
          const bh = b * heads + head;
          const q = qkv + b * 3 * d + head * hd;
          for (let j = 0; j < hd; j++) heap[q + j] *= scale; // as GPT2.attention scales q
          heap.set(heap.subarray(q + d, q + d + hd), this.cacheAt(l, 0, bh) + t * hd);
          heap.set(heap.subarray(q + 2 * d, q + 2 * d + hd), this.cacheAt(l, 1, bh) + t * hd);
          mm('nt', q, this.cacheAt(l, 0, bh), scores, 1, hd, keys);
          softmax(heap, scores, this.padding[b], keys);
          mm('nn', scores, this.cacheAt(l, 1, bh), ctx + b * d + head * hd, 1, keys, hd);
        }
      }
      mm('nn', ctx, layer.proj[0], tmp, B, d, d);
      addResidual(heap, x, tmp, layer.proj[1], B, d);
      this.layerNorm(x, h, layer.ln2, d, eps);
      mm('nn', h, layer.fc[0], fc, B, d, 4 * d);
      addBias(heap, fc, layer.fc[1], B, 4 * d);
      activate(heap, fc, B * 4 * d, this.model.config.activation_function);
      mm('nn', fc, layer.out[0], tmp, B, 4 * d, d);
      addResidual(heap, x, tmp, layer.out[1], B, d);
    }
    this.layerNorm(x, h, this.lnF, d, eps);
    // One row: wte·hᵀ keeps four sums in flight; more rows: h·wteᵀ reads wte once for up to four rows.
    // Both sum each dot product in the same order, so a row's logits do not depend on the batch.
    if (B === 1) mm('nt', this.wte, h, logits, vocab, d, 1);
    else mm('nt', h, this.wte, logits, B, d, vocab);
    this.length++;
    return heap.slice(logits, logits + B * vocab);
  }

  dispose(): void {
    this.arena.dispose();
  }

  /** Float offset of layer l's keys (which 0) or values (1) for one (sequence, head). */
  private cacheAt(l: number, which: number, bh: number): number {
    const { n_embd: d, n_head: heads } = this.model.config;
    return this.at.kv + (((l * 2 + which) * this.batch * heads + bh) * this.capacity * d) / heads;
  }

  /** A view of the heap as it is now (it is replaced when tfjs grows the memory). */
  private refresh(): void {
    if (this.heap.buffer !== this.memory.buffer) this.heap = new Float32Array(this.memory.buffer);
  }

  private layerNorm(src: number, dst: number, [g, beta]: [number, number], d: number, eps: number): void {
    const heap = this.heap;
    for (let b = 0; b < this.batch; b++) {
      const s = src + b * d;
      let sum = 0;
      for (let j = 0; j < d; j++) sum += heap[s + j];
      const mean = sum / d;
      let sq = 0;
      for (let j = 0; j < d; j++) sq += (heap[s + j] - mean) ** 2;
      const inv = 1 / Math.sqrt(sq / d + eps);
      for (let j = 0; j < d; j++) heap[dst + b * d + j] = (heap[s + j] - mean) * inv * heap[g + j] + heap[beta + j];
    }
  }
}

function addBias(heap: Float32Array, rows: number, bias: number, count: number, width: number): void {
  for (let b = 0; b < count; b++) for (let j = 0; j < width; j++) heap[rows + b * width + j] += heap[bias + j];
}

/** x += y + bias, row by row. */
function addResidual(heap: Float32Array, x: number, y: number, bias: number, count: number, width: number): void {
  for (let b = 0; b < count; b++) for (let j = 0; j < width; j++) heap[x + b * width + j] += heap[y + b * width + j] + heap[bias + j];
}

/** Softmax over scores[0, keys) in place; positions before `masked` get probability 0. */
function softmax(heap: Float32Array, at: number, masked: number, keys: number): void {
  let max = -Infinity;
  for (let j = masked; j < keys; j++) max = Math.max(max, heap[at + j]);
  let sum = 0;
  for (let j = masked; j < keys; j++) sum += heap[at + j] = Math.exp(heap[at + j] - max);
  for (let j = 0; j < masked; j++) heap[at + j] = 0;
  for (let j = masked; j < keys; j++) heap[at + j] /= sum;
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

function activate(heap: Float32Array, at: number, n: number, fn: GPT2['config']['activation_function']): void {
  for (let j = at; j < at + n; j++) {
    const v = heap[j];
    if (fn === 'gelu_new') heap[j] = 0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
    else if (fn === 'fast_gelu') heap[j] = v / (1 + Math.exp(-1.702 * v));
    else heap[j] = 0.5 * v * (1 + erf(v * Math.SQRT1_2));
  }
}

/** erf to ~1e-7 (Abramowitz & Stegun 7.1.26, the approximation tfjs's Erf kernels use). */
function erf(x: number): number {
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign * (1 - poly * Math.exp(-a * a));
}
