/**
 * Dropout in the full-sequence pass (src/model/train-dropout.ts, src/backend/wasm-dropout.ts):
 *   - gradients against an oracle written here in tfjs (cpu, float32): GPT-2's forward with the
 *     pass's masks applied as tensors at HF's four sites, differentiated by tf.grads — one step of
 *     two padded micro-batches, different rates for embd, attn and resid, with one attention block
 *     and head chunk and with query blocks of 3 and head chunks of 5;
 *   - the masks: kept fractions within a binomial bound, every lane of a vector and every step of
 *     the column counter drawing alike, neighbours independent, and sites, layers, steps,
 *     micro-batches and seeds drawing independent masks, the same ones the same mask;
 *   - determinism: the same steps give the same bits, on 1 thread and on 2; evaluation draws
 *     nothing; p = 0 is the dropout-free step bit for bit, whatever the seed and step.
 * Measured: loss within 2e-7 relative of the oracle's, gradients within 1.5e-6 per tensor (a norm
 * ratio). Planted bugs each fail the oracle test by orders of magnitude: the attention backward
 * drawing row i of the block instead of the block's row of the sequence (only with blocks of 3),
 * the keep factor 1/(1−p) left out of the residual sites, the attention mask applied to the scores
 * before the softmax (probabilities divided by a dropped-out sum).
 */
import { readFileSync } from 'node:fs';
import type * as tfjs from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { pooledGemm } from '../../src/backend/kernel-pool.js';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { MAX_PAGES, wasmApi } from '../../src/backend/wasm-asm.js';
import { RowKernels } from '../../src/backend/wasm-rows.js';
import type { TokenRecord } from '../../src/data/records.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import type { GPT2Config } from '../../src/model/config.js';
import type { ParameterValues } from '../../src/model/params.js';
import { DropoutDraw, SITES, type Site } from '../../src/model/train-dropout.js';
import { PassTrainer, type PassTrainerOptions } from '../../src/train/pass-trainer.js';
import { shiftBatch } from '../../src/train/lm-loss.js';
import { fixture } from '../helpers.js';

type FixtureRecord = { input_ids: number[]; attention_mask: number[] };
const fx = JSON.parse(readFileSync(fixture('train', 'step.json'), 'utf8')) as { adamw: { steps: { lr: number; micro_batches: FixtureRecord[][] }[] } };
const records = (rs: FixtureRecord[]): TokenRecord[] => rs.map((r) => ({ input_ids: Int32Array.from(r.input_ids), attention_mask: Uint8Array.from(r.attention_mask), labels: Int32Array.from(r.input_ids) }));
const STEPS = fx.adamw.steps.map((s) => ({ lr: s.lr, micro: s.micro_batches.map(records) }));
const spec = { betas: [0.9, 0.95] as [number, number], eps: 1e-8, weight_decay: 0.1 };
const RATES = { embd_pdrop: 0.1, attn_pdrop: 0.2, resid_pdrop: 0.3 };
const [SEED, STEP] = [1234, 7];

let tiny: { config: GPT2Config; values: ParameterValues };
beforeAll(async () => {
  const ck = await loadCheckpoint(fixture('models', 'tiny'));
  tiny = { config: { ...ck.config, ...RATES }, values: ck.values };
});

/** The pass's mask of a site as dropout factors (0 or 1/(1−p)), drawn by its own kernel over ones: rows × width from row 0. */
function maskOf(draw: DropoutDraw, site: Site, layer: number, rows: number, width: number): Float32Array {
  const memory = new wasmApi.Memory({ initial: Math.ceil((2 * rows * width + 64) / 16384), maximum: MAX_PAGES, shared: true });
  const heap = new Float32Array(memory.buffer);
  const drop = draw.at(site, layer);
  if (!drop) return new Float32Array(rows * width).fill(1);
  heap.fill(1, 16, 16 + rows * width);
  new RowKernels(memory, 0).dropout(16, 16, rows, width, drop, drop.scale);
  return heap.slice(16, 16 + rows * width);
}

