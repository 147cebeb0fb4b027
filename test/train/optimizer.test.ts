/**
 * AdamW and global-norm clipping against PyTorch (fixtures/train/adamw.json, made by
 * test/oracle/make_adamw_fixture.py with torch.optim.AdamW and clip_grad_norm_): parameters and
 * moments within 1e-6 relative after each of 5 steps (one clipped), norms within 1e-5, on wasm and
 * cpu; bit-identical reruns, no leaked tensors, state save/load.
 */
import { readFileSync } from 'node:fs';
import type * as tfjs from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { AdamW, clipByGlobalNorm, type AdamWSpec } from '../../src/train/optimizer.js';
import { ToolError } from '../../src/util/errors.js';
import { fixture } from '../helpers.js';

type Values = Record<string, number[]>;
interface Fixture {
  betas: [number, number];
  eps: number;
  weight_decay: number;
  max_norm: number;
  shapes: Record<string, number[]>;
  decays: Record<string, boolean>;
  initial: Values;
  steps: { lr: number; grads: Values; grad_norm: number; clipped_grads: Values; params: Values; exp_avg: Values; exp_avg_sq: Values }[];
}

const fx = JSON.parse(readFileSync(fixture('train', 'adamw.json'), 'utf8')) as Fixture;
const spec: AdamWSpec = { betas: fx.betas, eps: fx.eps, weight_decay: fx.weight_decay };
const names = Object.keys(fx.shapes);

/** Largest |got − want| / max(|want|, 1e-3) (the floor keeps near-zero values from dominating). */
function maxRelErr(got: ArrayLike<number>, want: number[]): number {
  expect(got.length).toBe(want.length);
  let max = 0;
  for (let i = 0; i < want.length; i++) max = Math.max(max, Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-3));
  return max;
}

function makeParams(tf: Tf): Map<string, tfjs.Variable> {
  return new Map(names.map((n) => [n, tf.variable(tf.tensor(fx.initial[n], fx.shapes[n], 'float32'), true)]));
}

function gradsOf(tf: Tf, values: Values): Map<string, tfjs.Tensor> {
  return new Map(names.map((n) => [n, tf.tensor(values[n], fx.shapes[n], 'float32')]));
}

/** Runs the fixture's steps (clip then update); returns every parameter's final bytes. */
async function runAll(tf: Tf, steps = fx.steps.length): Promise<Map<string, Float32Array>> {
  const params = makeParams(tf);
  const opt = new AdamW(tf, params, spec);
  for (const s of fx.steps.slice(0, steps)) {
    const grads = gradsOf(tf, s.grads);
    const clipped = clipByGlobalNorm(tf, grads, fx.max_norm);
    opt.update(clipped.grads, s.lr);
    tf.dispose([...grads.values(), ...clipped.grads.values(), clipped.norm]);
  }
  const out = new Map<string, Float32Array>();
  for (const [n, p] of params) out.set(n, (await p.data()) as Float32Array);
  const state = await opt.state();
  for (const n of names) out.set(`m:${n}`, state.m.get(n)!.data).set(`v:${n}`, state.v.get(n)!.data);
  opt.dispose();
  tf.dispose([...params.values()]);
  return out;
}

