/**
 * What `--resume` may change. A resume runs the config given now (file, --set, flags) from the
 * run's last checkpoint, so "the same command plus --resume" continues the run exactly. The config
 * may differ from the run's only where the difference does not contradict what has been trained:
 * how far to go, where the data and the outputs live, how often to evaluate, checkpoint and log.
 * Anything that shaped the steps already taken — the model, the optimizer and its schedule, the
 * seed, the batch and the data order — is refused, naming the key and both values.
 */
import { ToolError } from '../util/errors.js';
import { formatPath, isMapping, type Path, type TrainConfig } from './config-schema.js';

/** Key paths (and everything under them) that a resume may change, and why that is safe. */
export const RESUME_MAY_CHANGE: ReadonlyArray<readonly [key: string, why: string]> = [
  ['runner.max_steps', 'run length: extend or shorten the run'],
  ['runner.epochs', 'run length, when max_steps is null'],
  ['lr_schedule.decay_steps', 'schedule length, to go with a new run length'],
  ['train_dataset.path', 'the same shards moved elsewhere (the position in them is kept)'],
  ['eval_dataset', 'evaluation only'],
  ['eval', 'evaluation only'],
  ['checkpoint', 'how often and how many checkpoints are kept'],
  ['logging', 'how often metrics are logged'],
  ['output_dir', 'the run directory moved'],
  ['backend', 'where the math runs (results stay bit-exact only on the same backend)'],
];

export interface ConfigChange {
  key: string;
  from: unknown;
  to: unknown;
}

const mayChange = (key: string) => RESUME_MAY_CHANGE.some(([k]) => key === k || key.startsWith(`${k}.`) || key.startsWith(`${k}[`));

/** Leaf-level differences between two validated configs (a mapping against null is one change). */
export function configChanges(from: unknown, to: unknown, path: Path = []): ConfigChange[] {
  if (isMapping(from) && isMapping(to)) {
    const keys = [...new Set([...Object.keys(from), ...Object.keys(to)])];
    return keys.flatMap((k) => configChanges(from[k], to[k], [...path, k]));
  }
  return JSON.stringify(from) === JSON.stringify(to) ? [] : [{ key: formatPath(path), from, to }];
}

const show = (v: unknown) => (v === undefined ? 'nothing' : JSON.stringify(v));

/**
 * The config the resumed run continues with: `given`, when it differs from the run's config only in
 * keys a resume may change (returned as `changes`); otherwise a ToolError naming each refused key.
 */
export function resumeConfig(run: TrainConfig, given: TrainConfig, where: string): { config: TrainConfig; changes: ConfigChange[] } {
  const changes = configChanges(run, given);
  const refused = changes.filter((c) => !mayChange(c.key));
  if (refused.length > 0) {
    const list = refused.map((c) => `${c.key} (the run has ${show(c.from)}, the config now gives ${show(c.to)})`).join(', ');
    throw new ToolError(
      `${where}: --resume cannot change ${list}; resume without --config to keep the run's settings, or start a new run (--init-from its checkpoint to fine-tune)`,
    );
  }
  return { config: given, changes };
}
