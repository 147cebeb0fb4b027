/**
 * The training step against PyTorch (fixtures/train/step.json and its two safetensors files, made by
 * test/oracle/make_train_step_fixtures.py with autograd in float64 and torch.optim.AdamW), from the
 * tiny fixture model's weights with dropout off, on wasm and cpu:
 *   - a right-padded batch: loss (mean over the real targets only), target count, gradients;
 *   - gradient accumulation: 2 micro-batches of 2 records give the gradient of one batch of 4;
 *   - 3 steps with clipping active and AdamW: losses, pre-clip norms and every weight after each step.
 * Also the mean next-token losses that fixtures/models/<dir>/expected.json hold, through the training
 * loss (lmHeadLoss) and the evaluation one (crossEntropySum).
 *
 * Tolerances, set from float32 against the float64 reference (measured here on wasm and cpu) and far
 * below what a wrong step moves (the generator prints and asserts those distances):
 *   - loss, relative 1e-5: measured ≤ 1e-7 (logits are within ~2.3e-6 of the reference,
 *     fixtures/models/README.md, and the loss is ~6); a loss that also averages the masked targets is
 *     3% off on the padded batch.
 *   - gradients, per tensor ‖ours − torch‖ / ‖torch‖ < 1e-4: measured ≤ 1e-6; keeping only the last
 *     micro-batch is ≥ 39% off in every tensor. Global norms, relative 1e-5: measured ≤ 1.4e-6.
 *   - weights after each AdamW step, absolute 1e-5: measured ≤ 1.2e-6 (a float32 run of the generator:
 *     5e-7; its eps is 1e-5 so no element is ill-conditioned, see the generator); updates are ~lr =
 *     1e-3..3e-3, weight decay lr·0.1·|w| up to ~2e-4 by step 3, and adding eps before the bias correction moves a
 *     weight by 3.6e-4 at step 1.
 */
import { readFileSync } from 'node:fs';
import type * as tfjs from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import type { TokenRecord } from '../../src/data/records.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { readSafetensors, type Tensor32 } from '../../src/formats/safetensors.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { lmHeadLoss } from '../../src/train/lm-loss.js';
import { crossEntropySum } from '../../src/train/loss.js';
import { AdamW } from '../../src/train/optimizer.js';
import { fixture, lmTrainStep, normDiffRatio } from '../helpers.js';

const LOSS_REL = 1e-5;
const GRAD_REL = 1e-4;
const NORM_REL = 1e-5;
const WEIGHT_ABS = 1e-5;

interface FixtureRecord {
  input_ids: number[];
  attention_mask: number[];
}
interface StepFixture {
  model: string;
  masked: { records: FixtureRecord[]; loss: number; tokens: number; grad_norm: number };
  accumulation: { micro_batches: FixtureRecord[][]; loss: number; grad_norm: number };
  adamw: {
    betas: [number, number];
    eps: number;
    weight_decay: number;
    grad_clip: number;
    steps: { lr: number; micro_batches: FixtureRecord[][]; loss: number; grad_norm: number; tokens: number }[];
  };
}

const fx = JSON.parse(readFileSync(fixture('train', 'step.json'), 'utf8')) as StepFixture;

/** Records as the data pipeline gives them (labels = input_ids, as the generator's HF labels). */
const records = (rs: FixtureRecord[]): TokenRecord[] =>
  rs.map((r) => ({ input_ids: Int32Array.from(r.input_ids), attention_mask: Uint8Array.from(r.attention_mask), labels: Int32Array.from(r.input_ids) }));

/** Tensors of a fixture file stored under "<tag>/<name>", by name. */
function tagged(file: Map<string, Tensor32>, tag: string): Map<string, Tensor32> {
  const out = new Map<string, Tensor32>();
  for (const [key, t] of file) if (key.startsWith(`${tag}/`)) out.set(key.slice(tag.length + 1), t);
  return out;
}

const relErr = (got: number, want: number) => Math.abs(got - want) / Math.abs(want);


/** Stands in for AdamW: keeps the (unclipped, with gradClip 0) gradients trainStep hands it, changes nothing. */
class RecordingOptimizer {
  grads = new Map<string, Float32Array>();
  update(grads: Map<string, tfjs.Tensor>): void {
    for (const [name, g] of grads) this.grads.set(name, g.dataSync() as Float32Array);
  }
}

