/**
 * Compute-backend selection. Every tensor in the program must come from the one TensorFlow.js
 * instance that the chosen backend registers into, so callers take `tf` from `selectBackend` and
 * never import a tfjs package themselves: with tfjs-node that is the module tfjs-node exports (it
 * re-exports @tensorflow/tfjs and registers its kernels there); with wasm and cpu it is the full
 * @tensorflow/tfjs (tfjs-core alone lacks the gradient registrations training needs).
 *
 * Nothing here imports tfjs at module load: tools that need no tensors start fast.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ToolError, UsageError } from '../util/errors.js';

export type BackendName = 'auto' | 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';
export type ResolvedBackendName = Exclude<BackendName, 'auto'>;
/** The TensorFlow.js namespace callers use for every op. */
export type Tf = typeof import('@tensorflow/tfjs');

export interface SelectedBackend {
  name: ResolvedBackendName;
  tf: Tf;
  /** What runs, for the log line, e.g. "wasm (SIMD, 1 thread)". */
  description: string;
}

/** In --help order; 'auto' tries the rest in this order. */
export const BACKEND_NAMES: readonly BackendName[] = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];
const AUTO_ORDER: readonly ResolvedBackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];
export const BACKEND_ENV = 'GPT2_BACKEND';

const PACKAGE: Record<ResolvedBackendName, string> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
  wasm: '@tensorflow/tfjs-backend-wasm',
  cpu: '@tensorflow/tfjs',
};

const INSTALL_HINT: Record<ResolvedBackendName, string> = {
  'tensorflow-gpu':
    'its install downloads libtensorflow with CUDA support; run `npm install @tensorflow/tfjs-node-gpu` on a machine ' +
    'with CUDA and cuDNN that can reach storage.googleapis.com, or use --backend wasm',
  tensorflow:
    'its install downloads libtensorflow; run `npm install @tensorflow/tfjs-node` on a machine that can reach ' +
    'storage.googleapis.com, or use --backend wasm',
  wasm: 'run `npm install @tensorflow/tfjs-backend-wasm`, or use --backend cpu',
  cpu: 'run `npm install @tensorflow/tfjs`',
};

/** Checks a backend name from a flag or the environment; a bad one is a usage error (exit 2). */
export function parseBackendName(value: string, source = 'backend'): BackendName {
  const name = value.trim();
  if ((BACKEND_NAMES as readonly string[]).includes(name)) return name as BackendName;
  throw new UsageError(`${source}: unknown backend ${JSON.stringify(value)}, expected one of ${BACKEND_NAMES.join(', ')}`);
}

/** The backend a request (or $GPT2_BACKEND, or 'auto') names, without loading anything. */
function requestedName(requested?: BackendName | string): BackendName {
  const fromEnv = requested === undefined ? process.env[BACKEND_ENV] : undefined;
  if (requested !== undefined) return parseBackendName(requested);
  return fromEnv !== undefined && fromEnv.trim() !== '' ? parseBackendName(fromEnv, BACKEND_ENV) : 'auto';
}

/**
 * Whether `selectBackend(requested)` would land on wasm, decided without loading tfjs: wasm asked
 * for, or 'auto' with neither tfjs-node package installed. (An installed but broken tfjs-node
 * answers false; selectBackend then falls back to wasm on its own.)
 */
export function requestsWasm(requested?: BackendName | string): boolean {
  const name = requestedName(requested);
  if (name !== 'auto') return name === 'wasm';
  return [PACKAGE['tensorflow-gpu'], PACKAGE.tensorflow].every((pkg) => {
    try {
      requireHere.resolve(pkg);
      return false;
    } catch {
      return true;
    }
  });
}

export interface SelectOptions {
  /**
   * false: inference only — load @tensorflow/tfjs-core and the backend, not the union package
   * (layers, converter, data and the gradient registrations), which halves start-up (~0.55 s
   * against ~1.1 s here). Ops are the same; a later call with gradients adds them to the same core.
   */
  gradients?: boolean;
}

const CORE = '@tensorflow/tfjs-core';
/** What the wasm and cpu backends take their ops from: the union package, or core alone. */
let tfPackage = '@tensorflow/tfjs';

/**
 * Loads and activates a backend and returns the tf instance to use everywhere.
 *
 * `requested` defaults to $GPT2_BACKEND, else 'auto' (tfjs-node-gpu, tfjs-node, wasm, cpu: the
 * first that loads). A forced backend that cannot load is a ToolError naming the package and how
 * to install it. Calling it again switches backends in the same process (tests compare kernels
 * between cpu and wasm); tensors created under one backend move to the next on first use.
 */
export async function selectBackend(requested?: BackendName | string, log?: (message: string) => void, options: SelectOptions = {}): Promise<SelectedBackend> {
  tfPackage = options.gradients === false ? CORE : PACKAGE.cpu;
  const name = requestedName(requested);
  let selected: SelectedBackend;
  if (name === 'auto') {
    selected = await selectAuto(log);
  } else {
    selected = await activate(name);
  }
  log?.(`backend: ${selected.description}`);
  return selected;
}

