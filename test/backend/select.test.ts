import fs from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { BACKEND_NAMES, parseBackendName, requestsWasm, selectBackend } from '../../src/backend/index.js';
import { ToolError } from '../../src/util/errors.js';

const require = createRequire(import.meta.url);
const installed = (pkg: string): boolean => {
  try {
    require.resolve(`${pkg}/package.json`);
    return true;
  } catch {
    return false;
  }
};
const hasTfjsNode = installed('@tensorflow/tfjs-node');
const hasTfjsNodeGpu = installed('@tensorflow/tfjs-node-gpu');

async function rejection(promise: Promise<unknown>): Promise<ToolError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ToolError);
    return err as ToolError;
  }
  throw new Error('expected a rejection');
}

describe('loading', () => {
  it('importing the backend module loads no TensorFlow.js (tools without tensors start fast)', () => {
    // Runs first in this file: nothing has called selectBackend yet.
    expect(Object.keys(require.cache).filter((path) => path.includes('@tensorflow'))).toEqual([]);
  });
});

describe('backend names', () => {
  it('accepts the five names and refuses others with a usage error listing them', () => {
    for (const name of BACKEND_NAMES) expect(parseBackendName(name)).toBe(name);
    let err: unknown;
    try {
      parseBackendName('gpu');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ToolError);
    expect((err as ToolError).exitCode).toBe(2);
    expect((err as ToolError).message).toBe('backend: unknown backend "gpu", expected one of auto, tensorflow-gpu, tensorflow, wasm, cpu');
  });

  it('a bad GPT2_BACKEND is a usage error naming the variable', async () => {
    const saved = process.env.GPT2_BACKEND;
    process.env.GPT2_BACKEND = 'tpu';
    try {
      const err = await rejection(selectBackend());
      expect(err.exitCode).toBe(2);
      expect(err.message).toMatch(/^GPT2_BACKEND: unknown backend "tpu", expected one of auto, /);
    } finally {
      if (saved === undefined) delete process.env.GPT2_BACKEND;
      else process.env.GPT2_BACKEND = saved;
    }
  });
});

describe.skipIf(hasTfjsNode)('without @tensorflow/tfjs-node installed', () => {
  it("a forced 'tensorflow' fails with one line naming the package and how to install it", async () => {
    const err = await rejection(selectBackend('tensorflow'));
    expect(err.exitCode).toBe(1);
    expect(err.message).not.toContain('\n');
    expect(err.message).toBe(
      'backend tensorflow: cannot load @tensorflow/tfjs-node (not installed: its install downloads libtensorflow; ' +
        'run `npm install @tensorflow/tfjs-node` on a machine that can reach storage.googleapis.com, or use --backend wasm)',
    );
  });

  it.skipIf(hasTfjsNodeGpu)("a forced 'tensorflow-gpu' names @tensorflow/tfjs-node-gpu", async () => {
    const err = await rejection(selectBackend('tensorflow-gpu'));
    expect(err.message).toMatch(/^backend tensorflow-gpu: cannot load @tensorflow\/tfjs-node-gpu \(not installed: .*npm install @tensorflow\/tfjs-node-gpu/);
    expect(err.message).not.toContain('\n');
  });

  it.skipIf(hasTfjsNodeGpu)("'auto' picks wasm with SIMD, saying so once", async () => {
    // Record which binary the wasm backend reads: the SIMD one is what makes it fast.
    const read: string[] = [];
    const original = fs.readFileSync;
    fs.readFileSync = ((path: fs.PathOrFileDescriptor, ...rest: unknown[]) => {
      if (String(path).endsWith('.wasm')) read.push(String(path));
      return (original as (...args: unknown[]) => unknown)(path, ...rest);
    }) as typeof fs.readFileSync;
    const lines: string[] = [];
    try {
      const selected = await selectBackend('auto', (m) => lines.push(m));
      expect(selected.name).toBe('wasm');
      expect(selected.tf.getBackend()).toBe('wasm');
    } finally {
      fs.readFileSync = original;
    }
    expect(lines).toEqual(['backend: wasm (SIMD, 1 thread)']);
    expect(read).toHaveLength(1);
    expect(read[0]).toMatch(/node_modules\/@tensorflow\/tfjs-backend-wasm\/dist\/tfjs-backend-wasm-simd\.wasm$/);
  });
});

describe('switching backends in one process', () => {
  it('cpu then wasm then cpu share one tf instance and tensors move between them', async () => {
    const cpu = await selectBackend('cpu');
    expect(cpu.tf.getBackend()).toBe('cpu');
    const x = cpu.tf.tensor1d([1, 2, 3]);
    const wasm = await selectBackend('wasm');
    expect(wasm.tf).toBe(cpu.tf);
    expect(wasm.tf.getBackend()).toBe('wasm');
    expect(Array.from(wasm.tf.mul(x, 2).dataSync())).toEqual([2, 4, 6]);
    expect((await selectBackend('cpu')).tf.getBackend()).toBe('cpu');
  });

  it('GPT2_BACKEND picks the backend when none is requested', async () => {
    const saved = process.env.GPT2_BACKEND;
    process.env.GPT2_BACKEND = 'cpu';
    try {
      expect((await selectBackend(undefined)).name).toBe('cpu');
    } finally {
      if (saved === undefined) delete process.env.GPT2_BACKEND;
      else process.env.GPT2_BACKEND = saved;
    }
  });

  it('tells whether a request lands on wasm without loading anything', () => {
    expect(requestsWasm('wasm')).toBe(true);
    expect(requestsWasm('cpu')).toBe(false);
    expect(requestsWasm('tensorflow')).toBe(false);
    // auto: wasm unless a tfjs-node package is installed
    expect(requestsWasm('auto')).toBe(!installed('@tensorflow/tfjs-node') && !installed('@tensorflow/tfjs-node-gpu'));
    expect(() => requestsWasm('gpu')).toThrow(/unknown backend "gpu"/);
    const saved = process.env.GPT2_BACKEND;
    process.env.GPT2_BACKEND = 'cpu';
    try {
      expect(requestsWasm(undefined)).toBe(false);
    } finally {
      if (saved === undefined) delete process.env.GPT2_BACKEND;
      else process.env.GPT2_BACKEND = saved;
    }
  });
});
