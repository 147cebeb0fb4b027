/**
 * MindSpore .ckpt against files made by MindSpore's own format definition (checkpoint.proto
 * compiled by protoc, serialised by protobuf-python the way save_checkpoint writes: see
 * test/oracle/make_mindspore_fixtures.py): the reader gives the tiny model's values bit for bit
 * (f16: as numpy rounded them), joins slices, checks the CRC trailer and keeps the optimizer state
 * apart; the writer's bytes are protobuf-python's; malformed files are one-line errors naming the file.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFromJson } from '../../src/model/config.js';
import { PREFIX } from '../../src/model/params.js';
import { fromMindformers, toMindformers } from '../../src/formats/mindformers.js';
import { inConvertWeightOrder, readMindsporeCheckpoint, sliceRanges, writeMindsporeCheckpoint } from '../../src/formats/mindspore.js';
import { parseSafetensors, type Tensor32 } from '../../src/formats/safetensors.js';
import { readWeightsFile, sniffFormat } from '../../src/formats/weights-file.js';
import { ToolError } from '../../src/util/errors.js';
import { fixture, tempDir } from '../helpers.js';

const dir = tempDir();
const ms = (name: string) => fixture('mindspore', name);
const config = configFromJson(JSON.parse(readFileSync(fixture('models', 'tiny', 'config.json'), 'utf8')), 'tiny');
const safetensors = (...parts: string[]) => parseSafetensors(readFileSync(fixture(...parts)), parts.join('/')).tensors;
interface Entry {
  tag: string;
  tensor_type: string;
  dims: number[];
  slices: number;
}
const expected = JSON.parse(readFileSync(ms('expected.json'), 'utf8')) as { files: Record<string, Entry[]> };

const bitsOf = (t: Tensor32) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex');
/** name → shape and float32 bits, to compare tensor maps exactly (NaN payloads and -0 included). */
const bits = (tensors: Map<string, Tensor32>) => new Map([...tensors].map(([name, t]) => [name, `${t.shape}:${bitsOf(t)}`]));
/** fixtures/models/tiny's weights as torch's mapping in make_model_fixtures.py names them. */
const tinyMindformers = () => safetensors('models', 'tiny', 'mindformers.safetensors');

async function expectError(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ToolError);
  expect((err as Error).message).toMatch(pattern);
  expect((err as Error).message).not.toContain('\n');
}

