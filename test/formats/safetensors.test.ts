import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { f16ToF32, f32ToF16 } from '../../src/formats/dtypes.js';
import { encodeSafetensors, MAX_HEADER_BYTES, parseSafetensors } from '../../src/formats/safetensors.js';
import { fixture } from '../helpers.js';

/** A safetensors file from a hand-written header and data section. */
function file(header: object | string, data: Uint8Array = new Uint8Array(0), declaredLength?: number): Buffer {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(declaredLength ?? json.length));
  return Buffer.concat([length, json, data]);
}
const f32 = (...values: number[]) => new Uint8Array(Float32Array.from(values).buffer);
const entry = (begin: number, end: number) => JSON.stringify({ dtype: 'F32', shape: [(end - begin) / 4], data_offsets: [begin, end] });

describe('safetensors reader', () => {
  it('reads what PyTorch wrote (tiny fixture), F32 without copying', () => {
    const bytes = readFileSync(fixture('models', 'tiny', 'model.safetensors'));
    const { tensors, metadata } = parseSafetensors(bytes, 'tiny');
    expect(metadata.format).toBe('pt');
    const wte = tensors.get('transformer.wte.weight')!;
    expect(wte.shape).toEqual([320, 32]);
    expect(wte.dtype).toBe('F32');
    if ((bytes.byteOffset + 8) % 4 === 0) expect(wte.data.buffer).toBe(bytes.buffer); // a view, not a copy
  });

  it('converts F16 and BF16 to the same float32 values PyTorch rounded to', () => {
    const f32Tensors = parseSafetensors(readFileSync(fixture('models', 'tiny', 'model.safetensors')), 'tiny').tensors;
    for (const dir of ['tiny-f16', 'tiny-bf16']) {
      const t = parseSafetensors(readFileSync(fixture('models', dir, 'model.safetensors')), dir).tensors.get('transformer.h.1.mlp.c_fc.weight')!;
      const ref = f32Tensors.get('transformer.h.1.mlp.c_fc.weight')!;
      expect(t.dtype).toBe(dir === 'tiny-f16' ? 'F16' : 'BF16');
      const maxRel = Math.max(...Array.from(t.data, (v, k) => Math.abs(v - ref.data[k]) / Math.max(Math.abs(ref.data[k]), 1e-3)));
      expect(maxRel).toBeLessThan(dir === 'tiny-f16' ? 1e-3 : 1e-2); // rounding error of the format, no more
    }
  });

  it('round-trips through the writer, in F32 exactly and in F16 as rounded', () => {
    const data = Float32Array.from([0, -1.5, 3.14159, 65504, 1e-7, -2e-5]);
    const back = parseSafetensors(encodeSafetensors([{ name: 'a', shape: [2, 3], data }]), 'x').tensors.get('a')!;
    expect(back.shape).toEqual([2, 3]);
    expect(Array.from(back.data)).toEqual(Array.from(data));
    const half = parseSafetensors(encodeSafetensors([{ name: 'a', shape: [6], data }], { dtype: 'F16' }), 'x').tensors.get('a')!;
    expect(Array.from(half.data)).toEqual(Array.from(data, (v) => f16ToF32(f32ToF16(v))));
  });

  it('sees no repeated key where names only look alike', () => {
    // The same keys in different objects, and strings that hold quotes, colons and braces.
    const meta = { note: 'say "a": {"a": 1}', 'a\\': '[', '{': ']' };
    const header = `{"__metadata__":${JSON.stringify(meta)},"a":${entry(0, 4)},"a\\"":${entry(4, 8)},"b" : ${entry(8, 12)}}`;
    const { tensors, metadata } = parseSafetensors(file(header, f32(1, 2, 3)), 'x');
    expect(metadata).toEqual(meta);
    expect([...tensors].map(([name, t]) => [name, Array.from(t.data)])).toEqual([['a', [1]], ['a"', [2]], ['b', [3]]]);
  });

  it.each([
    ['too short', Buffer.alloc(5), /too short/],
    ['absurd header size', file('{}', undefined, MAX_HEADER_BYTES + 1), /header length \d+ is absurd/],
    ['header past the end', file('{}', undefined, 100), /runs past the end of the file/],
    ['header not JSON', file('{"a": '), /header is not valid JSON/],
    ['unknown dtype', file({ a: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /tensor a: unsupported dtype "F8"/],
    ['offsets past the end', file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32(1)), /tensor a: data_offsets \[0, 8\] lie outside the 4 data bytes/],
    ['byte count ≠ shape', file({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(1, 2)), /tensor a: 8 bytes for shape \[3\]/],
    ['overlapping tensors', file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(1, 2, 3)), /tensors a and b overlap/],
    ['negative offsets', file({ a: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, f32(1)), /bad data_offsets/],
    // JSON.parse would keep the last of each: which tensor (or dtype) the file means is ambiguous.
    ['a tensor twice', file(`{"a":${entry(0, 4)},"b":${entry(4, 8)},"a":${entry(8, 12)}}`, f32(1, 2, 3)), /^bad\.safetensors: tensor a appears twice in the header$/],
    ['a tensor twice, once escaped', file(`{"a":${entry(0, 4)}, "\\u0061" :${entry(4, 8)}}`, f32(1, 2)), /tensor a appears twice in the header/],
    ['a key of a tensor twice', file('{"a":{"dtype":"F32","shape":[1],"dtype":"F16","data_offsets":[0,4]}}', f32(1)), /tensor a: key dtype appears twice in the header/],
    ['metadata twice', file(`{"__metadata__":{"x":"1"},"a":${entry(0, 4)},"__metadata__":{}}`, f32(1)), /__metadata__ appears twice in the header/],
  ])('refuses a header that lies: %s', (_what, bytes, message) => {
    expect(() => parseSafetensors(bytes, 'bad.safetensors')).toThrow(message);
  });
});

describe('float16', () => {
  it('converts every half exactly both ways, and rounds ties to even', () => {
    const wrong: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const v = f16ToF32(h);
      if (!Number.isNaN(v) && f32ToF16(v) !== h) wrong.push(h);
    }
    expect(wrong).toEqual([]);
    expect(f16ToF32(0x3c00)).toBe(1);
    expect(f16ToF32(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(f16ToF32(0xfc00)).toBe(-Infinity);
    expect(f32ToF16(65520)).toBe(0x7c00); // rounds up to +inf
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie → even (1.0)
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (1.0 + 2ulp)
    expect(f32ToF16(2 ** -25)).toBe(0); // half the smallest subnormal: tie → even (0)
  });
});
