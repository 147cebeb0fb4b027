/**
 * What gpt2-generate does once its model is loaded: prompts → ids (checked, truncated if asked),
 * generation, and output as streamed text, JSON lines or ids, plus --stats.
 */
import type { OpenedForGeneration } from '../model/open.js';
import { parseIds } from '../tokenizer/id-lines.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { ToolError, UsageError } from '../util/errors.js';
import { generate, type GenerateOptions } from './generate.js';

export interface RunFlags {
  inputFormat: 'text' | 'ids';
  maxNewTokens: number;
  maxLength?: number;
  minNewTokens: number;
  doSample?: boolean;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  noRepeatNgramSize: number;
  seed: number;
  stop: string[];
  eosId?: number;
  ignoreEos?: boolean;
  numReturnSequences: number;
  format: 'text' | 'jsonl' | 'ids';
  stream?: boolean;
  stats?: boolean;
  batchSize: number;
  cache: boolean;
  truncate?: 'left';
}

const write = (text: string) => new Promise<void>((resolve) => (process.stdout.write(text) ? resolve() : process.stdout.once('drain', () => resolve())));

export async function run(opened: OpenedForGeneration, tokenizer: Tokenizer, prompts: string[], flags: RunFlags, ctx: { started: number; log: { info(m: string): void } }): Promise<void> {
  const { model } = opened;
  const c = model.config;
  const eosId = flags.eosId ?? c.eos_token_id;
  if (flags.eosId !== undefined && eosId >= c.vocab_size) throw new UsageError(`--eos-id ${eosId} is outside the vocabulary (${c.vocab_size})`);
  const start = eosId < c.vocab_size ? eosId : undefined;
  const maxNew = flags.maxLength === undefined ? flags.maxNewTokens : flags.maxNewTokens; // capped per prompt below
  const ids = prompts.map((p, i) => {
    let toks = flags.inputFormat === 'ids' ? parseIds(p, c.vocab_size, `prompt ${i + 1}`) : tokenizer.encode(p);
    if (toks.length === 0) {
      if (start === undefined) throw new ToolError(`prompt ${i + 1} is empty and the model has no end-of-text token to start from`);
      toks = [start]; // GPT-2 samples unconditionally from <|endoftext|>
    }
    const room = c.n_positions - Math.min(maxNew, flags.maxLength === undefined ? maxNew : Math.max(0, flags.maxLength - toks.length));
    if (toks.length > room) {
      if (flags.truncate !== 'left') throw new ToolError(`prompt ${i + 1} has ${toks.length} tokens; with the new ones that exceeds the model's ${c.n_positions} positions (use --truncate left, or fewer new tokens)`);
      toks = toks.slice(toks.length - room);
    }
    return toks;
  });
  const loadMs = performance.now() - ctx.started;
  const expanded = ids.flatMap((p, i) => Array.from({ length: flags.numReturnSequences }, () => ({ prompt: i, ids: p })));
  const newTokens = (p: number[]) => (flags.maxLength === undefined ? maxNew : Math.max(0, Math.min(maxNew, flags.maxLength - p.length)));
  // Sequences with the same budget can share a batch; usually that is all of them.
  const budgets = [...new Set(expanded.map((e) => newTokens(e.ids)))];
  const options = (maxNewTokens: number): GenerateOptions => ({
    maxNewTokens,
    minNewTokens: flags.minNewTokens,
    doSample: !!flags.doSample,
    temperature: flags.temperature,
    topK: flags.topK,
    topP: flags.topP,
    repetitionPenalty: flags.repetitionPenalty,
    noRepeatNgramSize: flags.noRepeatNgramSize,
    seed: flags.seed,
    eosIds: flags.ignoreEos || start === undefined ? [] : [eosId],
    stop: flags.stop,
    useCache: flags.cache,
    batchSize: flags.batchSize,
    padId: start ?? 0,
  });

  const stream = flags.format === 'text' && (flags.stream || process.stdout.isTTY) && flags.batchSize === 1;
  let firstTokenAt: number | undefined;
  let generated = 0;
  const decodeStart = performance.now();
  for (const budget of budgets) {
    const group = expanded.filter((e) => newTokens(e.ids) === budget);
    const texts = new Map<number, string>();
    let printedUpTo = 0; // sequences of this group already written (text format keeps their order)
    for await (const event of generate(model, tokenizer, group.map((g) => g.ids), options(budget))) {
      const seq = group[event.sequence];
      if (event.type === 'token') {
        generated++;
        firstTokenAt ??= performance.now();
        if (stream) {
          if (!texts.has(event.sequence)) {
            texts.set(event.sequence, '');
            await write(tokenizer.decode(seq.ids).replace(/^<\|endoftext\|>$/, ''));
          }
          await write(event.text);
        }
        continue;
      }
      const promptText = flags.inputFormat === 'ids' ? seq.ids.join(' ') : prompts[seq.prompt];
      if (flags.format === 'jsonl') {
        await write(`${JSON.stringify({ prompt: promptText, prompt_ids: seq.ids, text: event.text, ids: event.ids, finish_reason: event.reason, index: seq.prompt })}\n`);
      } else if (flags.format === 'ids') {
        await write(`${event.ids.join(' ')}\n`);
      } else if (stream) {
        if (!texts.has(event.sequence)) await write(tokenizer.decode(seq.ids).replace(/^<\|endoftext\|>$/, '')); // ended before any token
        texts.set(event.sequence, '');
        await write('\n');
      } else {
        texts.set(event.sequence, `${flags.inputFormat === 'ids' ? tokenizer.decode(seq.ids) : promptText}${event.text}\n`);
        while (texts.has(printedUpTo)) await write(texts.get(printedUpTo++)!);
      }
    }
  }
  if (flags.stats) {
    const end = performance.now();
    const promptTokens = expanded.reduce((a, e) => a + e.ids.length, 0);
    const prefillMs = (firstTokenAt ?? end) - decodeStart;
    const decodeTokens = Math.max(0, generated - expanded.length);
    process.stderr.write(
      `${JSON.stringify({
        load_ms: Math.round(loadMs),
        prompt_tokens: promptTokens,
        new_tokens: generated,
        prefill_ms: Math.round(prefillMs),
        decode_tokens_per_s: decodeTokens > 0 ? decodeTokens / ((end - (firstTokenAt ?? end)) / 1000) : 0,
        backend: opened.backend.name,
      })}\n`,
    );
  }
  model.dispose();
  void ctx.log;
}
