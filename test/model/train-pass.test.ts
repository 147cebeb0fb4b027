/**
 * The full-sequence pass outside tfjs (PassTrainer over src/model/train-*.ts, reference GEMM)
 * against PyTorch and against the tfjs path:
 *   - fixtures/train (make_train_step_fixtures.py, float64 autograd + torch.optim.AdamW): the padded
 *     batch's loss, target count, norm and every gradient; 2 accumulated micro-batches of 2 = one
 *     batch of 4; 3 clipped AdamW steps' losses, norms and weights — with step.test.ts's tolerances
 *     (explained there), each with the LM head in one chunk and one attention block, and with
 *     chunks of 5 rows and query blocks of 3 (boundaries inside sequences);
 *   - fixtures/models/<dir>/expected.json losses for each activation and n_inner ≠ 4·n_embd, and
 *     gpt2vocab/eval.json (50257-way head over two chunks);
 *   - step.ts's trainStep + AdamW on tfjs cpu for tiny-ninner with padded records: losses, norms,
 *     gradients and weights after 2 steps; evaluate.ts (wasm) on a shard set with a padded record;
 *   - the same run twice is bit-identical; passLimit names odd widths and memory (dropout: train-dropout.test.ts).
 * Measured (float32 against PyTorch's float64): losses within 1e-8 relative, gradients within
 * 5e-7 per tensor, weights after 3 AdamW steps within 5e-7; against the tfjs path gradients within
 * 5e-7 and weights within 6e-7. Planted bugs each fail several of these: the attention gradient's
 * 1/√hd left out, LayerNorm's backward without its x̂·mean(g·x̂) term, the LM head's wte gradient
 * taking the first chunk's rows for every chunk (only the chunked runs), dK overwritten per query
 * block instead of summed (only with more than one block).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as tfjs from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { GemmProvider } from '../../src/backend/gemm.js';
import { pooledGemm } from '../../src/backend/kernel-pool.js';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import type { TokenRecord } from '../../src/data/records.js';
import { ShardDataset } from '../../src/data/shard-reader.js';
import { writeDataset } from '../../src/data/dataset-writer.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { readSafetensors, type Tensor32 } from '../../src/formats/safetensors.js';
import { PRESETS, type GPT2Config } from '../../src/model/config.js';
import { GPT2 } from '../../src/model/gpt2.js';
import type { ParameterValues } from '../../src/model/params.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { evaluate, tfjsScorer } from '../../src/train/evaluate.js';
import { AdamW } from '../../src/train/optimizer.js';
import { passLimit, PassTrainer, type PassTrainerOptions } from '../../src/train/pass-trainer.js';
import { fixture, lmTrainStep, tempDir } from '../helpers.js';

const LOSS_REL = 1e-5;
const GRAD_REL = 1e-4;
const NORM_REL = 1e-5;
const WEIGHT_ABS = 1e-5;

type FixtureRecord = { input_ids: number[]; attention_mask: number[] };
type Case = { loss: number; grad_norm: number };
const fx = JSON.parse(readFileSync(fixture('train', 'step.json'), 'utf8')) as {
  masked: Case & { records: FixtureRecord[]; tokens: number };
  accumulation: Case & { micro_batches: FixtureRecord[][] };
  adamw: { betas: [number, number]; eps: number; weight_decay: number; grad_clip: number; steps: (Case & { lr: number; micro_batches: FixtureRecord[][]; tokens: number })[] };
};
/** Fixture records as the data pipeline gives them (labels = input_ids). */
const records = (rs: FixtureRecord[]): TokenRecord[] => rs.map((r) => ({ input_ids: Int32Array.from(r.input_ids), attention_mask: Uint8Array.from(r.attention_mask), labels: Int32Array.from(r.input_ids) }));
const relErr = (got: number, want: number) => Math.abs(got - want) / Math.abs(want);
const noDropout = (c: GPT2Config): GPT2Config => ({ ...c, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 });
const spec = { betas: fx.adamw.betas, eps: fx.adamw.eps, weight_decay: fx.adamw.weight_decay };

function tagged(file: Map<string, Tensor32>, tag: string): Map<string, Tensor32> {
  const out = new Map<string, Tensor32>();
  for (const [key, t] of file) if (key.startsWith(`${tag}/`)) out.set(key.slice(tag.length + 1), t);
  return out;
}

function normDiffRatio(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let [diff, ref] = [0, 0];
  for (let i = 0; i < want.length; i++) {
    diff += (got[i] - want[i]) ** 2;
    ref += want[i] ** 2;
  }
  return Math.sqrt(diff / ref);
}

function maxAbs(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  return worst;
}

