/**
 * WasmDecoder (inference outside the tfjs engine) against GPT2.forward over the whole sequence,
 * for each activation, over both heaps: the tfjs wasm heap under a GPT2, and DecodeModel's shared
 * memory with products on two threads. Rows are computed alone, so a batch with left padding, a
 * prompt taken in one call, and one or two threads all give the same bits.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { DecodeModel } from '../../src/model/decode-model.js';
import type { GPT2 } from '../../src/model/gpt2.js';
import { tfjsHeap, WasmDecoder } from '../../src/model/wasm-decoder.js';
import { fixture, fixtureModel } from '../helpers.js';

let tf: Tf;
beforeAll(async () => {
  tf = (await selectBackend('wasm')).tf;
});

/** Logits of the last position, through the whole-sequence forward pass. */
function lastLogits(m: GPT2, ids: number[]): Float32Array {
  const { logits } = m.forward([ids]);
  const last = tf.tidy(() => tf.slice(logits, [0, ids.length - 1, 0], [1, 1, -1]).dataSync() as Float32Array);
  logits.dispose();
  return last;
}

const padded = (prompts: number[][]) => {
  const width = Math.max(...prompts.map((p) => p.length));
  const pad = prompts.map((p) => width - p.length);
  return {
    width,
    pad,
    rows: prompts.map((p, b) => [...Array<number>(pad[b]).fill(0), ...p]),
    positions: prompts.map((_, b) => Array.from({ length: width }, (_, t) => Math.max(0, t - pad[b]))),
  };
};

/** Prefill `prompts` through GPT2.hidden, then decode steps[b][s] with WasmDecoder on the tfjs heap. */
function decodeOnTfjsHeap(m: GPT2, prompts: number[][], steps: number[][]): Float32Array[] {
  const { width, pad, rows, positions } = padded(prompts);
  const mask = prompts.map((_, b) => Array.from({ length: width }, (_, t) => (t < pad[b] ? 0 : 1)));
  const { hidden, cache } = m.hidden(rows, { useCache: true, attentionMask: mask, positionIds: positions });
  hidden.dispose();
  const decoder = new WasmDecoder(tfjsHeap(m)!, m.config, prompts.length, width + steps[0].length, pad);
  decoder.load(cache!);
  tf.dispose(cache!.layers.flatMap((l) => [l.k, l.v]));
  const out = steps[0].map((_, s) => decoder.step(steps.map((row) => row[s]), prompts.map((p) => p.length + s)));
  decoder.dispose();
  return out;
}

/** The same with DecodeModel: the prompt in one call (or token by token), then the steps. */
function decodeOnModel(dm: DecodeModel, prompts: number[][], steps: number[][], promptAtOnce = true): Float32Array[] {
  const { width, pad, rows, positions } = padded(prompts);
  const decoder = dm.decoder(prompts.length, width + steps[0].length, pad, promptAtOnce ? width : 1);
  if (promptAtOnce) decoder.forward(rows, positions);
  else for (let t = 0; t < width; t++) decoder.step(rows.map((r) => r[t]), positions.map((p) => p[t]));
  const out = steps[0].map((_, s) => decoder.step(steps.map((row) => row[s]), prompts.map((p) => p.length + s)));
  decoder.dispose();
  return out;
}

function expectNear(got: Float32Array, want: Float32Array, what: string): void {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  expect(worst, what).toBeLessThan(1e-4);
}

describe.each(['tiny', 'tiny-gelu', 'tiny-fastgelu'])('WasmDecoder on %s', (dir) => {
  const prompt = [5, 17, 200, 3, 99];
  const next = [42, 7, 311, 0, 128, 64];

  it('each step gives the logits of a forward pass over the whole sequence (tfjs heap)', async () => {
    const m = await fixtureModel(tf, dir);
    const before = tf.memory().numTensors;
    const steps = decodeOnTfjsHeap(m, [prompt], [next]);
    expect(tf.memory().numTensors).toBe(before);
    for (const [s, logits] of steps.entries()) expectNear(logits, lastLogits(m, [...prompt, ...next.slice(0, s + 1)]), `step ${s}`);
    m.dispose();
  });

  it('DecodeModel on two threads gives the same logits, bit for bit, as on one, and as the tfjs heap within 1e-4', async () => {
    const m = await fixtureModel(tf, dir);
    const ck = await loadCheckpoint(fixture('models', dir));
    const [one, two] = [DecodeModel.fromValues(ck.config, ck.values, 1), DecodeModel.fromValues(ck.config, ck.values, 2)];
    expect([one.threads, two.threads]).toEqual([1, 2]);
    const a = decodeOnModel(one, [prompt], [next]);
    const b = decodeOnModel(two, [prompt], [next]);
    for (const [s, logits] of a.entries()) {
      expect(Array.from(b[s]), `step ${s}`).toEqual(Array.from(logits));
      expectNear(logits, lastLogits(m, [...prompt, ...next.slice(0, s + 1)]), `step ${s}`);
    }
    one.dispose();
    two.dispose();
    m.dispose();
  });
});

describe('WasmDecoder batches and prompts', () => {
  const prompts = [[11, 12, 13, 14, 15, 16], [300, 1], [7, 8, 9]];
  const next = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];

  it('a left-padded batch gives each sequence the logits it gets alone, bit for bit (tfjs heap)', async () => {
    const m = await fixtureModel(tf, 'tiny');
    const together = decodeOnTfjsHeap(m, prompts, next);
    const vocab = m.config.vocab_size;
    for (const [b, p] of prompts.entries()) {
      const alone = decodeOnTfjsHeap(m, [p], [next[b]]);
      for (const [s, logits] of alone.entries()) expect(Array.from(together[s].subarray(b * vocab, (b + 1) * vocab)), `sequence ${b} step ${s}`).toEqual(Array.from(logits));
      expectNear(together[3].subarray(b * vocab, (b + 1) * vocab), lastLogits(m, [...p, ...next[b]]), `sequence ${b}`);
    }
    m.dispose();
  });

  it('DecodeModel: batch or alone, prompt in one call or token by token, the same bits', async () => {
    const ck = await loadCheckpoint(fixture('models', 'tiny'));
    const dm = DecodeModel.fromValues(ck.config, ck.values, 2);
    const vocab = ck.config.vocab_size;
    const together = decodeOnModel(dm, prompts, next);
    for (const [b, p] of prompts.entries()) {
      for (const promptAtOnce of [true, false]) {
        const alone = decodeOnModel(dm, [p], [next[b]], promptAtOnce);
        for (const [s, logits] of alone.entries()) expect(Array.from(together[s].subarray(b * vocab, (b + 1) * vocab)), `sequence ${b} step ${s}`).toEqual(Array.from(logits));
      }
    }
    dm.dispose();
  });

  it('refuses to run past its capacity, and has no tfjs heap on other backends', async () => {
    const ck = await loadCheckpoint(fixture('models', 'tiny'));
    const dm = DecodeModel.fromValues(ck.config, ck.values, 1);
    const decoder = dm.decoder(1, 3, [0], 2);
    decoder.forward([[1, 2]], [[0, 1]]);
    decoder.step([3], [2]);
    expect(() => decoder.step([4], [3])).toThrow(/full/);
    expect(() => decoder.forward([[1, 2, 3]], [[0, 1, 2]])).toThrow(/1…2 tokens/);
    decoder.dispose();
    dm.dispose();
    await selectBackend('cpu');
    const onCpu = await fixtureModel(tf, 'tiny');
    expect(tfjsHeap(onCpu)).toBeUndefined();
    onCpu.dispose();
    await selectBackend('wasm');
  });
});