describe('reading MindSpore checkpoints', () => {
  it('tiny.ckpt holds the tiny model under MindFormers names, bit for bit, in convert_weight.py order', async () => {
    const { tensors, skipped } = await readMindsporeCheckpoint(ms('tiny.ckpt'));
    expect(skipped).toEqual([]);
    expect([...tensors.keys()]).toEqual(expected.files['tiny.ckpt'].map((e) => e.tag));
    expect(bits(tensors)).toEqual(bits(tinyMindformers()));
    expect(new Set([...tensors.values()].map((t) => t.dtype))).toEqual(new Set(['F32']));
  });

  it('tiny-f16.ckpt: Float16 values as numpy rounded them, which are torch\'s tiny-f16 weights', async () => {
    const { tensors } = await readMindsporeCheckpoint(ms('tiny-f16.ckpt'));
    expect(new Set([...tensors.values()].map((t) => t.dtype))).toEqual(new Set(['F16']));
    // Independent roundings (numpy in the .ckpt, torch in fixtures/models/tiny-f16) of the same weights.
    const values = fromMindformers(config, tensors, 'tiny-f16.ckpt');
    const torchF16 = safetensors('models', 'tiny-f16', 'model.safetensors');
    expect(values.size).toBe(torchF16.size);
    for (const [name, t] of torchF16) expect(bitsOf(values.get(name)! as Tensor32), name).toBe(bitsOf(t));
  });

  it('a training checkpoint: slices joined, CRC checked, optimizer state and counters kept apart', async () => {
    const { tensors, skipped } = await readMindsporeCheckpoint(ms('tiny-train.ckpt'));
    expect(skipped).toEqual([]);
    const entries = expected.files['tiny-train.ckpt'];
    expect(entries.find((e) => e.tag.endsWith('word_embedding.embedding_table'))!.slices).toBe(3);
    expect([...tensors.keys()]).toEqual(entries.map((e) => e.tag));
    for (const e of entries) expect(tensors.get(e.tag)!.shape, e.tag).toEqual(e.dims.length === 1 && e.dims[0] === 0 ? [] : e.dims);
    const weights = bits(tinyMindformers());
    for (const [name, b] of weights) expect(bits(tensors).get(name), name).toBe(b);
    const value = (tag: string) => [...tensors.get(tag)!.data];
    expect([value('global_step'), value('epoch_num'), value('step_num'), value('loss_scale')]).toEqual([[120], [3], [120], [1024]]);
    expect([tensors.get('global_step')!.dtype, tensors.get('epoch_num')!.dtype, tensors.get('backbone.blocks.1.attention.beta')!.dtype]).toEqual(['I32', 'I64', 'BOOL']);
    const mask = tensors.get('backbone.blocks.0.attention.beta')!;
    expect(mask.shape).toEqual([1, 1, 32, 32]);
    expect([mask.data[0], mask.data[1], mask.data[32], mask.data[33]]).toEqual([1, 0, 1, 1]); // lower triangle
    expect(tensors.get('adam_v.backbone.blocks.0.attention.dense1.weight')!.shape).toEqual([32, 32]);
  });

  it('is recognised by its first value, and reading through weights-file gives the same tensors', async () => {
    const head = readFileSync(ms('tiny.ckpt')).subarray(0, 64);
    expect(sniffFormat(head, readFileSync(ms('tiny.ckpt')).length)).toBe('mindspore');
    expect(sniffFormat(head, 100)).toBeUndefined(); // a first value longer than the file
    expect(bits(await readWeightsFile(ms('tiny-train.ckpt')))).toEqual(bits((await readMindsporeCheckpoint(ms('tiny-train.ckpt'))).tensors));
  });
});

describe('writing MindSpore checkpoints', () => {
  const tiny = () => {
    const hf = safetensors('models', 'tiny', 'model.safetensors');
    const values = new Map([...hf].map(([name, t]) => [name.startsWith(PREFIX) ? name : PREFIX + name, t]));
    return inConvertWeightOrder(toMindformers(config, values), config.n_layer);
  };

  it.each([
    ['F32', 'tiny.ckpt'],
    ['F16', 'tiny-f16.ckpt'],
  ] as const)('%s: byte for byte what protobuf-python serialises (%s)', async (dtype, name) => {
    const out = join(dir, `ours-${name}`);
    await writeMindsporeCheckpoint(out, tiny(), { dtype });
    expect(readFileSync(out).equals(readFileSync(ms(name)))).toBe(true);
  });

  it('a parameter over the slice size is cut as np.array_split cuts it', async () => {
    expect(sliceRanges([320, 32], 40960, 16384).map(([a, b]) => (b - a) / 128)).toEqual([107, 107, 106]);
    expect(sliceRanges([320, 32], 40960, 40960)).toEqual([[0, 40960]]);
    expect(sliceRanges([], 4, 1)).toEqual([[0, 4]]);
    // tiny-train.ckpt holds the word embedding in 3 slices: ours are the same bytes.
    const wte = tiny().filter((t) => t.name.endsWith('word_embedding.embedding_table'));
    const out = join(dir, 'wte.ckpt');
    await writeMindsporeCheckpoint(out, wte, { dtype: 'F32', sliceBytes: 16384 });
    expect(readFileSync(ms('tiny-train.ckpt')).includes(readFileSync(out))).toBe(true);
    expect(bits((await readMindsporeCheckpoint(out)).tensors)).toEqual(bits(new Map(wte.map((t) => [t.name, { ...t, dtype: 'F32' as const }]))));
  });

  it('refuses to write over an input', async () => {
    const out = join(dir, 'input.ckpt');
    writeFileSync(out, readFileSync(ms('tiny.ckpt')));
    await expectError(writeMindsporeCheckpoint(out, tiny(), { dtype: 'F32', inputs: [out] }), /input\.ckpt/);
    expect(readFileSync(out).equals(readFileSync(ms('tiny.ckpt')))).toBe(true);
  });
});

