/**
 * Where generation gets each step's logits: a padded batch, advanced one token per sequence per
 * step, the last position's logits of each sequence returned as [B · vocab].
 *
 * - DecodeModel (wasm, weights in a shared memory): whole passes by WasmDecoder, prompt included,
 *   products on every core.
 * - GPT2 on tfjs: the prompt through GPT2.hidden; then with the cache either WasmDecoder over the
 *   tfjs heap (wasm) or GPT2.hidden one position at a time; without the cache the whole context.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { DecodeModel } from '../model/decode-model.js';
import type { GPT2, KVCache } from '../model/gpt2.js';
import { decoderSupports, tfjsHeap, WasmDecoder } from '../model/wasm-decoder.js';

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

export interface LogitsSource {
  /** Logits after step `step` (0: the prompts). */
  next(step: number): Promise<Float32Array>;
  dispose(): void;
}

/** Position ids of sequence b for cache positions [from, to): padding counts from 0 at the first real token. */
function positions(batch: Batch, b: number, from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, k) => Math.max(0, from + k - batch.padOf(b)));
}

export function logitsSource(model: GPT2 | DecodeModel, batch: Batch, options: { useCache: boolean; fastDecode: boolean }): LogitsSource {
  return model instanceof DecodeModel ? decodeModelSource(model, batch, options.useCache) : tfjsSource(model, batch, options);
}

function decodeModelSource(model: DecodeModel, batch: Batch, useCache: boolean): LogitsSource {
  const padding = batch.rows().map((_, b) => batch.padOf(b));
  let decoder: WasmDecoder | undefined;
  return {
    async next(step) {
      const rows = batch.rows();
      const total = rows[0].length;
      if (!useCache) {
        // The whole context again, through a fresh decoder: the same logits, bit for bit.
        const once = model.decoder(rows.length, total, padding, total);
        try {
          return once.forward(rows, rows.map((_, b) => positions(batch, b, 0, total)));
        } finally {
          once.dispose();
        }
      }
      if (step === 0) {
        decoder = model.decoder(rows.length, batch.capacity, padding, batch.width);
        return decoder.forward(rows, rows.map((_, b) => positions(batch, b, 0, total)));
      }
      return decoder!.step(rows.map((r) => r[total - 1]), rows.map((_, b) => positions(batch, b, total - 1, total)[0]));
    },
    dispose: () => decoder?.dispose(),
  };
}

function tfjsSource(model: GPT2, batch: Batch, options: { useCache: boolean; fastDecode: boolean }): LogitsSource {
  const tf = model.tf;
  let cache: KVCache | undefined;
  let decoder: WasmDecoder | undefined;
  const dropCache = () => {
    if (cache) tf.dispose(cache.layers.flatMap((l) => [l.k, l.v]));
    cache = undefined;
  };
  const maskRows = (length: number) => batch.rows().map((_, b) => Array.from({ length }, (_, t) => (t < batch.padOf(b) ? 0 : 1)));
  const needsMask = batch.rows().some((_, b) => batch.padOf(b) > 0);
  return {
    async next(step) {
      const rows = batch.rows();
      const total = rows[0].length;
      if (decoder) return decoder.step(rows.map((r) => r[total - 1]), rows.map((_, b) => positions(batch, b, total - 1, total)[0]));
      let hidden: tfjs.Tensor3D;
      if (options.useCache) {
        const from = step === 0 ? 0 : total - 1;
        const out = model.hidden(
          rows.map((r) => r.slice(from)),
          { past: cache, useCache: true, attentionMask: needsMask ? maskRows(total) : undefined, positionIds: rows.map((_, b) => positions(batch, b, from, total)) },
        );
        dropCache();
        cache = out.cache;
        hidden = out.hidden;
        const heap = step === 0 && options.fastDecode && batch.capacity > total + 1 && decoderSupports(model.config) ? tfjsHeap(model) : undefined;
        if (heap) {
          decoder = new WasmDecoder(heap, model.config, rows.length, batch.capacity, rows.map((_, b) => batch.padOf(b)));
          decoder.load(cache!);
          dropCache();
        }
      } else {
        hidden = model.hidden(rows, { attentionMask: needsMask ? maskRows(total) : undefined, positionIds: rows.map((_, b) => positions(batch, b, 0, total)) }).hidden;
      }
      const last = lastPositions(model, hidden);
      try {
        return (await last.data()) as Float32Array;
      } finally {
        last.dispose();
      }
    },
    dispose() {
      dropCache();
      decoder?.dispose();
    },
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
