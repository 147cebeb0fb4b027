/**
 * GGUF against llama.cpp's gguf-py (fixtures/gguf, made by test/oracle/make_gguf_fixtures.py with
 * GGUFWriter and quants.py): our reader reads gguf-py's files to the tiny model's values (f32 and
 * f16 bit-exact against the safetensors fixtures torch made, q8_0 equal to quants.py's dequantize),
 * their metadata as GGUFReader does; our writer writes gguf-py's files byte for byte; Q8_0 bytes
 * equal quants.py's on edge cases; greedy continuations from a .gguf equal PyTorch's; damaged files
 * are one-line errors naming the file.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, openCheckpoint } from '../../src/formats/checkpoint.js';
import { openGguf, ValueType } from '../../src/formats/gguf.js';
import { openGgufModel, writeGgufModel, type GgufDtype } from '../../src/formats/gguf-gpt2.js';
import { tokenizerFiles } from '../../src/formats/gguf-tokenizer.js';
import { dequantizeQ8_0, quantizeQ8_0 } from '../../src/formats/q8_0.js';
import { readSafetensors } from '../../src/formats/safetensors.js';
import { readWeightsFile } from '../../src/formats/weights-file.js';
import { DecodeModel } from '../../src/model/decode-model.js';
import { generate } from '../../src/generate/generate.js';
import { decoderModel } from '../../src/generate/model.js';
import { sourcesOf } from '../../src/model/params.js';
import { builtinTokenizerDir, GPT2_TOKENIZER_SHA256, loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { tokenizerSha256 } from '../../src/tokenizer/vocab-files.js';
import { fixture, greedyReference } from '../helpers.js';

const gguf = (name: string) => fixture('gguf', name);
const DTYPES: GgufDtype[] = ['f32', 'f16', 'q8_0'];
const tiny = async () => (await readSafetensors(fixture('models', 'tiny', 'model.safetensors'))).tensors;

let home: string;
const savedHome = process.env.GPT2_TOOLCHAIN_HOME;
beforeAll(() => {
  home = mkdtempSync(join(tmpdir(), 'gguf-test-'));
  process.env.GPT2_TOOLCHAIN_HOME = home; // where a non-GPT-2 tokenizer is written as files
});
afterAll(() => {
  if (savedHome === undefined) delete process.env.GPT2_TOOLCHAIN_HOME;
  else process.env.GPT2_TOOLCHAIN_HOME = savedHome;
  rmSync(home, { recursive: true, force: true });
});

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe("reading gguf-py's files", () => {
  it.each(DTYPES)('tiny-%s.gguf: the tiny model, its config and its tokenizer', async (dtype) => {
    const model = await openGgufModel(gguf(`tiny-${dtype}.gguf`));
    try {
      const expected = dtype === 'f32' ? await tiny() : dtype === 'f16' ? (await readSafetensors(fixture('models', 'tiny-f16', 'model.safetensors'))).tensors : (await readSafetensors(gguf('tiny-q8_0.safetensors'))).tensors;
      const f32 = await tiny();
      expect(model.ignored).toEqual([]);
      expect([...model.params.keys()].sort()).toEqual([...f32.keys()].sort());
      for (const [name, p] of model.params) {
        // F16 files keep norms, biases and wpe in F32 (the converter's rules); q8_0 likewise.
        const stored = p.tensor.type === 'F32' ? f32.get(name)! : expected.get(name)!;
        expect(p.shape, name).toEqual(stored.shape);
        expect(bits(await p.read()), name).toEqual(bits(stored.data));
        expect(p.tensor.type, name).toBe(p.shape.length === 1 || name.endsWith('wpe.weight') || dtype === 'f32' ? 'F32' : dtype.toUpperCase());
      }
      const want = JSON.parse(readFileSync(fixture('models', 'tiny', 'config.json'), 'utf8')) as Record<string, unknown>;
      for (const key of ['vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head', 'n_inner', 'layer_norm_epsilon', 'activation_function']) expect(model.config[key as 'n_embd'], key).toEqual(want[key]);
      expect([model.config.bos_token_id, model.config.eos_token_id]).toEqual([319, 319]); // <|endoftext|> in the 320-token tokenizer
      const read = (dir: string, name: string) => readFileSync(join(dir, name));
      expect(tokenizerSha256(read(model.tokenizerDir, 'vocab.json'), read(model.tokenizerDir, 'merges.txt'))).toBe(
        tokenizerSha256(read(gguf('tokenizer'), 'vocab.json'), read(gguf('tokenizer'), 'merges.txt')),
      );
      expect(model.tokenizerDir.startsWith(home)).toBe(true);
    } finally {
      await model.close();
    }
  });

  it.each(DTYPES)("tiny-%s.gguf: metadata and tensor infos as gguf-py's GGUFReader reads them", async (dtype) => {
    const name = `tiny-${dtype}.gguf`;
    const oracle = (JSON.parse(readFileSync(gguf('reader.json'), 'utf8')) as Record<string, { metadata: Record<string, unknown>[]; tensors: Record<string, unknown>[] }>)[name];
    const file = await openGguf(gguf(name));
    try {
      const meta = [...file.metadata].map(([key, v]) => {
        if (v.type !== ValueType.ARRAY) return { key, type: ValueType[v.type], value: v.value };
        const items = v.value as unknown[];
        return { key, type: 'ARRAY', item_type: ValueType[v.itemType!], length: items.length, first: items[0], last: items[items.length - 1] };
      });
      // gguf-py reads FLOAT32 as float32; JSON carries its shortest decimal.
      expect(meta.map((m) => ('value' in m && m.type === 'FLOAT32' ? { ...m, value: Math.fround(m.value as number) } : m))).toEqual(
        oracle.metadata.map((m) => (m.type === 'FLOAT32' ? { ...m, value: Math.fround(m.value as number) } : m)),
      );
      const tensors = [];
      for (const t of file.tensors.values()) {
        const sha256 = createHash('sha256').update(await t.read()).digest('hex');
        tensors.push({ name: t.name, dims: [...t.shape].reverse(), type: t.type, data_offset: t.offset, sha256 });
      }
      expect(tensors).toEqual(oracle.tensors);
    } finally {
      await file.close();
    }
  });

  it('a .gguf works wherever a checkpoint is opened (streamed, whole, as a weights file)', async () => {
    const f32 = await tiny();
    const streamed = await openCheckpoint(gguf('tiny-f32.gguf'));
    expect(bits(await streamed.params.get('transformer.h.1.mlp.c_proj.weight')!.read())).toEqual(bits(f32.get('transformer.h.1.mlp.c_proj.weight')!.data));
    await streamed.close();
    const whole = await loadCheckpoint(gguf('tiny-q8_0.gguf'));
    expect(whole.values.size).toBe(f32.size);
    const raw = await readWeightsFile(gguf('tiny-f16.gguf'));
    expect(raw.get('transformer.wte.weight')!.shape).toEqual([320, 32]);
  });
});

describe('writing', () => {
  it.each(DTYPES)("tiny as %s: byte for byte gguf-py's file", async (dtype) => {
    const values = new Map([...(await tiny())].map(([name, t]) => [name, { shape: t.shape, data: t.data }]));
    const json = JSON.parse(readFileSync(fixture('models', 'tiny', 'config.json'), 'utf8')) as Record<string, unknown>;
    const { configFromJson } = await import('../../src/model/config.js');
    const config = configFromJson(json, 'tiny'); // bos/eos 50256 lie outside the 320 ids: <|endoftext|> (319) is written
    const out = join(home, `ours-${dtype}.gguf`);
    await writeGgufModel(out, { config, values, tokenizerDir: gguf('tokenizer') }, dtype, 'tiny');
    expect(createHash('sha256').update(readFileSync(out)).digest('hex')).toBe(createHash('sha256').update(readFileSync(gguf(`tiny-${dtype}.gguf`))).digest('hex'));
  });

  it('a header larger than the first buffer (GPT-2 tokenizer size) reads back as written', async () => {
    const { writeGguf } = await import('../../src/formats/gguf-write.js');
    const strings = Array.from({ length: 20000 }, (_, i) => `tok ${i} é`);
    const path = join(home, 'big-header.gguf');
    await writeGguf(path, [['a.strings', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: strings }], ['b.after', { type: ValueType.UINT32, value: 7 }], ['c.wide', { type: ValueType.UINT64, value: 2n ** 60n }]], [{ name: 't', type: 'F32', shape: [3], encode: () => new Uint8Array(new Float32Array([1, 2, 3]).buffer) }]);
    const file = await openGguf(path);
    expect(file.metadata.get('a.strings')!.value).toEqual(strings);
    expect([file.metadata.get('b.after')!.value, file.metadata.get('c.wide')!.value]).toEqual([7, 2n ** 60n]);
    expect(Array.from(await file.tensors.get('t')!.toFloat32())).toEqual([1, 2, 3]);
    await file.close();
  });

  it("GPT-2's own tokenizer goes to GGUF and back to GPT-2's exact files (so the built-in one is used)", async () => {
    const { ggufTokenizerFromDir, tokenizerDirFor } = await import('../../src/formats/gguf-tokenizer.js');
    const tok = await ggufTokenizerFromDir(undefined, 50257);
    expect(tok.tokens[50256]).toBe('<|endoftext|>');
    expect(tok.types[50256]).toBe(3);
    expect(tok.types.filter((t) => t !== 1)).toHaveLength(1);
    const files = tokenizerFiles(tok);
    expect(tokenizerSha256(files.vocab, files.merges)).toBe(GPT2_TOKENIZER_SHA256);
    expect(await tokenizerDirFor(tok, 'x.gguf')).toBe(builtinTokenizerDir());
    // A padded vocabulary (nanoGPT's 50304): the extra ids are UNUSED and left out of vocab.json again.
    const padded = await ggufTokenizerFromDir(undefined, 50304);
    expect([padded.tokens[50303], padded.types[50303]]).toEqual(['[PAD50303]', 5]);
    expect(tokenizerSha256(tokenizerFiles(padded).vocab, tokenizerFiles(padded).merges)).toBe(GPT2_TOKENIZER_SHA256);
  });
});

describe("Q8_0 against gguf-py's quants.py", () => {
  const cases = JSON.parse(readFileSync(gguf('q8_0-cases.json'), 'utf8')) as { values_f32_bits: number[]; bytes_hex: string; dequantized_f32_bits: number[] };
  const values = new Float32Array(Uint32Array.from(cases.values_f32_bits).buffer);

  it('quantises edge cases (ties, zero blocks, tiny and huge scales) to the same bytes', () => {
    expect(Buffer.from(quantizeQ8_0(values)).toString('hex')).toBe(cases.bytes_hex);
  });

  it('dequantises to the same values', () => {
    expect(bits(dequantizeQ8_0(Buffer.from(cases.bytes_hex, 'hex'), values.length))).toEqual(cases.dequantized_f32_bits);
  });
});

describe('generation from a .gguf', () => {
  const ref = greedyReference('tiny');
  /** Greedy continuations (generate's default) of each prompt alone, on the wasm decoder with its cache. */
  async function greedy(path: string): Promise<number[][]> {
    const ck = await loadCheckpoint(path);
    const m = decoderModel(await DecodeModel.fromSources(ck.config, sourcesOf(ck.values), 1), true);
    const out: number[][] = [];
    for (const prompt of ref.prompts) {
      for await (const e of generate(m, loadTokenizer(), [prompt], { maxNewTokens: ref.continuations[0].length })) if (e.type === 'end') out.push(e.ids);
    }
    return out;
  }

  it("f32: PyTorch's greedy continuations; f16 and q8_0: agreement reported", async () => {
    expect(await greedy(gguf('tiny-f32.gguf'))).toEqual(ref.continuations);
    const agree = async (path: string) => {
      const got = (await greedy(path)).flat();
      return got.filter((id, i) => id === ref.continuations.flat()[i]).length / got.length;
    };
    const f16 = await agree(gguf('tiny-f16.gguf'));
    const q8 = await agree(gguf('tiny-q8_0.gguf'));
    console.log(`tiny greedy agreement with PyTorch fp32 over ${ref.continuations.flat().length} tokens: f16 ${f16}, q8_0 ${q8}`);
    expect(q8).toBeGreaterThanOrEqual(0.9); // 34 of 36 when measured
  });
});

