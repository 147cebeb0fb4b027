import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { load } from 'js-yaml';
import { describe, expect, it } from 'vitest';
import { applyOverride, configToYaml, loadTrainConfig, resolveModelConfig, validateTrainConfig, type TrainConfig } from '../../src/train/config.js';
import { ToolError, UsageError } from '../../src/util/errors.js';
import { ROOT, tempDir } from '../helpers.js';

const CONFIGS = join(ROOT, 'configs', 'gpt2');
const dir = tempDir('gpt2tc-config-');
let n = 0;
/** Writes YAML to a fresh file in the temp dir (or to `name` there) and returns its path. */
function yamlFile(text: string, name = `c${n++}.yaml`): string {
  const path = join(dir, name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  return path;
}

/** The ToolError a call throws (failing the test if it does not throw one). */
function errorOf(fn: () => unknown): ToolError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ToolError) return err;
    throw err;
  }
  throw new Error('expected a ToolError');
}

describe('shipped configs', () => {
  const files = readdirSync(CONFIGS).filter((f) => f.endsWith('.yaml'));
  const cfg = (name: string) => loadTrainConfig(join(CONFIGS, name));

  it('are the seed set plus tiny, and all load', () => {
    expect(files.sort()).toEqual(
      ['run_gpt2.yaml', 'run_gpt2_13b.yaml', 'run_gpt2_52b.yaml', 'run_gpt2_lora.yaml', 'run_gpt2_lora_tiny.yaml', 'run_gpt2_tiny.yaml', 'run_gpt2_txtcls.yaml', 'run_gpt2_txtcls_tiny.yaml', 'run_gpt2_xl.yaml', 'run_gpt2_xl_lora.yaml'],
    );
    for (const f of files) expect(() => cfg(f), f).not.toThrow();
  });

  it('carry the seed hyperparameters', () => {
    const small = cfg('run_gpt2.yaml');
    expect(small.model.preset).toBe('gpt2');
    expect(small.lr_schedule).toMatchObject({ type: 'polynomial', lr: 1e-4, end_lr: 1e-5, warmup_steps: 0 });
    expect(small.runner).toMatchObject({ batch_size: 4, epochs: 3 });
    expect(small.optimizer).toEqual({ type: 'adamw', betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, grad_clip: 1 });
    expect(small.lora).toBeNull();
    expect(small.task).toBe('causal_lm');

    const xl = cfg('run_gpt2_xl.yaml');
    expect(resolveModelConfig(xl)).toMatchObject({ n_layer: 48, n_embd: 1600, activation_function: 'fast_gelu', resid_pdrop: 0.1 });
    expect(xl.lr_schedule).toMatchObject({ lr: 5e-5, end_lr: 1e-6, warmup_steps: 2000 });
    expect(xl.parallel.recompute).toBe(true);
    expect(cfg('run_gpt2_13b.yaml').runner).toMatchObject({ batch_size: 2, epochs: 2 });
    expect(resolveModelConfig(cfg('run_gpt2_52b.yaml')).n_layer).toBe(64);
  });

  it('LoRA and txtcls configs inherit and set lora / task', () => {
    const lora = cfg('run_gpt2_lora.yaml');
    expect(lora.lora).toEqual({ rank: 64, alpha: 128, dropout: 0.1, target_modules: ['query', 'value'] });
    expect(lora.lr_schedule).toMatchObject({ lr: 1e-3, end_lr: 1e-4, type: 'polynomial' });
    expect(lora.runner.batch_size).toBe(8);
    expect(lora.model.preset).toBe('gpt2'); // from run_gpt2.yaml
    const xlLora = cfg('run_gpt2_xl_lora.yaml');
    expect(xlLora.lora?.rank).toBe(64);
    expect(xlLora.lr_schedule).toMatchObject({ lr: 5e-4, end_lr: 1e-5, warmup_steps: 2000 });
    expect(xlLora.model.config.activation_function).toBe('fast_gelu');
    const cls = cfg('run_gpt2_txtcls.yaml');
    expect(cls.task).toBe('sequence_classification');
    expect(cls.model.num_labels).toBe(2);
    expect(cls.runner).toMatchObject({ batch_size: 16, epochs: 1 });
    expect(cls.lora).toBeNull();
    const tinyLora = cfg('run_gpt2_lora_tiny.yaml');
    expect(tinyLora.lora).toEqual({ rank: 8, alpha: 16, dropout: 0.1, target_modules: ['query', 'value'] });
    expect(resolveModelConfig(tinyLora)).toEqual(resolveModelConfig(cfg('run_gpt2_tiny.yaml')));
    const tinyCls = cfg('run_gpt2_txtcls_tiny.yaml');
    expect(tinyCls).toMatchObject({ task: 'sequence_classification', model: { num_labels: 2, preset: null }, runner: { batch_size: 8, max_steps: 60 } });
    expect(resolveModelConfig(tinyCls)).toEqual(resolveModelConfig(cfg('run_gpt2_tiny.yaml')));
  });

  it('tiny gives the whole model without a preset', () => {
    const tiny = cfg('run_gpt2_tiny.yaml');
    expect(tiny.model.preset).toBeNull();
    expect(resolveModelConfig(tiny)).toMatchObject({ vocab_size: 50257, n_positions: 64, n_embd: 64, n_layer: 2, n_head: 2, n_inner: null, resid_pdrop: 0, attn_pdrop: 0 });
    expect(tiny.runner.max_steps).toBe(50);
    expect(tiny.lr_schedule).toMatchObject({ lr: 3e-3, warmup_steps: 5 });
    expect(tiny).toMatchObject({ checkpoint: { interval: 25, keep_last: 2 }, eval: { interval: 25, max_records: 8 }, logging: { interval: 5 } });
    expect(tiny.train_dataset.path).toBe('build/demo/train');
    expect(tiny.eval_dataset?.path).toBe('build/demo/valid');
  });
});

