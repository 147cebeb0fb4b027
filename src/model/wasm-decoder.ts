/**
 * GPT-2 inference steps on a wasm heap, outside the tfjs engine (llm.c style: the whole pass in
 * view). A step through GPT2.hidden is ~900 tfjs ops at ~35 µs of engine bookkeeping each, a third
 * of the step; here the matrix products are calls into the streaming kernels of
 * src/backend/wasm-gemv.ts for a step's few rows and into the GEMM (src/backend/wasm-gemm.ts) for
 * a prompt's many (both split across threads by KernelPool), bias, residual, activation and
 * softmax in the SIMD row kernels (src/backend/wasm-rows.ts), layer norm and copies short loops
 * over a row of floats, and the key/value cache one preallocated buffer.
 *
 * The weights are wherever a DecodeHeap says (DecodeModel: a shared memory of our own). Computes
 * what GPT2.hidden + lmHead compute (same formulas, float32 products, float64 sums in layer norm
 * and softmax). Every row's result is the same bits whichever kernel computes it and on any number
 * of threads, whatever the batch and however many positions a call takes, so a sequence's logits
 * depend on its tokens only.
 */
import type { WasmMemory } from '../backend/wasm-asm.js';
import type { KernelPool } from '../backend/kernel-pool.js';
import { GEMM_SCRATCH_BYTES } from '../backend/wasm-gemm.js';
import { readRows, type WeightRef } from '../backend/encoded-weights.js';
import { quantizeActivations, quantizedActivationBytes } from '../backend/wasm-qgemv.js';
import type { RowKernels } from '../backend/wasm-rows.js';
import { innerSize, type GPT2Config } from './config.js';
import { activate } from './train-ops.js';

/** A wasm memory holding a model's parameters, kernels over it, and room for buffers. */
export interface DecodeHeap {
  readonly memory: WasmMemory;
  readonly kernels: KernelPool;
  /** SIMD kernels for the elementwise steps and softmax (one module for every decoder). */
  readonly rows: RowKernels;
  /** Float offset of a float32 parameter (bias, layer norm, wpe), by HF name without the "transformer." prefix. */
  param(name: string): number;
  /** Where a weight matrix (a Conv1D weight, wte) is and how it is encoded. */
  weight(name: string): WeightRef;
  /** Float offset of `floats` zeroed floats (16-byte aligned), until `release`. */
  allocate(floats: number): number;
  release(offset: number): void;
}

type Pair = [number, number];
/** A weight matrix and its bias (a float offset). */
type Linear = [WeightRef, number];

/**
 * Why WasmDecoder cannot run a model, or undefined when it can: its kernels take product widths
 * (n_embd, the head size, n_inner) in multiples of 4.
 */
export function decoderLimit(config: GPT2Config): string | undefined {
  const widths: [string, number][] = [['n_embd', config.n_embd], ['the head size', config.n_embd / config.n_head], ['n_inner', innerSize(config)]];
  const odd = widths.filter(([, v]) => v % 4 !== 0);
  return odd.length ? `the wasm decoder needs multiples of 4, and ${odd.map(([k, v]) => `${k} is ${v}`).join(', ')}` : undefined;
}

/**
 * From this many rows a product goes through the GEMM (KernelPool.gemm) instead of the few-row
 * `nn` kernel, which streams the weights once for all rows but runs at a few GFLOPS a thread.
 * Measured on GPT-2 124M's four shapes, weights out of cache, 1 and 2 threads: the GEMM is slower
 * below 8 rows (it packs all of B whatever m), level at 8, 10–45% faster from 10 rows up. The
 * same holds for attention over a sequence's new rows (its products are as wide).
 */
const GEMM_MIN_ROWS = 10;
/**
 * Query rows of one head per attention GEMM: a block's rows all see the keys up to its last row,
 * so the products compute (and the softmax zeroes) up to a block of the causal triangle's far
 * side; 1023 rows in blocks of 128 do ~12% more attention work than the triangle.
 */
