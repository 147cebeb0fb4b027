/**
 * WasmDecoder (decode steps outside the tfjs engine) against GPT2.forward over the whole sequence,
 * for each activation; a batch with left padding against each sequence alone (bit for bit).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import type { GPT2 } from '../../src/model/gpt2.js';
import { WasmDecoder } from '../../src/model/wasm-decoder.js';
import { fixtureModel } from '../helpers.js';

let tf: Tf;
beforeAll(async () => {
  tf = (await selectBackend('wasm')).tf;
});

const model = (dir: string): Promise<GPT2> => fixtureModel(tf, dir);

/** Logits of the last position of each sequence, through the whole-sequence forward pass. */
function lastLogits(m: GPT2, ids: number[]): Float32Array {
  const { logits } = m.forward([ids]);
  const last = tf.tidy(() => tf.slice(logits, [0, ids.length - 1, 0], [1, 1, -1]).dataSync() as Float32Array);
  logits.dispose();
  return last;
}

/** Prefill `prompts` (left-padded with 0) through GPT2.hidden, then decode `steps` tokens each. */
function decode(m: GPT2, prompts: number[][], steps: number[][]): Float32Array[] {
  const width = Math.max(...prompts.map((p) => p.length));
  const pad = prompts.map((p) => width - p.length);
  const { hidden, cache } = m.hidden(
    prompts.map((p, b) => [...Array(pad[b]).fill(0), ...p]),
    { useCache: true, attentionMask: prompts.map((_, b) => Array.from({ length: width }, (_, t) => (t < pad[b] ? 0 : 1))), positionIds: prompts.map((_, b) => Array.from({ length: width }, (_, t) => Math.max(0, t - pad[b]))) },
  );
  hidden.dispose();
  const decoder = WasmDecoder.create(m, prompts.length, width + steps[0].length, pad)!;
  expect(decoder).toBeDefined();
  decoder.load(cache!);
  tf.dispose(cache!.layers.flatMap((l) => [l.k, l.v]));
  const out = steps[0].map((_, s) => decoder.step(steps.map((row) => row[s]), prompts.map((p) => p.length + s)));
  decoder.dispose();
  return out;
}

describe.each(['tiny', 'tiny-gelu', 'tiny-fastgelu'])('WasmDecoder on %s', (dir) => {
  it('each step gives the logits of a forward pass over the whole sequence', async () => {
    const m = await model(dir);
    const before = tf.memory().numTensors;
    const prompt = [5, 17, 200, 3, 99];
    const next = [42, 7, 311, 0, 128, 64];
    const steps = decode(m, [prompt], [next]);
    expect(tf.memory().numTensors).toBe(before);
    for (const [s, logits] of steps.entries()) {
      const want = lastLogits(m, [...prompt, ...next.slice(0, s + 1)]);
      expect(logits.length).toBe(m.config.vocab_size);
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(logits[i] - want[i]));
      expect(worst, `step ${s}`).toBeLessThan(1e-4);
    }
    m.dispose();
  });
});

describe('WasmDecoder batches', () => {
  it('a left-padded batch gives each sequence the logits it gets alone, bit for bit', async () => {
    const m = await model('tiny');
    const prompts = [[11, 12, 13, 14, 15, 16], [300, 1], [7, 8, 9]];
    const next = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];
    const together = decode(m, prompts, next);
    const vocab = m.config.vocab_size;
    for (const [b, p] of prompts.entries()) {
      const alone = decode(m, [p], [next[b]]);
      for (const [s, logits] of alone.entries()) expect(Array.from(together[s].subarray(b * vocab, (b + 1) * vocab)), `sequence ${b} step ${s}`).toEqual(Array.from(logits));
      // and the padded run agrees with the plain forward pass of the unpadded sequence
      const want = lastLogits(m, [...p, ...next[b]]);
      const got = together[3].subarray(b * vocab, (b + 1) * vocab);
      for (let i = 0; i < vocab; i++) expect(Math.abs(got[i] - want[i])).toBeLessThan(1e-4);
    }
    m.dispose();
  });

  it('is not offered on other backends, and refuses to run past its capacity', async () => {
    const m = await model('tiny');
    const { hidden, cache } = m.hidden([[1, 2]], { useCache: true });
    hidden.dispose();
    const decoder = WasmDecoder.create(m, 1, 3, [0])!;
    decoder.load(cache!);
    decoder.step([3], [2]);
    expect(() => decoder.step([4], [3])).toThrow(/full/);
    decoder.dispose();
    tf.dispose(cache!.layers.flatMap((l) => [l.k, l.v]));
    m.dispose();
    await selectBackend('cpu');
    const onCpu = await model('tiny');
    expect(WasmDecoder.create(onCpu, 1, 8, [0])).toBeUndefined();
    onCpu.dispose();
    await selectBackend('wasm');
  });
});
