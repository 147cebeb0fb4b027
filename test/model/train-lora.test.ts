/**
 * LoRA training in the full-sequence pass (PassTrainer with options.lora, src/model/train-lora.ts):
 *   - fixtures/lora/train.* (make_lora_fixtures.py: PEFT's math in float64 autograd, base frozen,
 *     torch.optim.AdamW on A and B only): 3 clipped steps of 2 padded micro-batches from PEFT's
 *     initialisation — losses, pre-clip norms, the clipped gradients of steps 1 and 2, A and B after
 *     every step — with one head chunk and attention block, with chunks of 5 rows and query blocks
 *     of 3, and on the wasm GEMM's 2 threads; the base weights bit for bit as they were;
 *   - evaluation applies the adapter (no dropout): the loss of fixtures/lora/expected.json's logits
 *     (PyTorch, float64) for query + value and for all six targets;
 *   - LoRA dropout against tfjs autodiff: GPT2 (gpt2.ts) with a LinearAdapter written here that
 *     multiplies each adapted layer's input by the pass's mask, differentiated by tf.grads;
 *   - determinism (1 and 2 threads, LoRA and model dropout on), resume from loraValues and
 *     optimizerState bit for bit; the layout: gradients and moments for A and B only (sizes from
 *     the parameter counts, GPT-2 124M's included).
 * Measured: against PyTorch losses within 3e-8 relative, pre-clip norms within 1e-7, gradients
 * within 1.5e-6 and A, B within 1e-6 (per-tensor norm ratios; asserted: 1e-6, 1e-5, 5e-6, 1e-5);
 * evaluation losses within 1e-8; against the tfjs oracle losses within 7e-8, gradients within 9e-7.
 * Planted bugs each fail: the dropout factor left out of x's gradient (the dropout oracle), du
 * without the scale, the first block's c_attn adapter skipped in the backward, B's gradient read
 * from the layer's first columns instead of its slice (each: PyTorch and the oracle), a frozen
 * LayerNorm's gradients written where a trainable one's would be (PyTorch, the base unchanged).
 */
import { readFileSync } from 'node:fs';
import type * as tfjs from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { pooledGemm } from '../../src/backend/kernel-pool.js';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { MAX_PAGES, wasmApi } from '../../src/backend/wasm-asm.js';
import { RowKernels } from '../../src/backend/wasm-rows.js';
import type { TokenRecord } from '../../src/data/records.js';
import { loadCheckpoint, type LoadedCheckpoint } from '../../src/formats/checkpoint.js';
import { presetConfig, type GPT2Config } from '../../src/model/config.js';
import { GPT2, type LinearAdapter } from '../../src/model/gpt2.js';
import { loraScale, loraShapes, orderedTargets, targetSite, type LoraModule, type LoraSpec, type LoraTarget } from '../../src/model/lora.js';
import { parameterShapes, type ParameterValues } from '../../src/model/params.js';
import type { SiteDropout } from '../../src/model/train-dropout.js';
import { LoraDraw } from '../../src/model/train-lora.js';
import { describeLayout, passLayout } from '../../src/model/train-memory.js';
import { PassTrainer, type PassTrainerOptions } from '../../src/train/pass-trainer.js';
import { shiftBatch } from '../../src/train/lm-loss.js';
import { fixture } from '../helpers.js';
import { LORA_TRAIN, tagged, tensorsOf, type FixtureRecord } from '../lora-fixture.js';

const records = (rs: FixtureRecord[]): TokenRecord[] => rs.map((r) => ({ input_ids: Int32Array.from(r.input_ids), attention_mask: Uint8Array.from(r.attention_mask), labels: Int32Array.from(r.input_ids) }));
const fx = LORA_TRAIN;
const STEPS = fx.steps.map((s) => ({ lr: s.lr, micro: s.micro_batches.map(records) }));
const adamw = { betas: fx.optimizer.betas, eps: fx.optimizer.eps, weight_decay: fx.optimizer.weight_decay };
const QV: LoraSpec = { rank: fx.rank, alpha: fx.alpha, dropout: 0, targets: fx.targets };
const [SEED, STEP] = [4321, 5];