function normDiffRatio(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let [diff, ref] = [0, 0];
  for (let i = 0; i < want.length; i++) {
    diff += (got[i] - want[i]) ** 2;
    ref += want[i] ** 2;
  }
  return Math.sqrt(diff / ref);
}

/**
 * step.ts's loss (each micro-batch's weighted mean, averaged over micro-batches) of GPT-2 written
 * out in tfjs, with dropout as multiplication by the given masks: after wte + wpe, on the softmax's
 * probabilities, on each output projection before its residual.
 */
function oracleLoss(tf: Tf, config: GPT2Config, P: Map<string, tfjs.Tensor>, micro: TokenRecord[][]): tfjs.Scalar {
  const { n_embd: C, n_head: H, n_layer: L, layer_norm_epsilon: eps } = config;
  const hd = C / H;
  const p = (name: string) => P.get(`transformer.${name}`)!;
  const ln = (x: tfjs.Tensor, name: string) => {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), p(`${name}.weight`)), p(`${name}.bias`));
  };
  const linear = (x: tfjs.Tensor, name: string) => tf.add(tf.matMul(x as tfjs.Tensor2D, p(`${name}.weight`) as tfjs.Tensor2D), p(`${name}.bias`));
  const gelu = (x: tfjs.Tensor) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3)))))));
  const losses = micro.map((recs, m) => {
    const { inputs, labels, weights } = shiftBatch(recs);
    const [B, T] = [inputs.length, inputs[0].length];
    const R = B * T;
    const draw = DropoutDraw.of(config, SEED, STEP, m)!;
    const mask = (site: Site, layer: number, shape: number[], rows: number, width: number) => tf.tensor(maskOf(draw, site, layer, rows, width), shape);
    const heads = (x: tfjs.Tensor) => tf.transpose(tf.reshape(x, [B, T, H, hd]), [0, 2, 1, 3]);
    const causal = tf.tensor(Array.from({ length: T * T }, (_, i) => (i % T > Math.floor(i / T) ? -1e9 : 0)), [T, T]);
    const positions = tf.tensor1d(Array.from({ length: R }, (_, r) => r % T), 'int32');
    let x = tf.add(tf.gather(p('wte.weight'), tf.tensor1d(inputs.flat(), 'int32')), tf.gather(p('wpe.weight'), positions));
    x = tf.mul(x, mask('embd', 0, [R, C], R, C));
    for (let l = 0; l < L; l++) {
      const [q, k, v] = tf.split(linear(ln(x, `h.${l}.ln_1`), `h.${l}.attn.c_attn`), 3, 1).map(heads);
      const probs = tf.softmax(tf.add(tf.div(tf.matMul(q as tfjs.Tensor4D, k as tfjs.Tensor4D, false, true), Math.sqrt(hd)), causal));
      const dropped = tf.mul(probs, mask('attn', l, [B, H, T, T], B * H * T, T));
      const out = tf.reshape(tf.transpose(tf.matMul(dropped as tfjs.Tensor4D, v as tfjs.Tensor4D), [0, 2, 1, 3]), [R, C]);
      x = tf.add(x, tf.mul(linear(out, `h.${l}.attn.c_proj`), mask('proj', l, [R, C], R, C)));
      const inner = gelu(linear(ln(x, `h.${l}.ln_2`), `h.${l}.mlp.c_fc`));
      x = tf.add(x, tf.mul(linear(inner, `h.${l}.mlp.c_proj`), mask('mlp', l, [R, C], R, C)));
    }
    const logits = tf.matMul(ln(x, 'ln_f') as tfjs.Tensor2D, p('wte.weight') as tfjs.Tensor2D, false, true);
    const picked = tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.tensor1d(labels, 'int32'), config.vocab_size)), 1);
    const w = tf.tensor1d(weights);
    return tf.div(tf.neg(tf.sum(tf.mul(picked, w))), tf.sum(w));
  });
  return tf.div(tf.addN(losses), micro.length) as tfjs.Scalar;
}

