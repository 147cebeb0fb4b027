import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../src/backend/select.js';
import type { TokenRecord } from '../src/data/records.js';
import { loadCheckpoint } from '../src/formats/checkpoint.js';
import { DecodeModel } from '../src/model/decode-model.js';
import { GPT2 } from '../src/model/gpt2.js';
import { sourcesOf } from '../src/model/params.js';
import { lmLoss } from '../src/train/lm-loss.js';
import { trainStep, type ParameterUpdate } from '../src/train/step.js';

export const ROOT = new URL('..', import.meta.url).pathname;
export const SHARED = join(ROOT, '..', 'shared');
export const fixture = (...parts: string[]) => join(ROOT, 'fixtures', ...parts);

/** A fixture model (fixtures/models/<dir>) on the current backend of `tf`. */
export async function fixtureModel(tf: Tf, dir: string): Promise<GPT2> {
  const ck = await loadCheckpoint(fixture('models', dir));
  return GPT2.fromValues(tf, ck.config, ck.values);
}

/** The generic step with the LM loss over every parameter of `model` (full training of a causal LM). */
export const lmTrainStep = (model: GPT2, optimizer: ParameterUpdate, microBatches: TokenRecord[][], options: Parameters<typeof trainStep>[5]) =>
  trainStep(model.tf, model.params as Map<string, tfjs.Variable>, optimizer, microBatches, lmLoss(model), options);

/** ‖got − want‖ / ‖want‖ (the per-tensor gradient error the tests bound). */
export function normDiffRatio(got: ArrayLike<number>, want: Float32Array): number {
  if (got.length !== want.length) throw new Error(`${got.length} values, expected ${want.length}`);
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < want.length; i++) {
    diff += (got[i] - want[i]) ** 2;
    ref += want[i] ** 2;
  }
  return Math.sqrt(diff / ref);
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
}

/** Runs bin/<tool>.js with args; `input` goes to stdin. */
export function runCli(tool: string, args: string[], options: { input?: string | Buffer; cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const result = spawnSync(process.execPath, [join(ROOT, 'bin', `${tool}.js`), ...args], {
    input: options.input ?? '',
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, ...options.env },
    maxBuffer: 1 << 28,
  });
  return {
    code: result.status ?? -1,
    stdout: result.stdout.toString('utf8'),
    stderr: result.stderr.toString('utf8'),
    stdoutBytes: result.stdout,
  };
}

/** The pid of a process that has exited. */
export const deadPid = (): number => spawnSync(process.execPath, ['-e', '']).pid!;

/** The pid of another process that lives until the test file ends (call it at the top level). */
export function livePid(): number {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 600000)'], { stdio: 'ignore' });
  afterAll(() => void child.kill());
  return child.pid!;
}

/** A fresh temporary directory, removed after the test file. */
export function tempDir(prefix = 'gpt2tc-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A full disk to write on: a 16 KiB tmpfs, unmounted after the test file. Mounting needs root;
 * elsewhere it is undefined and the caller's tests (`what`) are reported as skipped.
 */
export function tinyDisk(what: string): string | undefined {
  const mountPoint = join(tempDir(), 'tiny');
  mkdirSync(mountPoint);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', mountPoint], { stdio: 'ignore' });
  } catch {
    console.warn(`SKIPPED: ${what} (cannot mount a tmpfs here; needs root)`);
    return undefined;
  }
  afterAll(() => execFileSync('umount', ['-l', mountPoint])); // -l: even if a failed test left a file open there
  return mountPoint;
}

/** The stderr contract: exactly one line `<tool>: error: ...`, no stack trace. */
export function expectOneLineError(result: CliResult, tool: string, pattern: RegExp, code = 1): void {
  const lines = result.stderr.trimEnd().split('\n');
  const errorLines = lines.filter((l) => l.startsWith(`${tool}: error: `));
  if (result.code !== code || errorLines.length !== 1 || !pattern.test(errorLines[0]) || /\n\s+at /.test(result.stderr)) {
    throw new Error(`expected exit ${code} and one error line matching ${pattern}, got exit ${result.code}, stderr:\n${result.stderr}`);
  }
}

/** A fixture model (fixtures/models/<dir>) in a DecodeModel's shared memory, on `threads` threads. */
export async function fixtureDecodeModel(dir: string, threads: number): Promise<DecodeModel> {
  const ck = await loadCheckpoint(fixture('models', dir));
  return DecodeModel.fromSources(ck.config, sourcesOf(ck.values), threads);
}

/** PyTorch's greedy decoding of a fixture model (fixtures/models/<dir>/greedy.json; see its README). */
export interface GreedyReference {
  prompts: number[][];
  continuations: number[][];
  /** Last-position logits after the first prompt and each of its first continuation's tokens but the last. */
  first_prompt_step_logits: number[][];
}
export const greedyReference = (dir: string): GreedyReference => JSON.parse(readFileSync(fixture('models', dir, 'greedy.json'), 'utf8')) as GreedyReference;

/** Largest |got − want| over two equally long arrays. */
export function maxAbsDiff(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`lengths differ: ${got.length} against ${want.length}`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  return worst;
}

/** Runs bin/<tool>.js with its stdout on the file (or device) at `path`, e.g. /dev/full. */
export function runCliToFile(tool: string, args: string[], path: string, options: { input?: string } = {}): CliResult {
  const fd = openSync(path, 'w');
  try {
    const result = spawnSync(process.execPath, [join(ROOT, 'bin', `${tool}.js`), ...args], { input: options.input ?? '', cwd: ROOT, stdio: ['pipe', fd, 'pipe'] });
    return { code: result.status ?? -1, stdout: '', stderr: result.stderr.toString('utf8'), stdoutBytes: Buffer.alloc(0) };
  } finally {
    closeSync(fd);
  }
}
