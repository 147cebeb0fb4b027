/**
 * WasmDecoder over weights kept as f16 and Q8_0 (DecodeModel.fromSources(…, dtype)): its logits
 * are those of the same model with each weight matrix replaced by its f16 / Q8_0 value, decoded
 * here by the formats' own code (src/formats/dtypes.ts, q8_0.ts, llama.cpp's quantiser) — bit for
 * bit against the f32 decoder over those values (itself held to PyTorch by wasm-decoder.test.ts)
 * for f16, within 1e-4 for Q8_0's integer few-row kernels (expectLogits), within float32 tolerance of GPT2.forward on tfjs; the same bits on one thread
 * and two.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { readFileSync } from 'node:fs';
import { loadCheckpoint, openCheckpoint } from '../../src/formats/checkpoint.js';
import { readGgufWeights } from '../../src/formats/gguf-gpt2.js';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import { encodeF16, storageToFloat32 } from '../../src/formats/dtypes.js';
import { dequantizeQ8_0, quantizeQ8_0 } from '../../src/formats/q8_0.js';
import type { GPT2Config } from '../../src/model/config.js';
import { DecodeModel, type EncodedSource } from '../../src/model/decode-model.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { initialParameters, sourcesOf, type ParameterValues } from '../../src/model/params.js';
import { fixture, maxAbsDiff } from '../helpers.js';

let tf: Tf;
beforeAll(async () => {
  tf = (await selectBackend('wasm')).tf;
});

type Dtype = 'f16' | 'q8_0';

/**
 * The model with its weight matrices as `dtype` would round them: f16 each value; Q8_0 in blocks
 * of 32 along the input (a Conv1D weight's column, GGUF's [out, in] rows; wte's rows), a matrix
 * Q8_0 cannot block (32 ∤ its input width, or 8 ∤ a Conv1D's outputs) left float32.
 */
function rounded(values: ParameterValues, dtype: Dtype): ParameterValues {
  const out: ParameterValues = new Map();
  for (const [name, { shape, data }] of values) {
    const matrix = /(wte|c_attn|c_proj|c_fc)\.weight$/.test(name);
    if (!matrix) out.set(name, { shape, data });
    else if (dtype === 'f16') out.set(name, { shape, data: storageToFloat32(new Uint8Array(encodeF16(data).buffer), 'F16') });
    else {
      const [rows, cols] = shape;
      const embedding = name.endsWith('wte.weight');
      if ((embedding ? cols : rows) % 32 !== 0 || (!embedding && cols % 8 !== 0)) out.set(name, { shape, data });
      else if (embedding) out.set(name, { shape, data: dequantizeQ8_0(quantizeQ8_0(data), data.length) });
      else {
        const t = new Float32Array(data.length);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = data[r * cols + c];
        const back = dequantizeQ8_0(quantizeQ8_0(t), t.length);
        const d = new Float32Array(data.length);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) d[r * cols + c] = back[c * rows + r];
        out.set(name, { shape, data: d });
      }
    }
  }
  return out;
}

/** The prompt in one call (or token by token), then the steps: logits after each. */
function decode(dm: DecodeModel, prompt: number[], steps: number[], promptAtOnce = true): Float32Array[] {
  const decoder = dm.decoder(1, prompt.length + steps.length, [0], promptAtOnce ? prompt.length : 1);
  let first: Float32Array;
  if (promptAtOnce) first = decoder.forward([prompt], [prompt.map((_, t) => t)]);
  else for (const [t, id] of prompt.entries()) first = decoder.step([id], [t]);
  const out = [first!, ...steps.map((id, s) => decoder.step([id], [prompt.length + s]))];
  decoder.dispose();
  return out;
}

const bits = (logits: Float32Array[]) => logits.map((l) => Array.from(l));

