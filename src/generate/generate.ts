/**
 * Text generation as an async stream of events: prefill once, then one position per step through
 * the key/value cache (or, with useCache false, the whole context again each step — same tokens).
 * Prompts run in batches, left-padded, with an attention mask and position ids that make each
 * sequence's result what it would be alone; sampling draws from one RNG per sequence, seeded by
 * (seed, sequence index), so batching does not change what is drawn.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { GPT2, KVCache } from '../model/gpt2.js';
import { WasmDecoder } from '../model/wasm-decoder.js';
import { StreamDecoder } from '../tokenizer/stream-decoder.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { ToolError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { applyProcessors, minNewTokens, noRepeatNgram, repetitionPenalty, temperature, topK, topP, type LogitsProcessor } from './processors.js';
import { argmax, sample } from './sampling.js';
import { StopStringFilter } from './stop.js';

export interface GenerateOptions {
  maxNewTokens: number;
  minNewTokens?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  noRepeatNgramSize?: number;
  seed?: number;
  /** Tokens that end a sequence (not included in its text); empty: never stop early. */
  eosIds?: number[];
  stop?: string[];
  useCache?: boolean;
  /** With the cache on wasm, decode steps outside the tfjs engine (WasmDecoder; default true). */
  fastDecode?: boolean;
  batchSize?: number;
  /** Token put in front of shorter prompts of a batch (masked out). */
  padId?: number;
}

export type FinishReason = 'eos' | 'stop' | 'length';

export type GenerationEvent =
  | { type: 'token'; sequence: number; id: number; text: string }
  | { type: 'end'; sequence: number; ids: number[]; text: string; reason: FinishReason };

/** The processors options ask for, in HF's order. */
export function processorsFor(o: GenerateOptions): LogitsProcessor[] {
  const list: LogitsProcessor[] = [];
  if ((o.repetitionPenalty ?? 1) !== 1) list.push(repetitionPenalty(o.repetitionPenalty!));
  if ((o.noRepeatNgramSize ?? 0) > 0) list.push(noRepeatNgram(o.noRepeatNgramSize!));
  if ((o.minNewTokens ?? 0) > 0 && o.eosIds?.length) list.push(minNewTokens(o.minNewTokens!, o.eosIds));
  if (o.doSample) {
    list.push(temperature(o.temperature ?? 1));
    if ((o.topK ?? 0) > 0) list.push(topK(o.topK!));
    if ((o.topP ?? 1) < 1) list.push(topP(o.topP!));
  }
  return list;
}

interface Sequence {
  index: number;
  tokens: number[];
  generated: number[];
  done: boolean;
  rng: Rng;
  decoder: StreamDecoder;
  filter: StopStringFilter;
  text: string;
}

export async function* generate(model: GPT2, tokenizer: Tokenizer, prompts: number[][], options: GenerateOptions): AsyncGenerator<GenerationEvent> {
  const c = model.config;
  for (const [i, p] of prompts.entries()) {
    if (p.length === 0) throw new ToolError(`prompt ${i + 1} is empty (start it with <|endoftext|>)`);
    if (p.length + options.maxNewTokens > c.n_positions) {
      throw new ToolError(`prompt ${i + 1} has ${p.length} tokens; with ${options.maxNewTokens} new ones that exceeds the model's ${c.n_positions} positions (use --truncate left or fewer new tokens)`);
    }
  }
  const batchSize = Math.max(1, options.batchSize ?? 1);
  for (let start = 0; start < prompts.length; start += batchSize) {
    yield* generateBatch(model, tokenizer, prompts.slice(start, start + batchSize), start, options);
  }
}

