import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { unpickle } from '../../src/formats/pickle.js';
import { readPytorchBin, type LoadedTensor } from '../../src/formats/pytorch-bin.js';
import { plainDataHooks } from '../../src/formats/state-dict-pickle.js';
import { f16BitsToF32Bits, storageToFloat32, type SourceDtype } from '../../src/formats/dtypes.js';
import { ToolError } from '../../src/util/errors.js';
import { fixture, tempDir } from '../helpers.js';

interface Expected {
  marker: string;
  files: Record<string, string>;
  expected: Record<string, Record<string, { shape: number[]; dtype: string; f32: string }>>;
}
const spec: Expected = JSON.parse(readFileSync(fixture('torch', 'expected.json'), 'utf8'));
const torchFile = (name: string) => fixture('torch', name);
const dir = tempDir('gpt2tc-torchbin-');

const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Resolves to the ToolError the read fails with; anything else (success, a plain Error) fails the test. */
async function failure(path: string): Promise<ToolError> {
  try {
    await readPytorchBin(path);
  } catch (err) {
    if (!(err instanceof ToolError)) throw new Error(`${path}: expected a ToolError, got ${String(err)}`);
    expect(err.message.includes('\n'), err.message).toBe(false);
    expect(err.message.startsWith(`${path}: `), err.message).toBe(true);
    return err;
  }
  throw new Error(`${path}: expected the read to fail`);
}

describe('readPytorchBin: fixtures written by torch.save', () => {
  for (const [file, set] of Object.entries(spec.files)) {
    it(`${file}: every tensor, in order, bit for bit as torch converts it to float32`, async () => {
      const tensors = await readPytorchBin(torchFile(file));
      const expected = spec.expected[set];
      expect([...tensors.keys()]).toEqual(Object.keys(expected));
      for (const [name, want] of Object.entries(expected)) {
        const got = tensors.get(name)!;
        expect({ name, shape: got.shape, dtype: got.dtype }).toEqual({ name, shape: want.shape, dtype: want.dtype });
        expect(got.data).toBeInstanceOf(Float32Array);
        expect(bytesOf(got.data).toString('hex'), name).toBe(want.f32);
      }
    });
  }

  describe('state.zip.bin in detail', () => {
    let t: Map<string, LoadedTensor>;
    beforeAll(async () => {
      t = await readPytorchBin(torchFile('state.zip.bin'));
    });

    it('gives tied weights both names, with equal data from one storage', () => {
      const wte = t.get('transformer.wte.weight')!;
      const head = t.get('lm_head.weight')!;
      expect(head.shape).toEqual([5, 4]);
      expect(head.data).toEqual(wte.data);
      expect(head.data.buffer).toBe(wte.data.buffer); // read once, not copied
    });

    it('makes contiguous float32 views without copying, and copies strided ones', () => {
      const slice = t.get('slice')!;
      expect(slice.data.byteOffset).toBe(5 * 4); // a view into the 16-element storage it slices
      expect(slice.data.buffer.byteLength).toBe(16 * 4);
      const transposed = t.get('transposed')!;
      expect(transposed.shape).toEqual([4, 3]);
      expect(Array.from(transposed.data.subarray(0, 3))).toEqual([-3, 2, 7]); // base[0][0], base[1][0], base[2][0]
    });

    it('handles 0-d scalars, the GPT-2 buffers, empty and expanded tensors', () => {
      expect(t.get('scalar')).toMatchObject({ shape: [], dtype: 'F32' });
      expect(Array.from(t.get('scalar')!.data)).toEqual([3.25]);
      expect(Array.from(t.get('h.0.attn.masked_bias')!.data)).toEqual([-1e4]);
      for (const [name, dtype] of [['h.0.attn.bias', 'BOOL'], ['h.1.attn.bias', 'U8']] as const) {
        const bias = t.get(name)!;
        expect(bias).toMatchObject({ shape: [1, 1, 8, 8], dtype });
        expect(bias.data[0 * 8 + 0]).toBe(1);
        expect(bias.data[0 * 8 + 1]).toBe(0);
        expect(bias.data[7 * 8 + 7]).toBe(1);
      }
      expect(t.get('empty')).toMatchObject({ shape: [0, 3] });
      expect(t.get('empty')!.data.length).toBe(0);
      expect(Array.from(t.get('expanded')!.data)).toEqual([2, 2, 2, 2, 2, 2]);
    });
  });

  it('reports progress over the storage bytes, ending at the total', async () => {
    for (const file of ['state.zip.bin', 'state.legacy.bin', 'state.deflate.zip.bin']) {
      const calls: Array<[number, number]> = [];
      await readPytorchBin(torchFile(file), { onProgress: (done, total) => calls.push([done, total]) });
      expect(calls.length).toBeGreaterThan(2);
      expect(calls[0][0]).toBe(0);
      const total = calls[0][1];
      expect(total).toBe(762); // the storages' bytes, however the file packs them
      expect(calls.at(-1)).toEqual([total, total]);
      for (let i = 1; i < calls.length; i++) expect(calls[i][0]).toBeGreaterThanOrEqual(calls[i - 1][0]);
    }
  });
});