const relErr = (got: number, want: number) => Math.abs(got - want) / Math.abs(want);
/** ‖got − want‖ / ‖want‖, or ‖got − want‖ when want is all zeros (A's first gradient, B being 0). */
function normDiffRatio(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  const norm = (at: (i: number) => number) => Math.hypot(...Array.from({ length: want.length }, (_, i) => at(i)));
  return norm((i) => got[i] - want[i]) / (norm((i) => want[i]) || 1);
}
function expectClose(got: ParameterValues, want: ParameterValues, tolerance: number, what: string): void {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, w] of want) expect(normDiffRatio(got.get(name)!.data, w.data), `${name} ${what}`).toBeLessThan(tolerance);
}
const bytes = (values: Iterable<{ data: Float32Array }>) => Buffer.concat([...values].map((v) => Buffer.from(v.data.slice().buffer)));
const copy = (values: ParameterValues): ParameterValues => new Map([...values].map(([n, v]) => [n, { shape: [...v.shape], data: v.data.slice() }]));

let tiny: LoadedCheckpoint;
let file: ReturnType<typeof tensorsOf>;
beforeAll(async () => {
  const ck = await loadCheckpoint(fixture('models', 'tiny'));
  tiny = { ...ck, config: { ...ck.config, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 } }; // the model's dropout: train-dropout.test.ts
  file = tensorsOf(fixture('lora', 'train.safetensors'));
});
/** The fixture adapters with B ≠ 0 (fixtures/lora/<tag>.safetensors) and their spec. */
function adapterCase(tag: 'qv' | 'all', dropout: number): { spec: LoraSpec; values: ParameterValues } {
  const c = (JSON.parse(readFileSync(fixture('lora', 'expected.json'), 'utf8')) as Record<string, { rank: number; alpha: number; targets: LoraTarget[] }>)[tag];
  return { spec: { rank: c.rank, alpha: c.alpha, dropout, targets: c.targets }, values: tagged(new Map([...tensorsOf(fixture('lora', `${tag}.safetensors`))].map(([n, t]) => [`x/${n}`, t])), 'x') };
}
function trainer(config: GPT2Config, lora: { spec: LoraSpec; values: ParameterValues }, options: Partial<PassTrainerOptions> = {}): PassTrainer {
  return PassTrainer.create(config, tiny.values, { batch: 2, length: 8, optimizer: adamw, lora, ...options });
}

describe.each([
  { name: 'one head chunk, one attention block' },
  { name: 'head chunks of 5 rows, query blocks of 3', headRows: 5, queryBlock: 3 },
  { name: 'the wasm GEMM on 2 threads', headRows: 5, queryBlock: 3, gemm: pooledGemm(2) },
])('LoRA training against PyTorch (fixtures/lora/train.*): $name', (options) => {
  it('3 clipped AdamW steps on query + value: losses, norms, gradients, A and B after each step; the base unchanged', () => {
    const t = trainer(tiny.config, { spec: QV, values: tagged(file, 'init') }, options);
    for (const [k, s] of STEPS.entries()) {
      const result = t.trainStep(s.micro, { lr: s.lr, gradClip: fx.optimizer.grad_clip });
      expect(relErr(result.loss, fx.losses[k]), `loss at step ${k + 1}`).toBeLessThan(1e-6);
      expect(relErr(result.gradNorm, fx.grad_norms[k]), `norm at step ${k + 1}`).toBeLessThan(1e-5);
      if (k < 2) expectClose(t.gradients(), tagged(file, `grad${k + 1}`), 5e-6, `gradient at step ${k + 1}`);
      expectClose(t.loraValues(), tagged(file, `step${k + 1}`), 1e-5, `after step ${k + 1}`);
    }
    expect(bytes(t.values().values()).equals(bytes(tiny.values.values()))).toBe(true);
    expect([...t.optimizerState().m.keys()]).toEqual(loraShapes(tiny.config, QV).map(([n]) => n));
    t.dispose();
  });
});

