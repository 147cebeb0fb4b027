/** gpt2-train: YAML-configured GPT-2 pre-training and fine-tuning with exact resume. */
import { join } from 'node:path';
import { ExitCode, UsageError } from '../util/errors.js';
import { RESUME_MAY_CHANGE } from '../train/resume.js';
import { createProgram, intArg, logger, runProgram } from './common.js';
import { createProgress } from './progress.js';

interface Flags {
  config?: string;
  trainData?: string;
  evalData?: string;
  outputDir?: string;
  maxSteps?: number;
  stopAt?: number;
  resume?: boolean;
  overwrite?: boolean;
  initFrom?: string;
  set: string[];
  backend?: string;
  threads?: number;
  seed?: number;
  quiet?: boolean;
}

const signalExit = (name: 'SIGINT' | 'SIGTERM') => (name === 'SIGINT' ? ExitCode.Interrupted : ExitCode.Terminated);

const program = createProgram({
  name: 'gpt2-train',
  summary: 'Train or fine-tune GPT-2 on record shards, as configured in YAML.',
  examples: [
    'gpt2-train --config configs/gpt2/run_gpt2_tiny.yaml --train-data data/train --output-dir runs/a',
    'gpt2-train --config configs/gpt2/run_gpt2.yaml --train-data data/train --eval-data data/valid --output-dir runs/b',
    'gpt2-train --config configs/gpt2/run_gpt2_tiny.yaml --output-dir runs/a --resume      # continue from runs/a/checkpoints/latest',
    'gpt2-train --config run.yaml --init-from models/gpt2 --set lr_schedule.lr=1e-5 --set runner.max_steps=200',
    'gpt2-train --config configs/gpt2/run_gpt2_txtcls_tiny.yaml --train-data data/sst2-train --eval-data data/sst2-dev --output-dir runs/cls',
    'gpt2-train --config configs/gpt2/run_gpt2_lora_tiny.yaml --init-from runs/a/checkpoints/latest --train-data data/train --output-dir runs/lora',
    'gpt2-train plot runs/a                                                                # writes runs/a/loss.svg',
  ],
  notes: `The run directory gets run.json (marks it as gpt2-train's), config.yaml (the effective config),
metrics.jsonl (one line per logged step and per evaluation), loss.svg, and checkpoints/step-NNNNNN/ —
Hugging Face model directories plus optimizer.safetensors and trainer_state.json — with
checkpoints/latest pointing at the newest; gpt2-train.lock while a process trains in it. A start
that fails before its first step leaves nothing behind; a run without any checkpoint starts again.
--resume continues bit for bit where the last checkpoint left off (checkpoints/latest, else the
newest complete step-NNNNNN; without --config it reads the run's config.yaml); a finished run is
left as it is. A resume may change only
${RESUME_MAY_CHANGE.map(([key]) => key).join(', ').replace(/(.{1,90})(?:, |$)/g, '  $1,\n').slice(0, -2)}
(recorded in config.yaml and as an "event": "resume" line in metrics.jsonl); anything else (model,
optimizer, the rest of lr_schedule, seed, batch size, data order) must match the run's, or it is refused.
--overwrite replaces only a run directory gpt2-train made, and never one holding an input.
task: sequence_classification (run_gpt2_txtcls*.yaml) trains a GPT2ForSequenceClassification on
labelled shards (bpe-encode --label-column): checkpoints then say so in config.json and hold
score.weight, and evaluation lines give eval_accuracy, eval_macro_f1 and eval_per_class; from a
plain LM (--init-from) score.weight starts as N(0, initializer_range).
A lora: section (run_gpt2_lora*.yaml) freezes the base (--init-from, else the preset's pretrained
weights) and trains LoRA adapters only (and a classifier's score): checkpoints are then PEFT adapter
directories (adapter_config.json, adapter_model.safetensors, adapter_base.json naming the base by
sha256) that gpt2-eval, gpt2-generate and gpt2-classify take as --model; --init-from an adapter of
ours trains it further.
SIGINT/SIGTERM finish the current step, save a checkpoint and exit with 130/143 (a second one stops
at once). Flags override the config file; --set key.path=value sets anything else (e.g. --set
optimizer.betas[1]=0.98).`,
})
  .option('-c, --config <file>', 'YAML config (configs/gpt2/*.yaml); `extends:` chains are followed (required unless --resume)')
  .option('--train-data <dir>', 'record shards to train on (train_dataset.path)')
  .option('--eval-data <dir>', 'record shards to evaluate on (eval_dataset.path)')
  .option('-o, --output-dir <dir>', 'run directory (output_dir)')
  .option('--max-steps <n>', 'optimizer steps in all (runner.max_steps)', intArg('--max-steps', 1))
  .option('--stop-at <n>', 'stop with a checkpoint after step n, schedule unchanged (resume later)', intArg('--stop-at', 1))
  .option('--resume', 'continue the run in the output directory from its latest checkpoint')
  .option('--overwrite', 'replace an output directory that holds another gpt2-train run')
  .option('--init-from <dir|preset>', 'start from a checkpoint or preset with fresh optimizer state (model.init_from)')
  .option('--set <key=value>', 'override any config key (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--backend <name>', 'compute backend: auto, tensorflow-gpu, tensorflow, wasm, cpu')
  .option('--threads <n>', 'threads of the wasm training pass (default: one per core)', intArg('--threads', 1, 64))
  .option('--seed <n>', 'random seed (seed)', intArg('--seed', 0))
  .action(async (flags: Flags) => {
    const log = logger('gpt2-train', !!flags.quiet);
    if (flags.outputDir !== undefined && flags.outputDir.trim() === '') throw new UsageError('--output-dir is an empty path');
    if (flags.resume && flags.overwrite) throw new UsageError('--resume and --overwrite contradict each other');
    const configFile = flags.config ?? (flags.resume && flags.outputDir !== undefined ? join(flags.outputDir, 'config.yaml') : undefined);
    if (!configFile) throw new UsageError('--config FILE is required (e.g. configs/gpt2/run_gpt2_tiny.yaml), or --resume --output-dir DIR');
    const { loadTrainConfigWithSources } = await import('../train/config.js');
    const overrides = [...flags.set];
    const flag = (key: string, value: unknown) => value !== undefined && overrides.push(`${key}=${JSON.stringify(value)}`);
    flag('train_dataset.path', flags.trainData);
    flag('eval_dataset.path', flags.evalData);
    flag('output_dir', flags.outputDir);
    flag('runner.max_steps', flags.maxSteps);
    flag('model.init_from', flags.initFrom);
    flag('backend', flags.backend);
    flag('seed', flags.seed);
    const { config, sourceOf, files } = loadTrainConfigWithSources(configFile, overrides);

    let signal: 'SIGINT' | 'SIGTERM' | undefined;
    const onSignal = (name: 'SIGINT' | 'SIGTERM') => {
      if (signal) process.exit(signalExit(name)); // a second signal: stop now
      signal = name;
      process.stderr.write(`\ngpt2-train: ${name}: finishing the current step and saving a checkpoint (again to stop at once)\n`);
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));

    const progress = await createProgress({ quiet: flags.quiet, label: 'gpt2-train', unit: 'items', rateUnit: 'steps', fields: ['loss {loss}', 'lr {lr}', '{tps} tokens/s'] });
    const plain = !process.stderr.isTTY;
    // On a terminal the progress bar holds the last line: a message clears it, the bar redraws below.
    const aboveBar = (say: (m: string) => void) => (m: string) => {
      if (!plain && !flags.quiet) process.stderr.write('\r\x1b[2K');
      say(m);
    };
    const { train } = await import('../train/trainer.js');
    let result;
    try {
      result = await train({
        config,
        resume: flags.resume,
        overwrite: flags.overwrite,
        stopAt: flags.stopAt,
        sourceOf,
        inputs: files,
        log: (m) => (plain ? log.info(m) : undefined),
        info: aboveBar(log.info),
        warn: aboveBar(log.warn),
        threads: flags.threads,
        interrupted: () => signal,
        onStep: ({ step, total, loss, lr, tokensPerS }) => {
          progress.setTotal(total);
          progress.update(step, { loss: loss.toFixed(4), lr: lr.toExponential(2), tps: tokensPerS.toFixed(0) });
          if (plain && (step % config.logging.interval === 0 || step === total)) {
            log.info(`step ${step}/${total} loss ${loss.toFixed(4)} lr ${lr.toExponential(2)} ${tokensPerS.toFixed(0)} tokens/s`);
          }
        },
      });
    } finally {
      progress.stop();
    }
    if (result.alreadyComplete) {
      log.info(`${config.output_dir}: the run is already complete (step ${result.steps}); nothing to do (raise --max-steps to train further)`);
      return;
    }
    if (result.stoppedBy === 'SIGINT' || result.stoppedBy === 'SIGTERM') {
      process.stderr.write(`gpt2-train: stopped by ${result.stoppedBy} after step ${result.steps}; checkpoint ${result.checkpoint}\n`);
      process.exitCode = signalExit(result.stoppedBy);
      return;
    }
    log.info(`done: ${result.steps} steps, final loss ${result.finalLoss.toFixed(4)}${result.bestEvalLoss === null ? '' : `, best eval loss ${result.bestEvalLoss.toFixed(4)}`}; checkpoint ${result.checkpoint}`);
  });

program
  .command('plot')
  .description('write RUN_DIR/loss.svg from RUN_DIR/metrics.jsonl')
  .argument('<run-dir>', 'a gpt2-train output directory')
  .action(async (dir: string) => {
    const { plot } = await import('../train/trainer.js');
    await (await import('../util/output.js')).writeStdout(`${await plot(dir)}\n`);
  });

await runProgram(program);
