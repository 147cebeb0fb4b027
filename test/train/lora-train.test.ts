/**
 * LoRA fine-tuning through the trainer (train(), as gpt2-train runs it), on both engines:
 *   - against PyTorch: fixtures/lora/train.* (make_lora_fixtures.py: PEFT's math in float64, base
 *     frozen, torch.optim.AdamW on A and B) — the fixture's initial A and B given as init_from (an
 *     adapter directory of ours on fixtures/models/tiny), its 12 records as shards in step order,
 *     its schedule (lr 1e-3, 2e-3, 3e-3 = linear warmup over 3 steps) and AdamW settings: the
 *     logged losses and pre-clip norms, and A and B read back from the final checkpoint (a PEFT
 *     adapter directory), equal PyTorch's;
 *   - the checkpoints hold the adapter only, in PEFT's layout, naming the base by sha256; a resume
 *     (dropout on: the model's and LoRA's) gives the uninterrupted run's files byte for byte;
 *   - a classifier: score trains fully (PEFT modules_to_save), the base does not;
 *   - bad starts: no init_from, a rank beyond a layer, an adapter of another rank or on another
 *     base, an adapter given to a run without a lora: section.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { RECORDS_FORMAT, RECORDS_VERSION, type Manifest } from '../../src/data/manifest.js';
import { writeLabelledDataset, writeShards } from '../../src/data/shard-writer.js';
import { loadCheckpoint, type LoadedCheckpoint } from '../../src/formats/checkpoint.js';
import { adapterValues, baseRefOf, readLoraAdapter, saveLoraAdapter } from '../../src/formats/peft.js';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import { SCORE } from '../../src/model/classification.js';
import type { LoraSpec } from '../../src/model/lora.js';
import type { ParameterValues } from '../../src/model/params.js';
import { tokenizerIdentityOf } from '../../src/model/open.js';
import { loadTrainConfig } from '../../src/train/config.js';
import { train } from '../../src/train/trainer.js';
import { selectBackend } from '../../src/backend/select.js';
import { convertWeights } from '../../src/formats/convert.js';
import { SequenceClassifier } from '../../src/model/classification.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { LoraAdapter } from '../../src/model/lora.js';
import { tfjsClassifier } from '../../src/train/classify-eval.js';
import { openClassifierModel } from '../../src/train/eval-model.js';
import { fixture, normDiffRatio, ROOT, runCli, tempDir } from '../helpers.js';
import { LORA_TRAIN, tagged, tensorsOf } from '../lora-fixture.js';

const TINY_CONFIG = join(ROOT, 'configs', 'gpt2', 'run_gpt2_tiny.yaml');
const dir = tempDir();
/** fixtures/models/tiny with a tokenizer of its 320 ids (records are checked against the model's vocabulary). */
const BASE = join(dir, 'base');

const fx = LORA_TRAIN;
const file = tensorsOf(fixture('lora', 'train.safetensors'));
const fixtureValues = (tag: string): ParameterValues => tagged(file, tag);
const QV: LoraSpec = { rank: fx.rank, alpha: fx.alpha, dropout: 0, targets: fx.targets };

let base: LoadedCheckpoint;
const data = join(dir, 'train');
const initAdapter = join(dir, 'init');

/** The fixture's records, in the order its steps take them, as causal-LM shards (block 9, pad 319). */
async function writeFixtureShards(out: string): Promise<void> {
  const records = fx.steps.flatMap((s) => s.micro_batches.flat()).map((r) => ({ input_ids: Int32Array.from(r.input_ids), attention_mask: Uint8Array.from(r.attention_mask) }));
  const tokenizer = await tokenizerIdentityOf(BASE);
  await writeShards(out, records.values(), [records.length], (r) => r.attention_mask.reduce((a, b) => a + b, 0), (shards) => ({
    format: RECORDS_FORMAT,
    version: RECORDS_VERSION,
    task: 'causal_lm',
    tokenizer,
    block_size: 9,
    id_dtype: 'int32',
    fields: ['input_ids', 'attention_mask'],
    doc_separator: '',
    pad_id: 319,
    shards,
    totals: { records: records.length, tokens: shards[0].tokens, bytes: shards[0].bytes, documents: 1, input_bytes: 0 },
    created_by: { tool: 'test', version: '0', command: [] },
  }) as Manifest);
}

