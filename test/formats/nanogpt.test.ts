/**
 * nanoGPT checkpoints against nanoGPT's own code (fixtures/nanogpt, made by
 * test/oracle/make_nanogpt_fixtures.py with karpathy/nanoGPT's model.py and torch): converted
 * models give nanoGPT's logits; the ckpt.pt we write is the very file (by sha256) that nanoGPT's
 * train.py resumed from and whose logits model.py reproduced (check-NAME.json); nanogpt → hf →
 * nanogpt is bit-exact; bad files are one-line errors naming the file.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type Tf } from '../../src/backend/select.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { convertWeights } from '../../src/formats/convert.js';
import { PyDict } from '../../src/formats/pickle.js';
import { readPytorchBin, readTorchPickle, type LoadedTensor } from '../../src/formats/pytorch-bin.js';
import { collectTensors } from '../../src/formats/state-dict-pickle.js';
import { PyFloat, PyOrderedDict, TorchTensor, writeTorchArchive, writeTorchFile, type PyValue } from '../../src/formats/torch-write.js';
import { sniffNanogpt } from '../../src/formats/nanogpt.js';
import { GPT2 } from '../../src/model/gpt2.js';
import { ToolError } from '../../src/util/errors.js';
import { fixture, tempDir } from '../helpers.js';

const dir = tempDir('gpt2tc-nanogpt-');
const NAMES = ['bias', 'nobias', 'compiled'] as const;
const ckpt = (name: string) => fixture('nanogpt', `${name}.ckpt.pt`);
const expected = (name: string) =>
  JSON.parse(readFileSync(fixture('nanogpt', `${name}.expected.json`), 'utf8')) as { ids: number[][]; logits: number[][][]; model_args: Record<string, unknown>; compiled: boolean; buffers: boolean };
const check = (name: string) =>
  JSON.parse(readFileSync(fixture('nanogpt', `check-${name}.json`), 'utf8')) as {
    file_sha256: string;
    logits_max_rel_diff: number;
    model_args: Record<string, unknown>;
    train_py_resume: { saved_iter_num: number; adamw_states: number; adamw_steps: number[] };
  };
const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const hex = (t: LoadedTensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex');

/** The `model` tensors of a ckpt.pt by name, prefixes and causal-mask buffers dropped, and the whole unpickled value. */
async function modelOf(path: string): Promise<{ tensors: Map<string, LoadedTensor>; value: PyDict }> {
  let value: unknown;
  const tensors = await readTorchPickle(path, (p) => {
    value = p.value;
    return p.load((v) => collectTensors(path, (v as PyDict).map.get('model')));
  });
  const out = new Map<string, LoadedTensor>();
  for (const [name, t] of tensors) if (!/\.attn\.bias$/.test(name)) out.set(name.replace(/^_orig_mod\./, ''), t);
  return { tensors: out, value: value as PyDict };
}
const plain = (v: unknown): unknown => (v instanceof PyDict ? Object.fromEntries([...v.map].map(([k, x]) => [String(k), plain(x)])) : Array.isArray(v) ? v.map(plain) : v);

async function failure(promise: Promise<unknown>, path: string): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (!(err instanceof ToolError)) throw err;
    expect(err.message.includes('\n'), err.message).toBe(false);
    expect(err.message.startsWith(`${path}: `), err.message).toBe(true);
    return err.message;
  }
  throw new Error(`${path}: expected a failure`);
}

