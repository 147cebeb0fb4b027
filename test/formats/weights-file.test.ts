/**
 * Format detection by full signature: safetensors files whose header length has any low byte (HF
 * pads headers with spaces, so 0x80 — pickle's PROTO — is the low byte of 1 in 32 real files)
 * load as safetensors, with exactly the values put in; GGUF goes to the GGUF reader; a file of no
 * known format says what it is not and what is accepted.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFromJson } from '../../src/model/config.js';
import { parameterShapes } from '../../src/model/params.js';
import { openCheckpoint } from '../../src/formats/checkpoint.js';
import { readPytorchBin } from '../../src/formats/pytorch-bin.js';
import { readSafetensors } from '../../src/formats/safetensors.js';
import { readWeightsFile, sniffFormat } from '../../src/formats/weights-file.js';
import { fixture, tempDir } from '../helpers.js';

const dir = tempDir();
const configJson = { model_type: 'gpt2', vocab_size: 5, n_positions: 4, n_embd: 4, n_layer: 1, n_head: 1 };
const config = configFromJson(configJson, 'micro');

/** The micro model's tensors, with values that are exact in float32 and differ everywhere. */
const tensors = parameterShapes(config).map(([name, shape], t) => {
  const count = shape.reduce((a, b) => a * b, 1);
  return { name, shape, values: Array.from({ length: count }, (_, k) => (t * 1000 + k) / 8 - 40) };
});

/** The JSON header and data section of the micro model, laid out as HF does (F32, back to back). */
const { json, data } = (() => {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + 4 * t.values.length] };
    offset += 4 * t.values.length;
  }
  const bytes = Buffer.alloc(offset);
  let at = 0;
  for (const t of tensors) for (const v of t.values) at = bytes.writeFloatLE(v, at);
  return { json: JSON.stringify(header), data: bytes };
})();

/** A safetensors file built by hand, as HF writes one: u64 length, the JSON padded with spaces to `headerLength`, the data. */
function hfFile(headerLength: number): Buffer {
  if (json.length > headerLength) throw new Error(`the header needs ${json.length} bytes`);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(headerLength));
  return Buffer.concat([length, Buffer.from(json.padEnd(headerLength, ' ')), data]);
}

const expected = () => new Map(tensors.map((t) => [t.name, { shape: t.shape, values: t.values }]));
const loaded = (m: Map<string, { shape: number[]; data: Float32Array }>) => new Map([...m].map(([name, t]) => [name, { shape: t.shape, values: Array.from(t.data) }]));

describe('safetensors files are recognised whatever their header length', () => {
  const base = 256 * Math.ceil(json.length / 256);
  // Every low byte; and lengths whose first two bytes are "PK" and "\x80\x02".."\x80\x05".
  const lengths = [...Array.from({ length: 256 }, (_, b) => base + b), 0x4b50, 0x10280, 0x10380, 0x10480, 0x10580];

  it('reads exactly the tensors written, as a weights file and as a checkpoint', async () => {
    writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson));
    const path = join(dir, 'model.safetensors');
    for (const headerLength of lengths) {
      writeFileSync(path, hfFile(headerLength));
      const what = `header length 0x${headerLength.toString(16)}`;
      expect(loaded(await readWeightsFile(path)), what).toEqual(expected());
      const ck = await openCheckpoint(dir);
      const streamed = new Map(await Promise.all([...ck.params].map(async ([name, t]) => [name, { shape: t.shape, values: Array.from(await t.read()) }] as const)));
      await ck.close();
      expect(streamed, what).toEqual(expected());
    }
  });

  it('tells each format by its whole signature', () => {
    const pad = (bytes: number[]) => Uint8Array.from([...bytes, ...new Array(64 - bytes.length).fill(0x20)]);
    expect(sniffFormat(hfFile(0x10280).subarray(0, 64), 0x10280 + 8)).toBe('safetensors');
    expect(sniffFormat(hfFile(0x10280).subarray(0, 64), 0x10280 + 7)).not.toBe('safetensors'); // the header would not fit
    expect(sniffFormat(pad([0x50, 0x4b, 3, 4]), 100)).toBe('zip');
    expect(sniffFormat(pad([0x50, 0x4b, 7, 8]), 100)).toBeUndefined();
    expect(sniffFormat(pad([0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]), 100)).toBe('torch-legacy');
    expect(sniffFormat(pad([0x80, 5, 0x95]), 100)).toBe('pickle');
    expect(sniffFormat(pad([0x80, 1, 0x95]), 100)).toBeUndefined(); // protocol 1 has no PROTO opcode
    expect(sniffFormat(pad([0x80, 6, 0x95]), 100)).toBeUndefined();
    expect(sniffFormat(pad([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0]), 100)).toBe('gguf');
  });
});

