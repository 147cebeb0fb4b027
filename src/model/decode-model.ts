/**
 * GPT-2 for generation on wasm with its weights in a shared wasm memory of our own, so that the
 * streaming products of a decode step run on every core (KernelPool): one thread streams about
 * half the memory bandwidth a step can use. The tfjs wasm backend cannot share its heap (its
 * threaded build does not start under Node), so this model keeps the weights outside tfjs and runs
 * whole passes — prompt and steps — with WasmDecoder. It is what gpt2-generate uses on wasm
 * (src/generate/choose.ts).
 */
import { availableParallelism } from 'node:os';
import { MAX_PAGES, wasmApi, type WasmMemory } from '../backend/wasm-asm.js';
import { KernelPool } from '../backend/kernel-pool.js';
import { RowKernels } from '../backend/wasm-rows.js';
import type { GPT2Config } from './config.js';
import { parameterShapes, PREFIX, sourceOf, type ParameterSources } from './params.js';
import { WasmDecoder, type DecodeHeap } from './wasm-decoder.js';
import { ToolError } from '../util/errors.js';

const PAGE = 65536;

export class DecodeModel implements DecodeHeap {
  readonly kernels: KernelPool;
  readonly rows: RowKernels;
  /** Live buffers after the weights: float offset → end. */
  private readonly buffers = new Map<number, number>();

  private constructor(
    readonly config: GPT2Config,
    readonly memory: WasmMemory,
    threads: number,
    /** Float offset of each parameter (16-byte aligned); the row kernels' results; where buffers start. */
    private readonly offsets: Map<string, number>,
    results: number,
    private readonly base: number,
  ) {
    this.kernels = new KernelPool(memory, threads);
    this.rows = new RowKernels(memory, results);
  }

  private static empty(config: GPT2Config, threads: number): DecodeModel {
    const offsets = new Map<string, number>();
    let floats = 0;
    for (const [name, shape] of parameterShapes(config)) {
      offsets.set(name, floats);
      floats += Math.ceil(shape.reduce((a, b) => a * b, 1) / 4) * 4;
    }
    const results = Math.ceil(floats / 16) * 16; // 16 floats, 64-byte aligned (RowKernels)
    const pages = Math.ceil((floats * 4) / PAGE) + 1;
    if (pages > MAX_PAGES) throw new ToolError(`the model's ${((floats * 4) / 2 ** 30).toFixed(1)} GiB of weights exceed wasm's 4 GiB memory; use the tensorflow backend`);
    const memory = new wasmApi.Memory({ initial: pages, maximum: MAX_PAGES, shared: true });
    return new DecodeModel(config, memory, threads, offsets, results, results + 16);
  }

  /** Reads each parameter from `sources` straight into the shared memory. */
  static async fromSources(config: GPT2Config, sources: ParameterSources, threads: number = availableParallelism()): Promise<DecodeModel> {
    const model = DecodeModel.empty(config, threads);
    try {
      for (const [name, shape] of parameterShapes(config)) {
        await sourceOf(sources, name, shape).readInto(model.view(name, shape));
      }
    } catch (err) {
      model.dispose();
      throw err;
    }
    return model;
  }

  get threads(): number {
    return this.kernels.threads;
  }

  /** A decoder over this model's weights (see WasmDecoder). */
  decoder(batch: number, capacity: number, padding: number[], maxRows: number): WasmDecoder {
    return new WasmDecoder(this, this.config, batch, capacity, padding, maxRows);
  }

  param(name: string): number {
    const at = this.offsets.get(PREFIX + name);
    if (at === undefined) throw new Error(`no parameter ${PREFIX + name}`);
    return at;
  }

  allocate(floats: number): number {
    const at = Math.max(this.base, ...this.buffers.values());
    const end = at + Math.ceil(floats / 4) * 4;
    const have = this.memory.buffer.byteLength;
    if (end * 4 > have) {
      const pages = Math.ceil((end * 4 - have) / PAGE);
      if (have / PAGE + pages > MAX_PAGES) throw new ToolError('generation needs more than wasm\'s 4 GiB of memory: fewer sequences at once or a shorter context');
      this.memory.grow(pages);
    }
    new Float32Array(this.memory.buffer, at * 4, end - at).fill(0);
    this.buffers.set(at, end);
    return at;
  }

  release(at: number): void {
    this.buffers.delete(at);
  }

  dispose(): void {
    this.kernels.close();
  }

  private view(name: string, shape: number[]): Float32Array {
    return new Float32Array(this.memory.buffer, this.offsets.get(name)! * 4, shape.reduce((a, b) => a * b, 1));
  }
}
