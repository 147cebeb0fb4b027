/**
 * MemoryAdamW (clipping and AdamW over one heap) against PyTorch (fixtures/train/adamw.json, made
 * by test/oracle/make_adamw_fixture.py) with optimizer.test.ts's tolerances, bit for bit against the
 * tfjs AdamW it mirrors, its decay rule against AdamW.decays; and checkpoints written from one path
 * resuming on the other (PassTrainer ↔ GPT2 + AdamW + trainStep, through saveTrainingCheckpoint /
 * loadTrainingCheckpoint) to PyTorch's weights (fixtures/train/step-adamw.safetensors), and on the
 * same path bit-exactly.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as tfjs from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { MAX_PAGES, wasmApi } from '../../src/backend/wasm-asm.js';
import { RowKernels } from '../../src/backend/wasm-rows.js';
import type { TokenRecord } from '../../src/data/records.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { readSafetensors } from '../../src/formats/safetensors.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { parameterShapes, type ParameterValues } from '../../src/model/params.js';
import { builtinTokenizerDir } from '../../src/tokenizer/tokenizer.js';
import { Rng } from '../../src/util/rng.js';
import { loadTrainingCheckpoint, saveTrainingCheckpoint } from '../../src/train/checkpoints.js';
import { validateTrainConfig } from '../../src/train/config.js';
import { MemoryAdamW, type HeapTensor } from '../../src/train/memory-adamw.js';
import { AdamW, type AdamWState } from '../../src/train/optimizer.js';
import { PassTrainer } from '../../src/train/pass-trainer.js';
import { fixture, lmTrainStep, tempDir } from '../helpers.js';

type Values = Record<string, number[]>;
type Step = { lr: number; grads: Values; grad_norm: number; clipped_grads: Values; params: Values; exp_avg: Values; exp_avg_sq: Values };
const fx = JSON.parse(readFileSync(fixture('train', 'adamw.json'), 'utf8')) as { betas: [number, number]; eps: number; weight_decay: number; max_norm: number; shapes: Record<string, number[]>; decays: Record<string, boolean>; initial: Values; steps: Step[] };
const spec = { betas: fx.betas, eps: fx.eps, weight_decay: fx.weight_decay };

/** Parameters packed into a heap: parameters, then gradients, m and v, each region `shift` apart. */
function heapOf(shapes = fx.shapes, initial = fx.initial) {
  let at = 0;
  const tensors: HeapTensor[] = Object.keys(shapes).map((name) => {
    const t = { name, shape: shapes[name], at: at + 3 }; // odd offsets: nothing assumes alignment
    at = t.at + initial[name].length;
    return t;
  });
  const shift = at + 5;
  const args = Math.ceil((4 * shift) / 16) * 16; // the kernels' 16 floats after the four regions
  const memory = new wasmApi.Memory({ initial: Math.ceil(((args + 16) * 4) / 65536), maximum: MAX_PAGES, shared: true });
  const heap = new Float32Array(memory.buffer, 0, 4 * shift);
  const rows = new RowKernels(memory, args);
  for (const t of tensors) heap.set(initial[t.name], t.at);
  const put = (values: Values) => tensors.forEach((t) => heap.set(values[t.name], shift + t.at));
  const get = (t: HeapTensor, region: number) => heap.subarray(region * shift + t.at, region * shift + t.at + initial[t.name].length);
  return { heap, tensors, put, get, optimizer: new MemoryAdamW(rows, heap, tensors, { grad: shift, m: 2 * shift, v: 3 * shift }, spec) };
}

function maxRelErr(got: ArrayLike<number>, want: number[]): number {
  let max = 0;
  for (let i = 0; i < want.length; i++) max = Math.max(max, Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-3));
  return max;
}