describe('damaged files: one line naming the file', () => {
  const good = readFileSync(gguf('tiny-f32.gguf'));
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'gguf-bad-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function failure(bytes: Uint8Array): Promise<string> {
    const path = join(dir, 'bad.gguf');
    writeFileSync(path, bytes);
    const err = await openGgufModel(path).then(
      async (m) => {
        await m.close();
        return undefined;
      },
      (e: Error) => e,
    );
    if (!err) throw new Error('opened');
    expect(err.name).toBe('ToolError');
    expect(err.message).not.toContain('\n');
    expect(err.message.startsWith(`${path}: `)).toBe(true);
    return err.message.slice(path.length + 2);
  }
  const patched = (at: number, write: (b: Buffer) => void) => {
    const b = Buffer.from(good);
    write(b.subarray(at));
    return b;
  };
  /** Where the tensor info of `name` starts its n_dims (after the name). */
  const infoOf = (name: string) => good.indexOf(Buffer.from(name)) + name.length;

  it('truncated', async () => {
    expect(await failure(good.subarray(0, 3000))).toMatch(/runs past the end of the file \(3000 bytes\): truncated\?$/);
    expect(await failure(good.subarray(0, good.length - 100))).toMatch(/^not a valid GGUF file: tensor output_norm\.bias .* lies outside the file/);
  });

  it('wrong magic, version 1, version 4, big-endian', async () => {
    expect(await failure(patched(0, (b) => b.write('GGML')))).toBe('not a GGUF file (it does not start with "GGUF")');
    expect(await failure(patched(4, (b) => b.writeUInt32LE(1)))).toBe('GGUF version 1 (GGUF v1, which llama.cpp no longer reads either); versions 2 and 3 are supported');
    expect(await failure(patched(4, (b) => b.writeUInt32LE(4)))).toBe('GGUF version 4; versions 2 and 3 are supported');
    expect(await failure(patched(4, (b) => b.writeUInt32BE(3)))).toBe('GGUF version 50331648 (a big-endian GGUF?); versions 2 and 3 are supported');
  });

  it('version 2 (same layout, read by llama.cpp) is read', async () => {
    const path = join(dir, 'v2.gguf');
    writeFileSync(path, patched(4, (b) => b.writeUInt32LE(2)));
    const m = await openGgufModel(path);
    expect(m.file.version).toBe(2);
    await m.close();
  });

  it('tensor data out of range, misaligned, unknown and unsupported ggml types', async () => {
    const offsetOf = (name: string) => infoOf(name) + 4 + 8 + 4; // 1-D: n_dims, one dim, type
    expect(await failure(patched(offsetOf('output_norm.bias'), (b) => b.writeBigUInt64LE(BigInt(good.length))))).toMatch(/^not a valid GGUF file: tensor output_norm\.bias \(128 bytes at \d+\) lies outside the file/);
    expect(await failure(patched(offsetOf('output_norm.bias'), (b) => b.writeBigUInt64LE(4n)))).toMatch(/tensor output_norm\.bias starts at data offset 4, not a multiple of the alignment 32$/);
    expect(await failure(patched(infoOf('output_norm.bias') + 12, (b) => b.writeUInt32LE(99)))).toBe('tensor output_norm.bias has ggml type unknown (99); this toolchain reads F32, F16, Q8_0, BF16');
    expect(await failure(patched(infoOf('output_norm.bias') + 12, (b) => b.writeUInt32LE(12)))).toBe('tensor output_norm.bias has ggml type Q4_K (12); this toolchain reads F32, F16, Q8_0, BF16');
  });

  it('a header claiming gigabytes', async () => {
    expect(await failure(patched(16, (b) => b.writeBigUInt64LE(1n << 40n)))).toMatch(/^not a valid GGUF file: 1099511627776 metadata entries and 29 tensor infos runs past the end of the file/);
    const key = good.indexOf(Buffer.from('general.architecture')) - 8;
    expect(await failure(patched(key, (b) => b.writeBigUInt64LE(3n << 30n)))).toMatch(/^not a valid GGUF file: metadata key #0 \(3221225472 bytes\) runs past the end/);
    const tokens = good.indexOf(Buffer.from('tokenizer.ggml.tokens')) + 'tokenizer.ggml.tokens'.length + 4 + 4;
    expect(await failure(patched(tokens, (b) => b.writeBigUInt64LE(1n << 36n)))).toMatch(/^not a valid GGUF file: tokenizer\.ggml\.tokens \(68719476736 items\) /);
  });

  it('another architecture, an untied output', async () => {
    const arch = good.indexOf(Buffer.from('gpt2', 'utf8'), good.indexOf(Buffer.from('general.architecture')) + 20);
    expect(await failure(patched(arch, (b) => b.write('bert')))).toBe('a GGUF of architecture "bert"; only GPT-2 (gpt2) is supported');
    const file = await openGguf(gguf('tiny-f32.gguf'));
    const output = file.tensors.get('output.weight')!.offset;
    await file.close();
    expect(await failure(patched(output, (b) => b.writeFloatLE(123)))).toBe("GGUF tensor output.weight differs from token_embd.weight; GPT-2's LM head is tied to the embedding and an untied head is not supported");
  });
});
