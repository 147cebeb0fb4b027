import { describe, expect, it } from 'vitest';
import { parameterCount, presetConfig } from '../../src/model/config.js';
import { chooseSequenceEngine } from '../../src/train/engine.js';
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

  it('refuses on wasm a model whose weights alone fill wasm\'s 4 GiB (gpt2-xl, LoRA or not), before any weight is read; cpu may take it', () => {
    const lora = { memory: 25e9, trainable: 4e6 };
    expect(() => checkTrainingFits(xl, 'model.init_from gpt2-xl', { ...lora, backend: 'wasm' })).toThrow(
      /^model\.init_from gpt2-xl: 1\.56B parameters are 6\.2 GB in fp32, more than wasm's 4 GiB memory \(our pass's and tfjs-wasm's alike\): run it where --backend tensorflow/,
    );
    expect(() => checkTrainingFits(xl, 'x', { ...lora, backend: 'cpu' })).not.toThrow();
    expect(() => checkTrainingFits(presetConfig('gpt2-large'), 'x', { ...lora, backend: 'wasm' })).not.toThrow(); // 3.1 GB: the pass decides by its layout
    expect(() => chooseSequenceEngine(xl, 'wasm', { batch: 1, length: 1024, training: false })).toThrow(/more than wasm's 4 GiB memory/);
  });
});