describe('readPytorchBin: refuses malicious pickles without running anything', () => {
  beforeAll(() => rmSync(spec.marker, { force: true }));

  for (const [file, global] of [
    ['evil.zip.bin', 'posix.system'],
    ['evil.legacy.bin', 'posix.system'],
    ['evil.p4.zip.bin', 'builtins.eval'],
  ]) {
    it(`${file}: refuses ${global}`, async () => {
      const err = await failure(torchFile(file));
      expect(err.message).toBe(`${torchFile(file)}: refusing to load: the pickle calls ${global}, which a PyTorch state dict never needs`);
      expect(existsSync(spec.marker)).toBe(false);
    });
  }
});

describe('readPytorchBin: errors are one line naming the file', () => {
  it('missing file, a directory, random bytes, empty file, a plain pickle, a zip without data.pkl', async () => {
    expect((await failure(join(dir, 'nope.bin'))).message).toMatch(/no such file or directory/);
    expect((await failure(dir)).message).toMatch(/is a directory/);
    const random = join(dir, 'random.bin');
    let x = 12345;
    writeFileSync(random, Uint8Array.from({ length: 5000 }, () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 24)));
    expect((await failure(random)).message).toMatch(/: not a PyTorch checkpoint/);
    const empty = join(dir, 'empty.bin');
    writeFileSync(empty, '');
    expect((await failure(empty)).message).toMatch(/empty file, not a PyTorch checkpoint/);
    const plainPickle = join(dir, 'plain.pkl');
    writeFileSync(plainPickle, Buffer.from('80027d710058010000006171014b01732e', 'hex')); // {'a': 1}
    expect((await failure(plainPickle)).message).toMatch(/not a PyTorch checkpoint/);
    const emptyZip = join(dir, 'empty.zip');
    writeFileSync(emptyZip, Buffer.concat([Buffer.from('PK\x05\x06'), Buffer.alloc(18)]));
    expect((await failure(emptyZip)).message).toMatch(/not a PyTorch checkpoint \(a zip archive without data\.pkl\)/);
  });

  it('big-endian checkpoints, views past their storage, missing storage records', async () => {
    expect((await failure(torchFile('bigendian.zip.bin'))).message).toMatch(/saved on a big-endian machine/);
    expect((await failure(torchFile('past-storage.zip.bin'))).message).toMatch(/tensor w reads past its storage: it needs element 4 of storage 0, which has 4/);
    expect((await failure(torchFile('missing-key.zip.bin'))).message).toMatch(/storage 7 is referenced but missing: the archive has no archive\/data\/7/);
  });

  it('names an unsupported opcode and its byte offset', async () => {
    // evil.legacy.bin's GLOBAL opcode turned into INST, an object-building opcode we never accept.
    const bytes = readFileSync(torchFile('evil.legacy.bin'));
    const at = bytes.indexOf('cposix\nsystem\n');
    bytes[at] = 0x69;
    const patched = join(dir, 'inst.bin');
    writeFileSync(patched, bytes);
    expect((await failure(patched)).message).toBe(`${patched}: unsupported pickle opcode 0x69 ('i') at byte ${at}`);
    expect(() => unpickle(Uint8Array.of(0x80, 2, 0x49, 0x31, 0x0a, 0x2e), plainDataHooks('x.pkl'), { path: 'x.pkl', member: 'a/data.pkl' })).toThrow(
      "x.pkl: unsupported pickle opcode 0x49 ('I') at byte 2 of a/data.pkl",
    );
  });

  it('every truncated copy of every good fixture fails cleanly', async () => {
    for (const file of [...Object.keys(spec.files), 'evil.zip.bin']) {
      const whole = readFileSync(torchFile(file));
      const cuts = new Set([1, 2, 3, 4, 10, 16, 30, 64, 100, 200, whole.length - 1, whole.length - 8, whole.length - 22, whole.length - 23]);
      for (let c = 0; c < whole.length; c += 53) cuts.add(c);
      const cut = join(dir, `cut-${basename(file)}`);
      for (const at of [...cuts].filter((c) => c > 0 && c < whole.length)) {
        writeFileSync(cut, whole.subarray(0, at));
        const err = await failure(cut);
        expect(err.message, `${file} cut at ${at}`).toMatch(/truncated|not a PyTorch checkpoint|damaged/);
      }
    }
  });
});