describe('defaults', () => {
  // Issue 9: an empty file used to load as this config and silently train the 124M preset.
  it('an empty config is the fully defaulted one; an empty config file is refused', () => {
    const c = validateTrainConfig({}, 'x');
    expect(c).toMatchObject({ seed: 1234, backend: 'auto', task: 'causal_lm', eval_dataset: { path: null }, lora: null });
    expect(c.model).toEqual({ preset: 'gpt2', config: {}, dropout: null, init_from: null, num_labels: 2 });
    expect(c.lr_schedule).toEqual({ type: 'polynomial', lr: 1e-4, end_lr: 1e-5, power: 1, warmup_steps: 0, warmup_ratio: null, decay_steps: null });
    expect(validateTrainConfig({ lora: {} }, 'x').lora).toEqual({ rank: 64, alpha: 128, dropout: 0.1, target_modules: ['query', 'value'] });
    for (const text of ['', '# nothing\n', '---\n', 'null\n']) {
      const path = yamlFile(text);
      expect(errorOf(() => loadTrainConfig(path)).message, JSON.stringify(text)).toBe(`${path}: the config file is empty; give at least the model (see configs/gpt2/run_gpt2_tiny.yaml)`);
    }
    const parent = yamlFile('');
    expect(errorOf(() => loadTrainConfig(yamlFile(`extends: ${parent}\nseed: 1\n`))).message).toMatch(new RegExp(`^${parent}: the config file is empty`));
  });
});

