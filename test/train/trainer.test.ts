/** The training step as a library: no tensor leaks over many steps, accumulation and clipping. */
import type * as tfjs from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/backend/select.js';
import type { TokenRecord } from '../../src/data/records.js';
import { presetConfig } from '../../src/model/config.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { initialParameters } from '../../src/model/params.js';
import { AdamW } from '../../src/train/optimizer.js';
import { shiftBatch } from '../../src/train/lm-loss.js';
import { mixSeed } from '../../src/train/step.js';
import { lmTrainStep } from '../helpers.js';

const config = { ...presetConfig('gpt2-tiny'), vocab_size: 97, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 2 };
const batch = (step: number): TokenRecord[] =>
  [0, 1].map((b) => {
    const ids = Int32Array.from({ length: 9 }, (_, t) => (step * 13 + b * 31 + t * 7) % 97);
    return { input_ids: ids, labels: ids, attention_mask: Uint8Array.from({ length: 9 }, (_, t) => (t < 8 - b ? 1 : 0)) };
  });

describe('trainStep', () => {
  it('leaks no tensors: the count after step 2 equals the count after step 200', async () => {
    const { tf } = await selectBackend('wasm');
    const model = GPT2.fromValues(tf, config, initialParameters(config, 3), { trainable: true });
    const optimizer = new AdamW(tf, model.params as Map<string, tfjs.Variable>, { betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1 });
    let after2 = -1;
    let first = 0;
    let last = 0;
    for (let step = 0; step < 200; step++) {
      const r = await lmTrainStep(model, optimizer, [batch(step % 5), batch((step + 1) % 5)], { lr: 3e-3, gradClip: 1, seed: 7, step });
      if (step === 0) first = r.loss;
      last = r.loss;
      if (step === 1) after2 = tf.memory().numTensors;
    }
    expect(tf.memory().numTensors).toBe(after2);
    expect(last).toBeLessThan(first - 1); // and it learns the five repeating batches
    optimizer.dispose();
    model.dispose();
  });

  it('shifts records as the seed does: inputs ids[:-1], labels ids[1:], weights mask[1:]', () => {
    const { inputs, labels, weights } = shiftBatch(batch(1));
    expect(inputs[1]).toEqual(Array.from(batch(1)[1].input_ids.subarray(0, 8)));
    expect(Array.from(labels.subarray(8, 16))).toEqual(Array.from(batch(1)[1].input_ids.subarray(1)));
    expect(Array.from(weights.subarray(8, 16))).toEqual([1, 1, 1, 1, 1, 1, 0, 0]); // mask of row 1 is 1 for t < 7: its [1:] has six ones
  });

  it('seeds dropout per (seed, step, micro-batch)', () => {
    expect(mixSeed(1, 2, 0)).toBe(mixSeed(1, 2, 0));
    expect(new Set([mixSeed(1, 2, 0), mixSeed(1, 2, 1), mixSeed(1, 3, 0), mixSeed(2, 2, 0)]).size).toBe(4);
  });
});