function trainer(config: GPT2Config, options: Partial<PassTrainerOptions> = {}): PassTrainer {
  return PassTrainer.create(config, tiny.values, { batch: 2, length: 8, optimizer: spec, ...options });
}

describe('dropout in the pass against tfjs autodiff with the pass’s masks', () => {
  let tf: Tf;
  beforeAll(async () => {
    tf = (await selectBackend('cpu')).tf;
  });

  it.each([
    { name: 'one attention block, one head chunk' },
    { name: 'query blocks of 3, head chunks of 5', queryBlock: 3, headRows: 5 },
  ])('$name: the loss and every gradient of a step of 2 padded micro-batches', ({ queryBlock, headRows }) => {
    const { config } = tiny;
    const names = [...tiny.values.keys()];
    const params = names.map((n) => tf.tensor(tiny.values.get(n)!.data, tiny.values.get(n)!.shape));
    const micro = STEPS[0].micro;
    const { value, grads } = tf.valueAndGrads((...ts: tfjs.Tensor[]) => oracleLoss(tf, config, new Map(names.map((n, i) => [n, ts[i]])), micro))(params);
    const t = trainer(config, { queryBlock, headRows });
    const got = t.trainStep(micro, { lr: 0, gradClip: 0, seed: SEED, step: STEP });
    const want = value.dataSync()[0];
    expect(Math.abs(got.loss - want) / want).toBeLessThan(1e-6);
    const passGrads = t.gradients();
    names.forEach((n, i) => expect(normDiffRatio(passGrads.get(n)!.data, grads[i].dataSync()), n).toBeLessThan(5e-6));
    // dropout did something: the step without it is another step
    const plain = trainer({ ...config, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 }).trainStep(micro, { lr: 0, gradClip: 0 });
    expect(Math.abs(plain.loss - got.loss)).toBeGreaterThan(1e-3);
    t.dispose();
    tf.dispose([value, ...grads, ...params]);
  });
});

/** Masks of p = 0.5 over `rows` × 1024 as booleans (kept), for the statistics. */
function kept(draw: DropoutDraw, site: Site, layer: number, rows: number): Uint8Array {
  return Uint8Array.from(maskOf(draw, site, layer, rows, 1024), (v) => (v > 0 ? 1 : 0));
}
const half = (): GPT2Config => ({ ...tiny.config, embd_pdrop: 0.5, attn_pdrop: 0.5, resid_pdrop: 0.5 });
/** |count − n·q| within 5 standard deviations of a binomial(n, q). */
const expectBinomial = (count: number, n: number, q: number, what: string) => expect(Math.abs(count - n * q), what).toBeLessThan(5 * Math.sqrt(n * q * (1 - q)));