describe('files of other formats', () => {
  it('PyTorch files go to the PyTorch reader', async () => {
    for (const file of ['state.zip.bin', 'state.legacy.bin']) {
      const path = fixture('torch', file);
      expect(loaded(await readWeightsFile(path))).toEqual(loaded(await readPytorchBin(path)));
    }
  });

  const failure = async (name: string, bytes: Uint8Array | string) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return readWeightsFile(path).then(
      () => expect.fail(`${name} loaded`),
      (err: Error) => err.message,
    );
  };
  const accepted = /; accepted: safetensors \(an 8-byte header length, then "\{"\) or a PyTorch pytorch_model\.bin \(a zip archive, "PK\\x03\\x04", or a legacy pickle, "\\x80" \+ protocol 2–5\), GGUF \("GGUF"\), or a MindSpore \.ckpt \(a protobuf Checkpoint: "\\x0a" and the length of its first value\)$/;

  it('GGUF goes to the GGUF reader: a GPT-2 under HF names, or its one-line error', async () => {
    const tiny = loaded((await readSafetensors(fixture('models', 'tiny', 'model.safetensors'))).tensors);
    expect(loaded(await readWeightsFile(fixture('gguf', 'tiny-f32.gguf')))).toEqual(tiny);
    const gguf = Buffer.concat([Buffer.from('GGUF'), Buffer.from([3, 0, 0, 0]), Buffer.alloc(100)]);
    expect(await failure('model.gguf', gguf)).toBe(`${join(dir, 'model.gguf')}: GGUF metadata general.architecture is missing`);
  });

  it.each([
    ['text', 'hello world, not weights\n', /: not a weights file \(25 bytes starting "hello world, not", text\)/],
    ['an empty file', '', /: not a weights file \(an empty file\)/],
    ['a few bytes', Uint8Array.of(1, 2, 3), /: not a weights file \(3 bytes starting 01 02 03\)/],
    ['a truncated header', () => hfFile(0x800).subarray(0, 300), /: not a weights file \(a safetensors header of 2048 bytes that runs past the end of the file \(300 bytes\): truncated\?\)/],
    ['a protocol-1 pickle', Uint8Array.of(0x80, 1, 0x2e), /: not a weights file \(3 bytes starting 80 01 2e\)/],
  ])('%s: says what it is not and what is accepted', async (name, bytes, message) => {
    const text = await failure(name.replace(/ /g, '-'), typeof bytes === 'function' ? bytes() : bytes);
    expect(text).toMatch(message);
    expect(text).toMatch(accepted);
  });

  it('a pickle that is not a torch.save file', async () => {
    expect(await failure('plain.pkl', Buffer.from('80027d710058010000006171014b01732e', 'hex'))).toMatch(/plain\.pkl: not a PyTorch checkpoint/);
  });

  it('the fixtures of every PyTorch format still sniff as theirs', () => {
    const head = (file: string) => readFileSync(fixture('torch', file)).subarray(0, 64);
    expect(sniffFormat(head('state.zip.bin'), 1e6)).toBe('zip');
    expect(sniffFormat(head('state.p4.zip.bin'), 1e6)).toBe('zip');
    expect(sniffFormat(head('state.legacy.bin'), 1e6)).toBe('torch-legacy');
    expect(sniffFormat(readFileSync(fixture('models', 'tiny', 'model.safetensors')).subarray(0, 64), 1e6)).toBe('safetensors');
  });
});
