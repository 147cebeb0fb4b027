/** gpt2-eval: perplexity of a language model, or accuracy of a classifier, on record shards, as one JSON line. */
import { createProgram, intArg, logger, runProgram } from './common.js';
import { createProgress } from './progress.js';
import { writeStdout } from '../util/output.js';
import { UsageError } from '../util/errors.js';

interface Flags {
  model?: string;
  data?: string;
  part?: string;
  merge?: string[];
  batchSize: number;
  maxRecords?: number;
  backend?: string;
  threads?: number;
  randomInit?: boolean;
  lora?: string;
  seed: number;
  quiet?: boolean;
}

const program = createProgram({
  name: 'gpt2-eval',
  summary: 'Evaluate a GPT-2 checkpoint on record shards: perplexity of a language model, accuracy of a classifier.',
  examples: [
    'gpt2-eval --model runs/a/checkpoints/latest --data data/valid',
    'gpt2-eval --model models/gpt2 --data data/valid --batch-size 4 --max-records 100 --backend wasm',
    'gpt2-eval --model gpt2 --data data/valid             # OpenAI\'s GPT-2, once converted into $GPT2_TOOLCHAIN_HOME/models/gpt2',
    'gpt2-eval --model gpt2-tiny --random-init --data data/valid   # a preset\'s shape with random weights (a baseline)',
    'gpt2-eval --model runs/cls/checkpoints/latest --data data/sst2-dev      # a classifier on labelled shards',
    'gpt2-eval --model models/gpt2 --lora runs/lora/checkpoints/latest --data data/valid   # a LoRA adapter merged at load',
    'for k in 1 2 3; do gpt2-eval --model gpt2 --data data/valid --part $k/3 > part$k.jsonl & done; wait; gpt2-eval --merge part*.jsonl',
  ],
  notes: `Prints {"loss", "perplexity", "tokens", "records"} on stdout: the token-weighted mean cross-entropy
of every predicted position whose target is real (attention_mask 1), inputs = ids[:-1] and
labels = ids[1:] of each record (make eval shards with bpe-encode --block-size n_positions). The
shards must come from the model's tokenizer. --backend (or $GPT2_BACKEND): auto, tensorflow-gpu,
tensorflow, wasm, cpu.

A classification checkpoint (config.json: GPT2ForSequenceClassification) on labelled shards prints
{"accuracy", "loss", "macro_f1", "records"} instead: the share of records whose arg-max label is
the true one, the mean cross-entropy over records, and the mean F1 over the labels that occur
among the true labels or the predictions.

--part K/N evaluates the K-th (1-based) of N contiguous, equal slices of the records (after
--max-records) and prints {"format":"gpt2-eval.part","part","of","loss_sum","tokens","records"},
"of" naming the data (its manifest's sha256), model, adapter and --max-records; --merge FILE…
checks that the parts are 1/N…N/N of one run and prints what the single run prints (equal to it
up to float64 rounding of the sums). Any batch engine can run the parts: make -j, xargs -P, GNU
parallel, Slurm arrays (--part $((SLURM_ARRAY_TASK_ID+1))/N), Kubernetes Indexed Jobs.

--model takes a checkpoint directory or a preset name (gpt2, gpt2-medium, ...). A preset name means
its pretrained weights, found in $GPT2_TOOLCHAIN_HOME/models/<name> (default
~/.cache/gpt2-toolchain/models/<name>; fill it once with convert-weights); --random-init asks for
the preset's shape with random weights instead.`,
})
  .option('-m, --model <dir|preset>', 'checkpoint directory (HF layout) or a preset name (required unless --merge)')
  .option('--random-init', 'with a preset name: random weights (from --seed) instead of its pretrained ones')
  .option('-d, --data <dir>', 'record shards written by bpe-encode (required unless --merge)')
  .option('--part <K/N>', 'evaluate only the K-th of N equal slices of the records and print its sums (a language model)')
  .option('--merge <files...>', 'add the part lines in these files (from --part) into the single run\'s result')
  .option('-b, --batch-size <n>', 'records per forward pass', intArg('--batch-size', 1), 8)
  .option('--max-records <n>', 'evaluate only the first n records', intArg('--max-records', 1))
  .option('--backend <name>', 'compute backend: auto, tensorflow-gpu, tensorflow, wasm, cpu')
  .option('--threads <n>', 'threads on wasm (default: one per core)', intArg('--threads', 1, 64))
  .option('--lora <dir>', 'a LoRA adapter (PEFT directory) to merge into the model as it loads (a classifier\'s brings its score head)')
  .option('--seed <n>', 'seed for --random-init', intArg('--seed', 0), 0)
  .action(async (flags: Flags) => {
    const log = logger('gpt2-eval', !!flags.quiet);
    if (flags.merge) {
      if (flags.model !== undefined || flags.data !== undefined || flags.part !== undefined) throw new UsageError('--merge takes only part files: no --model, --data or --part');
      const { mergePartFiles } = await import('../train/eval-parts.js');
      await writeStdout(`${JSON.stringify(await mergePartFiles(flags.merge))}\n`);
      return;
    }
    if (flags.model === undefined || flags.data === undefined) throw new UsageError('give --model and --data (or --merge PART_FILE…)');
    const [model, data] = [flags.model, flags.data];
    const { openShards } = await import('../data/shard-reader.js');
    const dataset = await openShards(data);
    const { evaluateClassifierModel, evaluateModel, evaluateModelPart } = await import('../train/eval-model.js');
    const { modelHead } = await import('../model/open.js');
    const { dataIdentity, partLine } = await import('../train/eval-parts.js');
    const { parsePart, partRange } = await import('../util/parts.js');
    const part = flags.part === undefined ? undefined : parsePart(flags.part);
    const capped = Math.min(dataset.numRecords, flags.maxRecords ?? Infinity);
    const total = part ? partRange(part, capped).end - partRange(part, capped).start : capped;
    const classifier = !!(await modelHead(model, flags));
    if (classifier && part) throw new UsageError('--part is for language models (a classifier\'s metrics do not add up from parts)');
    const progress = await createProgress({ quiet: flags.quiet, total, label: 'gpt2-eval', unit: 'items', rateUnit: 'records' });
    const options = {
      backend: flags.backend,
      threads: flags.threads,
      log: log.info,
      randomInit: flags.randomInit,
      lora: flags.lora,
      seed: flags.seed,
      batchSize: flags.batchSize,
      maxRecords: flags.maxRecords,
      modelName: model,
      onIgnored: (name: string) => log.warn(`${model}: ignoring tensor ${name} (not a GPT-2 parameter)`),
      onProgress: (n: number) => progress.update(n),
    };
    let result;
    try {
      if (part) {
        const of = { data: await dataIdentity(data), model, lora: flags.lora ?? null, max_records: flags.maxRecords ?? null };
        result = partLine(part, of, await evaluateModelPart(model, dataset, { ...options, part }));
      } else {
        result = await (classifier ? evaluateClassifierModel : evaluateModel)(model, dataset, options);
      }
    } finally {
      progress.stop();
    }
    await writeStdout(`${JSON.stringify(result)}\n`);
  });

await runProgram(program);
