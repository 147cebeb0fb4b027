/**
 * Text classification end to end, from labelled TSV (fixtures/labelled) through bpe-encode,
 * gpt2-train (task: sequence_classification, configs/gpt2/run_gpt2_txtcls_tiny.yaml made smaller),
 * gpt2-eval and gpt2-classify: the engine and init lines on stderr, metrics.jsonl's evaluation
 * against accuracy and macro-F1 worked out here from gpt2-classify's predictions and the TSV's
 * labels, HF classification checkpoints, bit-exact resume, and data of the wrong task refused.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { saveCheckpoint } from '../../src/formats/checkpoint.js';
import { readSafetensors } from '../../src/formats/safetensors.js';
import { resolveModelConfig, loadTrainConfig } from '../../src/train/config.js';
import { initialParameters } from '../../src/model/params.js';
import { expectOneLineError, fixture, ROOT, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const [clsTrain, clsValid, lmData] = ['cls-train', 'cls-valid', 'lm'].map((d) => join(dir, d));
const CONFIG = join(ROOT, 'configs', 'gpt2', 'run_gpt2_txtcls_tiny.yaml');
// 32 positions, 16 wide, one layer: the machinery is what is tested here.
const SMALL = ['--set', 'model.config.n_positions=32', '--set', 'model.config.n_embd=16', '--set', 'model.config.n_layer=1', '--set', 'model.config.n_head=2', '--set', 'logging.interval=1', '--set', 'runner.batch_size=4'];
const train = (args: string[]) => runCli('gpt2-train', ['--config', CONFIG, '--train-data', clsTrain, '--eval-data', clsValid, ...SMALL, ...args]);
const metrics = (run: string) =>
  readFileSync(join(run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
const devRows = readFileSync(fixture('labelled', 'sentiment-dev.tsv'), 'utf8')
  .trimEnd()
  .split('\n')
  .slice(1)
  .map((l) => l.split('\t'));

beforeAll(() => {
  const tsv = ['--input-format', 'tsv', '--text-column', 'sentence', '--label-column', 'label', '--max-length', '32'];
  for (const [out, file] of [[clsTrain, 'sentiment.tsv'], [clsValid, 'sentiment-dev.tsv']]) {
    const r = runCli('bpe-encode', ['-q', ...tsv, '--out', out, fixture('labelled', file)]);
    expect(r.code, r.stderr).toBe(0);
  }
  const docs = runCli('wikitext-prep', ['-q', fixture('wikitext', 'wiki.valid.tokens')]);
  expect(runCli('bpe-encode', ['-q', '--block-size', '17', '--out', lmData, '-'], { input: docs.stdout }).code).toBe(0);
});

describe('gpt2-train task: sequence_classification', () => {
  const run = join(dir, 'run');
  let stderr = '';
  beforeAll(() => {
    const r = train(['--output-dir', run, '--max-steps', '8', '--backend', 'wasm', '--set', 'eval.interval=4', '--set', 'checkpoint.interval=4']);
    expect(r.code, r.stderr).toBe(0);
    stderr = r.stderr;
  });

  it('says which engine runs it and why, and how score.weight started', () => {
    expect(stderr).toContain('gpt2-train: training: GPT2ForSequenceClassification on tfjs (wasm) (sequence classification: the wasm pass computes only the causal-LM loss)');
    expect(stderr).toContain('gpt2-train: random init; score.weight [2, 16] initialised N(0, 0.02) from seed 1234');
  });

  it('writes an HF GPT2ForSequenceClassification checkpoint', async () => {
    const ck = join(run, 'checkpoints', 'latest');
    const config = JSON.parse(readFileSync(join(ck, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ architectures: ['GPT2ForSequenceClassification'], num_labels: 2, id2label: { 0: 'negative', 1: 'positive' }, label2id: { negative: 0, positive: 1 }, pad_token_id: 50256, n_embd: 16 });
    expect((await readSafetensors(join(ck, 'model.safetensors'))).tensors.get('score.weight')?.shape).toEqual([2, 16]);
  });

  it('evaluates as gpt2-eval does, which matches accuracy and macro-F1 worked out from gpt2-classify’s labels', () => {
    const lines = metrics(run).filter((l) => 'eval_loss' in l);
    expect(lines.map((l) => l.step)).toEqual([4, 8]);
    const last = lines.at(-1)!;
    const ck = join(run, 'checkpoints', 'latest');
    const ev = runCli('gpt2-eval', ['-q', '--model', ck, '--data', clsValid]);
    expect(ev.code, ev.stderr).toBe(0);
    const result = JSON.parse(ev.stdout) as Record<string, number>;
    expect(Object.keys(result)).toEqual(['accuracy', 'loss', 'macro_f1', 'records']);
    expect(result).toEqual({ accuracy: last.eval_accuracy, loss: last.eval_loss, macro_f1: last.eval_macro_f1, records: devRows.length });

    const cl = runCli('gpt2-classify', ['-q', '--model', ck, '--format', 'tsv'], { input: devRows.map((r) => r[0]).join('\n') });
    expect(cl.code, cl.stderr).toBe(0);
    const predicted = cl.stdout.trimEnd().split('\n').map((l) => l.split('\t')[0]);
    const truth = devRows.map((r) => r[1]);
    expect(result.accuracy).toBe(predicted.filter((p, k) => p === truth[k]).length / truth.length);
    const f1 = (label: string) => {
      const tp = predicted.filter((p, k) => p === label && truth[k] === label).length;
      const fp = predicted.filter((p, k) => p === label && truth[k] !== label).length;
      const fn = predicted.filter((p, k) => p !== label && truth[k] === label).length;
      return tp + fp + fn === 0 ? undefined : (2 * tp) / (2 * tp + fp + fn);
    };
    const scored = ['negative', 'positive'].map(f1).filter((x): x is number => x !== undefined);
    expect(result.macro_f1).toBeCloseTo(scored.reduce((a, b) => a + b, 0) / scored.length, 12);
    expect(last.eval_per_class).toEqual(
      ['negative', 'positive'].map((label) => ({
        label,
        support: truth.filter((t) => t === label).length,
        predicted: predicted.filter((p) => p === label).length,
        correct: predicted.filter((p, k) => p === label && truth[k] === label).length,
        f1: f1(label) ?? null,
      })),
    );
  });

  it('resumes bit for bit', () => {
    const common = ['--backend', 'cpu', '--max-steps', '6', '--set', 'model.dropout=0.1', '--set', 'eval.interval=2', '--set', 'checkpoint.interval=0'];
    const [straight, split] = [join(dir, 'straight'), join(dir, 'split')];
    expect(train([...common, '--output-dir', straight]).code).toBe(0);
    expect(train([...common, '--output-dir', split, '--stop-at', '3']).code).toBe(0);
    const resumed = train([...common, '--output-dir', split, '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const exact = (l: Record<string, unknown>) => ({ step: l.step, loss: l.loss, grad_norm: l.grad_norm, eval_loss: l.eval_loss, eval_accuracy: l.eval_accuracy });
    expect(metrics(split).map(exact)).toEqual(metrics(straight).map(exact));
    for (const f of ['model.safetensors', 'optimizer.safetensors']) {
      expect(readFileSync(join(split, 'checkpoints', 'latest', f)).equals(readFileSync(join(straight, 'checkpoints', 'latest', f))), f).toBe(true);
    }
  });

  it('--init-from a language model: one line says score.weight is new', async () => {
    const lm = join(dir, 'lm-model');
    const config = { ...resolveModelConfig(loadTrainConfig(CONFIG)), n_positions: 32, n_embd: 16, n_layer: 1, n_head: 2 };
    await saveCheckpoint(lm, config, initialParameters(config, 9));
    const r = train(['--output-dir', join(dir, 'from-lm'), '--max-steps', '1', '--init-from', lm]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.split('\n').filter((l) => l.includes('score.weight'))).toEqual([`gpt2-train: init_from ${lm}: a language model; score.weight [2, 16] initialised N(0, 0.02) from seed 1234`]);
  });

  it('refuses data of the other task, or with other labels, before writing anything', () => {
    expectOneLineError(train(['--output-dir', join(dir, 'x1'), '--train-data', lmData]), 'gpt2-train', /holds causal-LM records .* needs labelled rows/);
    expectOneLineError(
      runCli('gpt2-train', ['--config', join(ROOT, 'configs', 'gpt2', 'run_gpt2_tiny.yaml'), '--train-data', clsTrain, '--eval-data', lmData, '--output-dir', join(dir, 'x2')]),
      'gpt2-train',
      /holds classification records .* needs text encoded without --label-column/,
    );
    expectOneLineError(train(['--output-dir', join(dir, 'x3'), '--set', 'model.num_labels=3']), 'gpt2-train', /2 labels \(manifest num_labels\), but model\.num_labels is 3/);
    for (const x of ['x1', 'x2', 'x3']) expect(existsSync(join(dir, x)), x).toBe(false);
    expectOneLineError(runCli('gpt2-eval', ['--model', join(run, 'checkpoints', 'latest'), '--data', lmData]), 'gpt2-eval', /holds causal-LM records .*; a classifier needs labelled rows/);
    expectOneLineError(runCli('gpt2-eval', ['--model', fixture('models', 'tiny'), '--data', clsValid]), 'gpt2-eval', /holds classification records .*; a causal LM needs text encoded/);
  });
});