describe('dropout masks', () => {
  it('keep 1 − p of the elements, within a binomial bound, for p = 0.1, 0.2, 0.3 and 0.5', () => {
    const n = 512 * 1024;
    for (const [config, site, p] of [[tiny.config, 'embd', 0.1], [tiny.config, 'attn', 0.2], [tiny.config, 'mlp', 0.3], [half(), 'proj', 0.5]] as const) {
      const mask = maskOf(DropoutDraw.of(config, SEED, STEP, 0)!, site, 1, 512, 1024);
      const scale = Math.fround(1 / (1 - p));
      expect(mask.every((v) => v === 0 || v === scale), `${site}: factors 0 and 1/(1−p)`).toBe(true);
      expectBinomial(mask.filter((v) => v > 0).length, n, 1 - p, `${site} kept`);
    }
  });

  it('every lane and column phase draws alike; neighbours along rows and columns are independent', () => {
    const mask = kept(DropoutDraw.of(half(), SEED, STEP, 0)!, 'attn', 0, 512);
    const n = mask.length;
    for (let lane = 0; lane < 8; lane++) expectBinomial(mask.filter((v, i) => v === 1 && i % 8 === lane).length, n / 8, 0.5, `column ≡ ${lane} mod 8`);
    let [right, below] = [0, 0];
    for (let i = 0; i + 1024 < n; i++) {
      right += mask[i] & mask[i + 1];
      below += mask[i] & mask[i + 1024];
    }
    expectBinomial(right, n - 1024, 0.25, 'both kept, side by side');
    expectBinomial(below, n - 1024, 0.25, 'both kept, one above the other');
  });

  it('sites, layers, steps, micro-batches and seeds draw independent masks; the same ones the same mask', () => {
    const config = half();
    const base = kept(DropoutDraw.of(config, SEED, STEP, 1)!, 'proj', 1, 256);
    expect(kept(DropoutDraw.of(config, SEED, STEP, 1)!, 'proj', 1, 256)).toEqual(base);
    const others: [string, Uint8Array][] = [
      ...SITES.filter((s) => s !== 'proj').map((s): [string, Uint8Array] => [`site ${s}`, kept(DropoutDraw.of(config, SEED, STEP, 1)!, s, 1, 256)]),
      ['layer 0', kept(DropoutDraw.of(config, SEED, STEP, 1)!, 'proj', 0, 256)],
      ['step + 1', kept(DropoutDraw.of(config, SEED, STEP + 1, 1)!, 'proj', 1, 256)],
      ['micro-batch 0', kept(DropoutDraw.of(config, SEED, STEP, 0)!, 'proj', 1, 256)],
      ['seed + 1', kept(DropoutDraw.of(config, SEED + 1, STEP, 1)!, 'proj', 1, 256)],
      ['seed + 2³²', kept(DropoutDraw.of(config, SEED + 2 ** 32, STEP, 1)!, 'proj', 1, 256)],
    ];
    for (const [what, mask] of others) expectBinomial(mask.filter((v, i) => v === base[i]).length, base.length, 0.5, `${what}: agreement with the base mask`);
  });
});

describe('dropout in PassTrainer', () => {
  const run = (config: GPT2Config, options: Partial<PassTrainerOptions>, seed = SEED) => {
    const t = trainer(config, { headRows: 3, queryBlock: 5, ...options });
    const losses = STEPS.map((s, k) => t.trainStep(s.micro, { lr: s.lr, gradClip: 1, seed, step: k }));
    const bytes = Buffer.concat([...t.values().values(), ...t.optimizerState().m.values(), ...t.optimizerState().v.values()].map((v) => Buffer.from(v.data.slice().buffer)));
    t.dispose();
    return { losses, bytes };
  };

  it('the same steps give the same bits, on 1 thread and on 2 (the masks are drawn on the calling thread)', () => {
    const one = run(tiny.config, { gemm: pooledGemm(1) });
    const two = run(tiny.config, { gemm: pooledGemm(2) });
    expect(two.losses).toEqual(one.losses);
    expect(two.bytes.equals(one.bytes)).toBe(true);
    expect(run(tiny.config, {}, SEED + 1).bytes.equals(run(tiny.config, {}).bytes)).toBe(false);
  });

  it('p = 0 is the dropout-free step, bit for bit, whatever the seed and step; it needs neither', () => {
    const none = { ...tiny.config, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
    expect(DropoutDraw.of(none, SEED, STEP, 0)).toBeUndefined();
    const t = trainer(none);
    const plain = STEPS.map((s) => t.trainStep(s.micro, { lr: s.lr, gradClip: 1 }));
    const bytes = Buffer.concat([...t.values().values()].map((v) => Buffer.from(v.data.slice().buffer)));
    const seeded = run(none, { headRows: undefined, queryBlock: undefined }, 99);
    expect(seeded.losses).toEqual(plain);
    expect(seeded.bytes.subarray(0, bytes.length).equals(bytes)).toBe(true);
  });

  it('evaluation draws no masks; training with dropout needs the seed and step', () => {
    const records = STEPS[0].micro[0];
    const plain = PassTrainer.create({ ...tiny.config, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 }, tiny.values, { batch: 2, length: 8 });
    expect(trainer(tiny.config).evalLoss(records)).toEqual(plain.evalLoss(records));
    expect(() => trainer(tiny.config).trainStep([records], { lr: 0, gradClip: 0 })).toThrow('a model with dropout needs the seed and step');
  });
});