describe('malformed MindSpore checkpoints → one-line errors naming the file', () => {
  const file = (name: string, bytes: Uint8Array) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return path;
  };
  const tinyBytes = readFileSync(ms('tiny.ckpt'));

  it.each([
    ['bad-type.ckpt', /bad-type\.ckpt: tensor backbone\.layernorm\.gamma has tensor_type "Float8", not one MindSpore writes/],
    ['bad-dims.ckpt', /bad-dims\.ckpt: tensor backbone\.layernorm\.gamma: dims \[4, 4\] of Float32 take 64 bytes, its tensor_content has 60/],
    ['bad-huge-value.ckpt', /bad-huge-value\.ckpt: entry 0 at byte 0 claims 3221225472 bytes, only 57 follow: truncated/],
    ['bad-huge-content.ckpt', /bad-huge-content\.ckpt: entry 0 at byte 0 is not a Checkpoint\.Value/],
    ['bad-crc.ckpt', /bad-crc\.ckpt: CRC-32 \w+ of the checkpoint does not match its crc_num trailer/],
    ['bad-encrypted.ckpt', /bad-encrypted\.ckpt: an encrypted MindSpore checkpoint/],
  ])('%s', async (name, pattern) => {
    await expectError(readMindsporeCheckpoint(ms(name)), pattern);
  });

  it('a length prefix claiming gigabytes is refused before anything is allocated, also when sniffing', async () => {
    await expectError(readWeightsFile(ms('bad-huge-value.ckpt')), /bad-huge-value\.ckpt: not a weights file \(a MindSpore checkpoint whose first value runs past the end of the file/);
  });

  it.each([100, 183, 185, 186, 5000, tinyBytes.length - 1])('truncated after %i bytes', async (cut) => {
    const path = file(`cut-${cut}.ckpt`, tinyBytes.subarray(0, cut));
    await expectError(readMindsporeCheckpoint(path), new RegExp(`cut-${cut}\\.ckpt: entry \\d+ at byte \\d+ (claims \\d+ bytes, only \\d+ follow|is cut off by the end of the file): truncated`));
  });

  it('not a checkpoint', async () => {
    await expectError(readWeightsFile(file('text.ckpt', Buffer.from('hello, world\n'))), /text\.ckpt: not a weights file \(13 bytes starting "hello, world\\n", text\); accepted: .*MindSpore \.ckpt/);
    const garbage = Buffer.concat([tinyBytes.subarray(0, 184), Buffer.from([0x12, 0x01, 0x00])]);
    await expectError(readMindsporeCheckpoint(file('garbage.ckpt', garbage)), /garbage\.ckpt: not a MindSpore checkpoint: field 2 \(wire type 2\) at byte 184/);
  });

  it('slices that disagree, and a tag that comes back', async () => {
    // bad-crc.ckpt is one good value (dims [4]) and the trailer; bad-dims.ckpt has the same tag, dims [4, 4].
    const good = readFileSync(ms('bad-crc.ckpt')).subarray(0, -17);
    const mixed = file('mixed.ckpt', Buffer.concat([readFileSync(ms('bad-dims.ckpt')), good]));
    await expectError(readMindsporeCheckpoint(mixed), /mixed\.ckpt: tensor backbone\.layernorm\.gamma: its slices disagree on tensor_type or dims/);
    const twice = file('twice.ckpt', Buffer.concat([tinyBytes, tinyBytes]));
    await expectError(readMindsporeCheckpoint(twice), /twice\.ckpt: tensor backbone\.blocks\.0\.layernorm1\.gamma appears twice/);
  });
});