/**
 * Logits of the encoded decoder against the f32 decoder over the rounded weights: f16 bit for
 * bit. Q8_0's few-row products (every step's, and the LM head's even after a prompt through the
 * GEMM over decoded panels) take integer dot products over activations rounded to int16 per
 * block of 32 (wasm-qgemv.ts): an error of up to 2⁻¹⁶ of Σ|w·x| a product, which the layers
 * compound: measured up to 6.2e-5 of the logits' largest magnitude on the fixtures, held to
 * 1e-4 of it a side (two when both sides take the integer path: a prompt at once or token by
 * token; against GPT2.forward, 5e-4 absolute where f16 keeps 1e-4).
 */
const Q8_0_TOLERANCE = 1e-4;

function expectLogits(dtype: Dtype, got: Float32Array[], want: Float32Array[], what: string, sides = 1): void {
  if (dtype === 'f16') return void expect(bits(got), what).toEqual(bits(want));
  for (const [s, l] of got.entries()) {
    const scale = Math.max(...Array.from(want[s], Math.abs));
    expect(maxAbsDiff(l, want[s]) / scale, `${what}: step ${s}`).toBeLessThan(sides * Q8_0_TOLERANCE);
  }
}
const argmax = (l: Float32Array) => l.reduce((best, v, i) => (v > l[best] ? i : best), 0);

/** Greedy continuation of `prompt`, n tokens. */
function greedy(dm: DecodeModel, prompt: number[], n: number): number[] {
  const decoder = dm.decoder(1, prompt.length + n, [0], prompt.length);
  const out = [argmax(decoder.forward([prompt], [prompt.map((_, t) => t)]))];
  while (out.length < n) out.push(argmax(decoder.step([out[out.length - 1]], [prompt.length + out.length - 1])));
  decoder.dispose();
  return out;
}

describe.each(['f16', 'q8_0'] as const)('WasmDecoder with %s weights', (dtype) => {
  it.each(['tiny', 'tiny-gelu', 'tiny-ninner'])('%s: the f32 decoder over the rounded weights (f16: its bits), its greedy continuation, and GPT2.forward’s logits', async (dir) => {
    const ck = await loadCheckpoint(fixture('models', dir));
    const values = rounded(ck.values, dtype);
    const [encoded, reference] = [await DecodeModel.fromSources(ck.config, sourcesOf(ck.values), 1, dtype), await DecodeModel.fromSources(ck.config, sourcesOf(values), 1)];
    const m = GPT2.fromValues(tf, ck.config, values);
    const prompt = [5, 17, 200, 3, 99, 1, 2, 3, 4, 5, 6, 7]; // 12 rows: the products through the GEMM
    const next = [42, 7, 311, 0, 128];
    const got = decode(encoded, prompt, next);
    expectLogits(dtype, got, decode(reference, prompt, next), 'against the rounded f32 model');
    expectLogits(dtype, decode(encoded, prompt, next, false), got, 'prompt token by token', 2);
    expect(greedy(encoded, prompt.slice(0, 4), 28), 'greedy to n_positions').toEqual(greedy(reference, prompt.slice(0, 4), 28));
    const { logits } = m.forward([[...prompt, ...next]]);
    const all = (await logits.data()) as Float32Array;
    const vocab = ck.config.vocab_size;
    for (const [s, l] of got.entries()) {
      const t = prompt.length - 1 + s;
      expect(maxAbsDiff(l, all.subarray(t * vocab, (t + 1) * vocab)), `step ${s}`).toBeLessThan(dtype === 'f16' ? 1e-4 : 5e-4);
    }
    logits.dispose();
    m.dispose();
    encoded.dispose();
    reference.dispose();
  });

  // Products big enough to be split across threads (KernelPool splits from 2¹⁸ multiply-adds), a
  // vocabulary that leaves the LM head's 8-row blocks a remainder.
  it('gives the same bits on one thread and on two; greedy continuations as the rounded f32 model', async () => {
    const base = (await loadCheckpoint(fixture('models', 'tiny'))).config;
    const config: GPT2Config = { ...base, n_embd: 256, n_head: 4, n_layer: 2, vocab_size: 1001, n_positions: 64 };
    const values = initialParameters(config, 5);
    const [one, two] = [await DecodeModel.fromSources(config, sourcesOf(values), 1, dtype), await DecodeModel.fromSources(config, sourcesOf(values), 2, dtype)];
    const reference = await DecodeModel.fromSources(config, sourcesOf(rounded(values, dtype)), 2);
    expect(two.threads).toBe(2);
    const prompt = [1, 500, 1000, 3];
    const next = [9, 99, 999];
    expect(bits(decode(two, prompt, next))).toEqual(bits(decode(one, prompt, next)));
    expect(greedy(two, prompt, 24)).toEqual(greedy(reference, prompt, 24));
    for (const dm of [one, two, reference]) dm.dispose();
  });
});