for (const backendName of ['wasm', 'cpu'] as const) {
  describe(`training step on ${backendName} against PyTorch`, () => {
    let tf: Tf;
    let grads: Map<string, Tensor32>;
    let model: () => Promise<GPT2>;
    beforeAll(async () => {
      tf = (await selectBackend(backendName)).tf;
      grads = (await readSafetensors(fixture('train', 'step-grads.safetensors'))).tensors;
      const ck = await loadCheckpoint(fixture(...fx.model.split('/').slice(1)));
      const config = { ...ck.config, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
      model = async () => GPT2.fromValues(tf, config, ck.values, { trainable: true });
    });

    /** trainStep's gradients (no clipping, no update) and result for micro-batches of fixture records. */
    async function gradientsOf(microBatches: FixtureRecord[][]) {
      const m = await model();
      const recorder = new RecordingOptimizer();
      const result = await lmTrainStep(m, recorder as unknown as AdamW, microBatches.map(records), { lr: 0, gradClip: 0, seed: 1, step: 0 });
      m.dispose();
      return { result, grads: recorder.grads };
    }

    function expectGradients(got: Map<string, Float32Array>, want: Map<string, Tensor32>): void {
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [name, w] of want) expect(normDiffRatio(got.get(name)!, w.data), name).toBeLessThan(GRAD_REL);
    }

    it('padded batch: the loss averages the real targets only; gradients and their norm equal PyTorch’s', async () => {
      const { result, grads: got } = await gradientsOf([fx.masked.records]);
      expect(result.tokens).toBe(fx.masked.tokens);
      expect(relErr(result.loss, fx.masked.loss)).toBeLessThan(LOSS_REL);
      expect(relErr(result.gradNorm, fx.masked.grad_norm)).toBeLessThan(NORM_REL);
      expectGradients(got, tagged(grads, 'masked'));
    });

    it('2 accumulated micro-batches of 2 records give the gradient of one batch of 4', async () => {
      const want = tagged(grads, 'accumulation');
      const accumulated = await gradientsOf(fx.accumulation.micro_batches);
      expect(relErr(accumulated.result.loss, fx.accumulation.loss)).toBeLessThan(LOSS_REL);
      expect(relErr(accumulated.result.gradNorm, fx.accumulation.grad_norm)).toBeLessThan(NORM_REL);
      expectGradients(accumulated.grads, want);
      const whole = await gradientsOf([fx.accumulation.micro_batches.flat()]);
      expect(relErr(whole.result.loss, fx.accumulation.loss)).toBeLessThan(LOSS_REL);
      expectGradients(whole.grads, want);
    });

    it('3 clipped AdamW steps: losses, pre-clip norms and every weight after each step equal PyTorch’s', async () => {
      const weights = (await readSafetensors(fixture('train', 'step-adamw.safetensors'))).tensors;
      const m = await model();
      const { betas, eps, weight_decay, grad_clip } = fx.adamw;
      const optimizer = new AdamW(tf, m.params as Map<string, tfjs.Variable>, { betas, eps, weight_decay });
      for (const [k, s] of fx.adamw.steps.entries()) {
        const result = await lmTrainStep(m, optimizer, s.micro_batches.map(records), { lr: s.lr, gradClip: grad_clip, seed: 1, step: k });
        expect(s.grad_norm).toBeGreaterThan(grad_clip); // clipping is active in every step
        expect(result.tokens, `tokens at step ${k + 1}`).toBe(s.tokens);
        expect(relErr(result.loss, s.loss), `loss at step ${k + 1}`).toBeLessThan(LOSS_REL);
        expect(relErr(result.gradNorm, s.grad_norm), `norm at step ${k + 1}`).toBeLessThan(NORM_REL);
        const want = tagged(weights, `step${k + 1}`);
        expect(want.size).toBe(m.params.size);
        for (const [name, w] of want) {
          const got = (await m.params.get(name)!.data()) as Float32Array;
          let worst = 0;
          for (let i = 0; i < w.data.length; i++) worst = Math.max(worst, Math.abs(got[i] - w.data[i]));
          expect(worst, `${name} after step ${k + 1}`).toBeLessThan(WEIGHT_ABS);
        }
      }
      optimizer.dispose();
      m.dispose();
    });

    it.each(['tiny', 'tiny-gelu', 'tiny-fastgelu', 'tiny-f16', 'tiny-bf16'])(
      '%s: the training and evaluation losses equal expected.json’s PyTorch loss',
      async (dir) => {
        const { loss } = JSON.parse(readFileSync(fixture('models', dir, 'expected.json'), 'utf8')) as { loss: { block: number[]; value: number } };
        const ck = await loadCheckpoint(fixture('models', dir));
        const m = GPT2.fromValues(tf, ck.config, ck.values);
        const labels = Int32Array.from(loss.block.slice(1));
        const { hidden } = m.hidden([loss.block.slice(0, -1)]);
        const h2 = tf.reshape(hidden, [labels.length, ck.config.n_embd]) as tfjs.Tensor2D;
        const train = lmHeadLoss(tf, h2, m.param('wte.weight') as tfjs.Tensor2D, labels, new Float32Array(labels.length).fill(1));
        expect(relErr((await train.data())[0], loss.value)).toBeLessThan(LOSS_REL);
        const evaluated = await crossEntropySum(m, h2, labels, new Uint8Array(labels.length).fill(1));
        expect(evaluated.count).toBe(labels.length);
        expect(relErr(evaluated.sum / evaluated.count, loss.value)).toBeLessThan(LOSS_REL);
        tf.dispose([hidden, h2, train]);
        m.dispose();
      },
    );
  });
}