const ATTENTION_BLOCK = 128;

export class WasmDecoder {
  private heap: Float32Array;
  private length = 0;
  private readonly arena: number;
  private readonly at: Record<'x' | 'h' | 'qkv' | 'ctx' | 'tmp' | 'fc' | 'last' | 'scores' | 'logits' | 'scratch' | 'panel' | 'qx' | 'kv', number>;
  private readonly layers: { ln1: Pair; attn: Linear; proj: Linear; ln2: Pair; fc: Linear; out: Linear }[];
  private readonly wte: WeightRef;
  /** A row of wte decoded (an encoded embedding's lookup). */
  private readonly embedding: Float32Array;
  private readonly wpe: number;
  private readonly lnF: Pair;
  /**
   * Floats between the rows of a cached head's transposed keys (capacity rounded up to a multiple
   * of 4: `nn` computes a row's scores 4 columns at a time).
   */
  private readonly keyStride: number;

  /**
   * A decoder for `batch` sequences of up to `capacity` positions, taking up to `maxRows` positions
   * per sequence in one call. padding[b]: positions of sequence b before this are padding (masked).
   */
  constructor(
    private readonly dh: DecodeHeap,
    private readonly config: GPT2Config,
    private readonly batch: number,
    private readonly capacity: number,
    private readonly padding: number[],
    private readonly maxRows = 1,
  ) {
    const { n_embd: d, vocab_size: vocab, n_layer: layers } = config;
    const limit = decoderLimit(config);
    if (limit) throw new Error(limit);
    const pair = (name: string): Pair => [dh.param(`${name}.weight`), dh.param(`${name}.bias`)];
    const linear = (name: string): Linear => [dh.weight(`${name}.weight`), dh.param(`${name}.bias`)];
    this.wte = dh.weight('wte.weight');
    this.embedding = new Float32Array(d);
    this.wpe = dh.param('wpe.weight');
    this.lnF = pair('ln_f');
    this.layers = Array.from({ length: layers }, (_, i) => ({
      ln1: pair(`h.${i}.ln_1`),
      attn: linear(`h.${i}.attn.c_attn`),
      proj: linear(`h.${i}.attn.c_proj`),
      ln2: pair(`h.${i}.ln_2`),
      fc: linear(`h.${i}.mlp.c_fc`),
      out: linear(`h.${i}.mlp.c_proj`),
    }));
    this.keyStride = Math.ceil(capacity / 4) * 4;
    const rows = batch * maxRows;
    const gemm = rows >= GEMM_MIN_ROWS ? (dh.kernels.threads * GEMM_SCRATCH_BYTES) / 4 : 0;
    const scoreRows = maxRows >= GEMM_MIN_ROWS ? Math.min(maxRows, ATTENTION_BLOCK) : 1;
    // An encoded matrix goes to the GEMM decoded, a whole matrix at a time (here).
    const encoded = this.layers.flatMap((l) => [l.attn, l.proj, l.fc, l.out]).filter(([w]) => w.dtype !== 'f32');
    const panel = gemm ? Math.max(0, ...encoded.map(([w]) => w.rows * w.cols)) : 0;
    // Q8_0's kernels read the activations quantised (wasm-qgemv.ts), at most the rows that skip the GEMM.
    const q8 = [this.wte, ...encoded.map(([w]) => w)].some((w) => w.dtype === 'q8_0');
    const qx = q8 ? quantizedActivationBytes(1, Math.max(Math.min(rows, GEMM_MIN_ROWS - 1) * Math.max(innerSize(config), d), batch * d)) / 4 : 0;
    const sizes = { x: rows * d, h: rows * d, qkv: rows * 3 * d, ctx: rows * d, tmp: rows * d, fc: rows * innerSize(config), last: batch * d, scores: scoreRows * this.keyStride, logits: batch * vocab, scratch: gemm, panel, qx };
    const slot = (size: number) => Math.ceil(size / 4) * 4 + 4; // 16-byte aligned, apart
    const total = Object.values(sizes).reduce((sum, size) => sum + slot(size), 0) + layers * 2 * batch * this.keyStride * d;
    this.arena = dh.allocate(total);
    let next = this.arena;
    const at = {} as Record<keyof typeof sizes | 'kv', number>;
    for (const [key, size] of Object.entries(sizes)) {
      at[key as keyof typeof sizes] = next;
      next += slot(size);
    }
    at.kv = next;
    this.at = at;
    this.heap = new Float32Array(dh.memory.buffer);
  }