function expectGradients(got: ParameterValues, want: Map<string, { data: ArrayLike<number> }>, tolerance = GRAD_REL): void {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, w] of want) expect(normDiffRatio(got.get(name)!.data, w.data), name).toBeLessThan(tolerance);
}

async function fixtureValues(dir: string) {
  const ck = await loadCheckpoint(fixture('models', dir));
  return { config: noDropout(ck.config), values: ck.values };
}

/** Gradients of one step with no clipping and lr 0 (the weights stay as they are). */
function gradientsOf(config: GPT2Config, values: ParameterValues, microBatches: FixtureRecord[][], options: Partial<PassTrainerOptions> = {}) {
  const trainer = PassTrainer.create(config, values, { batch: 4, length: 8, optimizer: spec, ...options });
  const result = trainer.trainStep(microBatches.map(records), { lr: 0, gradClip: 0 });
  return { result, grads: trainer.gradients() };
}

const CHUNKINGS: { name: string; headRows?: number; queryBlock?: number; gemm?: GemmProvider }[] = [
  { name: 'one head chunk, one attention block', headRows: undefined, queryBlock: undefined },
  { name: 'head chunks of 5 rows, query blocks of 3', headRows: 5, queryBlock: 3 },
  { name: 'the wasm GEMM on 2 threads, head chunks of 5 rows, query blocks of 3', headRows: 5, queryBlock: 3, gemm: pooledGemm(2) },
];

describe.each(CHUNKINGS)('PassTrainer against PyTorch: $name', ({ headRows, queryBlock, gemm }) => {
  let grads: Map<string, Tensor32>;
  let tiny: Awaited<ReturnType<typeof fixtureValues>>;
  beforeAll(async () => {
    grads = (await readSafetensors(fixture('train', 'step-grads.safetensors'))).tensors;
    tiny = await fixtureValues('tiny');
  });

  it('padded batch: the loss averages the real targets only; gradients and their norm equal PyTorch’s', () => {
    const { result, grads: got } = gradientsOf(tiny.config, tiny.values, [fx.masked.records], { headRows, queryBlock, gemm });
    expect(result.tokens).toBe(fx.masked.tokens);
    expect(relErr(result.loss, fx.masked.loss)).toBeLessThan(LOSS_REL);
    expect(relErr(result.gradNorm, fx.masked.grad_norm)).toBeLessThan(NORM_REL);
    expectGradients(got, tagged(grads, 'masked'));
  });

  it('2 accumulated micro-batches of 2 records give the gradient of one batch of 4', () => {
    const want = tagged(grads, 'accumulation');
    for (const micro of [fx.accumulation.micro_batches, [fx.accumulation.micro_batches.flat()]]) {
      const { result, grads: got } = gradientsOf(tiny.config, tiny.values, micro, { headRows, queryBlock, gemm });
      expect(relErr(result.loss, fx.accumulation.loss)).toBeLessThan(LOSS_REL);
      expect(relErr(result.gradNorm, fx.accumulation.grad_norm)).toBeLessThan(NORM_REL);
      expectGradients(got, want);
    }
  });

  it('3 clipped AdamW steps: losses, pre-clip norms and every weight after each step equal PyTorch’s', async () => {
    const weights = (await readSafetensors(fixture('train', 'step-adamw.safetensors'))).tensors;
    const trainer = PassTrainer.create(tiny.config, tiny.values, { batch: 2, length: 8, optimizer: spec, headRows, queryBlock, gemm });
    for (const [k, s] of fx.adamw.steps.entries()) {
      const result = trainer.trainStep(s.micro_batches.map(records), { lr: s.lr, gradClip: fx.adamw.grad_clip });
      expect(result.tokens, `tokens at step ${k + 1}`).toBe(s.tokens);
      expect(relErr(result.loss, s.loss), `loss at step ${k + 1}`).toBeLessThan(LOSS_REL);
      expect(relErr(result.gradNorm, s.grad_norm), `norm at step ${k + 1}`).toBeLessThan(NORM_REL);
      const want = tagged(weights, `step${k + 1}`);
      const got = trainer.values();
      expect(want.size).toBe(got.size);
      for (const [name, w] of want) expect(maxAbs(got.get(name)!.data, w.data), `${name} after step ${k + 1}`).toBeLessThan(WEIGHT_ABS);
    }
    trainer.dispose();
  });
});