async function* generateBatch(model: GPT2, tokenizer: Tokenizer, prompts: number[][], first: number, options: GenerateOptions): AsyncGenerator<GenerationEvent> {
  const tf = model.tf;
  const processors = processorsFor(options);
  const eos = new Set(options.eosIds ?? []);
  const pad = options.padId ?? options.eosIds?.[0] ?? 0;
  const useCache = options.useCache ?? true;
  const seqs: Sequence[] = prompts.map((p, b) => ({
    index: first + b,
    tokens: [...p],
    generated: [],
    done: false,
    rng: new Rng(options.seed ?? 0, first + b),
    decoder: new StreamDecoder(tokenizer),
    filter: new StopStringFilter(options.stop ?? []),
    text: '',
  }));
  const width = Math.max(...prompts.map((p) => p.length));
  const padOf = (b: number) => width - prompts[b].length;
  const padded = (b: number) => [...Array(padOf(b)).fill(pad), ...seqs[b].tokens];
  const maskRow = (b: number, length: number) => Array.from({ length }, (_, t) => (t < padOf(b) ? 0 : 1));
  const positionsRow = (b: number, from: number, to: number) => Array.from({ length: to - from }, (_, k) => Math.max(0, from + k - padOf(b)));
  const needsMask = prompts.some((_, b) => padOf(b) > 0);
  let cache: KVCache | undefined;
  let decoder: WasmDecoder | undefined;
  const dropCache = () => {
    if (cache) tf.dispose(cache.layers.flatMap((l) => [l.k, l.v]));
    cache = undefined;
  };

  try {
    for (let step = 0; step < options.maxNewTokens; step++) {
      // Logits of each sequence's last position.
      let last: tfjs.Tensor2D | Float32Array;
      const total = width + step;
      if (decoder) {
        last = decoder.step(seqs.map((s) => s.tokens[s.tokens.length - 1]), seqs.map((_, b) => positionsRow(b, total - 1, total)[0]));
      } else if (useCache) {
        const from = step === 0 ? 0 : total - 1;
        const ids = seqs.map((s, b) => (step === 0 ? padded(b) : [s.tokens[s.tokens.length - 1]]));
        const out = model.hidden(ids, {
          past: cache,
          useCache: true,
          attentionMask: needsMask ? seqs.map((_, b) => maskRow(b, total)) : undefined,
          positionIds: seqs.map((_, b) => positionsRow(b, from, total)),
        });
        dropCache();
        cache = out.cache;
        last = lastPositions(model, out.hidden);
        if (step === 0 && options.maxNewTokens > 1 && (options.fastDecode ?? true)) {
          decoder = WasmDecoder.create(model, seqs.length, width + options.maxNewTokens, seqs.map((_, b) => padOf(b)));
          if (decoder) {
            decoder.load(cache!);
            dropCache();
          }
        }
      } else {
        const out = model.hidden(seqs.map((_, b) => padded(b)), {
          attentionMask: needsMask ? seqs.map((_, b) => maskRow(b, total)) : undefined,
          positionIds: seqs.map((_, b) => positionsRow(b, 0, total)),
        });
        last = lastPositions(model, out.hidden);
      }
      let logits: Float32Array;
      if (last instanceof Float32Array) logits = last;
      else {
        logits = (await last.data()) as Float32Array;
        last.dispose();
      }
      const vocab = model.config.vocab_size;
      for (const [b, s] of seqs.entries()) {
        if (s.done) {
          s.tokens.push(pad); // keeps the batch rectangular; never reported
          continue;
        }
        const row = logits.slice(b * vocab, (b + 1) * vocab);
        applyProcessors(processors, row, { tokens: s.tokens, generated: s.generated.length });
        const id = options.doSample ? sample(row, s.rng) : argmax(row);
        s.tokens.push(id);
        if (eos.has(id)) {
          yield finish(s, 'eos');
          continue;
        }
        s.generated.push(id);
        const { release, stopped } = s.filter.push(s.decoder.push(id));
        s.text += release;
        yield { type: 'token', sequence: s.index, id, text: release };
        if (stopped) yield finish(s, 'stop');
        else if (s.generated.length === options.maxNewTokens) yield finish(s, 'length');
      }
      if (seqs.every((s) => s.done)) break;
    }
  } finally {
    // Also when the consumer stops early.
    dropCache();
    decoder?.dispose();
  }
  for (const s of seqs) if (!s.done) yield finish(s, 'length'); // max-new-tokens 0
}

function finish(s: Sequence, reason: FinishReason): GenerationEvent {
  s.done = true;
  if (reason !== 'stop') s.text += s.filter.push(s.decoder.flush()).release + s.filter.flush();
  return { type: 'end', sequence: s.index, ids: s.generated, text: s.text, reason };
}

/** Logits [B, vocab] of the last position of hidden states [B, T, D] (disposes hidden). */
function lastPositions(model: GPT2, hidden: tfjs.Tensor3D): tfjs.Tensor2D {
  const tf = model.tf;
  const [b, t, d] = hidden.shape;
  const out = tf.tidy(() => model.lmHead(tf.reshape(tf.slice(hidden, [0, t - 1, 0], [b, 1, d]), [b, d]) as tfjs.Tensor2D));
  hidden.dispose();
  return out;
}
