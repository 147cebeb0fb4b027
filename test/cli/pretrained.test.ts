/**
 * A preset name where weights are expected means the preset's pretrained weights, found in
 * $GPT2_TOOLCHAIN_HOME/models/<name>, or a refusal that says how to get them; random weights only
 * with --random-init (src/model/source.ts).
 */
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { modelsHome, resolveModelSource } from '../../src/model/source.js';
import { expectOneLineError, fixture, runCli, tempDir } from '../helpers.js';

const dir = tempDir();
const empty = join(dir, 'empty-home');
const home = join(dir, 'home');
mkdirSync(empty);
const env = (h: string) => ({ GPT2_TOOLCHAIN_HOME: h });
const data = join(dir, 'data');
runCli('bpe-encode', ['-q', '--block-size', '65', '--out', data, fixture('wikitext', 'golden.articles.txt')]);

describe('preset names where weights are expected', () => {
  it('are refused, with how to get the weights, when none are installed', () => {
    for (const tool of ['gpt2-generate', 'gpt2-eval']) {
      const args = tool === 'gpt2-eval' ? ['--model', 'gpt2', '--data', data] : ['--model', 'gpt2', 'Hello'];
      const r = runCli(tool, args, { env: env(empty) });
      expectOneLineError(r, tool, /--model gpt2: no weights for preset gpt2 in .*empty-home\/models\/gpt2; convert .*convert-weights .*, or --random-init for random weights/);
      expect(r.stdout).toBe('');
    }
  });

  it('find the weights installed under $GPT2_TOOLCHAIN_HOME/models/<name>', () => {
    // gpt2-tiny's shape is not the fixture's; any checkpoint installed under the name is used as is.
    mkdirSync(join(home, 'models'), { recursive: true });
    cpSync(fixture('models', 'tiny'), join(home, 'models', 'gpt2-tiny'), { recursive: true });
    const installed = runCli('gpt2-generate', ['-q', '--model', 'gpt2-tiny', '--input-format', 'ids', '--format', 'ids', '-n', '3', '5 6 7'], { env: env(home) });
    const direct = runCli('gpt2-generate', ['-q', '--model', fixture('models', 'tiny'), '--input-format', 'ids', '--format', 'ids', '-n', '3', '5 6 7']);
    expect(installed.code, installed.stderr).toBe(0);
    expect(installed.stdout).toBe(direct.stdout);
  });

  it('give random weights only with --random-init, and --random-init takes only a preset', () => {
    const r = runCli('gpt2-generate', ['-q', '--model', 'gpt2-tiny', '--random-init', '--input-format', 'ids', '--format', 'ids', '-n', '2', '1 2'], { env: env(empty) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split(' ')).toHaveLength(2); // the new ids
    expectOneLineError(runCli('gpt2-generate', ['--model', fixture('models', 'tiny'), '--random-init', 'x']), 'gpt2-generate', /random weights need a preset name .*not ".*tiny"/, 2);
  });

  it('an unknown name lists the presets; prototype keys are not presets', async () => {
    expectOneLineError(runCli('gpt2-eval', ['--model', 'gpt9', '--data', data]), 'gpt2-eval', /--model gpt9: no such file or directory, and not a preset \(presets: gpt2, gpt2-medium, .*gpt2-tiny/);
    for (const name of ['constructor', 'toString', '__proto__']) {
      await expect(resolveModelSource(name, { flag: '--model' })).rejects.toThrow(/not a preset/);
      await expect(resolveModelSource(name, { flag: '--model', randomInit: true })).rejects.toThrow(/need a preset name/);
    }
    await expect(resolveModelSource('', { flag: '--model' })).rejects.toThrow(/--model is empty/);
  });

  it('the home defaults to ~/.cache/gpt2-toolchain and follows XDG_CACHE_HOME', () => {
    const saved = { ...process.env };
    try {
      delete process.env.GPT2_TOOLCHAIN_HOME;
      process.env.XDG_CACHE_HOME = '/x/cache';
      expect(modelsHome()).toBe('/x/cache/gpt2-toolchain/models');
      process.env.GPT2_TOOLCHAIN_HOME = '/y';
      expect(modelsHome()).toBe('/y/models');
    } finally {
      process.env = saved;
    }
  });
});