describe('PassTrainer losses against PyTorch’s (fixtures/models)', () => {
  it.each(['tiny', 'tiny-gelu', 'tiny-fastgelu', 'tiny-ninner', 'tiny-f16', 'tiny-bf16'])('%s: the evaluation and training losses equal expected.json’s', async (dir) => {
    const { loss } = JSON.parse(readFileSync(fixture('models', dir, 'expected.json'), 'utf8')) as { loss: { block: number[]; value: number } };
    const { config, values } = await fixtureValues(dir);
    const record = records([{ input_ids: loss.block, attention_mask: loss.block.map(() => 1) }]);
    const T = loss.block.length - 1;
    const evaluator = PassTrainer.create(config, values, { batch: 1, length: T, headRows: 5, queryBlock: 4 });
    const { sum, count } = evaluator.evalLoss(record);
    expect(count).toBe(T);
    expect(relErr(sum / count, loss.value)).toBeLessThan(LOSS_REL);
    const trainer = PassTrainer.create(config, values, { batch: 1, length: T, optimizer: spec });
    expect(relErr(trainer.trainStep([record], { lr: 0, gradClip: 0 }).loss, loss.value)).toBeLessThan(LOSS_REL);
  });

  it('gpt2vocab: evalLoss over 3 blocks of 64 equals eval.json’s (the 50257-way head in chunks of 50 rows)', async () => {
    const ev = JSON.parse(readFileSync(fixture('models', 'gpt2vocab', 'eval.json'), 'utf8')) as { blocks: number[][]; loss: number };
    const { config, values } = await fixtureValues('gpt2vocab');
    const evaluator = PassTrainer.create(config, values, { batch: 2, length: 64, headRows: 50 });
    const { sum, count } = evaluator.evalLoss(records(ev.blocks.map((b) => ({ input_ids: b, attention_mask: b.map(() => 1) }))));
    expect(count).toBe(3 * 64);
    expect(relErr(sum / count, ev.loss)).toBeLessThan(LOSS_REL);
  });
});

describe('PassTrainer against the tfjs path (cpu)', () => {
  let tf: Tf;
  let ninner: Awaited<ReturnType<typeof fixtureValues>>;
  beforeAll(async () => {
    tf = (await selectBackend('cpu')).tf;
    ninner = await fixtureValues('tiny-ninner');
  });

  it('tiny-ninner, padded records, 2 micro-batches: losses, norms and weights over 2 AdamW steps', async () => {
    const { config, values } = ninner;
    expect(config.n_inner).not.toBe(4 * config.n_embd);
    const model = GPT2.fromValues(tf, config, values, { trainable: true });
    const optimizer = new AdamW(tf, model.params as Map<string, tfjs.Variable>, spec);
    const trainer = PassTrainer.create(config, values, { batch: 2, length: 8, optimizer: spec, headRows: 7, queryBlock: 3 });
    for (const [k, s] of fx.adamw.steps.slice(0, 2).entries()) {
      const micro = s.micro_batches.map(records);
      const want = await lmTrainStep(model, optimizer, micro, { lr: s.lr, gradClip: fx.adamw.grad_clip, seed: 1, step: k });
      const got = trainer.trainStep(micro, { lr: s.lr, gradClip: fx.adamw.grad_clip });
      expect(got.tokens).toBe(want.tokens);
      expect(relErr(got.loss, want.loss), `loss at step ${k + 1}`).toBeLessThan(LOSS_REL);
      expect(relErr(got.gradNorm, want.gradNorm), `norm at step ${k + 1}`).toBeLessThan(NORM_REL);
      const weights = await model.values();
      for (const [name, w] of weights) expect(maxAbs(trainer.values().get(name)!.data, w.data), `${name} after step ${k + 1}`).toBeLessThan(WEIGHT_ABS);
    }
    optimizer.dispose();
    model.dispose();
  });

  it('tiny-ninner, padded records: gradients equal trainStep’s (both float32: 10× tighter than against PyTorch)', async () => {
    const { config, values } = ninner;
    const micro = fx.adamw.steps[0].micro_batches.map(records);
    const model = GPT2.fromValues(tf, config, values, { trainable: true });
    const recorded = new Map<string, { data: Float32Array }>();
    const recorder = { update: (grads: Map<string, tfjs.Tensor>) => grads.forEach((g, name) => recorded.set(name, { data: g.dataSync() as Float32Array })) };
    const want = await lmTrainStep(model, recorder as unknown as AdamW, micro, { lr: 0, gradClip: 0, seed: 1, step: 0 });
    model.dispose();
    const trainer = PassTrainer.create(config, values, { batch: 2, length: 8, optimizer: spec, headRows: 4, queryBlock: 5 });
    const got = trainer.trainStep(micro, { lr: 0, gradClip: 0 });
    expect(relErr(got.loss, want.loss)).toBeLessThan(LOSS_REL);
    expectGradients(trainer.gradients(), recorded, GRAD_REL / 10);
  });
});