describe('extends', () => {
  it('deep-merges mappings, replaces lists, resolves relative to the file', () => {
    yamlFile('optimizer:\n  betas: [0.8, 0.9]\n  eps: 1.0e-6\nrunner:\n  batch_size: 2\n  epochs: 5\n', 'base.yaml');
    yamlFile('extends: ../base.yaml\noptimizer:\n  betas: [0.7, 0.99]\nrunner:\n  epochs: 7\n', 'sub/mid.yaml');
    const child = yamlFile('extends: sub/mid.yaml\nrunner:\n  batch_size: 3\n');
    const c = loadTrainConfig(child);
    expect(c.optimizer.betas).toEqual([0.7, 0.99]);
    expect(c.optimizer.eps).toBe(1e-6);
    expect(c.runner).toMatchObject({ batch_size: 3, epochs: 7 });
  });

  it('a child null replaces a parent mapping', () => {
    const parent = yamlFile('eval_dataset:\n  path: data/valid\n');
    expect(loadTrainConfig(yamlFile(`extends: ${parent}\neval_dataset: null\n`)).eval_dataset).toBeNull();
  });

  it('detects cycles', () => {
    yamlFile('extends: cyc-b.yaml\n', 'cyc-a.yaml');
    yamlFile('extends: cyc-a.yaml\n', 'cyc-b.yaml');
    expect(errorOf(() => loadTrainConfig(join(dir, 'cyc-a.yaml'))).message).toMatch(/cyc-b\.yaml: extends: cycle .*cyc-a\.yaml → .*cyc-b\.yaml → .*cyc-a\.yaml$/);
    expect(errorOf(() => loadTrainConfig(yamlFile('extends: self.yaml\n', 'self.yaml'))).message).toMatch(/self\.yaml: extends: cycle/);
  });

  it('a missing parent names the path', () => {
    const e = errorOf(() => loadTrainConfig(yamlFile('extends: nope.yaml\n')));
    expect(e.message).toBe(`${join(dir, 'nope.yaml')}: no such file or directory`);
  });

  it('errors name the file that gave the value', () => {
    const parent = yamlFile('runner:\n  batch_size: 0\n');
    const child = yamlFile(`extends: ${parent}\nrunner:\n  epochs: 2\n`);
    expect(errorOf(() => loadTrainConfig(child)).message).toBe(`${parent}: runner.batch_size: must be an integer ≥ 1, got 0`);
    const parent2 = yamlFile('optimizer:\n  beta: [0.9, 0.9]\n');
    expect(errorOf(() => loadTrainConfig(yamlFile(`extends: ${parent2}\n`))).message).toBe(`${parent2}: optimizer.beta: unknown key (did you mean betas?)`);
  });
});

describe('--set', () => {
  const base = () => yamlFile('runner:\n  batch_size: 4\noptimizer:\n  betas: [0.9, 0.95]\n');

  it('sets nested keys, list items, flow lists and null', () => {
    const c = loadTrainConfig(base(), ['runner.max_steps=20', 'optimizer.betas[1]=0.98', 'model.preset=gpt2-tiny', 'eval_dataset=null', 'lora.rank=8']);
    expect(c.runner.max_steps).toBe(20);
    expect(c.optimizer.betas).toEqual([0.9, 0.98]);
    expect(c.model.preset).toBe('gpt2-tiny');
    expect(c.eval_dataset).toBeNull();
    expect(c.lora).toEqual({ rank: 8, alpha: 128, dropout: 0.1, target_modules: ['query', 'value'] });
    expect(loadTrainConfig(base(), ['optimizer.betas=[0.8,0.99]']).optimizer.betas).toEqual([0.8, 0.99]);
    expect(loadTrainConfig(base(), ['model.config={n_layer: 3}']).model.config).toEqual({ n_layer: 3 });
  });

  it('an index into a list the file left out starts from the default list', () => {
    expect(loadTrainConfig(yamlFile('seed: 1\n'), ['optimizer.betas[0]=0.5']).optimizer.betas).toEqual([0.5, 0.95]);
  });

  it('applyOverride edits a raw config in place', () => {
    const raw: Record<string, unknown> = { runner: { batch_size: 2 } };
    applyOverride(raw, 'runner.epochs=3');
    applyOverride(raw, 'lora.target_modules[0]=key');
    expect(raw).toEqual({ runner: { batch_size: 2, epochs: 3 }, lora: { target_modules: ['key', 'value'] } });
  });

  it('malformed assignments are usage errors', () => {
    for (const bad of ['runner.max_steps', 'runner..max_steps=1', 'optimizer.betas[x]=1', '=3', 'runner.epochs=', 'optimizer.betas=[0.9,']) {
      const e = errorOf(() => loadTrainConfig(base(), [bad]));
      expect(e, bad).toBeInstanceOf(UsageError);
      expect(e.exitCode).toBe(2);
      expect(e.message.startsWith(`--set ${bad}: `), e.message).toBe(true);
    }
  });

  it('unknown keys and bad values are reported like the file’s, naming the --set', () => {
    const unknown = errorOf(() => loadTrainConfig(base(), ['optimizer.beta=0.9']));
    expect(unknown).not.toBeInstanceOf(UsageError);
    expect(unknown.message).toBe('--set optimizer.beta=0.9: optimizer.beta: unknown key (did you mean betas?)');
    expect(errorOf(() => loadTrainConfig(base(), ['optimizer.betas[1]=1.5'])).message).toBe(
      '--set optimizer.betas[1]=1.5: optimizer.betas[1]: must be in [0, 1), got 1.5',
    );
    expect(errorOf(() => loadTrainConfig(base(), ['seed.x=1'])).message).toBe('--set seed.x=1: seed: must be an integer ≥ 0, got {"x":1}');
  });
});