for (const backendName of ['wasm', 'cpu'] as const) {
  describe(`AdamW on ${backendName}`, () => {
    let tf: Tf;
    beforeAll(async () => {
      tf = (await selectBackend(backendName)).tf;
    });

    it('matches torch.optim.AdamW + clip_grad_norm_ step by step', async () => {
      const params = makeParams(tf);
      const opt = new AdamW(tf, params, spec);
      for (const n of names) expect(opt.decays(n)).toBe(fx.decays[n]);
      let clippedSteps = 0;
      for (const [i, s] of fx.steps.entries()) {
        const grads = gradsOf(tf, s.grads);
        const clipped = clipByGlobalNorm(tf, grads, fx.max_norm);
        const norm = (await clipped.norm.data())[0];
        expect(Math.abs(norm - s.grad_norm) / s.grad_norm, `norm at step ${i + 1}`).toBeLessThan(1e-5);
        if (s.grad_norm > fx.max_norm) clippedSteps++;
        for (const n of names) expect(maxRelErr(await clipped.grads.get(n)!.data(), s.clipped_grads[n]), `clipped ${n} at step ${i + 1}`).toBeLessThan(1e-6);
        opt.update(clipped.grads, s.lr);
        expect(opt.step).toBe(i + 1);
        const state = await opt.state();
        for (const n of names) {
          expect(maxRelErr(await params.get(n)!.data(), s.params[n]), `${n} at step ${i + 1}`).toBeLessThan(1e-6);
          expect(maxRelErr(state.m.get(n)!.data, s.exp_avg[n]), `exp_avg ${n} at step ${i + 1}`).toBeLessThan(1e-6);
          expect(maxRelErr(state.v.get(n)!.data, s.exp_avg_sq[n]), `exp_avg_sq ${n} at step ${i + 1}`).toBeLessThan(1e-6);
        }
        tf.dispose([...grads.values(), ...clipped.grads.values(), clipped.norm]);
      }
      expect(clippedSteps).toBe(1); // the fixture exercises clipping exactly once
      opt.dispose();
      tf.dispose([...params.values()]);
    });

    it('is bit-identical when run twice', async () => {
      const a = await runAll(tf);
      const b = await runAll(tf);
      for (const [k, v] of a) expect(Buffer.from(b.get(k)!.buffer).equals(Buffer.from(v.buffer)), k).toBe(true);
    });

    it('resumes from state()/load() exactly as an uninterrupted run', async () => {
      const params = makeParams(tf);
      const first = new AdamW(tf, params, spec);
      for (const s of fx.steps.slice(0, 2)) {
        const g = gradsOf(tf, s.clipped_grads);
        first.update(g, s.lr);
        tf.dispose([...g.values()]);
      }
      const saved = await first.state();
      first.dispose();
      const second = new AdamW(tf, params, spec);
      second.load(saved);
      expect(second.step).toBe(2);
      for (const s of fx.steps.slice(2)) {
        const g = gradsOf(tf, s.clipped_grads);
        second.update(g, s.lr);
        tf.dispose([...g.values()]);
      }
      const last = fx.steps[fx.steps.length - 1];
      for (const n of names) expect(maxRelErr(await params.get(n)!.data(), last.params[n])).toBeLessThan(1e-6);
      second.dispose();
      tf.dispose([...params.values()]);
    });

    it('leaks no tensors across 50 updates, and dispose frees the moments', async () => {
      const params = makeParams(tf);
      const before = tf.memory().numTensors;
      const opt = new AdamW(tf, params, spec);
      const withMoments = tf.memory().numTensors;
      expect(withMoments - before).toBe(2 * names.length);
      for (let i = 0; i < 50; i++) {
        const grads = gradsOf(tf, fx.steps[i % fx.steps.length].grads);
        const clipped = clipByGlobalNorm(tf, grads, i % 2 === 0 ? fx.max_norm : 0);
        opt.update(clipped.grads, 1e-3);
        tf.dispose([...grads.values(), ...clipped.grads.values(), clipped.norm]);
        expect(tf.memory().numTensors).toBe(withMoments);
      }
      opt.load(await opt.state());
      expect(tf.memory().numTensors).toBe(withMoments);
      opt.dispose();
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([...params.values()]);
    });

    it('clipByGlobalNorm with maxNorm 0 returns the gradients unscaled, and the norm', async () => {
      const s = fx.steps.find((x) => x.grad_norm > fx.max_norm)!;
      const grads = gradsOf(tf, s.grads);
      const out = clipByGlobalNorm(tf, grads, 0);
      expect(Math.abs((await out.norm.data())[0] - s.grad_norm) / s.grad_norm).toBeLessThan(1e-5);
      for (const n of names) expect(Array.from(await out.grads.get(n)!.data())).toEqual(Array.from(await grads.get(n)!.data()));
      tf.dispose([...grads.values(), ...out.grads.values(), out.norm]);
      const empty = clipByGlobalNorm(tf, new Map(), 1);
      expect((await empty.norm.data())[0]).toBe(0);
      empty.norm.dispose();
    });

    it('names the tensor in gradient and state errors', async () => {
      const params = makeParams(tf);
      const opt = new AdamW(tf, params, spec);
      const grads = gradsOf(tf, fx.steps[0].grads);
      const bias = 'h.0.attn.c_attn.bias';
      const missing = new Map(grads);
      missing.delete(bias);
      expect(() => opt.update(missing, 1e-3)).toThrow(`no gradient for parameter ${bias}`);
      const wrong = new Map(grads).set(bias, tf.zeros([5]));
      expect(() => opt.update(wrong, 1e-3)).toThrow(`gradient for ${bias} has shape [5], parameter has [6]`);
      expect(() => opt.update(new Map(grads).set('nope', tf.zeros([1])), 1e-3)).toThrow('unknown parameter nope');
      expect(opt.step).toBe(0); // nothing applied

      const state = await opt.state();
      const badShape = { ...state, m: new Map(state.m).set(bias, { shape: [2, 3], data: new Float32Array(6) }) };
      expect(() => opt.load(badShape)).toThrow(ToolError);
      expect(() => opt.load(badShape)).toThrow(`m of ${bias} has shape [2,3], parameter has [6]`);
      const lacking = { ...state, v: new Map(state.v) };
      lacking.v.delete('wte.weight');
      expect(() => opt.load(lacking)).toThrow('v lacks parameter wte.weight');
      const extra = { ...state, v: new Map(state.v).set('lm_head.weight', { shape: [1], data: new Float32Array(1) }) };
      expect(() => opt.load(extra)).toThrow('lm_head.weight that is not a parameter');
      expect(() => opt.decays('nope')).toThrow('no parameter named nope');
      tf.dispose([...grads.values(), wrong.get(bias)!]);
      opt.dispose();
      tf.dispose([...params.values()]);
    });
  });
}

describe('AdamW.decays', () => {
  it('decays matrices only, never biases or norms whatever their shape', async () => {
    const { tf } = await selectBackend('cpu');
    const shapes: [string, number[], boolean][] = [
      ['transformer.wte.weight', [10, 4], true],
      ['transformer.h.0.mlp.c_fc.weight', [4, 16], true],
      ['transformer.h.0.mlp.c_fc.bias', [16], false],
      ['transformer.h.0.ln_1.weight', [4], false],
      ['transformer.ln_f.bias', [4], false],
      ['backbone.blocks.0.layernorm1.gamma', [4], false],
      ['odd.bias', [2, 2], false],
      ['encoder.layer_norm.weight', [2, 2], false],
    ];
    const params = new Map(shapes.map(([n, s]) => [n, tf.variable(tf.zeros(s), true)]));
    const opt = new AdamW(tf, params, spec);
    for (const [n, , want] of shapes) expect(opt.decays(n), n).toBe(want);
    opt.dispose();
    tf.dispose([...params.values()]);
  });
});