describe('readPytorchBin: corrupted copies', () => {
  it('load or fail with a one-line ToolError, never crash or hang', async () => {
    let x = 7;
    const rnd = (n: number) => (x = (x * 1103515245 + 12345) >>> 0) % n;
    const copy = join(dir, 'corrupt.bin');
    for (const file of Object.keys(spec.files)) {
      const whole = readFileSync(torchFile(file));
      for (let iter = 0; iter < 100; iter++) {
        const bytes = Buffer.from(whole);
        for (let k = 1 + rnd(4); k > 0; k--) bytes[rnd(bytes.length)] = rnd(256);
        writeFileSync(copy, bytes);
        await readPytorchBin(copy).catch((err: unknown) => {
          if (!(err instanceof ToolError) || err.message.includes('\n')) throw new Error(`${file}, corruption ${iter}: ${String(err)}`);
        });
      }
    }
  });
});

describe('dtype conversion', () => {
  it('float16 → float32 is exact for all 65536 bit patterns', () => {
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const mant = h & 0x3ff;
      if (exp === 0x1f && mant !== 0) {
        u[0] = ((h & 0x8000) << 16) | 0x7f800000 | (mant << 13); // NaN payload moves up, as in torch
      } else {
        f[0] = exp === 0x1f ? sign * Infinity : exp === 0 ? sign * mant * 2 ** -24 : sign * (1 + mant / 1024) * 2 ** (exp - 15);
      }
      if (f16BitsToF32Bits(h) !== u[0]) throw new Error(`f16 0x${h.toString(16)}: got 0x${f16BitsToF32Bits(h).toString(16)}, want 0x${u[0].toString(16)}`);
    }
  });

  it('converts a storage of every type', () => {
    const cases: Array<[SourceDtype, ArrayBufferView, number[]]> = [
      ['BF16', Uint16Array.of(0x3f80, 0xc000, 0x7f80), [1, -2, Infinity]],
      ['F64', Float64Array.of(0.5, 1e300), [0.5, Infinity]],
      ['I32', Int32Array.of(-3, 16777217), [-3, 16777216]],
      ['I16', Int16Array.of(-32768), [-32768]],
      ['I8', Int8Array.of(-1), [-1]],
      ['U8', Uint8Array.of(255), [255]],
      ['BOOL', Uint8Array.of(0, 1, 2), [0, 1, 1]],
      ['I64', BigInt64Array.of(-5n, (1n << 60n) + (1n << 36n) + 1n, -(1n << 63n)), [-5, 2 ** 60 + 2 ** 37, -(2 ** 63)]],
    ];
    for (const [dtype, src, want] of cases) {
      const bytes = new Uint8Array(src.buffer.slice(0));
      expect(Array.from(storageToFloat32(bytes, dtype)), dtype).toEqual(want);
    }
  });
});

// ---- Tiny GPT-2 checkpoints from test/oracle/make_model_fixtures.py, checked against safetensors ----

function readSafetensors(path: string): Map<string, LoadedTensor> {
  const buf = readFileSync(path);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.toString('utf8', 8, 8 + headerLength)) as Record<string, { dtype: SourceDtype; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, LoadedTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = info.data_offsets;
    const bytes = new Uint8Array(buf.subarray(8 + headerLength + begin, 8 + headerLength + end)); // copy: aligned
    out.set(name, { shape: info.shape, dtype: info.dtype, data: storageToFloat32(bytes, info.dtype) });
  }
  return out;
}

const models = ['tiny', 'tiny-legacy', 'tiny-strided'];
const reference = fixture('models', 'tiny', 'model.safetensors');
const haveModels = existsSync(reference) && models.every((m) => existsSync(fixture('models', m, 'pytorch_model.bin')));

describe.skipIf(!haveModels)(`tiny GPT-2 pytorch_model.bin files match tiny/model.safetensors${haveModels ? '' : ' (SKIPPED: fixtures/models/*/pytorch_model.bin not generated yet)'}`, () => {
  for (const model of models) {
    it(`${model}/pytorch_model.bin`, async () => {
      const want = readSafetensors(reference);
      const got = await readPytorchBin(fixture('models', model, 'pytorch_model.bin'));
      const unprefixed = (name: string) => name.replace(/^transformer\./, '');
      const matched = new Set<string>();
      for (const [name, w] of want) {
        const key = got.has(name) ? name : unprefixed(name);
        const g = got.get(key);
        expect(g, `${model}: ${name}`).toBeDefined();
        expect(g!.shape, name).toEqual(w.shape);
        expect(bytesOf(g!.data).equals(bytesOf(w.data)), name).toBe(true);
        matched.add(key);
      }
      // Whatever else the .bin holds is GPT-2's buffers or the tied head.
      for (const [name, g] of got) {
        if (matched.has(name)) continue;
        expect(unprefixed(name), `${model}: unexpected ${name}`).toMatch(/^(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)$/);
        if (name === 'lm_head.weight') expect(bytesOf(g.data).equals(bytesOf(want.get('transformer.wte.weight')!.data))).toBe(true);
      }
    });
  }
});