describe('evaluation with LoRA', () => {
  const expected = JSON.parse(readFileSync(fixture('lora', 'expected.json'), 'utf8')) as { ids: number[][]; qv: { logits: number[][][] }; all: { logits: number[][][] } };
  /** Σ −log softmax(logits)[next id] over every position but the last, in float64. */
  const lossOf = (logits: number[][][]) =>
    expected.ids.reduce((sum, ids, b) => {
      for (let t = 0; t + 1 < ids.length; t++) {
        const row = logits[b][t];
        const max = Math.max(...row);
        sum += max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0)) - row[ids[t + 1]];
      }
      return sum;
    }, 0);
  const evalRecords = expected.ids.map((ids) => ({ input_ids: Int32Array.from(ids), attention_mask: new Uint8Array(ids.length).fill(1), labels: Int32Array.from(ids) }));

  it.each(['qv', 'all'] as const)('%s: the loss of PyTorch’s logits, from an evaluation-only and a training trainer (dropout ignored)', (tag) => {
    const lora = adapterCase(tag, 0.5);
    const want = lossOf(expected[tag].logits);
    for (const options of [{ optimizer: undefined }, { queryBlock: 3, headRows: 5 }]) {
      const got = trainer(tiny.config, lora, options).evalLoss(evalRecords);
      expect(got.count).toBe(2 * 7);
      expect(relErr(got.sum, want)).toBeLessThan(1e-6);
    }
    expect(relErr(PassTrainer.create(tiny.config, tiny.values, { batch: 2, length: 8 }).evalLoss(evalRecords).sum, want)).toBeGreaterThan(1e-3);
  });

  it('an evaluation-only trainer has no gradients or moments; bad adapter values are refused by name', () => {
    const lora = adapterCase('qv', 0);
    const t = trainer(tiny.config, lora, { optimizer: undefined });
    expect(() => t.gradients()).toThrow('evaluation only');
    const missing = new Map([...lora.values].slice(1));
    expect(() => trainer(tiny.config, { spec: lora.spec, values: missing })).toThrow('missing LoRA tensor h.0.query.lora_A');
    const spec = { ...lora.spec, rank: 64 };
    expect(() => trainer(tiny.config, { spec, values: lora.values })).toThrow(/LoRA rank 64 is larger/);
  });
});

/** A mask's factors (0 or 1/(1−p)) over rows × width, drawn by the pass's own kernel over ones. */
function factors(mask: SiteDropout, rows: number, width: number): Float32Array {
  const memory = new wasmApi.Memory({ initial: Math.ceil((rows * width + 16) / 16384), maximum: MAX_PAGES, shared: true });
  new Float32Array(memory.buffer).fill(1, 16, 16 + rows * width);
  new RowKernels(memory, 0).dropout(16, 16, rows, width, mask, mask.scale);
  return new Float32Array(memory.buffer).slice(16, 16 + rows * width);
}

/** LoRA as a LinearAdapter with each adapted layer's input multiplied by a given mask: the oracle's adapter. */
class MaskedLora implements LinearAdapter {
  constructor(
    private readonly tf: Tf,
    private readonly config: GPT2Config,
    private readonly spec: LoraSpec,
    private readonly params: Map<string, tfjs.Tensor>,
    private readonly draw: LoraDraw,
  ) {}

  delta(name: string, x2d: tfjs.Tensor2D): tfjs.Tensor2D | undefined {
    const tf = this.tf;
    const [, layer, ...rest] = name.split('.');
    const module = rest.join('.') as LoraModule;
    const targets = orderedTargets(this.spec).filter((t) => targetSite(this.config, t).module === module);
    if (targets.length === 0) return undefined;
    const [rows, width] = x2d.shape;
    const x = tf.mul(x2d, tf.tensor2d(factors(this.draw.at(Number(layer), module), rows, width), [rows, width])) as tfjs.Tensor2D;
    const out = targetSite(this.config, targets[0]).out;
    let delta = tf.zeros([rows, out]) as tfjs.Tensor2D;
    for (const t of targets) {
      const site = targetSite(this.config, t);
      const p = (s: 'A' | 'B') => this.params.get(`h.${layer}.${t}.lora_${s}`) as tfjs.Tensor2D;
      const update = tf.mul(tf.matMul(tf.matMul(x, p('A')), p('B')), loraScale(this.spec));
      delta = tf.add(delta, tf.pad(update, [[0, 0], [site.offset, out - site.offset - site.width]]));
    }
    return delta;
  }
}