describe('MemoryAdamW', () => {
  it('matches torch.optim.AdamW + clip_grad_norm_ step by step', () => {
    const { put, get, tensors, optimizer } = heapOf();
    for (const n of Object.keys(fx.shapes)) expect(optimizer.decays(n), n).toBe(fx.decays[n]);
    for (const [i, s] of fx.steps.entries()) {
      put(s.grads);
      const norm = optimizer.clip(fx.max_norm);
      expect(Math.abs(norm - s.grad_norm) / s.grad_norm, `norm at step ${i + 1}`).toBeLessThan(1e-5);
      for (const t of tensors) expect(maxRelErr(get(t, 1), s.clipped_grads[t.name]), `clipped ${t.name} at step ${i + 1}`).toBeLessThan(1e-6);
      optimizer.update(s.lr);
      expect(optimizer.step).toBe(i + 1);
      for (const t of tensors) {
        expect(maxRelErr(get(t, 0), s.params[t.name]), `${t.name} at step ${i + 1}`).toBeLessThan(1e-6);
        expect(maxRelErr(get(t, 2), s.exp_avg[t.name]), `exp_avg ${t.name} at step ${i + 1}`).toBeLessThan(1e-6);
        expect(maxRelErr(get(t, 3), s.exp_avg_sq[t.name]), `exp_avg_sq ${t.name} at step ${i + 1}`).toBeLessThan(1e-6);
      }
    }
    expect(fx.steps.filter((s) => s.grad_norm > fx.max_norm).length).toBe(1); // clipping ran, once
  });

  it.each(['cpu', 'wasm'])('gives the bits of the tfjs AdamW on %s for the same gradients (the fixture’s, and 3 steps of 8320 random ones)', async (backend) => {
    const { tf } = await selectBackend(backend);
    const rng = new Rng(7, 1);
    const random = (n: number, scale: number) => Array.from({ length: n }, () => (rng.nextFloat() - 0.5) * scale);
    const randomShapes: Record<string, number[]> = { 'h.0.mlp.c_fc.weight': [64, 128], 'h.0.mlp.c_fc.bias': [128] };
    const runs = [
      { shapes: fx.shapes, initial: fx.initial, steps: fx.steps.map((s) => ({ lr: s.lr, grads: s.clipped_grads })) },
      {
        shapes: randomShapes,
        initial: Object.fromEntries(Object.entries(randomShapes).map(([n, sh]) => [n, random(sh.reduce((a, b) => a * b, 1), 0.2)])),
        steps: [1e-3, 3e-3, 2e-3].map((lr) => ({ lr, grads: Object.fromEntries(Object.entries(randomShapes).map(([n, sh]) => [n, random(sh.reduce((a, b) => a * b, 1), 1e-2)])) })),
      },
    ];
    for (const run of runs) {
      const { put, get, tensors, optimizer } = heapOf(run.shapes, run.initial);
      const params = new Map(Object.keys(run.shapes).map((n) => [n, tf.variable(tf.tensor(run.initial[n], run.shapes[n]), true)]));
      const reference = new AdamW(tf, params, spec);
      for (const s of run.steps) {
        put(s.grads);
        optimizer.update(s.lr);
        const grads = new Map(Object.keys(run.shapes).map((n) => [n, tf.tensor(s.grads[n], run.shapes[n])]));
        reference.update(grads, s.lr);
        tf.dispose([...grads.values()]);
      }
      const state = await reference.state();
      for (const t of tensors) {
        expect(Array.from(get(t, 0)), t.name).toEqual(Array.from(await params.get(t.name)!.data()));
        expect(Array.from(get(t, 2)), `m of ${t.name}`).toEqual(Array.from(state.m.get(t.name)!.data));
        expect(Array.from(get(t, 3)), `v of ${t.name}`).toEqual(Array.from(state.v.get(t.name)!.data));
      }
      reference.dispose();
      tf.dispose([...params.values()]);
    }
  });

  it('decays exactly the parameters AdamW.decays does, for every GPT-2 parameter', async () => {
    const { tf } = await selectBackend('cpu');
    const config = (await loadCheckpoint(fixture('models', 'tiny'))).config;
    const shapes = parameterShapes(config);
    const params = new Map(shapes.map(([n, s]) => [n, tf.variable(tf.zeros(s), true)]));
    const reference = new AdamW(tf, params, spec);
    const memory = new wasmApi.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
    const ours = new MemoryAdamW(new RowKernels(memory, 0), new Float32Array(memory.buffer), shapes.map(([name, shape]) => ({ name, shape, at: 0 })), { grad: 0, m: 0, v: 0 }, spec);
    for (const [n] of shapes) expect(ours.decays(n), n).toBe(reference.decays(n));
    expect(shapes.filter(([n]) => ours.decays(n)).length).toBe(2 + 4 * config.n_layer); // wte, wpe, 4 matrices a block
    reference.dispose();
    tf.dispose([...params.values()]);
  });

  it('loads a state only whole and checked, naming the tensor', () => {
    const { optimizer, tensors } = heapOf();
    const state = optimizer.state();
    const bias = 'h.0.attn.c_attn.bias';
    const badShape: AdamWState = { ...state, m: new Map(state.m).set(bias, { shape: [2, 3], data: new Float32Array(6) }) };
    expect(() => optimizer.load(badShape)).toThrow(`m of ${bias} has shape [2,3], parameter has [6]`);
    const lacking: AdamWState = { ...state, v: new Map(state.v) };
    lacking.v.delete('wte.weight');
    expect(() => optimizer.load(lacking)).toThrow('v lacks parameter wte.weight');
    expect(() => optimizer.load({ ...state, v: new Map(state.v).set('lm_head.weight', { shape: [1], data: new Float32Array(1) }) })).toThrow('lm_head.weight that is not a parameter');
    expect(() => optimizer.load({ ...state, step: -1 })).toThrow('step must be a non-negative integer');
    const changed: AdamWState = { step: 7, m: new Map([...state.m].map(([n, t]) => [n, { shape: t.shape, data: t.data.map((_, i) => i + 1) }])), v: state.v };
    optimizer.load(changed);
    expect(optimizer.step).toBe(7);
    expect(Array.from(optimizer.state().m.get(tensors[0].name)!.data.subarray(0, 3))).toEqual([1, 2, 3]);
  });
});