  /** One token per sequence at the given positions: logits [B · vocab]. */
  step(ids: number[], positions: number[]): Float32Array {
    return this.forward(
      ids.map((id) => [id]),
      positions.map((p) => [p]),
    );
  }

  /**
   * Appends T tokens per sequence (ids[b][t] at position positions[b][t]) to the cache and returns
   * the logits of each sequence's last one, [B · vocab].
   */
  forward(ids: number[][], positions: number[][]): Float32Array {
    const { n_embd: d, vocab_size: vocab, layer_norm_epsilon: eps } = this.config;
    const B = this.batch;
    const T = ids[0].length;
    if (ids.length !== B || T === 0 || T > this.maxRows) throw new Error(`WasmDecoder takes ${B} sequences of 1…${this.maxRows} tokens`);
    if (this.length + T > this.capacity) throw new Error(`decoder is full (${this.capacity} positions)`);
    const R = B * T;
    const inner = innerSize(this.config);
    const { x, h, qkv, ctx, tmp, fc, last, logits, scratch } = this.at;
    const kernels = this.dh.kernels;
    // out[R, n] = a[R, k]·w[k, n], then `then` on blocks of out's columns: with few rows through
    // `nn`, overlapping other threads' blocks; with many through the GEMM, then over all columns.
    // Both sum each element in k order from 0 (see test/backend/wasm-gemv.test.ts), so a row's
    // bits do not depend on which of them ran.
    // An encoded weight takes the same order through its own kernels (wasm-qgemv.ts), or through
    // the GEMM decoded: the bits of the f32 path over the decoded weights.
    const product = (a: number, w: WeightRef, out: number, k: number, n: number, then: (c0: number, c1: number) => void) => {
      if (R < GEMM_MIN_ROWS) {
        if (w.dtype === 'f32') return kernels.nnThen(a * 4, w.offset, out * 4, R, k, n, n, then);
        return kernels.nnEncoded(this.quantized(a, w, R, k), w, out * 4, R, then);
      }
      let b = w.offset;
      if (w.dtype !== 'f32') {
        readRows(this.dh.memory.buffer, w, 0, k, this.heap.subarray(this.at.panel, this.at.panel + k * n));
        b = this.at.panel * 4;
      }
      kernels.gemm({ m: R, n, k, a: a * 4, lda: k, b, ldb: n, c: out * 4, ldc: n }, scratch * 4);
      then(0, n);
    };
    this.refresh();
    const heap = this.heap;
    for (let r = 0; r < R; r++) {
      const [b, t] = [Math.floor(r / T), r % T];
      let [row, e] = [heap, this.wte.offset / 4 + ids[b][t] * d];
      if (this.wte.dtype !== 'f32') {
        readRows(this.dh.memory.buffer, this.wte, ids[b][t], ids[b][t] + 1, this.embedding);
        [row, e] = [this.embedding, 0];
      }
      const p = this.wpe + positions[b][t] * d;
      for (let j = 0; j < d; j++) heap[x + r * d + j] = row[e + j] + heap[p + j];
    }
    for (const [l, layer] of this.layers.entries()) {
      this.layerNorm(x, h, layer.ln1, R, d, eps);
      product(h, layer.attn[0], qkv, d, 3 * d, (c0, c1) => this.columns(qkv, R, 3 * d, c0, c1, (at, rows, width) => this.dh.rows.addBias(at, layer.attn[1] + c0, rows, width)));
      this.attend(l, T);
      product(ctx, layer.proj[0], tmp, d, d, (c0, c1) => this.addResidual(layer.proj[1], R, c0, c1));
      this.layerNorm(x, h, layer.ln2, R, d, eps);
      product(h, layer.fc[0], fc, d, inner, (c0, c1) =>
        this.columns(fc, R, inner, c0, c1, (at, rows, width) => {
          this.dh.rows.addBias(at, layer.fc[1] + c0, rows, width);
          activate(this.dh.rows, heap, at, at, rows * width, this.config.activation_function);
        }),
      );
      product(fc, layer.out[0], tmp, inner, d, (c0, c1) => this.addResidual(layer.out[1], R, c0, c1));
    }
    for (let b = 0; b < B; b++) heap.copyWithin(x + b * d, x + (b * T + T - 1) * d, x + (b * T + T) * d); // last rows
    this.layerNorm(x, last, this.lnF, B, d, eps);
    // logits as wte·lastᵀ, [vocab, B]: eight rows of wte in flight, each read once for the batch.
    if (this.wte.dtype === 'f32') kernels.nt(this.wte.offset, last * 4, logits * 4, vocab, d, B);
    else kernels.ntEncoded(this.wte, this.quantized(last, this.wte, B, d), logits * 4, B);
    this.length += T;
    const out = new Float32Array(B * vocab);
    if (B === 1) out.set(heap.subarray(logits, logits + vocab));
    else for (let v = 0; v < vocab; v++) for (let b = 0; b < B; b++) out[b * vocab + v] = heap[logits + v * B + b];
    return out;
  }

