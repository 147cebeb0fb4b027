/**
 * What gpt2-classify does with its inputs: opens the classifier, turns each line into ids (checked,
 * truncated if asked), classifies them a batch at a time and writes each batch's lines in input
 * order as soon as it is done (every write checked).
 */
import type { GPT2Config } from '../model/config.js';
import { parseIds } from '../tokenizer/id-lines.js';
import { loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { chunkLines, readTextChunks } from '../util/input.js';
import { ToolError } from '../util/errors.js';
import { writeStdout } from '../util/output.js';
import type { Logger } from './common.js';

export interface ClassifyFlags {
  /** A classifier's LoRA adapter directory, merged into --model as it loads. */
  lora?: string;
  model: string;
  inputFormat: 'text' | 'ids';
  format: 'jsonl' | 'tsv';
  batchSize: number;
  truncate?: 'left' | 'right';
  backend?: string;
  threads?: number;
}

export interface InputLine {
  text: string;
  /** "file:line" or "argument k", for messages. */
  where: string;
}

/**
 * Lines of a file or stdin ("-") as they arrive: chunks of whatever has been read (1-byte target),
 * so a line reaches its batch without waiting for the rest of the input; UTF-8 checked with the line.
 */
export async function* inputLines(file: string): AsyncGenerator<InputLine> {
  for await (const chunk of readTextChunks([file], { chunkBytes: 1 })) {
    for (const [k, line] of chunkLines(chunk.text).entries()) {
      yield { text: line.endsWith('\r') ? line.slice(0, -1) : line, where: `${chunk.source}:${chunk.firstLine + k}` };
    }
  }
}

/** The ids of one input: checked against the vocabulary and the context, truncated if asked. */
function idsOf(line: InputLine, c: GPT2Config, tokenizer: Tokenizer | undefined, flags: ClassifyFlags): number[] {
  let ids = tokenizer ? tokenizer.encode(line.text) : parseIds(line.text, c.vocab_size, line.where);
  if (ids.length === 0) throw new ToolError(`${line.where}: empty input, nothing to classify`);
  const outside = ids.find((id) => id >= c.vocab_size);
  if (outside !== undefined) throw new ToolError(`${line.where}: token id ${outside} is outside the model's vocabulary of ${c.vocab_size} (is the checkpoint's tokenizer missing?)`);
  if (ids.length > c.n_positions) {
    if (!flags.truncate) throw new ToolError(`${line.where}: ${ids.length} tokens, more than the model's context of ${c.n_positions} (use --truncate left|right)`);
    ids = flags.truncate === 'right' ? ids.slice(0, c.n_positions) : ids.slice(ids.length - c.n_positions);
  }
  return ids;
}

/** Softmax in float64 of one row of float32 logits. */
function probabilities(logits: Float32Array, row: number, n: number): number[] {
  const xs = Array.from(logits.subarray(row * n, row * n + n));
  const max = Math.max(...xs);
  const exps = xs.map((x) => Math.exp(x - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

export async function classifyLines(lines: AsyncIterable<InputLine>, flags: ClassifyFlags, log: Logger): Promise<void> {
  const { openClassifierModel } = await import('../train/eval-model.js');
  const opened = await openClassifierModel(flags.model, { backend: flags.backend, threads: flags.threads, batch: flags.batchSize, lora: flags.lora, log: log.info });
  const model = opened.model;
  try {
    for (const name of opened.ignored) log.warn(`${flags.model}: ignoring tensor ${name} (not a GPT-2 parameter)`);
    const tokenizer = flags.inputFormat === 'text' ? loadTokenizer(opened.tokenizerDir) : undefined;
    const { labels, num_labels: n } = model.head;
    let batch: number[][] = [];
    const run = async () => {
      const logits = await model.classify(batch);
      let out = '';
      for (let b = 0; b < batch.length; b++) {
        const probs = probabilities(logits, b, n);
        let best = 0;
        for (let k = 1; k < n; k++) if (logits[b * n + k] > logits[b * n + best]) best = k;
        out += flags.format === 'tsv' ? `${labels[best]}\t${probs[best]}\n` : `${JSON.stringify({ label: labels[best], label_id: best, probs })}\n`;
      }
      batch = [];
      await writeStdout(out);
    };
    for await (const line of lines) {
      batch.push(idsOf(line, model.config, tokenizer, flags));
      if (batch.length === flags.batchSize) await run();
    }
    if (batch.length > 0) await run();
  } finally {
    model.dispose();
  }
}