describe('PassTrainer.evalLoss against evaluate() (wasm)', () => {
  it('evalLoss equals evaluate() over shards with a padded record', async () => {
    const ev = JSON.parse(readFileSync(fixture('models', 'gpt2vocab', 'eval.json'), 'utf8')) as { blocks: number[][] };
    const dir = join(tempDir(), 'data');
    const ids = Uint16Array.from(ev.blocks.flat().slice(0, 2 * 65 + 40)); // 2 full blocks and one of 40 real ids
    await writeDataset(dir, ids, {
      blockSize: 65, dtype: 'uint16', padId: 50256, keepTail: true, tokenizer: loadTokenizer().identity,
      docSeparator: 'eos', plan: {}, documents: 1, inputBytes: 0, command: ['test'],
    });
    const dataset = await ShardDataset.open(dir);
    const { config, values } = await fixtureValues('gpt2vocab');
    const { tf } = await selectBackend('wasm');
    const model = GPT2.fromValues(tf, config, values);
    const want = await evaluate(tfjsScorer(model), dataset, { batchSize: 2 });
    model.dispose();
    const all: TokenRecord[] = [];
    for await (const { record } of dataset.iterate()) all.push(record);
    expect(all[2].attention_mask.includes(0)).toBe(true);
    const got = PassTrainer.create(config, values, { batch: 2, length: 64 }).evalLoss(all);
    expect(got.count).toBe(want.tokens);
    expect(relErr(got.sum / got.count, want.loss)).toBeLessThan(LOSS_REL);
  });
});

describe('PassTrainer', () => {
  it('is deterministic: the same steps twice give the same bits', async () => {
    const { config, values } = await fixtureValues('tiny');
    const run = () => {
      const trainer = PassTrainer.create(config, values, { batch: 2, length: 8, optimizer: spec, headRows: 3, queryBlock: 5 });
      const results = fx.adamw.steps.map((s) => trainer.trainStep(s.micro_batches.map(records), { lr: s.lr, gradClip: fx.adamw.grad_clip }));
      const bytes = [...trainer.values().values(), ...trainer.optimizerState().m.values(), ...trainer.optimizerState().v.values()].map((t) => Buffer.from(t.data.slice().buffer));
      return { results, bytes };
    };
    const [a, b] = [run(), run()];
    expect(b.results).toEqual(a.results);
    for (const [i, bytes] of a.bytes.entries()) expect(b.bytes[i].equals(bytes)).toBe(true);
  });

  it('passLimit and create name what keeps a model off the pass: odd widths, wasm’s 4 GiB (not dropout)', () => {
    const gpt2 = { ...PRESETS.gpt2, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
    expect(passLimit(gpt2, { batch: 1, length: 1024, training: true })).toBeUndefined();
    expect(PRESETS.gpt2.resid_pdrop).toBe(0.1);
    expect(passLimit(PRESETS.gpt2, { batch: 1, length: 1024, training: true })).toBeUndefined(); // the seed's run_gpt2.yaml model, dropout 0.1
    expect(passLimit(PRESETS.gpt2, { batch: 8, length: 1024, training: false })).toBeUndefined();
    expect(passLimit(PRESETS['gpt2-medium'], { batch: 1, length: 1024, training: true })).toMatch(/^training this model at 1×1024 positions needs 6\.\d\d GiB, more than wasm's 4 GiB memory$/);
    expect(() => PassTrainer.create(PRESETS['gpt2-medium'], new Map(), { batch: 1, length: 1024, optimizer: spec })).toThrow(/needs 6\.\d\d GiB/);
    expect(passLimit({ ...gpt2, n_embd: 30, n_head: 3 }, { batch: 1, length: 8, training: false })).toBe('the wasm pass needs multiples of 4, and n_embd is 30');
  });

  it('refuses input it cannot run, naming it', async () => {
    const { config, values } = await fixtureValues('tiny');
    const trainer = PassTrainer.create(config, values, { batch: 2, length: 8, optimizer: spec });
    const rec = (ids: number[]) => records([{ input_ids: ids, attention_mask: ids.map(() => 1) }])[0];
    expect(() => trainer.evalLoss([rec([1, 2, 3]), rec([1, 2, 3]), rec([4, 5, 6])])).not.toThrow(); // 3 records go in groups of 2
    expect(() => trainer.trainStep([[rec([1, 2]), rec([1, 2]), rec([1, 2])]], { lr: 0, gradClip: 0 })).toThrow('3 records in one pass; this trainer takes at most 2');
    expect(() => trainer.evalLoss([rec(Array.from({ length: 10 }, (_, i) => i))])).toThrow("records of 10 tokens are longer than this trainer's 9");
    expect(() => trainer.evalLoss([rec([1, 2, 3]), rec([1, 2])])).toThrow('same length');
    expect(() => trainer.evalLoss([rec([1, 320, 3])])).toThrow('token id 320 is outside the vocabulary (vocab_size 320)');
    expect(() => PassTrainer.create(config, values, { batch: 1, length: 8 }).optimizerState()).toThrow('evaluation only');
  });
});