describe('errors', () => {
  const message = (text: string) => {
    const path = yamlFile(text);
    const e = errorOf(() => loadTrainConfig(path));
    expect(e).not.toBeInstanceOf(UsageError);
    return e.message.replace(path, 'x.yaml');
  };

  it('malformed YAML gives the 1-based line and column', () => {
    expect(message('seed: 1\nrunner:\n  batch_size: 4\n epochs: 2\n')).toBe('x.yaml:4:2: bad indentation of a mapping entry');
    expect(message('seed: 1\nseed: 2\n')).toMatch(/^x\.yaml:2:1: duplicated mapping key/);
  });

  it('the top level must be one mapping', () => {
    expect(message('- 1\n- 2\n')).toBe('x.yaml: expected a mapping of config sections, got a list');
    expect(message('seed: 1\n---\nseed: 2\n')).toBe('x.yaml: expected one YAML document, found 2');
  });

  it('unknown keys, with a suggestion when one is close', () => {
    expect(message('optimizer:\n  beta: [0.9, 0.9]\n')).toBe('x.yaml: optimizer.beta: unknown key (did you mean betas?)');
    expect(message('runer:\n  epochs: 1\n')).toBe('x.yaml: runer: unknown key (did you mean runner?)');
    expect(message('model:\n  config:\n    n_ctx: 1024\n')).toMatch(/^x\.yaml: model\.config\.n_ctx: unknown key/);
    expect(message('logging:\n  zzzzzz: 1\n')).toBe('x.yaml: logging.zzzzzz: unknown key (known keys: interval)');
  });

  it('wrong types and out-of-range values', () => {
    expect(message('runner:\n  batch_size: 0\n')).toBe('x.yaml: runner.batch_size: must be an integer ≥ 1, got 0');
    expect(message('runner:\n  batch_size: eight\n')).toBe('x.yaml: runner.batch_size: must be an integer ≥ 1, got "eight"');
    expect(message('runner:\n  batch_size: 2.5\n')).toBe('x.yaml: runner.batch_size: must be an integer ≥ 1, got 2.5');
    expect(message('optimizer:\n  betas: [0.9, 1.5]\n')).toBe('x.yaml: optimizer.betas[1]: must be in [0, 1), got 1.5');
    expect(message('optimizer:\n  betas: [0.9]\n')).toBe('x.yaml: optimizer.betas: must be a list of 2 numbers, got [0.9]');
    expect(message('optimizer:\n  eps: 0\n')).toBe('x.yaml: optimizer.eps: must be a number > 0, got 0');
    expect(message('lr_schedule:\n  type: step\n')).toBe('x.yaml: lr_schedule.type: must be one of constant, linear, polynomial, cosine, got "step"');
    expect(message('model:\n  preset: gpt5\n')).toMatch(/^x\.yaml: model\.preset: must be one of gpt2, .* or null, got "gpt5"$/);
    expect(message('runner:\n  max_steps: .inf\n')).toBe('x.yaml: runner.max_steps: must be an integer ≥ 1 or null, got Infinity');
    expect(message('train_dataset:\n  shuffle: yes\n')).toBe('x.yaml: train_dataset.shuffle: must be true or false, got "yes"');
    expect(message('runner: 4\n')).toBe('x.yaml: runner: must be a mapping, got 4');
    expect(message('lora:\n  target_modules: [query, attn]\n')).toMatch(/^x\.yaml: lora\.target_modules\[1\]: must be one of query, .*got "attn"$/);
    expect(message('model:\n  config:\n    activation_function: relu\n')).toBe('x.yaml: model.config.activation_function: must be one of gelu_new, gelu, fast_gelu, got "relu"');
  });

  it('cross-checks', () => {
    expect(message('lr_schedule:\n  warmup_steps: 10\n  warmup_ratio: 0.1\n')).toBe('x.yaml: lr_schedule.warmup_ratio: give warmup_steps (10) or warmup_ratio, not both');
    expect(message('parallel:\n  data_parallel: 8\n')).toBe('x.yaml: parallel.data_parallel: only 1 (single device) is supported for now');
    expect(message('parallel:\n  pipeline_stages: 0\n')).toBe('x.yaml: parallel.pipeline_stages: must be an integer ≥ 1, got 0');
    expect(message('model:\n  preset: null\n  config:\n    n_embd: 64\n')).toBe('x.yaml: model.preset: is null, so model.config must give vocab_size, n_positions, n_layer, n_head');
    expect(message('model:\n  config:\n    n_head: 7\n')).toBe('x.yaml: model.config.n_head: n_embd (768) must be divisible by n_head (7)');
    expect(message('lr_schedule:\n  lr: 1.0e-6\n')).toBe('x.yaml: lr_schedule.end_lr: must be ≤ lr (0.000001), got 0.00001');
  });

  it('validateTrainConfig names its `where`', () => {
    expect(errorOf(() => validateTrainConfig({ runner: { epochs: 0 } }, 'ckpt/train-config.json')).message).toBe(
      'ckpt/train-config.json: runner.epochs: must be an integer ≥ 1, got 0',
    );
    expect(errorOf(() => validateTrainConfig([], 'c.json')).message).toBe('c.json: must be a mapping, got []');
  });
});