  /** The byte offset of the activations a [m, k] (floats at `a`) as w's kernel reads them. */
  private quantized(a: number, w: WeightRef, m: number, k: number): number {
    if (w.dtype !== 'q8_0') return a * 4;
    quantizeActivations(this.dh.memory.buffer, a * 4, m, k, this.at.qx * 4);
    return this.at.qx * 4;
  }

  dispose(): void {
    this.dh.release(this.arena);
  }

  /**
   * Layer l's attention for T new rows a sequence, from qkv into ctx. Keys are cached transposed
   * ([head size, keyStride] a head) so that a query row's scores are a product of the same shape
   * as its values' — q·Kᵀ and p·V both `nn` for one row, both the GEMM for a block of rows —
   * and each score, like each output, one sum in k order whichever computes it. A row's keys past
   * its own position get probability 0, which adds nothing (+0·v) to the GEMM's sums.
   */
  private attend(l: number, T: number): void {
    const { n_embd: d, n_head: heads } = this.config;
    const hd = d / heads;
    const { qkv, ctx, scores, scratch } = this.at;
    const [heap, kernels, ks] = [this.heap, this.dh.kernels, this.keyStride];
    const scale = 1 / Math.sqrt(hd);
    for (let r = 0; r < this.batch * T; r++) {
      const [b, pos] = [Math.floor(r / T), this.length + (r % T)];
      for (let head = 0; head < heads; head++) {
        const q = qkv + r * 3 * d + head * hd;
        for (let j = 0; j < hd; j++) heap[q + j] *= scale; // as GPT2.attention scales q
        const keys = this.cacheAt(l, 0, b * heads + head) + pos;
        for (let j = 0; j < hd; j++) heap[keys + j * ks] = heap[q + d + j];
        heap.copyWithin(this.cacheAt(l, 1, b * heads + head) + pos * hd, q + 2 * d, q + 2 * d + hd);
      }
    }
    for (let b = 0; b < this.batch; b++) {
      for (let head = 0; head < heads; head++) {
        const [keys, values] = [this.cacheAt(l, 0, b * heads + head), this.cacheAt(l, 1, b * heads + head)];
        const step = T < GEMM_MIN_ROWS ? 1 : ATTENTION_BLOCK;
        for (let t0 = 0; t0 < T; t0 += step) {
          const rows = Math.min(step, T - t0);
          const seen = this.length + t0 + rows; // keys the block's last row sees
          const q = qkv + (b * T + t0) * 3 * d + head * hd;
          const out = ctx + (b * T + t0) * d + head * hd;
          if (rows === 1) kernels.nn(q * 4, keys * 4, scores * 4, 1, hd, Math.ceil(seen / 4) * 4, ks);
          else kernels.gemm({ m: rows, n: seen, k: hd, a: q * 4, lda: 3 * d, b: keys * 4, ldb: ks, c: scores * 4, ldc: ks }, scratch * 4);
          for (let i = 0; i < rows; i++) {
            const sees = this.length + t0 + i + 1;
            this.softmax(scores + i * ks, this.padding[b], sees);
            heap.fill(0, scores + i * ks + sees, scores + i * ks + seen);
          }
          if (rows === 1) kernels.nn(scores * 4, values * 4, out * 4, 1, seen, hd, hd);
          else kernels.gemm({ m: rows, n: hd, k: seen, a: scores * 4, lda: ks, b: values * 4, ldb: hd, c: out * 4, ldc: d }, scratch * 4);
        }
      }
    }
  }

