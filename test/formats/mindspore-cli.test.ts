/**
 * convert-weights with MindSpore checkpoints, end to end (the built tool): a MindFormers .ckpt
 * made by protobuf-python converts to the tiny model's bits; --to mindspore writes protobuf-python's
 * bytes (f32 and f16); HF → mindspore → HF is bit-exact; a training checkpoint's optimizer state is
 * listed as ignored; bad files and destinations are one-line errors.
 */
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import { expectOneLineError, fixture, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const ms = (name: string) => fixture('mindspore', name);
const tinyConfig = fixture('models', 'tiny', 'config.json');
const sameFile = (a: string, b: string) => readFileSync(a).equals(readFileSync(b));
/** A safetensors file's tensors: name → dtype, shape and stored bits (the metadata may differ). */
const tensorsOf = (path: string) =>
  new Map([...parseSafetensors(readFileSync(path), path).tensors].map(([name, t]) => [name, `${t.dtype}${t.shape}:${Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex')}`]));
const sameTensors = (a: string, b: string) => expect(tensorsOf(a)).toEqual(tensorsOf(b));

function convert(args: string[]): string {
  const r = runCli('convert-weights', args);
  expect(r.code, r.stderr).toBe(0);
  return r.stderr;
}

describe('convert-weights and MindSpore .ckpt', () => {
  it('HF → mindspore is protobuf-python\'s file (f32, f16) → HF is bit-exact', () => {
    const f32 = join(dir, 'tiny.ckpt');
    convert(['-q', fixture('models', 'tiny'), f32, '--to', 'mindspore']);
    expect(sameFile(f32, ms('tiny.ckpt'))).toBe(true);
    const f16 = join(dir, 'tiny-f16.ckpt');
    convert(['-q', fixture('models', 'tiny'), f16, '--to', 'mindspore', '--dtype', 'f16']);
    expect(sameFile(f16, ms('tiny-f16.ckpt'))).toBe(true);
    const back = join(dir, 'back');
    convert(['-q', f32, back, '--config', tinyConfig]);
    sameTensors(join(back, 'model.safetensors'), fixture('models', 'tiny', 'model.safetensors'));
    // f16 back to HF f16: the bits torch's .half() gives (fixtures/models/tiny-f16)
    const half = join(dir, 'half');
    convert(['-q', f16, half, '--config', tinyConfig, '--dtype', 'f16']);
    sameTensors(join(half, 'model.safetensors'), fixture('models', 'tiny-f16', 'model.safetensors'));
  });

  it('a training checkpoint with config.json beside it: weights converted, the rest listed as ignored', () => {
    const src = join(dir, 'run');
    mkdirSync(src);
    cpSync(ms('tiny-train.ckpt'), join(src, 'gpt2-3_40.ckpt'));
    cpSync(tinyConfig, join(src, 'config.json'));
    const out = join(dir, 'from-train');
    const stderr = convert([join(src, 'gpt2-3_40.ckpt'), out]);
    sameTensors(join(out, 'model.safetensors'), fixture('models', 'tiny', 'model.safetensors'));
    const ignored = [...stderr.matchAll(/ignoring tensor (\S+)/g)].map((m) => m[1]).sort();
    expect(ignored).toEqual(
      [
        'adam_m.backbone.blocks.0.attention.dense1.weight', 'adam_m.backbone.layernorm.gamma',
        'adam_v.backbone.blocks.0.attention.dense1.weight', 'adam_v.backbone.layernorm.gamma',
        'backbone.blocks.0.attention.beta', 'backbone.blocks.0.attention.masked_beta',
        'backbone.blocks.1.attention.beta', 'backbone.blocks.1.attention.masked_beta',
        'epoch_num', 'global_step', 'loss_scale', 'step_num',
      ].sort(),
    );
    expect(stderr).toMatch(/from MindFormers names in .*gpt2-3_40\.ckpt/);
  });

  it('a .ckpt needs a config', () => {
    expectOneLineError(runCli('convert-weights', [ms('tiny.ckpt'), join(dir, 'x')]), 'convert-weights', /mindspore: no config\.json; give --config PRESET or --config FILE/);
  });

  it('an existing destination file: --overwrite replaces a weights file, never an input or anything else', () => {
    const out = join(dir, 'exists.ckpt');
    writeFileSync(out, 'notes\n');
    const args = [fixture('models', 'tiny'), out, '--to', 'mindspore'];
    expectOneLineError(runCli('convert-weights', args), 'convert-weights', /exists\.ckpt: exists \(use --overwrite to replace it\)/);
    expectOneLineError(runCli('convert-weights', [...args, '--overwrite']), 'convert-weights', /exists\.ckpt: not replacing it with --overwrite: it is not a weights file/);
    cpSync(ms('tiny-f16.ckpt'), out);
    convert(['-q', ...args, '--overwrite']);
    expect(sameFile(out, ms('tiny.ckpt'))).toBe(true);
    expectOneLineError(runCli('convert-weights', [out, out, '--to', 'mindspore', '--overwrite', '--config', tinyConfig]), 'convert-weights', /exists\.ckpt.*input/);
    expect(sameFile(out, ms('tiny.ckpt'))).toBe(true);
    expectOneLineError(runCli('convert-weights', [fixture('models', 'tiny'), dir, '--to', 'mindspore']), 'convert-weights', /exists and is not a file/);
  });

  it('a classifier cannot go to MindFormers names', () => {
    expectOneLineError(runCli('convert-weights', [fixture('models', 'tiny-cls'), join(dir, 'cls.ckpt'), '--to', 'mindspore']), 'convert-weights', /MindFormers names hold no classification head/);
  });

  it.each([
    ['bad-type.ckpt', /bad-type\.ckpt: tensor backbone\.layernorm\.gamma has tensor_type "Float8"/],
    ['bad-encrypted.ckpt', /bad-encrypted\.ckpt: an encrypted MindSpore checkpoint/],
    ['bad-huge-value.ckpt', /bad-huge-value\.ckpt: not a weights file \(a MindSpore checkpoint whose first value runs past the end/],
  ])('%s → one line', (name, pattern) => {
    expectOneLineError(runCli('convert-weights', [ms(name), join(dir, 'x'), '--config', tinyConfig]), 'convert-weights', pattern);
  });
});