describe('LoRA dropout against tfjs autodiff with the pass’s masks', () => {
  let tf: Tf;
  beforeAll(async () => {
    tf = (await selectBackend('cpu')).tf;
  });

  it.each([
    { tag: 'qv' as const, name: 'query + value (one mask on c_attn’s input)' },
    { tag: 'all' as const, name: 'all six targets, query blocks of 3, head chunks of 5', queryBlock: 3, headRows: 5 },
  ])('$name: the loss and A’s and B’s gradients of a step of 2 padded micro-batches', ({ tag, queryBlock, headRows }) => {
    const lora = adapterCase(tag, 0.3);
    const model = GPT2.fromValues(tf, tiny.config, tiny.values);
    const names = [...lora.values.keys()];
    const micro = STEPS[0].micro;
    const loss = (...ts: tfjs.Tensor[]) => {
      const params = new Map(names.map((n, i) => [n, ts[i]]));
      const losses = micro.map((recs, m) => {
        model.adapter = new MaskedLora(tf, tiny.config, lora.spec, params, LoraDraw.of(lora.spec, SEED, STEP, m)!);
        const { inputs, labels, weights } = shiftBatch(recs);
        const logits = model.forward(inputs, { training: true }).logits;
        const picked = tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.tensor2d(labels, [inputs.length, inputs[0].length], 'int32'), tiny.config.vocab_size)), 2);
        const w = tf.tensor2d(weights, [inputs.length, inputs[0].length]);
        return tf.div(tf.neg(tf.sum(tf.mul(picked, w))), tf.sum(w));
      });
      return tf.div(tf.addN(losses), micro.length) as tfjs.Scalar;
    };
    const tensors = names.map((n) => tf.tensor(lora.values.get(n)!.data, lora.values.get(n)!.shape));
    const { value, grads } = tf.valueAndGrads(loss)(tensors);
    const t = trainer(tiny.config, lora, { queryBlock, headRows });
    const got = t.trainStep(micro, { lr: 0, gradClip: 0, seed: SEED, step: STEP });
    const want = value.dataSync()[0];
    expect(relErr(got.loss, want)).toBeLessThan(1e-6);
    const passGrads = t.gradients();
    names.forEach((n, i) => expect(normDiffRatio(passGrads.get(n)!.data, grads[i].dataSync()), n).toBeLessThan(5e-6));
    const plain = trainer(tiny.config, { ...lora, spec: { ...lora.spec, dropout: 0 } }).trainStep(micro, { lr: 0, gradClip: 0 });
    expect(Math.abs(plain.loss - got.loss)).toBeGreaterThan(1e-4); // dropout did something
    t.dispose();
    tf.dispose([value, ...grads, ...tensors]);
  });

  it('masks: one per layer input, independent of the layer, the step and the model’s; training needs the seed and step', () => {
    const spec = { ...QV, dropout: 0.5 };
    const kept = (draw: LoraDraw, layer: number, module: LoraModule) => Uint8Array.from(factors(draw.at(layer, module), 64, 256), (v) => (v > 0 ? 1 : 0));
    const base = kept(LoraDraw.of(spec, SEED, STEP, 0)!, 1, 'attn.c_attn');
    expect(kept(LoraDraw.of(spec, SEED, STEP, 0)!, 1, 'attn.c_attn')).toEqual(base);
    const n = base.length;
    expect(Math.abs(base.reduce((a, b) => a + b, 0) - n / 2)).toBeLessThan(5 * Math.sqrt(n / 4));
    for (const other of [kept(LoraDraw.of(spec, SEED, STEP, 0)!, 0, 'attn.c_attn'), kept(LoraDraw.of(spec, SEED, STEP, 0)!, 1, 'mlp.c_fc'), kept(LoraDraw.of(spec, SEED, STEP + 1, 0)!, 1, 'attn.c_attn'), kept(LoraDraw.of(spec, SEED, STEP, 1)!, 1, 'attn.c_attn')]) {
      expect(Math.abs(other.filter((v, i) => v === base[i]).length - n / 2)).toBeLessThan(5 * Math.sqrt(n / 4));
    }
    expect(LoraDraw.of(QV, undefined, undefined, 0)).toBeUndefined();
    expect(() => trainer(tiny.config, { spec, values: tagged(file, 'init') }).trainStep(STEPS[0].micro, { lr: 0, gradClip: 0 })).toThrow('LoRA dropout needs the seed and step');
  });
});

