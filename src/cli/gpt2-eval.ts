/** gpt2-eval: perplexity of a language model, or accuracy of a classifier, on record shards, as one JSON line. */
import { createProgram, intArg, logger, runProgram } from './common.js';
import { createProgress } from './progress.js';
import { writeStdout } from '../util/output.js';

interface Flags {
  model: string;
  data: string;
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

--model takes a checkpoint directory or a preset name (gpt2, gpt2-medium, ...). A preset name means
its pretrained weights, found in $GPT2_TOOLCHAIN_HOME/models/<name> (default
~/.cache/gpt2-toolchain/models/<name>; fill it once with convert-weights); --random-init asks for
the preset's shape with random weights instead.`,
})
  .requiredOption('-m, --model <dir|preset>', 'checkpoint directory (HF layout) or a preset name')
  .option('--random-init', 'with a preset name: random weights (from --seed) instead of its pretrained ones')
  .requiredOption('-d, --data <dir>', 'record shards written by bpe-encode')
  .option('-b, --batch-size <n>', 'records per forward pass', intArg('--batch-size', 1), 8)
  .option('--max-records <n>', 'evaluate only the first n records', intArg('--max-records', 1))
  .option('--backend <name>', 'compute backend: auto, tensorflow-gpu, tensorflow, wasm, cpu')
  .option('--threads <n>', 'threads on wasm (default: one per core)', intArg('--threads', 1, 64))
  .option('--lora <dir>', 'a LoRA adapter (PEFT directory) to merge into the model as it loads (a classifier\'s brings its score head)')
  .option('--seed <n>', 'seed for --random-init', intArg('--seed', 0), 0)
  .action(async (flags: Flags) => {
    const log = logger('gpt2-eval', !!flags.quiet);
    const { openShards } = await import('../data/shard-reader.js');
    const dataset = await openShards(flags.data);
    const { evaluateClassifierModel, evaluateModel } = await import('../train/eval-model.js');
    const { modelHead } = await import('../model/open.js');
    const total = Math.min(dataset.numRecords, flags.maxRecords ?? Infinity);
    const classifier = !!(await modelHead(flags.model, flags));
    const evaluator = classifier ? evaluateClassifierModel : evaluateModel;
    const progress = await createProgress({ quiet: flags.quiet, total, label: 'gpt2-eval', unit: 'items', rateUnit: 'records' });
    let result;
    try {
      result = await evaluator(flags.model, dataset, {
        backend: flags.backend,
        threads: flags.threads,
        log: log.info,
        randomInit: flags.randomInit,
        lora: flags.lora,
        seed: flags.seed,
        batchSize: flags.batchSize,
        maxRecords: flags.maxRecords,
        modelName: flags.model,
        onIgnored: (name) => log.warn(`${flags.model}: ignoring tensor ${name} (not a GPT-2 parameter)`),
        onProgress: (n) => progress.update(n),
      });
    } finally {
      progress.stop();
    }
    await writeStdout(`${JSON.stringify(result)}\n`);
  });

await runProgram(program);
