import { describe, expect, it } from 'vitest';
import { parameterCount, presetConfig } from '../../src/model/config.js';
import { checkTrainingFits } from '../../src/train/fits.js';

describe('checkTrainingFits', () => {
  const xl = presetConfig('gpt2-xl');
  const bytes = 16 * parameterCount(xl); // weights, gradients, two moments in fp32

  it('refuses a model whose weights, gradients and moments take more than 3/4 of the memory, saying what would work', () => {
    expect(() => checkTrainingFits(xl, 'model.preset gpt2-xl', { memory: bytes / 0.75 - 1e6 })).toThrow(/^model\.preset gpt2-xl: 1\.56B parameters need 24\.9 GB in fp32 \(weights, gradients and two AdamW moments\).*LoRA/);
    expect(() => checkTrainingFits(xl, 'x', { memory: bytes / 0.75 + 1e6 })).not.toThrow();
  });

  it('counts gradients and moments only for what trains', () => {
    const few = 4e6;
    expect(() => checkTrainingFits(xl, 'x', { memory: 9e9, trainable: few })).not.toThrow();
    expect(() => checkTrainingFits(xl, 'x', { memory: 9e9 })).toThrow(/1\.56B parameters/);
  });

  it('sends the seed\'s 13b and 52b to parallel training', () => {
    for (const p of ['gpt2-13b', 'gpt2-52b']) expect(() => checkTrainingFits(presetConfig(p), p, { memory: 25e9 })).toThrow(/model and pipeline parallelism/);
  });
});