beforeAll(async () => {
  mkdirSync(BASE);
  for (const name of ['config.json', 'model.safetensors']) copyFileSync(fixture('models', 'tiny', name), join(BASE, name));
  writeFileSync(join(BASE, 'vocab.json'), JSON.stringify(Object.fromEntries(Array.from({ length: 320 }, (_, k) => [`t${k}`, k]))));
  writeFileSync(join(BASE, 'merges.txt'), '#version: 0.2\n');
  base = await loadCheckpoint(BASE);
  await writeFixtureShards(data);
  await saveLoraAdapter(initAdapter, base.config, QV, fixtureValues('init'), await baseRefOf(BASE));
});

/** The fixture's run: 3 steps of 2 micro-batches of 2, its AdamW and schedule, no dropout. */
const fixtureRun = (out: string, ...extra: string[]) =>
  loadTrainConfig(TINY_CONFIG, [
    `output_dir=${out}`,
    `model.init_from=${initAdapter}`,
    'model.dropout=0',
    `lora={rank: ${fx.rank}, alpha: ${fx.alpha}, dropout: 0, target_modules: [${fx.targets.join(', ')}]}`,
    `train_dataset.path=${data}`,
    'train_dataset.shuffle=false',
    'eval_dataset=null',
    'runner.batch_size=2',
    'runner.gradient_accumulation_steps=2',
    'runner.max_steps=3',
    `optimizer.betas=[${fx.optimizer.betas.join(', ')}]`,
    `optimizer.eps=${fx.optimizer.eps}`,
    `optimizer.weight_decay=${fx.optimizer.weight_decay}`,
    `optimizer.grad_clip=${fx.optimizer.grad_clip}`,
    'lr_schedule.type=constant',
    'lr_schedule.lr=0.003',
    'lr_schedule.warmup_steps=3',
    'logging.interval=1',
    ...extra,
  ]);