async function selectAuto(log?: (message: string) => void): Promise<SelectedBackend> {
  let lastError: unknown;
  for (const candidate of AUTO_ORDER) {
    try {
      return await activate(candidate);
    } catch (err) {
      lastError = err;
      // Not installed is the normal case for the native backends; installed but broken is news.
      if (!(err instanceof BackendUnavailable && err.notInstalled)) {
        log?.(`${(err as Error).message}; trying the next backend`);
      }
    }
  }
  throw lastError instanceof Error ? new ToolError(lastError.message, { cause: lastError }) : new ToolError('no backend could be loaded');
}

/** A backend that failed to load; `notInstalled` separates a missing package from a broken one. */
class BackendUnavailable extends ToolError {
  readonly notInstalled: boolean;
  constructor(message: string, notInstalled: boolean, cause: unknown) {
    super(message, { cause });
    this.name = 'BackendUnavailable';
    this.notInstalled = notInstalled;
  }
}

async function activate(name: ResolvedBackendName): Promise<SelectedBackend> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow': {
      // libtensorflow's C++ start-up chatter (CPU feature notices) is noise on a tool's stderr.
      process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
      const tf = await importTf(name, PACKAGE[name]);
      await switchTo(tf, name, 'tensorflow'); // tfjs-node-gpu registers under the same name
      return {
        name,
        tf,
        description: name === 'tensorflow' ? 'tensorflow (libtensorflow via @tensorflow/tfjs-node)' : 'tensorflow-gpu (libtensorflow + CUDA via @tensorflow/tfjs-node-gpu)',
      };
    }
    case 'wasm': {
      const tf = await importTf('cpu', tfPackage);
      const wasm = await importPackage<WasmPackage>('wasm', PACKAGE.wasm);
      if (!wasmPrepared.has(tf)) {
        // The .wasm binaries live in the package's dist/; resolve them from node_modules wherever
        // it is installed, not from the bundle's guess (which breaks under npx and bundlers).
        const pkgJson = createRequire(import.meta.url).resolve(`${PACKAGE.wasm}/package.json`);
        wasm.setWasmPaths(join(dirname(pkgJson), 'dist') + '/');
        const { registerWasmKernels } = await import('./wasm-kernels.js');
        registerWasmKernels(tf);
        wasmPrepared.add(tf);
      }
      await switchTo(tf, 'wasm', 'wasm');
      const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
      const threads = wasm.getThreadsCount();
      const description = `wasm (${simd ? 'SIMD' : 'no SIMD: slow'}, ${threads} thread${threads === 1 ? '' : 's'})`;
      return { name, tf, description };
    }
    case 'cpu': {
      const tf = await importTf('cpu', tfPackage);
      if (tfPackage === CORE) await importPackage('cpu', '@tensorflow/tfjs-backend-cpu');
      const { registerCpuKernels } = await import('./wasm-kernels.js');
      registerCpuKernels(tf);
      await switchTo(tf, 'cpu', 'cpu');
      return { name, tf, description: 'cpu (plain JavaScript: slow)' };
    }
  }
}

interface WasmPackage {
  setWasmPaths(prefix: string): void;
  getThreadsCount(): number;
}

const wasmPrepared = new WeakSet<object>();
const prodModeSet = new WeakSet<object>();

async function importTf(name: ResolvedBackendName, pkg: string): Promise<Tf> {
  const tf = await importPackage<Tf>(name, pkg);
  if (!prodModeSet.has(tf)) {
    // tfjs prints console banners ("looks like you are running in Node.js…") that would break the
    // one-line stderr contract; the tools say which backend runs themselves.
    tf.enableProdMode();
    prodModeSet.add(tf);
  }
  return tf;
}

const requireHere = createRequire(import.meta.url);

async function importPackage<T>(name: ResolvedBackendName, pkg: string): Promise<T> {
  try {
    // CommonJS packages, required rather than imported: import() would first scan each bundle for
    // its export names (Node's cjs-module-lexer), ~0.2 s of start-up for tfjs-core and the backend.
    return requireHere(pkg) as T;
  } catch (err) {
    const notInstalled = isNotFound(err, pkg);
    const why = notInstalled ? `not installed: ${INSTALL_HINT[name]}` : `${firstLine(err)}; ${INSTALL_HINT[name]}`;
    throw new BackendUnavailable(`backend ${name}: cannot load ${pkg} (${why})`, notInstalled, err);
  }
}

async function switchTo(tf: Tf, name: ResolvedBackendName, engineName: string): Promise<void> {
  let ok: boolean;
  try {
    ok = await tf.setBackend(engineName);
    await tf.ready();
  } catch (err) {
    throw new BackendUnavailable(`backend ${name}: failed to initialise (${firstLine(err)})`, false, err);
  }
  if (!ok || tf.getBackend() !== engineName) {
    const extra = name === 'wasm' ? '; are the .wasm files present in @tensorflow/tfjs-backend-wasm/dist?' : '';
    throw new BackendUnavailable(`backend ${name}: failed to initialise${extra}`, false, undefined);
  }
}

function isNotFound(err: unknown, pkg: string): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = (err as Error | undefined)?.message ?? '';
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message.includes(pkg);
}

function firstLine(err: unknown): string {
  const message = (err as Error | undefined)?.message ?? String(err);
  return message.split('\n')[0];
}