describe('checkpoints resume on either path', () => {
  const step = JSON.parse(readFileSync(fixture('train', 'step.json'), 'utf8')) as {
    adamw: { betas: [number, number]; eps: number; weight_decay: number; grad_clip: number; steps: { lr: number; micro_batches: { input_ids: number[]; attention_mask: number[] }[][] }[] };
  };
  const trainSpec = { betas: step.adamw.betas, eps: step.adamw.eps, weight_decay: step.adamw.weight_decay };
  const micro = (k: number): TokenRecord[][] =>
    step.adamw.steps[k].micro_batches.map((mb) => mb.map((r) => ({ input_ids: Int32Array.from(r.input_ids), attention_mask: Uint8Array.from(r.attention_mask), labels: Int32Array.from(r.input_ids) })));
  const options = (k: number) => ({ lr: step.adamw.steps[k].lr, gradClip: step.adamw.grad_clip });
  let tf: Tf;
  let start: Awaited<ReturnType<typeof loadCheckpoint>>;
  let torchAfter3: Map<string, { data: Float32Array }>;
  beforeAll(async () => {
    tf = (await selectBackend('cpu')).tf;
    start = await loadCheckpoint(fixture('models', 'tiny'));
    start.config = { ...start.config, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
    const file = (await readSafetensors(fixture('train', 'step-adamw.safetensors'))).tensors;
    torchAfter3 = new Map([...file].filter(([k]) => k.startsWith('step3/')).map(([k, t]) => [k.slice(6), t]));
  });

  /** Saves weights and moments after step 2 as gpt2-train does, and reads them back. */
  async function roundTrip(values: ParameterValues, optimizer: AdamWState) {
    const run = tempDir();
    const config = validateTrainConfig({}, 'test');
    const state = { step: 2, epoch: 0, offset: 0, lr: 0, best_eval_loss: null, tokens_seen: 0, elapsed_s: 0, config };
    await saveTrainingCheckpoint(run, { modelConfig: start.config, values, optimizer, state, tokenizerDir: builtinTokenizerDir(), keepLast: 1 });
    return loadTrainingCheckpoint(run, 2);
  }

  const expectTorch = (values: ParameterValues) => {
    for (const [name, w] of torchAfter3) {
      const got = values.get(name)!.data;
      expect(Math.max(...w.data.map((x, i) => Math.abs(x - got[i]))), name).toBeLessThan(1e-5);
    }
  };

  const passAfter2 = () => {
    const trainer = PassTrainer.create(start.config, start.values, { batch: 2, length: 8, optimizer: trainSpec });
    for (const k of [0, 1]) trainer.trainStep(micro(k), options(k));
    return trainer;
  };

  it('PassTrainer → checkpoint → tfjs: step 3 gives PyTorch’s weights', async () => {
    const trainer = passAfter2();
    const saved = await roundTrip(trainer.values(), trainer.optimizerState());
    expect(saved.optimizer.step).toBe(2);
    const model = GPT2.fromValues(tf, saved.modelConfig, saved.values, { trainable: true });
    const optimizer = new AdamW(tf, model.params as Map<string, tfjs.Variable>, trainSpec);
    optimizer.load(saved.optimizer);
    await lmTrainStep(model, optimizer, micro(2), { ...options(2), seed: 1, step: 2 });
    expectTorch(await model.values());
    optimizer.dispose();
    model.dispose();
  });

  it('tfjs → checkpoint → PassTrainer: step 3 gives PyTorch’s weights', async () => {
    const model = GPT2.fromValues(tf, start.config, start.values, { trainable: true });
    const optimizer = new AdamW(tf, model.params as Map<string, tfjs.Variable>, trainSpec);
    for (const k of [0, 1]) await lmTrainStep(model, optimizer, micro(k), { ...options(k), seed: 1, step: k });
    const saved = await roundTrip(await model.values(), await optimizer.state());
    optimizer.dispose();
    model.dispose();
    const trainer = PassTrainer.create(saved.modelConfig, saved.values, { batch: 2, length: 8, optimizer: trainSpec });
    trainer.loadOptimizer(saved.optimizer);
    trainer.trainStep(micro(2), options(2));
    expectTorch(trainer.values());
  });

  it('PassTrainer → checkpoint → PassTrainer is bit-exact', async () => {
    const straight = passAfter2();
    straight.trainStep(micro(2), options(2));
    const first = passAfter2();
    const saved = await roundTrip(first.values(), first.optimizerState());
    const resumed = PassTrainer.create(saved.modelConfig, saved.values, { batch: 2, length: 8, optimizer: trainSpec });
    resumed.loadOptimizer(saved.optimizer);
    resumed.trainStep(micro(2), options(2));
    for (const [name, t] of straight.values()) expect(Buffer.from(resumed.values().get(name)!.data.slice().buffer).equals(Buffer.from(t.data.slice().buffer)), name).toBe(true);
    expect(resumed.optimizerState().step).toBe(3);
  });
});
