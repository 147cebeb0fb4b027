/**
 * What gpt2-generate does with its flags and prompts: opens the model (src/generate/choose.ts picks
 * how it runs), turns prompts into ids (checked, truncated if asked), generates, and writes streamed
 * text, JSON lines or ids to stdout (every write checked), plus --stats on stderr.
 */
import type { WeightDtype } from '../backend/encoded-weights.js';
import { openGenerationModel } from '../generate/choose.js';
import { generate, type GenerateOptions } from '../generate/generate.js';
import type { GenerationModel } from '../generate/model.js';
import type { GPT2Config } from '../model/config.js';
import { parseIds } from '../tokenizer/id-lines.js';
import { builtinTokenizerDir, GPT2_VOCAB_SIZE, loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { ToolError, UsageError } from '../util/errors.js';
import { writeStdout } from '../util/output.js';
import type { Logger } from './common.js';

export interface RunFlags {
  model: string;
  lora?: string;
  randomInit?: boolean;
  backend?: string;
  threads?: number;
  weightsDtype: WeightDtype;
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

export async function runGeneration(prompts: string[], flags: RunFlags, ctx: { started: number; log: Logger }): Promise<void> {
  const opened = await openGenerationModel(flags.model, { backend: flags.backend, log: ctx.log.info, randomInit: flags.randomInit, lora: flags.lora, seed: flags.seed, cache: flags.cache, threads: flags.threads, weightsDtype: flags.weightsDtype });
  try {
    const tokenizer = tokenizerFor(opened.tokenizerDir, opened.model.config, flags, ctx.log);
    await run(opened.model, tokenizer, prompts, flags, ctx.started);
  } finally {
    opened.model.dispose();
  }
}

/**
 * The tokenizer for the model's vocabulary: the checkpoint's own, else GPT-2's. With ids in and out
 * none is needed, and a model whose vocabulary GPT-2's byte-level BPE does not cover (no tokenizer
 * of its own and another size, or one that is not byte-level BPE) still generates: said once.
 */
function tokenizerFor(dir: string, c: GPT2Config, flags: RunFlags, log: Logger): Tokenizer | undefined {
  const own = dir !== builtinTokenizerDir();
  if (flags.inputFormat === 'ids' && flags.format === 'ids' && flags.stop.length === 0) {
    let problem: string | undefined;
    if (!own) problem = c.vocab_size === GPT2_VOCAB_SIZE ? undefined : `no tokenizer (vocab.json, merges.txt) and ${c.vocab_size} token ids, GPT-2's has ${GPT2_VOCAB_SIZE}`;
    else {
      // Loading (parsing and checking the files) is what tells whether text could be decoded;
      // its failure only changes that one line.
      try {
        const size = loadTokenizer(dir).vocabSize;
        if (size < c.vocab_size) problem = `its tokenizer has ${size} token ids, the model ${c.vocab_size}`;
      } catch (err) {
        problem = `its tokenizer is not byte-level BPE (${(err as Error).message})`;
      }
    }
    if (problem) log.info(`${flags.model}: ${problem}: ids in and out, text cannot be decoded`);
    return undefined;
  }
  const hint = '--input-format ids --format ids needs no tokenizer';
  let tokenizer: Tokenizer;
  try {
    tokenizer = loadTokenizer(dir);
  } catch (err) {
    if (err instanceof ToolError) throw new ToolError(`${err.message} (${hint})`, { cause: err });
    throw err;
  }
  if (tokenizer.vocabSize < c.vocab_size) {
    log.warn(`${own ? dir : "GPT-2's tokenizer"} has ${tokenizer.vocabSize} token ids and the model ${c.vocab_size}: drawing one beyond cannot be decoded and fails (${hint})`);
  }
  return tokenizer;
}

/** Token ids of each prompt: checked, started from <|endoftext|> when empty, truncated if asked. */
function promptIds(prompts: string[], flags: RunFlags, c: GPT2Config, tokenizer: Tokenizer | undefined, start: number | undefined, newTokens: (promptLength: number) => number): number[][] {
  return prompts.map((p, i) => {
    let toks = flags.inputFormat === 'ids' ? parseIds(p, c.vocab_size, `prompt ${i + 1}`) : tokenizer!.encode(p);
    if (toks.length === 0) {
      if (start === undefined) throw new ToolError(`prompt ${i + 1} is empty and the model has no end-of-text token to start from`);
      toks = [start]; // GPT-2 samples unconditionally from <|endoftext|>
    }
    const room = c.n_positions - newTokens(toks.length);
    if (room < 1) throw new ToolError(`--max-new-tokens ${newTokens(toks.length)} leaves no room for prompt ${i + 1}: the model has ${c.n_positions} positions, so at most ${c.n_positions - 1} new tokens after a one-token prompt`);
    if (toks.length > room) {
      if (flags.truncate !== 'left') throw new ToolError(`prompt ${i + 1} has ${toks.length} tokens; with the new ones that exceeds the model's ${c.n_positions} positions (use --truncate left, or fewer new tokens)`);
      toks = toks.slice(toks.length - room);
    }
    return toks;
  });
}

async function run(model: GenerationModel, tokenizer: Tokenizer | undefined, prompts: string[], flags: RunFlags, started: number): Promise<void> {
  const c = model.config;
  const eosId = flags.eosId ?? c.eos_token_id;
  if (flags.eosId !== undefined && eosId >= c.vocab_size) throw new UsageError(`--eos-id ${eosId} is outside the vocabulary (${c.vocab_size})`);
  const start = eosId < c.vocab_size ? eosId : undefined;
  const newTokens = (length: number) => (flags.maxLength === undefined ? flags.maxNewTokens : Math.max(0, Math.min(flags.maxNewTokens, flags.maxLength - length)));
  const ids = promptIds(prompts, flags, c, tokenizer, start, newTokens);
  const loadMs = performance.now() - started;
  const expanded = ids.flatMap((p, i) => Array.from({ length: flags.numReturnSequences }, () => ({ prompt: i, ids: p })));
  // Sequences with the same budget can share a batch; usually that is all of them.
  const budgets = [...new Set(expanded.map((e) => newTokens(e.ids.length)))];
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
    batchSize: flags.batchSize,
    padId: start ?? 0,
  });
  const promptText = (e: (typeof expanded)[number]) => (flags.inputFormat === 'ids' ? tokenizer!.decode(e.ids) : prompts[e.prompt]);
  /** A streamed sequence starts with its prompt as the model sees it (truncated, or nothing for <|endoftext|> alone). */
  const streamedPrompt = (ids: number[]) => tokenizer!.decode(ids).replace(/^<\|endoftext\|>$/, '');

  const stream = flags.format === 'text' && (flags.stream || process.stdout.isTTY) && flags.batchSize === 1;
  let firstTokenAt: number | undefined;
  let generated = 0;
  const decodeStart = performance.now();
  for (const budget of budgets) {
    const group = expanded.filter((e) => newTokens(e.ids.length) === budget);
    const begun = new Set<number>(); // streamed sequences whose prompt is out
    const texts = new Map<number, string>();
    let printedUpTo = 0; // sequences of this group already written (text format keeps their order)
    for await (const event of generate(model, tokenizer, group.map((g) => g.ids), options(budget))) {
      const seq = group[event.sequence];
      if (event.type === 'token') {
        generated++;
        firstTokenAt ??= performance.now();
        if (stream) {
          if (!begun.has(event.sequence)) await writeStdout(streamedPrompt(seq.ids));
          begun.add(event.sequence);
          await writeStdout(event.text);
        }
      } else if (flags.format === 'jsonl') {
        const prompt = flags.inputFormat === 'ids' ? seq.ids.join(' ') : prompts[seq.prompt];
        await writeStdout(`${JSON.stringify({ prompt, prompt_ids: seq.ids, text: event.text, ids: event.ids, finish_reason: event.reason, index: seq.prompt })}\n`);
      } else if (flags.format === 'ids') {
        await writeStdout(`${event.ids.join(' ')}\n`);
      } else if (stream) {
        if (!begun.has(event.sequence)) await writeStdout(streamedPrompt(seq.ids)); // ended before any token
        begun.add(event.sequence);
        await writeStdout('\n');
      } else {
        texts.set(event.sequence, `${promptText(seq)}${event.text}\n`);
        while (texts.has(printedUpTo)) await writeStdout(texts.get(printedUpTo++)!);
      }
    }
  }
  if (flags.stats) {
    const end = performance.now();
    const decodeTokens = Math.max(0, generated - expanded.length);
    process.stderr.write(
      `${JSON.stringify({
        load_ms: Math.round(loadMs),
        prompt_tokens: expanded.reduce((a, e) => a + e.ids.length, 0),
        new_tokens: generated,
        prefill_ms: Math.round((firstTokenAt ?? end) - decodeStart),
        decode_tokens_per_s: decodeTokens > 0 ? decodeTokens / ((end - (firstTokenAt ?? end)) / 1000) : 0,
        backend: model.backend,
      })}\n`,
    );
  }
}