  /**
   * f(at, rows, width) over columns [c0, c1) of `count` rows of `width` at `base`: all of them at
   * once when they are whole rows, else row by row. A kernel computes each element on its own,
   * so both give the same bits.
   */
  private columns(base: number, count: number, width: number, c0: number, c1: number, f: (at: number, rows: number, width: number) => void): void {
    if (c0 === 0 && c1 === width) return f(base, count, width);
    for (let r = 0; r < count; r++) f(base + r * width + c0, 1, c1 - c0);
  }

  /** x += tmp + bias over columns [c0, c1). */
  private addResidual(bias: number, count: number, c0: number, c1: number): void {
    const { x, tmp } = this.at;
    const d = this.config.n_embd;
    this.columns(0, count, d, c0, c1, (at, rows, width) => this.dh.rows.addBias(x + at, bias + c0, rows, width, tmp + at));
  }

  /** Softmax over scores [0, keys) at `at` in place; positions before `masked` get probability 0. */
  private softmax(at: number, masked: number, keys: number): void {
    const rows = this.dh.rows;
    const [from, n] = [at + masked, keys - masked];
    if (n <= 0) return void this.heap.fill(0, at, at + keys); // a padding row: it sees only padding
    const sum = rows.expSum(from, n, 1, -rows.rowMax(from, n), true);
    rows.scale(from, n, 1 / sum);
    this.heap.fill(0, at, from);
  }

  /** Float offset of layer l's keys (which 0) or values (1) for one (sequence, head). */
  private cacheAt(l: number, which: number, bh: number): number {
    const { n_embd: d, n_head: heads } = this.config;
    return this.at.kv + (((l * 2 + which) * this.batch * heads + bh) * this.keyStride * d) / heads;
  }

  /** A view of the heap as it is now (the memory's buffer is replaced when it grows). */
  private refresh(): void {
    if (this.heap.buffer !== this.dh.memory.buffer) this.heap = new Float32Array(this.dh.memory.buffer);
  }

  private layerNorm(src: number, dst: number, [g, beta]: Pair, rows: number, d: number, eps: number): void {
    const heap = this.heap;
    for (let r = 0; r < rows; r++) {
      const s = src + r * d;
      let sum = 0;
      for (let j = 0; j < d; j++) sum += heap[s + j];
      const mean = sum / d;
      let sq = 0;
      for (let j = 0; j < d; j++) sq += (heap[s + j] - mean) ** 2;
      const inv = 1 / Math.sqrt(sq / d + eps);
      for (let j = 0; j < d; j++) heap[dst + r * d + j] = (heap[s + j] - mean) * inv * heap[g + j] + heap[beta + j];
    }
  }
}
