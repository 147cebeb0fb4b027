/**
 * Text generation as an async stream of events over any GenerationModel (model.ts): the model's
 * logits for each step, logits processors, greedy choice or seeded sampling, stop strings and
 * end-of-text. Prompts run in batches, left-padded, with an attention mask and position ids that make each
 * sequence's result what it would be alone; sampling draws from one RNG per sequence, seeded by
 * (seed, sequence index), so batching does not change what is drawn. Without a tokenizer (ids in,
 * ids out) events carry no text.
 */
import { StreamDecoder } from '../tokenizer/stream-decoder.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { ToolError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { applyProcessors, minNewTokens, noRepeatNgram, repetitionPenalty, temperature, topK, topP, type LogitsProcessor } from './processors.js';
import { argmax, sample } from './sampling.js';
import type { GenerationModel } from './model.js';
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
  /** Stop strings (need a tokenizer). */
  stop?: string[];
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
  decoder?: StreamDecoder;
  filter: StopStringFilter;
  text: string;
}

export async function* generate(model: GenerationModel, tokenizer: Tokenizer | undefined, prompts: number[][], options: GenerateOptions): AsyncGenerator<GenerationEvent> {
  const c = model.config;
  if (!tokenizer && options.stop?.length) throw new ToolError('stop strings need a tokenizer to decode the text');
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

async function* generateBatch(model: GenerationModel, tokenizer: Tokenizer | undefined, prompts: number[][], first: number, options: GenerateOptions): AsyncGenerator<GenerationEvent> {
  const processors = processorsFor(options);
  const eos = new Set(options.eosIds ?? []);
  const pad = options.padId ?? options.eosIds?.[0] ?? 0;
  const seqs: Sequence[] = prompts.map((p, b) => ({
    index: first + b,
    tokens: [...p],
    generated: [],
    done: false,
    rng: new Rng(options.seed ?? 0, first + b),
    decoder: tokenizer && new StreamDecoder(tokenizer),
    filter: new StopStringFilter(options.stop ?? []),
    text: '',
  }));
  const width = Math.max(...prompts.map((p) => p.length));
  const padOf = (b: number) => width - prompts[b].length;
  const decoding = model.start({ width, capacity: width + options.maxNewTokens, padOf, rows: () => seqs.map((s, b) => [...Array(padOf(b)).fill(pad), ...s.tokens]) });
  try {
    for (let step = 0; step < options.maxNewTokens; step++) {
      const logits = await decoding.logits(); // each sequence's last position
      const vocab = model.config.vocab_size;
      for (const [b, s] of seqs.entries()) {
        if (s.done) {
          s.tokens.push(pad); // keeps the batch rectangular; never reported
          continue;
        }
        const row = logits.subarray(b * vocab, (b + 1) * vocab);
        applyProcessors(processors, row, { tokens: s.tokens, generated: s.generated.length });
        const id = options.doSample ? sample(row, s.rng) : argmax(row);
        s.tokens.push(id);
        if (eos.has(id)) {
          yield finish(s, 'eos');
          continue;
        }
        s.generated.push(id);
        const { release, stopped } = s.filter.push(s.decoder?.push(id) ?? '');
        s.text += release;
        yield { type: 'token', sequence: s.index, id, text: release };
        if (stopped) yield finish(s, 'stop');
        else if (s.generated.length === options.maxNewTokens) yield finish(s, 'length');
      }
      if (seqs.every((s) => s.done)) break;
    }
  } finally {
    decoding.dispose(); // also when the consumer stops early
  }
  for (const s of seqs) if (!s.done) yield finish(s, 'length'); // max-new-tokens 0
}

function finish(s: Sequence, reason: FinishReason): GenerationEvent {
  s.done = true;
  if (reason !== 'stop') s.text += s.filter.push(s.decoder?.flush() ?? '').release + s.filter.flush();
  return { type: 'end', sequence: s.index, ids: s.generated, text: s.text, reason };
}