describe('LoRA in PassTrainer: determinism, resume, memory', () => {
  const config = (): GPT2Config => ({ ...tiny.config, embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 });
  type Start = { values: ParameterValues; state: ReturnType<PassTrainer['optimizerState']> };
  /** Steps `from`… of the fixture's with all six targets, LoRA and model dropout on. */
  const run = (options: Partial<PassTrainerOptions>, from = 0, to = STEPS.length, start?: Start) => {
    const lora = adapterCase('all', 0.2);
    const t = trainer(config(), { spec: lora.spec, values: start?.values ?? lora.values }, { headRows: 3, queryBlock: 5, ...options });
    if (start) t.loadOptimizer(start.state);
    const losses = STEPS.slice(from, to).map((s, k) => t.trainStep(s.micro, { lr: s.lr, gradClip: 1, seed: SEED, step: from + k }).loss);
    const state = t.optimizerState();
    const out = {
      losses,
      bytes: bytes([...t.loraValues().values(), ...state.m.values(), ...state.v.values()]),
      next: { values: copy(t.loraValues()), state: { step: state.step, m: copy(state.m), v: copy(state.v) } },
      base: bytes(t.values().values()),
    };
    t.dispose();
    return out;
  };

  it('the same steps give the same bits on 1 thread and on 2; a resume from loraValues and optimizerState continues bit for bit', () => {
    const one = run({ gemm: pooledGemm(1) });
    const two = run({ gemm: pooledGemm(2) });
    expect(two.losses).toEqual(one.losses);
    expect(two.bytes.equals(one.bytes)).toBe(true);
    expect(one.base.equals(bytes(tiny.values.values()))).toBe(true);
    const first = run({ gemm: pooledGemm(1) }, 0, 2);
    const resumed = run({ gemm: pooledGemm(1) }, 2, STEPS.length, first.next);
    expect([...first.losses, ...resumed.losses]).toEqual(one.losses);
    expect(resumed.bytes.equals(one.bytes)).toBe(true);
  });

  it.each([
    { name: 'tiny, query + value', batch: 2, length: 8, spec: { ...QV, dropout: 0.1 } },
    { name: 'tiny, value + mlp_proj (drop(x) as wide as n_inner)', batch: 2, length: 8, spec: { ...QV, dropout: 0.1, targets: ['value', 'mlp_proj'] } },
    { name: 'GPT-2 124M at 1 × 1024, rank 64 on query + value', gpt2: true, batch: 1, length: 1024, spec: { rank: 64, alpha: 128, dropout: 0.1, targets: ['query', 'value'] } },
  ] as { name: string; gpt2?: boolean; batch: number; length: number; spec: LoraSpec }[])('$name: gradients and moments for A and B only', ({ gpt2, batch, length, spec }) => {
    const c = gpt2 ? presetConfig('gpt2') : tiny.config;
    const shape = { batch, length, training: true };
    const full = passLayout(c, shape);
    const lora = passLayout(c, { ...shape, lora: spec });
    const R = batch * length;
    const params = parameterShapes(c).reduce((s, [, d]) => s + d.reduce((a, b) => a * b, 1), 0);
    const adapters = c.n_layer * spec.targets.reduce((s, t) => s + spec.rank * (targetSite(c, t).in + targetSite(c, t).width), 0);
    expect(lora.trainable.floats).toBe(adapters); // each A and B a multiple of 16 floats here: no alignment
    expect(lora.paramFloats).toBe(full.paramFloats);
    expect(full.paramFloats - params).toBeLessThan(16 * parameterShapes(c).length);
    expect([lora.m - lora.grads, lora.v - lora.m, full.m - full.grads]).toEqual([adapters, adapters, full.paramFloats]);
    // full − LoRA: the parameters' gradients and moments, less A and B with theirs, u, drop(x) and the LayerNorm sink
    const saved = c.n_layer * spec.targets.length * R * spec.rank;
    const widest = Math.max(...spec.targets.map((t) => targetSite(c, t).in));
    expect(full.floats - lora.floats).toBe(3 * full.paramFloats - 4 * adapters - saved - R * widest - 2 * c.n_embd);
    expect(describeLayout(lora)).toMatch(/AdamW second moments +as LoRA A, B/);
  });
});