const metricLines = (run: string) =>
  readFileSync(join(run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { step: number; loss?: number; grad_norm?: number; lr?: number });
const latest = (run: string) => join(run, 'checkpoints', 'latest');

describe.each([
  { engine: 'the wasm pass', backend: 'wasm' },
  { engine: 'tfjs', backend: 'cpu' },
])('LoRA training against PyTorch through train(): $engine', ({ backend }) => {
  it('3 steps: losses, norms and the checkpoint’s A and B equal the fixture’s; the checkpoint is an adapter of the base', async () => {
    const out = join(dir, `fixture-${backend}`);
    const info: string[] = [];
    await train({ config: fixtureRun(out, `backend=${backend}`), info: (m) => info.push(m) });
    const lines = metricLines(out).filter((l) => l.loss !== undefined);
    lines.forEach((l, k) => expect(l.lr).toBeCloseTo(fx.steps[k].lr, 15));
    lines.forEach((l, k) => {
      expect(Math.abs(l.loss! - fx.losses[k]) / fx.losses[k], `loss at step ${k + 1}`).toBeLessThan(1e-6);
      expect(Math.abs(l.grad_norm! - fx.grad_norms[k]) / fx.grad_norms[k], `norm at step ${k + 1}`).toBeLessThan(1e-5);
    });
    const adapter = await readLoraAdapter(latest(out), base.config);
    expect(adapter.base?.sha256).toBe((await baseRefOf(BASE)).sha256);
    const values = adapterValues(adapter, base.config)!;
    for (const [name, want] of fixtureValues('step3')) expect(normDiffRatio(values.get(name)!.data, want.data), name).toBeLessThan(1e-5);
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(latest(out)).sort()).toEqual(['adapter_base.json', 'adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'trainer_state.json']);
    expect(info.some((m) => /LoRA rank 4, alpha 8 on query, value: 1024 adapter parameters train/.test(m))).toBe(true);
  });
});

describe('LoRA runs resume bit for bit', () => {
  it.each(['wasm', 'cpu'])('%s: stop after step 1, resume: the same adapter, optimizer state and losses as one run (model and LoRA dropout 0.1)', async (backend) => {
    const opts = [`backend=${backend}`, 'model.dropout=0.1', 'lora.dropout=0.1'];
    const whole = join(dir, `whole-${backend}`);
    const parts = join(dir, `parts-${backend}`);
    await train({ config: fixtureRun(whole, ...opts) });
    const stopped = await train({ config: fixtureRun(parts, ...opts), stopAt: 1 });
    expect(stopped.stoppedBy).toBe('stop-at');
    await train({ config: fixtureRun(parts, ...opts), resume: true });
    for (const name of ['adapter_model.safetensors', 'optimizer.safetensors']) {
      expect(readFileSync(join(latest(parts), name)).equals(readFileSync(join(latest(whole), name))), name).toBe(true);
    }
    const losses = (run: string) => metricLines(run).filter((l) => l.loss !== undefined).map((l) => [l.step, l.loss, l.grad_norm]);
    expect(losses(parts)).toEqual(losses(whole));
  });
});

describe('LoRA classifier', () => {
  const CLS_CONFIG = join(ROOT, 'configs', 'gpt2', 'run_gpt2_txtcls_tiny.yaml');
  const labelled = join(dir, 'labelled');
  const out = join(dir, 'cls');
  const clsRun = (...extra: string[]) =>
    loadTrainConfig(CLS_CONFIG, [
      `output_dir=${out}`,
      `model.init_from=${BASE}`,
      'lora={rank: 2, alpha: 4, dropout: 0, target_modules: [query, value, mlp_fc]}',
      `train_dataset.path=${labelled}`,
      'eval_dataset=null',
      'runner.batch_size=4',
      'runner.gradient_accumulation_steps=1',
      'backend=cpu',
      ...extra,
    ]);

  it('trains the adapters and the score (modules_to_save), never the base; the checkpoint is PEFT SEQ_CLS and resumes', async () => {
    const tokenizer = await tokenizerIdentityOf(BASE);
    const records = Array.from({ length: 8 }, (_, k) => ({ input_ids: Int32Array.from({ length: 3 + (k % 4) }, (_, t) => (k * 37 + t * 11) % 300), label: k % 2 }));
    await writeLabelledDataset(labelled, records, { tokenizer, labels: ['neg', 'pos'], maxLength: 8, truncationSide: 'right', dtype: 'int32', padId: 319, plan: {}, inputBytes: 0, truncated: 0, skipped: 0, command: [] });
    await train({ config: clsRun('runner.max_steps=2') });
    const ck = latest(out);
    const peftConfig = JSON.parse(readFileSync(join(ck, 'adapter_config.json'), 'utf8'));
    expect(peftConfig).toMatchObject({ task_type: 'SEQ_CLS', modules_to_save: ['score'], r: 2, target_modules: ['attn.c_attn', 'mlp.c_fc'], rank_pattern: { 'attn.c_attn': 4 }, alpha_pattern: { 'attn.c_attn': 8 } });
    const tensors = parseSafetensors(readFileSync(join(ck, 'adapter_model.safetensors')), 'adapter').tensors;
    expect(tensors.get('base_model.model.score.weight')?.shape).toEqual([2, 32]);
    const adapter = await readLoraAdapter(ck, base.config);
    expect(adapter.head).toEqual({ num_labels: 2, labels: ['neg', 'pos'], pad_token_id: 50256 });
    // B moved from zero; the score from its start (the same seed draws it again in a fresh run's first step).
    expect(adapterValues(adapter, base.config)!.get('h.0.query.lora_B')!.data.some((v) => v !== 0)).toBe(true);
    const optimizer = parseSafetensors(readFileSync(join(ck, 'optimizer.safetensors')), 'optimizer').tensors;
    expect([...optimizer.keys()].filter((n) => !n.includes('lora_'))).toEqual([`exp_avg.${SCORE}`, `exp_avg_sq.${SCORE}`]);
    // A resume reads the base again and the score from the adapter, and continues.
    const more = await train({ config: clsRun('runner.max_steps=3'), resume: true });
    expect(more.steps).toBe(3);
  });

  it('used: merged at load (adapter as --model, or base + --lora), converted, and unmerged give the same logits', async () => {
    const ck = latest(out);
    const inputs = [Int32Array.of(5, 250, 31, 0, 77), Int32Array.of(64, 1, 128)];
    const logitsOf = async (source: string, lora?: string) => {
      const opened = await openClassifierModel(source, { backend: 'cpu', batch: 2, lora });
      try {
        expect(opened.model.head.labels).toEqual(['neg', 'pos']);
        return await opened.model.classify(inputs);
      } finally {
        opened.model.dispose();
      }
    };
    // Unmerged, as training runs it: the base, the adapter's A and B beside it, its score.
    const adapter = await readLoraAdapter(ck, base.config);
    const { tf } = await selectBackend('cpu');
    const gpt2 = GPT2.fromValues(tf, base.config, base.values);
    gpt2.adapter = LoraAdapter.fromValues(tf, base.config, adapter.spec!, adapterValues(adapter, base.config)!);
    const unmerged = SequenceClassifier.fromValues(gpt2, adapter.head!, adapter.extra);
    const want = await tfjsClassifier(unmerged).classify(inputs);
    unmerged.dispose();

    const merged = await logitsOf(ck);
    expect(normDiffRatio(merged, want)).toBeLessThan(1e-5);
    expect(merged).toEqual(await logitsOf(BASE, ck));
    const converted = join(dir, 'cls-merged');
    await convertWeights(BASE, converted, { lora: ck });
    expect(JSON.parse(readFileSync(join(converted, 'config.json'), 'utf8'))).toMatchObject({ architectures: ['GPT2ForSequenceClassification'], id2label: { 0: 'neg', 1: 'pos' } });
    expect(await logitsOf(converted)).toEqual(merged);
    const cli = runCli('gpt2-classify', ['--model', ck, '--input-format', 'ids', '--backend', 'cpu', '5 250 31 0 77']);
    expect(cli.stderr).toMatch(/LoRA adapter .* merged into/);
    const line = JSON.parse(cli.stdout) as { label: string; probs: number[] };
    const p = Array.from(merged.subarray(0, 2), (x) => Math.exp(x - Math.max(merged[0], merged[1])));
    expect(line.probs[1]).toBeCloseTo(p[1] / (p[0] + p[1]), 5);
    const evaluated = runCli('gpt2-eval', ['--model', BASE, '--lora', ck, '--data', labelled, '--backend', 'cpu']);
    expect(evaluated.code, evaluated.stderr).toBe(0);
    expect(Object.keys(JSON.parse(evaluated.stdout))).toEqual(['accuracy', 'loss', 'macro_f1', 'records']);
  });
});

describe('LoRA: bad starts', () => {
  const attempt = (out: string, ...sets: string[]) => train({ config: fixtureRun(join(dir, out), ...sets) });

  it('no init_from: the preset’s installed weights are the base, and without a preset it is refused', async () => {
    await expect(attempt('no-base', 'model.init_from=null')).rejects.toThrow(/LoRA trains adapters on a frozen pretrained model: set model.init_from/);
    const home = join(dir, 'empty-home');
    const before = process.env.GPT2_TOOLCHAIN_HOME;
    process.env.GPT2_TOOLCHAIN_HOME = home;
    try {
      await expect(attempt('preset-base', 'model.init_from=null', 'model.preset=gpt2')).rejects.toThrow(
        `model.preset gpt2 (LoRA's base: its pretrained weights; --init-from names another) gpt2: no weights for preset gpt2 in ${join(home, 'models', 'gpt2')}`,
      );
    } finally {
      if (before === undefined) delete process.env.GPT2_TOOLCHAIN_HOME;
      else process.env.GPT2_TOOLCHAIN_HOME = before;
    }
  });

  it('a rank beyond a layer: refused with the layer’s sides', async () => {
    await expect(attempt('big-rank', `model.init_from=${BASE}`, 'lora.rank=33')).rejects.toThrow(/LoRA rank 33 is larger than query's smaller dimension: query is 32 × 32/);
  });

  it('an adapter of another rank as init_from: refused naming both', async () => {
    await expect(attempt('other-rank', 'lora.rank=8')).rejects.toThrow(/the adapter is rank 4, alpha 8 on query, value; the lora: section asks for rank 8, alpha 8 on query, value/);
  });

  it('an adapter whose base has changed: refused (sha256)', async () => {
    const moved = join(dir, 'changed-base');
    mkdirSync(moved);
    for (const name of ['config.json', 'model.safetensors', 'vocab.json', 'merges.txt']) copyFileSync(join(BASE, name), join(moved, name));
    const weights = readFileSync(join(moved, 'model.safetensors'));
    weights[weights.length - 1] ^= 1;
    writeFileSync(join(moved, 'model.safetensors'), weights);
    const adapter = join(dir, 'on-changed');
    await saveLoraAdapter(adapter, base.config, QV, fixtureValues('init'), await baseRefOf(moved));
    writeFileSync(join(moved, 'model.safetensors'), readFileSync(join(BASE, 'model.safetensors')));
    await expect(attempt('wrong-base', `model.init_from=${adapter}`)).rejects.toThrow(/this adapter was trained on .* is another model .*refusing to apply it/);
  });

  it('an adapter as init_from of a full fine-tuning run: refused, saying what to do', async () => {
    await expect(attempt('no-lora', 'lora=null')).rejects.toThrow(/is a LoRA adapter: train it further with a lora: section, or start from the merged model/);
  });
});