describe('GGUF tensors kept as the file holds them', () => {
  // The decoder takes an F16 / Q8_0 tensor's bytes as stored (GGUF's [out, in] layout, blocks along
  // the input) instead of quantising its float32 values again: the logits are the f32 decoder's
  // over the file's values as gguf-py's quants.py dequantises them (fixtures/gguf/tiny-q8_0.safetensors)
  // or as our reader gives them for f16 (bit-exact against torch: gguf.test.ts).
  it.each(['f16', 'q8_0'] as const)('%s: a .gguf of that type decodes as the f32 model of its values', async (dtype) => {
    const path = fixture('gguf', `tiny-${dtype}.gguf`);
    const opened = await openCheckpoint(path);
    const values = dtype === 'q8_0' ? (await loadCheckpoint(path)).values : (await readGgufWeights(path)).values;
    if (dtype === 'q8_0') {
      const quants = parseSafetensors(readFileSync(fixture('gguf', 'tiny-q8_0.safetensors')), 'quants').tensors;
      for (const [name, v] of values) expect(Array.from(v.data), name).toEqual(Array.from(quants.get(name)!.data));
    }
    let encodedReads = 0;
    const sources = new Map([...opened.params].map(([name, p]) => [name, { ...p, readEncoded: async (want: 'f16' | 'q8_0') => { const t = await (p as EncodedSource).readEncoded?.(want); if (t) encodedReads++; return t; } }]));
    const [encoded, reference] = [await DecodeModel.fromSources(opened.config, sources, 1, dtype), await DecodeModel.fromSources(opened.config, sourcesOf(values), 1)];
    await opened.close();
    expect(encodedReads).toBe(1 + 4 * opened.config.n_layer); // wte and every Conv1D weight, as stored
    const prompt = [5, 17, 200, 3, 99, 1, 2, 3, 4, 5, 6, 7];
    const next = [42, 7, 311, 0, 128];
    expectLogits(dtype, decode(encoded, prompt, next), decode(reference, prompt, next), 'against the f32 model of the values');
    encoded.dispose();
    reference.dispose();
  });
});

describe('DecodeModel memory', () => {
  it('refuses weights beyond wasm’s 4 GiB, saying whether q8_0 fits; gpt2-xl as q8_0 or f16 fits', async () => {
    const { presetConfig } = await import('../../src/model/config.js');
    const xl = presetConfig('gpt2-xl');
    expect(DecodeModel.weightBytes(xl, 'f32')).toBeGreaterThan(2 ** 32);
    expect(DecodeModel.weightBytes(xl, 'q8_0')).toBeLessThan(1.9e9);
    // q8_0: 1 byte a value and a 4-byte scale per 32 — 1.125 bytes a weight-matrix parameter.
    await expect(DecodeModel.fromSources(xl, new Map(), 1, 'f32')).rejects.toThrow(/of weights as f32 exceed wasm's 4 GiB memory; --weights-dtype f16 \(2\.\d GiB\) or q8_0 \(1\.\d GiB\) fits/);
    expect(DecodeModel.weightBytes(xl, 'f16')).toBeLessThan(2 ** 32); // 3.1 GB: f16 fits too
  });
});
