/**
 * The one model interface generation runs on: a padded batch in, each sequence's next-token logits
 * out, one step at a time. Two engines implement it, each with or without the key/value cache:
 *
 * - decoderModel: WasmDecoder over a DecodeModel (weights in a shared wasm memory, products on
 *   every core): whole passes, prompt included, outside the tfjs engine.
 * - tfjsModel: GPT2 on a tfjs backend: the prompt and each step through GPT2.hidden.
 *
 * Which one runs is decided in one place, choose.ts. Both compute HF's GPT2LMHeadModel and are
 * tested against the PyTorch fixtures step by step.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { GPT2Config } from '../model/config.js';
import type { DecodeModel } from '../model/decode-model.js';
import type { GPT2, KVCache } from '../model/gpt2.js';
import type { WasmDecoder } from '../model/wasm-decoder.js';

export interface Batch {
  /** Tokens of every sequence so far, left-padded to the same length (prompt width + step). */
  rows(): number[][];
  /** Padding in front of sequence b. */
  padOf(b: number): number;
  /** The prompts' padded width. */
  width: number;
  /** Positions the whole run may reach (width + new tokens). */
  capacity: number;
}

export interface Decoding {
  /**
   * The last position's logits of every sequence in `batch.rows()` as they are now, [B · vocab].
   * The first call takes the prompts; each later one follows one more token per sequence.
   */
  logits(): Promise<Float32Array>;
  dispose(): void;
}

export interface GenerationModel {
  readonly config: GPT2Config;
  /** The compute backend (wasm, tensorflow, cpu, …), as --stats reports it. */
  readonly backend: string;
  /** What runs, for the line on stderr. */
  readonly description: string;
  /** Starts decoding a batch (one Decoding per batch). */
  start(batch: Batch): Decoding;
  dispose(): void;
}

/** Position ids of sequence b for cache positions [from, to): padding counts from 0 at the first real token. */
function positions(batch: Batch, b: number, from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, k) => Math.max(0, from + k - batch.padOf(b)));
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

/** WasmDecoder over `dm`; without the cache, the whole context through a fresh decoder every step. */
export function decoderModel(dm: DecodeModel, cache: boolean): GenerationModel {
  return {
    config: dm.config,
    backend: 'wasm',
    description: `wasm decoder of our own (SIMD, ${plural(dm.threads, 'thread')}${dm.weightsDtype === 'f32' ? '' : `, ${dm.weightsDtype} weights`}), ${cache ? 'key/value cache' : 'whole context every step'}`,
    start: (batch) => {
      const padding = batch.rows().map((_, b) => batch.padOf(b));
      const all = (rows: number[][], from: number) => rows.map((r, b) => positions(batch, b, from, r.length));
      if (!cache) {
        return {
          async logits() {
            const rows = batch.rows();
            const once = dm.decoder(rows.length, rows[0].length, padding, rows[0].length);
            try {
              return once.forward(rows, all(rows, 0)); // the same logits as with the cache, bit for bit
            } finally {
              once.dispose();
            }
          },
          dispose() {},
        };
      }
      let decoder: WasmDecoder | undefined;
      return {
        async logits() {
          const rows = batch.rows();
          if (decoder) return decoder.step(rows.map((r) => r[r.length - 1]), all(rows, rows[0].length - 1).map((p) => p[0]));
          decoder = dm.decoder(rows.length, batch.capacity, padding, batch.width);
          return decoder.forward(rows, all(rows, 0));
        },
        dispose: () => decoder?.dispose(),
      };
    },
    dispose: () => dm.dispose(),
  };
}

/** GPT2 on its tfjs backend (named `backend` for --stats). */
export function tfjsModel(m: GPT2, cache: boolean, backend: string = m.tf.getBackend()): GenerationModel {
  return {
    config: m.config,
    backend,
    description: `GPT2 on tfjs (${backend}), ${cache ? 'key/value cache' : 'whole context every step'}`,
    start: (batch) => tfjsDecoding(m, batch, cache),
    dispose: () => m.dispose(),
  };
}

function tfjsDecoding(model: GPT2, batch: Batch, useCache: boolean): Decoding {
  const tf = model.tf;
  let cache: KVCache | undefined;
  const dropCache = () => {
    if (cache) tf.dispose(cache.layers.flatMap((l) => [l.k, l.v]));
    cache = undefined;
  };
  const maskRows = (length: number) => batch.rows().map((_, b) => Array.from({ length }, (_, t) => (t < batch.padOf(b) ? 0 : 1)));
  const needsMask = batch.rows().some((_, b) => batch.padOf(b) > 0);
  return {
    async logits() {
      const rows = batch.rows();
      const total = rows[0].length;
      const from = useCache && cache ? total - 1 : 0;
      const out = model.hidden(
        rows.map((r) => r.slice(from)),
        { past: cache, useCache, attentionMask: needsMask ? maskRows(total) : undefined, positionIds: rows.map((_, b) => positions(batch, b, from, total)) },
      );
      dropCache();
      cache = out.cache;
      const last = lastPositions(model, out.hidden);
      try {
        return (await last.data()) as Float32Array;
      } finally {
        last.dispose();
      }
    },
    dispose: dropCache,
  };
}

/** Logits [B, vocab] of the last position of hidden states [B, T, D] (disposes hidden). */
function lastPositions(model: GPT2, hidden: tfjs.Tensor3D): tfjs.Tensor2D {
  const tf = model.tf;
  const [b, t, d] = hidden.shape;
  const out = tf.tidy(() => model.lmHead(tf.reshape(tf.slice(hidden, [0, t - 1, 0], [b, 1, d]), [b, d]) as tfjs.Tensor2D));
  hidden.dispose();
  return out;
}
