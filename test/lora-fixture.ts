/** fixtures/lora/train.* (test/oracle/make_lora_fixtures.py): PyTorch LoRA steps on fixtures/models/tiny. */
import { readFileSync } from 'node:fs';
import { parseSafetensors } from '../src/formats/safetensors.js';
import type { LoraTarget } from '../src/model/lora.js';
import type { ParameterValues } from '../src/model/params.js';
import { fixture } from './helpers.js';

export type FixtureRecord = { input_ids: number[]; attention_mask: number[] };

/** The run: adapter spec, AdamW settings, each step's lr and micro-batches, PyTorch's losses and pre-clip norms. */
export const LORA_TRAIN = JSON.parse(readFileSync(fixture('lora', 'train.json'), 'utf8')) as {
  targets: LoraTarget[];
  rank: number;
  alpha: number;
  optimizer: { betas: [number, number]; eps: number; weight_decay: number; grad_clip: number };
  steps: { lr: number; micro_batches: FixtureRecord[][] }[];
  losses: number[];
  grad_norms: number[];
};

export const tensorsOf = (path: string) => parseSafetensors(readFileSync(path), path).tensors;

/** The entries of a fixture file under `tag/` (init, grad1, step3, …), as ParameterValues. */
export function tagged(file: ReturnType<typeof tensorsOf>, tag: string): ParameterValues {
  return new Map([...file].filter(([n]) => n.startsWith(`${tag}/`)).map(([n, t]) => [n.slice(tag.length + 1), { shape: t.shape, data: t.data }]));
}
