/**
 * convert-weights with nanoGPT checkpoints end to end (the built tool): ckpt.pt → our checkpoint
 * directory → ckpt.pt gives the file nanoGPT's train.py resumed from (check-NAME.json, by sha256),
 * with the info lines the mapping owes; wrong flags and bad files are one-line errors.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectOneLineError, fixture, runCli, tempDir } from '../helpers.js';

const dir = tempDir('gpt2tc-nanogpt-cli-');
const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const verdict = (name: string) => JSON.parse(readFileSync(fixture('nanogpt', `check-${name}.json`), 'utf8')) as { file_sha256: string };

describe('convert-weights and nanoGPT', () => {
  it('ckpt.pt → checkpoint directory → ckpt.pt: the file nanoGPT resumed from', () => {
    const hf = join(dir, 'nobias-hf');
    const there = runCli('convert-weights', [fixture('nanogpt', 'nobias.ckpt.pt'), hf]);
    expect(there.code, there.stderr).toBe(0);
    expect(there.stderr).toMatch(/nanoGPT checkpoint: model_args \{"n_layer":2,"n_head":4,"n_embd":16,"block_size":32,"bias":false,"vocab_size":320,"dropout":0\}, iter_num 1/);
    expect(there.stderr).toMatch(/bias: False: .* loading them as zeros/);
    expect(there.stderr).toMatch(/from nanoGPT names in /);
    const out = join(dir, 'ckpt.pt');
    const back = runCli('convert-weights', [hf, out, '--to', 'nanogpt']);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stderr).toMatch(/every bias is zero: writing a bias: False model/);
    expect(back.stderr).toMatch(/wrote a nanoGPT checkpoint \(iter_num 0; a fresh AdamW state/);
    expect(sha256(out)).toBe(verdict('nobias').file_sha256);
    // A second run does not replace it without --overwrite, and does with it (the file is ours).
    expectOneLineError(runCli('convert-weights', [hf, out, '--to', 'nanogpt']), 'convert-weights', /ckpt\.pt: exists \(use --overwrite/);
    expect(runCli('convert-weights', ['-q', hf, out, '--to', 'nanogpt', '--overwrite']).code).toBe(0);
    expect(sha256(out)).toBe(verdict('nobias').file_sha256);
  });

  it('refuses --config for a nanoGPT checkpoint, and --dtype f16 for one being written', () => {
    expectOneLineError(runCli('convert-weights', [fixture('nanogpt', 'bias.ckpt.pt'), join(dir, 'x'), '--config', 'gpt2']), 'convert-weights', /--config: .*bias\.ckpt\.pt is a nanoGPT checkpoint, which carries its own config/, 2);
    expectOneLineError(runCli('convert-weights', [fixture('models', 'tiny'), join(dir, 'y.pt'), '--to', 'nanogpt', '--dtype', 'f16']), 'convert-weights', /--dtype f16 is not written with --to nanogpt \(f32\); f16 is for --to hf, mindformers, mindspore, gguf$/, 2);
  });

  it('says in --help how nanoGPT checkpoints are read and written', () => {
    const help = runCli('convert-weights', ['--help']).stdout;
    expect(help).toMatch(/nanogpt, a nanoGPT ckpt\.pt/);
    expect(help).toMatch(/The other tools take the converted directory, not\s+ckpt\.pt: convert it once/);
  });
});
