/** gpt2-generate: text generation with a KV cache, the usual sampling controls, batches and streaming. */
import { isUtf8 } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { Option } from 'commander';
import { ToolError, UsageError } from '../util/errors.js';
import { choiceOption, createProgram, intArg, logger, runProgram } from './common.js';
import type { RunFlags } from './gpt2-generate-run.js';

interface Flags extends RunFlags {
  promptFile?: string;
  greedy?: boolean;
  escapes: boolean;
  quiet?: boolean;
}

/** \n, \t, \r and \\ in a command-line string as the characters they name (one pass: "\\n" is a backslash and n). */
const unescape = (s: string) => s.replace(/\\([\\ntr])/g, (_, c: string) => ({ n: '\n', t: '\t', r: '\r' })[c] ?? c);

const num = (flag: string, check: (v: number) => boolean, want: string) => (value: string) => {
  const v = Number(value);
  if (value.trim() === '' || !Number.isFinite(v) || !check(v)) throw new UsageError(`${flag} must be ${want}, got ${JSON.stringify(value)}`);
  return v;
};

const program = createProgram({
  name: 'gpt2-generate',
  summary: 'Generate text with a GPT-2 checkpoint.',
  examples: [
    'gpt2-generate --model gpt2-tiny --random-init -n 20 "The meaning of life is"',
    'gpt2-generate --model gpt2 --do-sample --top-k 40 --top-p 0.9 --temperature 0.8 --seed 1 "Once upon a time"',
    "printf 'The town of\\nOnce upon a time\\n' | gpt2-generate --model gpt2 --batch-size 8 --format jsonl > out.jsonl",
    'echo "464 3290 286" | gpt2-generate --model gpt2 --input-format ids --format ids',
    'gpt2-generate --model gpt2 --stop "\\n\\n" --max-new-tokens 200 --stats "Q: Why is the sky blue?\\nA:"',
    'gpt2-generate --model gpt2-tiny --random-init --backend wasm --weights-dtype q8_0 -n 16 "Hello"',
  ],
  notes: `Prompts come from the arguments, --prompt-file (one per line) or standard input (one per line);
with none of them, generation starts from <|endoftext|> alone, as GPT-2 samples unconditionally (an
empty prompt does the same). Greedy decoding is the default; --do-sample draws with --seed (same seed,
same text). Text output streams token by token on a terminal or with --stream, never splitting a
character; --format jsonl gives one object per sequence with prompt, text, ids and finish_reason
(eos, stop, length). --stats prints timings as JSON on stderr.

In prompt arguments and --stop strings, \\n, \\t, \\r and \\\\ stand for a newline, a tab, a carriage
return and a backslash (--no-escapes takes them as typed); prompts read from a file or standard input
are taken as they are, one per line.

--model takes a checkpoint directory or a preset name (gpt2, gpt2-medium, ...). A preset name means
its pretrained weights, found in $GPT2_TOOLCHAIN_HOME/models/<name> (default
~/.cache/gpt2-toolchain/models/<name>; fill it once with convert-weights); --random-init asks for
the preset's shape with random weights instead (seeded by --seed).

--lora DIR merges a LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors) into the
weights as they load, so generation runs at full speed on every engine:
  gpt2-generate --model gpt2 --lora runs/lora/checkpoints/latest "The meaning of life is"
An adapter this toolchain wrote records its base, so --model may also be the adapter directory
alone; applying it to any other base is refused.

--weights-dtype f16 or q8_0 keeps the weight matrices (every linear layer and the embedding, which
is also the LM head) encoded in memory and widens them in the kernels, on wasm: decoding reads
fewer bytes a token, and models whose float32 weights exceed wasm's 4 GiB fit (gpt2-xl: 6.2 GB as
fp32, 3.1 GB as f16, 1.75 GB as q8_0; with --random-init, drawn and quantised tensor by tensor).
The output is that of the model with its weights rounded to f16 or Q8_0 (llama.cpp's quantiser).`,
})
  .argument('[prompts...]', 'prompts (text, or ids with --input-format ids)')
  .requiredOption('-m, --model <dir|preset>', 'checkpoint directory or preset name')
  .option('--random-init', 'with a preset name: random weights (from --seed) instead of its pretrained ones')
  .option('--lora <dir>', 'merge this LoRA adapter (PEFT format) into the model as it loads')
  .option('--prompt-file <file>', 'read prompts from a file, one per line')
  .addOption(choiceOption('--input-format <format>', 'prompts as text or as space-separated token ids', ['text', 'ids'], 'text'))
  .option('-n, --max-new-tokens <n>', 'tokens to generate', intArg('--max-new-tokens', 0), 50)
  .option('--max-length <n>', 'prompt + new tokens at most (caps --max-new-tokens)', intArg('--max-length', 1))
  .option('--min-new-tokens <n>', 'no end-of-text before this many tokens', intArg('--min-new-tokens', 0), 0)
  .option('--greedy', 'always take the most likely token (default)')
  .option('--do-sample', 'sample (with --temperature, --top-k, --top-p, --seed)')
  .option('-t, --temperature <t>', 'sampling temperature (> 0)', num('--temperature', (v) => v > 0, 'a number > 0'), 1)
  .option('-k, --top-k <k>', 'sample among the k most likely tokens (0: all)', intArg('--top-k', 0), 0)
  .option('-p, --top-p <p>', 'nucleus sampling mass, in (0, 1]', num('--top-p', (v) => v > 0 && v <= 1, 'in (0, 1]'), 1)
  .option('--repetition-penalty <r>', 'penalise tokens already present (HF: logits ÷ r if > 0, else × r)', num('--repetition-penalty', (v) => v > 0, 'a number > 0'), 1)
  .option('--no-repeat-ngram-size <n>', 'never repeat an n-gram', intArg('--no-repeat-ngram-size', 0), 0)
  .option('-s, --seed <n>', 'seed for sampling', intArg('--seed', 0), 0)
  .option('--stop <string>', 'stop when the text ends with this (not printed); repeatable', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--no-escapes', 'take \\n, \\t, \\r and \\\\ in prompt arguments and --stop strings as typed')
  .option('--eos-id <id>', "end-of-text token (default: the model config's eos_token_id)", intArg('--eos-id', 0))
  .option('--ignore-eos', 'keep going past end-of-text')
  .option('--num-return-sequences <n>', 'sequences per prompt', intArg('--num-return-sequences', 1), 1)
  .addOption(choiceOption('-f, --format <format>', 'output: text, jsonl or ids', ['text', 'jsonl', 'ids'], 'text'))
  .option('--stream', 'stream text as it is generated even when stdout is not a terminal')
  .option('--stats', 'print timings as one JSON line on stderr')
  .option('-b, --batch-size <n>', 'sequences generated together', intArg('--batch-size', 1), 1)
  .option('--no-cache', 'recompute the whole context every step (same output, slower)')
  .addOption(new Option('--truncate <side>', 'drop the oldest prompt tokens that do not fit').choices(['left']))
  .option('--backend <name>', 'compute backend: auto, tensorflow-gpu, tensorflow, wasm, cpu')
  .option('--threads <n>', 'threads for decoding on wasm (default: one per core)', intArg('--threads', 1, 64))
  .addOption(choiceOption('--weights-dtype <dtype>', 'weight matrices in memory on wasm: f32, f16 (half the bytes a token) or q8_0 (llama.cpp\'s 8-bit blocks, ~0.28×), quantised as they load', ['f32', 'f16', 'q8_0'], 'f32'))
  .action(async (args: string[], flags: Flags) => {
    const started = performance.now();
    const log = logger('gpt2-generate', !!flags.quiet);
    if (flags.greedy && flags.doSample) throw new UsageError('--greedy and --do-sample contradict each other');
    const escaped = (s: string) => (flags.escapes ? unescape(s) : s);
    const texts = readPrompts(flags.inputFormat === 'text' ? args.map(escaped) : args, flags);
    const { runGeneration } = await import('./gpt2-generate-run.js');
    await runGeneration(texts, { ...flags, stop: flags.stop.map(escaped) }, { started, log });
  });

function readPrompts(args: string[], flags: Flags): string[] {
  if (args.length > 0 && flags.promptFile) throw new UsageError('give prompts as arguments or with --prompt-file, not both');
  const lines = (buf: Buffer, source: string) => {
    if (!isUtf8(buf)) throw new ToolError(`${source}: prompts are not valid UTF-8`);
    const text = buf.toString('utf8');
    return (text.endsWith('\n') ? text.slice(0, -1) : text).split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  };
  if (args.length > 0) return args;
  if (flags.promptFile) {
    try {
      return lines(readFileSync(flags.promptFile), flags.promptFile);
    } catch (err) {
      if (err instanceof ToolError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      throw new ToolError(code === 'ENOENT' ? `${flags.promptFile}: no such file` : code === 'EISDIR' ? `${flags.promptFile}: is a directory` : `${flags.promptFile}: ${(err as Error).message}`);
    }
  }
  if (!process.stdin.isTTY) {
    const buf = readFileSync(0);
    if (buf.length > 0) return lines(buf, '<stdin>');
  }
  return [''];
}

await runProgram(program);