describe('hostile configs', () => {
  const base = () => yamlFile('runner:\n  batch_size: 4\n');
  /** A file whose runner.batch_size expands to over 9^8 (43 million) values: tiny, but fatal to anything that walks it. */
  const bomb = () => {
    let text = 'runner:\n  batch_size:\n    - &a [x, x, x, x, x, x, x, x, x]\n';
    let prev = 'a';
    for (const name of 'bcdefghi') {
      text += `    - &${name} [${Array(9).fill(`*${prev}`).join(', ')}]\n`;
      prev = name;
    }
    return text;
  };

  it('an alias bomb fails at once, naming the file', () => {
    const path = yamlFile(bomb());
    expect(errorOf(() => loadTrainConfig(path)).message).toBe(
      `${path}: more than 10000 values once aliases are expanded (an alias bomb?); a config needs far fewer`,
    );
    const list = `[${Array(9).fill('*a').join(', ')}]`;
    const e = errorOf(() => loadTrainConfig(base(), [`runner.batch_size=[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], &b ${list}, &c ${list.replaceAll('a', 'b')}, &d ${list.replaceAll('a', 'c')}, ${list.replaceAll('a', 'd')}]`]));
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toMatch(/: more than 10000 values once aliases are expanded/);
    // a few aliases are fine
    expect(loadTrainConfig(yamlFile('lr_schedule:\n  lr: &lr 0.001\n  end_lr: *lr\n')).lr_schedule.end_lr).toBe(0.001);
  });

  it('__proto__, constructor and prototype keys are refused in files and --set, and pollute nothing', () => {
    for (const [text, key] of [
      ['__proto__:\n  polluted: 1\n', '__proto__'],
      ['runner:\n  __proto__:\n    polluted: 1\n', 'runner.__proto__'],
      ['constructor:\n  prototype:\n    polluted: 1\n', 'constructor'],
      ['model:\n  config: [{prototype: 1}]\n', 'model.config[0].prototype'],
    ]) {
      const path = yamlFile(text);
      expect(errorOf(() => loadTrainConfig(path)).message).toBe(`${path}: ${key}: not a config key`);
    }
    // The second layer of an extends chain merges key by key: the way into Object.prototype.
    const parent = yamlFile('runner:\n  batch_size: 2\n');
    expect(errorOf(() => loadTrainConfig(yamlFile(`extends: ${parent}\n__proto__:\n  polluted: 1\n`))).message).toMatch(/: __proto__: not a config key$/);
    for (const bad of ['__proto__.polluted=1', 'runner.__proto__.polluted=1', 'constructor.prototype.polluted=1', 'model.prototype=1']) {
      const e = errorOf(() => loadTrainConfig(base(), [bad]));
      expect(e, bad).toBeInstanceOf(UsageError);
      expect(e.message).toMatch(new RegExp(`^--set ${bad.replace(/[.[\]]/g, '\\$&')}: (__proto__|constructor|prototype) is not a config key$`));
    }
    expect(errorOf(() => loadTrainConfig(base(), ['model.config={__proto__: {polluted: 1}}'])).message).toMatch(/: __proto__: not a config key$/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('list indices beyond what the schema allows are refused before anything is allocated', () => {
    const cases: Array<[string, string]> = [
      ['optimizer.betas[300000000]=1', 'index 300000000 is out of range (optimizer.betas holds at most 2 items)'],
      ['optimizer.betas[2]=0.9', 'index 2 is out of range (optimizer.betas holds at most 2 items)'],
      ['lora.target_modules[6]=key', 'index 6 is out of range (lora.target_modules holds at most 6 items)'],
      ['runner.batch_size[0]=1', 'runner.batch_size is not a list'],
      ['nonsense[99999999]=1', 'nonsense is not a list'],
      ['optimizer.betas[0][0]=1', 'optimizer.betas[0] is not a list'],
    ];
    for (const [bad, reason] of cases) {
      const e = errorOf(() => loadTrainConfig(base(), [bad]));
      expect(e, bad).toBeInstanceOf(UsageError);
      expect(e.message).toBe(`--set ${bad}: ${reason}`);
    }
    // an index the schema allows still reaches validation
    expect(errorOf(() => loadTrainConfig(base(), ['lora.target_modules[5]=key'])).message).toMatch(/^--set lora\.target_modules\[5\]=key: lora\.target_modules\[2\]: must be one of /);
  });
});

describe('configToYaml', () => {
  const roundTrip = (c: TrainConfig) => validateTrainConfig(load(configToYaml(c)), 'dump');

  it('round-trips every shipped config', () => {
    for (const f of readdirSync(CONFIGS)) {
      const c = loadTrainConfig(join(CONFIGS, f));
      expect(load(configToYaml(c)), f).toEqual(c);
      expect(roundTrip(c), f).toEqual(c);
    }
  });

  it('writes readable floats and inline short lists', () => {
    const text = configToYaml(loadTrainConfig(join(CONFIGS, 'run_gpt2_lora.yaml')));
    expect(text).toMatch(/^ {2}eps: 1\.0e-8$/m);
    expect(text).toMatch(/^ {2}betas: \[0\.9, 0\.95\]$/m);
    expect(text).toMatch(/^ {2}target_modules: \[query, value\]$/m);
    expect(text.startsWith('seed: 1234\noutput_dir: runs/gpt2-lora\n')).toBe(true);
  });
});
