/** gpt2-classify: label texts (or token-id lines) with a classification checkpoint, one output line per input. */
import { UsageError } from '../util/errors.js';
import { choiceOption, createProgram, intArg, logger, runProgram } from './common.js';

interface Flags {
  model: string;
  lora?: string;
  inputFile?: string;
  inputFormat: 'text' | 'ids';
  format?: 'jsonl' | 'tsv';
  batchSize: number;
  truncate?: 'left' | 'right';
  backend?: string;
  threads?: number;
  quiet?: boolean;
}

const program = createProgram({
  name: 'gpt2-classify',
  summary: 'Classify texts with a GPT-2 classification checkpoint (GPT2ForSequenceClassification).',
  examples: [
    'gpt2-classify --model fixtures/models/tiny-cls --input-format ids "5 250 31 0 77" "64 1 128"',
    'gpt2-classify --model runs/txtcls/checkpoints/latest "a gripping, funny film" "a dull mess"',
    'gpt2-classify --model runs/txtcls/checkpoints/latest --input-file reviews.txt --batch-size 16 > labels.jsonl',
    "printf 'a gripping, funny film\\na dull mess\\n' | gpt2-classify --model runs/txtcls/checkpoints/latest --format tsv",
    'gpt2-classify --model runs/txtcls-lora/checkpoints/latest "a gripping, funny film"   # a LoRA run\'s adapter finds its base',
  ],
  notes: `Inputs come from the arguments, --input-file (one per line) or standard input (one per line), as
text (encoded with the checkpoint's tokenizer) or as token ids separated by spaces (--input-format ids).
They run in batches of --batch-size (padded to the longest, each classified as it would be alone),
and each batch's lines are printed, in input order, as soon as it is done:
  --format jsonl  {"label": "<name>", "label_id": k, "probs": [p0, p1, ...]}   (default on a pipe)
  --format tsv    <label>\\t<probability of that label>                          (default on a terminal)
The label is the most probable one (the lowest id on a tie). A text longer than the model's context
is an error unless --truncate left|right drops tokens from that side; an empty line is an error.

--model takes a checkpoint that gpt2-train wrote with task: sequence_classification, or a Hugging
Face GPT2ForSequenceClassification directory (config.json, model.safetensors or pytorch_model.bin),
or the adapter of a LoRA classification run (its base found by the path it records; with --lora DIR
the adapter goes on the --model you give). The adapter's A·B are merged into the base's weights as
they load and its score head (trained fully, PEFT's modules_to_save) replaces any the base has.`,
})
  .argument('[texts...]', 'texts to classify (token ids with --input-format ids)')
  .requiredOption('-m, --model <dir>', 'classification checkpoint directory')
  .option('--lora <dir>', "a classifier's LoRA adapter (PEFT directory with its score) to merge into --model as it loads")
  .option('--input-file <file>', 'read inputs from a file, one per line')
  .addOption(choiceOption('--input-format <format>', 'inputs as text or as space-separated token ids', ['text', 'ids'], 'text'))
  .addOption(choiceOption('-f, --format <format>', 'output: jsonl or tsv (default: jsonl on a pipe, tsv on a terminal)', ['jsonl', 'tsv']))
  .option('-b, --batch-size <n>', 'inputs classified together', intArg('--batch-size', 1), 8)
  .addOption(choiceOption('--truncate <side>', 'drop the tokens beyond the context from this side instead of failing', ['left', 'right']))
  .option('--backend <name>', 'compute backend: auto, tensorflow-gpu, tensorflow, wasm, cpu')
  .option('--threads <n>', 'threads on wasm (default: one per core)', intArg('--threads', 1, 64))
  .action(async (texts: string[], flags: Flags) => {
    const log = logger('gpt2-classify', !!flags.quiet);
    if (texts.length > 0 && flags.inputFile) throw new UsageError('give inputs as arguments or with --input-file, not both');
    if (texts.length === 0 && !flags.inputFile && process.stdin.isTTY) throw new UsageError('no inputs: give texts as arguments, --input-file FILE, or lines on standard input');
    const { classifyLines, inputLines } = await import('./gpt2-classify-run.js');
    const lines = texts.length > 0 ? argumentLines(texts) : inputLines(flags.inputFile ?? '-');
    await classifyLines(lines, { ...flags, format: flags.format ?? (process.stdout.isTTY ? 'tsv' : 'jsonl') }, log);
  });

async function* argumentLines(texts: string[]) {
  for (const [k, text] of texts.entries()) yield { text, where: `argument ${k + 1}` };
}

await runProgram(program);