describe('reading nanoGPT checkpoints', () => {
  let tf: Tf;
  beforeAll(async () => {
    tf = (await selectBackend('cpu')).tf;
  });

  it.each(NAMES)('%s: the converted model gives nanoGPT model.py’s logits (relative 1e-5)', async (name) => {
    const info: string[] = [];
    const out = join(dir, `${name}-hf`);
    const result = await convertWeights(ckpt(name), out, { onInfo: (m) => info.push(m) });
    const want = expected(name);
    expect(result.source).toBe('nanoGPT names');
    expect(result.ignored).toEqual([]);
    const { config, values } = await loadCheckpoint(out);
    expect(config).toMatchObject({ vocab_size: want.model_args.vocab_size, n_positions: want.model_args.block_size, n_embd: want.model_args.n_embd, n_layer: want.model_args.n_layer, n_head: want.model_args.n_head, activation_function: 'gelu' });
    const model = GPT2.fromValues(tf, config, values);
    const logits = model.forward(want.ids).logits;
    const got = (await logits.array()) as number[][][];
    tf.dispose(logits);
    model.dispose();
    let worst = 0;
    got.forEach((row, b) => row.forEach((l, t) => l.forEach((v, k) => (worst = Math.max(worst, Math.abs(v - want.logits[b][t][k]) / Math.max(1, Math.abs(want.logits[b][t][k])))))));
    expect(worst).toBeLessThan(1e-5);
    // What the info lines must say for this fixture.
    expect(info.some((m) => m.includes('loading them as zeros'))).toBe(want.model_args.bias === false);
    expect(info.some((m) => m.includes('_orig_mod.'))).toBe(want.compiled);
  });

  it('accepts everything train.py pickles (the AdamW state, settings, a best_val_loss tensor) with the restricted unpickler', async () => {
    const { value } = await modelOf(ckpt('bias'));
    const optimizer = plain(value.map.get('optimizer')) as { state: Record<string, { exp_avg: unknown }>; param_groups: Array<{ betas: number[]; params: number[] }> };
    expect(Object.keys(optimizer.state)).toHaveLength(28);
    expect(optimizer.param_groups.map((g) => g.betas)).toEqual([[0.9, 0.95], [0.9, 0.95]]);
    expect((plain(value.map.get('config')) as { dataset: string }).dataset).toBe('openwebtext');
    // The state-dict reader flattens the whole checkpoint, moments included.
    const all = await readPytorchBin(ckpt('bias'));
    expect([...all.keys()]).toContain('optimizer.state.0.exp_avg_sq');
    expect(all.get('best_val_loss')!.shape).toEqual([]);
  });

  it('keeps a padded vocab_size and says what the extra rows are', async () => {
    const path = join(dir, 'padded.pt');
    const d = 4;
    const args = { n_layer: 1, n_head: 1, n_embd: d, block_size: 2, bias: false, vocab_size: 50304, dropout: new PyFloat(0) };
    const wte = new TorchTensor(new Float32Array(50304 * d).map((_, i) => (i % 7) / 7), [50304, d]);
    const state: Array<[PyValue, PyValue]> = [['transformer.wte.weight', wte], ['transformer.wpe.weight', new TorchTensor(new Float32Array(2 * d), [2, d])]];
    const linear = (name: string, out: number, inp: number) => state.push([`transformer.h.0.${name}.weight`, new TorchTensor(new Float32Array(out * inp), [out, inp])]);
    state.push(['transformer.h.0.ln_1.weight', new TorchTensor(new Float32Array(d), [d])]);
    linear('attn.c_attn', 3 * d, d);
    linear('attn.c_proj', d, d);
    state.push(['transformer.h.0.ln_2.weight', new TorchTensor(new Float32Array(d), [d])]);
    linear('mlp.c_fc', 4 * d, d);
    linear('mlp.c_proj', d, 4 * d);
    state.push(['transformer.ln_f.weight', new TorchTensor(new Float32Array(d), [d])], ['lm_head.weight', wte]);
    await writeTorchFile(path, new Map<PyValue, PyValue>([['model', new PyOrderedDict(state)], ['model_args', new Map(Object.entries(args))]]));
    const info: string[] = [];
    const warnings: string[] = [];
    await convertWeights(path, join(dir, 'padded-hf'), { onInfo: (m) => info.push(m), onWarning: (m) => warnings.push(m) });
    expect(info.join('\n')).toMatch(/vocab_size 50304 kept from model_args: rows 50257–50303 of wte are nanoGPT's padding/);
    expect(warnings).toEqual([]);
    expect((await loadCheckpoint(join(dir, 'padded-hf'))).values.get('transformer.wte.weight')!.data).toEqual(wte.data);
  });
});

describe('writing nanoGPT checkpoints', () => {
  it.each(NAMES)('%s: hf → nanogpt writes the file nanoGPT’s train.py resumed from and model.py reproduced the logits of', async (name) => {
    const hf = join(dir, `${name}-w-hf`);
    await convertWeights(ckpt(name), hf);
    const out = join(dir, `${name}.pt`);
    const info: string[] = [];
    await convertWeights(hf, out, { to: 'nanogpt', onInfo: (m) => info.push(m) });
    const verdict = check(name);
    // The check ran on exactly these bytes (the writer is deterministic) …
    expect(sha256(out)).toBe(verdict.file_sha256);
    // … and nanoGPT found there the original's model and an optimizer state it stepped: every
    // parameter of named_parameters() (2 + 12 per layer + 2 with biases, 2 + 6 per layer + 1 without).
    const want = expected(name);
    expect(verdict.logits_max_rel_diff).toBeLessThan(1e-6);
    expect(verdict.model_args).toEqual(want.model_args);
    expect(verdict.train_py_resume).toMatchObject({ saved_iter_num: 1, adamw_states: want.model_args.bias ? 28 : 15, adamw_steps: [1] });
    expect(info.some((m) => m.includes('writing a bias: False model'))).toBe(want.model_args.bias === false);
  });

  it.each(NAMES)('%s: nanogpt → hf → nanogpt gives back every model tensor bit for bit', async (name) => {
    const back = join(dir, `${name}-back.pt`);
    const hf = join(dir, `${name}-rt-hf`);
    await convertWeights(ckpt(name), hf);
    await convertWeights(hf, back, { to: 'nanogpt' });
    const original = await modelOf(ckpt(name));
    const ours = await modelOf(back);
    expect([...ours.tensors.keys()]).toEqual([...original.tensors.keys()]);
    for (const [key, t] of original.tensors) {
      expect(ours.tensors.get(key)!.shape, key).toEqual(t.shape);
      expect(hex(ours.tensors.get(key)!), key).toBe(hex(t));
    }
    expect(plain(ours.value.map.get('model_args'))).toEqual(expected(name).model_args);
  });

  it('writes zip64 records that the reader follows', async () => {
    const path = join(dir, 'zip64.pt');
    const data = new Float32Array([1, -2, 3.5, 4]);
    await writeTorchFile(path, new Map<PyValue, PyValue>([['model', new PyOrderedDict([['w', new TorchTensor(data, [2, 2])]])]]), { zip64: true });
    const tensors = await readPytorchBin(path);
    expect(tensors.get('model.w')).toMatchObject({ shape: [2, 2], data });
  });

  it('refuses to replace a file it did not write, and an input', async () => {
    const hf = join(dir, 'bias-w-hf');
    const other = join(dir, 'user.pt');
    writeFileSync(other, 'precious');
    expect(await failure(convertWeights(hf, other, { to: 'nanogpt', overwrite: true }), other)).toMatch(/not a nanoGPT checkpoint written by gpt2-toolchain/);
    expect(await failure(convertWeights(hf, other, { to: 'nanogpt' }), other)).toMatch(/exists \(use --overwrite/);
    const ours = join(dir, 'bias.pt');
    await convertWeights(hf, ours, { to: 'nanogpt', overwrite: true });
    expect(readFileSync(other, 'utf8')).toBe('precious');
  });
});

describe('bad nanoGPT files', () => {
  it('a truncated archive', async () => {
    const path = join(dir, 'truncated.pt');
    const bytes = readFileSync(ckpt('bias'));
    writeFileSync(path, bytes.subarray(0, bytes.length >> 1));
    await failure(convertWeights(path, join(dir, 'never')), path);
  });

  it.each([
    ['os', 'system'],
    ['builtins', 'eval'],
  ])('a pickle that calls %s.%s is refused, naming it', async (module, name) => {
    const path = join(dir, `${name}.pt`);
    // {'model': {}, 'model_args': module.name('echo pwned')} in protocol 2.
    const pickle = Buffer.concat([
      Buffer.from([0x80, 2, 0x7d, 0x28]),
      pyString('model'),
      Buffer.from([0x7d]),
      pyString('model_args'),
      Buffer.from(`c${module}\n${name}\n`, 'latin1'),
      pyString('echo pwned'),
      Buffer.from([0x85, 0x52, 0x75, 0x2e]),
    ]);
    await writeTorchArchive(path, pickle, []);
    const message = await failure(convertWeights(path, join(dir, 'never')), path);
    expect(message).toContain(`the pickle calls ${module}.${name}`);
  });

  it('a dict with a model but no model_args', async () => {
    const path = join(dir, 'noargs.pt');
    await writeTorchFile(path, new Map<PyValue, PyValue>([['model', new PyOrderedDict([['transformer.wte.weight', new TorchTensor(new Float32Array(4), [2, 2])]])], ['iter_num', 5]]));
    expect(await failure(convertWeights(path, join(dir, 'never')), path)).toMatch(/without model_args/);
  });

  const args = (over: Record<string, PyValue> = {}) => new Map<PyValue, PyValue>(Object.entries({ n_layer: 1, n_head: 1, n_embd: 4, block_size: 2, bias: true, vocab_size: 3, dropout: new PyFloat(0), ...over }));
  it.each([
    ['shapes that disagree with model_args', args(), /tensor transformer\.wte\.weight has shape \[3, 5\], model_args give \[3, 4\]/],
    ['a model_args value of the wrong type', args({ n_head: 'four' }), /model_args\.n_head must be a positive integer, found "four"/],
    ['n_embd not divisible by n_head', args({ n_head: 3 }), /n_embd \(4\) must be divisible by n_head \(3\)/],
  ])('%s', async (what, modelArgs, pattern) => {
    const path = join(dir, `${what.replace(/\W+/g, '-')}.pt`);
    await writeTorchFile(path, new Map<PyValue, PyValue>([['model', new PyOrderedDict([['transformer.wte.weight', new TorchTensor(new Float32Array(15), [3, 5])]])], ['model_args', modelArgs]]));
    expect(await failure(convertWeights(path, join(dir, 'never')), path)).toMatch(pattern);
  });

  it('an untied lm_head', async () => {
    const hf = join(dir, 'untied-hf');
    await convertWeights(ckpt('bias'), hf);
    const path = join(dir, 'untied.pt');
    const { tensors } = await modelOf(ckpt('bias'));
    const state: Array<[PyValue, PyValue]> = [...tensors].map(([name, t]) => [name, new TorchTensor(name === 'lm_head.weight' ? t.data.map((v) => v + 1) : t.data, t.shape)]);
    await writeTorchFile(path, new Map<PyValue, PyValue>([['model', new PyOrderedDict(state)], ['model_args', args({ n_layer: 2, n_head: 4, n_embd: 16, block_size: 32, vocab_size: 320 })]]));
    expect(await failure(convertWeights(path, join(dir, 'never')), path)).toMatch(/lm_head\.weight differs from transformer\.wte\.weight/);
  });

  it('is not mistaken for a plain state dict, nor a plain state dict for it', async () => {
    expect(await sniffNanogpt(fixture('torch', 'state.zip.bin'))).toBeUndefined();
    expect((await sniffNanogpt(ckpt('nobias')))?.args).toEqual(expected('nobias').model_args);
  });
});

function pyString(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(b.length);
  return Buffer.concat([Buffer.from([0x58]), len, b]);
}
