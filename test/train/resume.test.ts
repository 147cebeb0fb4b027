/** What --resume may change: allowed keys are applied and listed, others refused naming both values. */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTrainConfig } from '../../src/train/config.js';
import { configChanges, resumeConfig } from '../../src/train/resume.js';
import { ToolError } from '../../src/util/errors.js';
import { ROOT } from '../helpers.js';

const TINY = join(ROOT, 'configs', 'gpt2', 'run_gpt2_tiny.yaml');
const run = loadTrainConfig(TINY);
const given = (...overrides: string[]) => loadTrainConfig(TINY, overrides);

describe('resumeConfig', () => {
  it('applies changes to run length, data paths, intervals and outputs, and lists them', () => {
    const now = given('runner.max_steps=80', 'train_dataset.path=/data/moved', 'eval_dataset=null', 'eval.interval=10', 'checkpoint.keep_last=5', 'logging.interval=1', 'lr_schedule.decay_steps=80', 'backend=wasm');
    const { config, changes } = resumeConfig(run, now, 'runs/a');
    expect(config).toEqual(now);
    expect(changes).toEqual([
      { key: 'backend', from: 'auto', to: 'wasm' },
      { key: 'runner.max_steps', from: 50, to: 80 },
      { key: 'lr_schedule.decay_steps', from: null, to: 80 },
      { key: 'train_dataset.path', from: 'build/demo/train', to: '/data/moved' },
      { key: 'eval_dataset', from: { path: 'build/demo/valid' }, to: null },
      { key: 'eval.interval', from: 25, to: 10 },
      { key: 'checkpoint.keep_last', from: 2, to: 5 },
      { key: 'logging.interval', from: 5, to: 1 },
    ]);
    expect(resumeConfig(run, given(), 'runs/a').changes).toEqual([]);
  });

  it('refuses changes to what shaped the steps already taken, naming each key and both values', () => {
    const refused = (...overrides: string[]) => {
      try {
        resumeConfig(run, given(...overrides), 'runs/a');
      } catch (err) {
        if (err instanceof ToolError) return err.message;
        throw err;
      }
      return 'accepted';
    };
    expect(refused('model.config.n_embd=128', 'runner.max_steps=60')).toBe(
      "runs/a: --resume cannot change model.config.n_embd (the run has 64, the config now gives 128); resume without --config to keep the run's settings, or start a new run (--init-from its checkpoint to fine-tune)",
    );
    expect(refused('optimizer.betas[1]=0.99', 'seed=7')).toMatch(/cannot change seed \(the run has 1234, the config now gives 7\), optimizer\.betas \(the run has \[0\.9,0\.95\], the config now gives \[0\.9,0\.99\]\);/);
    for (const [set, key] of [
      ['model.preset=gpt2', 'model.preset'],
      ['model.dropout=0.1', 'model.dropout'],
      ['model.init_from=runs/b', 'model.init_from'],
      ['runner.batch_size=4', 'runner.batch_size'],
      ['runner.gradient_accumulation_steps=2', 'runner.gradient_accumulation_steps'],
      ['optimizer.weight_decay=0.1', 'optimizer.weight_decay'],
      ['lr_schedule.lr=0.001', 'lr_schedule.lr'],
      ['lr_schedule.type=linear', 'lr_schedule.type'],
      ['train_dataset.shuffle=false', 'train_dataset.shuffle'],
      ['train_dataset.repeat=2', 'train_dataset.repeat'],
      ['task=sequence_classification', 'task'],
      ['lora.rank=8', 'lora'],
    ]) {
      expect(refused(set), set).toMatch(new RegExp(`--resume cannot change ${key.replace(/\./g, '\\.')} \\(the run has `));
    }
  });

  it('configChanges compares leaves, lists whole', () => {
    expect(configChanges({ a: { b: 1, c: [1, 2] } }, { a: { b: 1, c: [1, 3] } })).toEqual([{ key: 'a.c', from: [1, 2], to: [1, 3] }]);
    expect(configChanges({ a: null }, { a: { b: 1 } })).toEqual([{ key: 'a', from: null, to: { b: 1 } }]);
  });
});
