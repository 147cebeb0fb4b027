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
import { encodingLimit, weightBytes, writeEncoded, writeWeight, type EncodedTensor, type WeightDtype, type WeightRef } from '../backend/encoded-weights.js';
import type { GPT2Config } from './config.js';
import { parameterShapes, PREFIX, sourceOf, type ParameterSource, type ParameterSources } from './params.js';
import { WasmDecoder, type DecodeHeap } from './wasm-decoder.js';
import { ToolError } from '../util/errors.js';

const PAGE = 65536;

/**
 * A parameter source that may also hold the tensor already encoded (a GGUF file's f16 or Q8_0
 * tensors, in GGUF's layout: see EncodedTensor), which the decoder then keeps as it is instead of
 * quantising float32 values again.
 */
export interface EncodedSource extends ParameterSource {
  readEncoded?(dtype: 'f16' | 'q8_0'): Promise<EncodedTensor | undefined>;
}

/**
 * The matrices a decode step streams — every Conv1D weight and wte, which is also the LM head
 * (38.6M of GPT-2 124M's 124M parameters) — are kept as `dtype`; wpe (read a row a position),
 * biases and layer norms stay float32, as llama.cpp keeps its 1-D tensors. A matrix Q8_0 cannot
 * block (encodingLimit) stays float32 too.
 */
function storedAs(name: string, shape: number[], dtype: WeightDtype): { dtype: WeightDtype; blocks: 'row' | 'column' } | undefined {
  const embedding = name === `${PREFIX}wte.weight`;
  if (shape.length !== 2 || !(embedding || /\.(c_attn|c_proj|c_fc)\.weight$/.test(name))) return undefined;
  const blocks = embedding ? 'row' : 'column';
  return { dtype: encodingLimit(dtype, shape[0], shape[1], blocks) ? 'f32' : dtype, blocks };
}

export class DecodeModel implements DecodeHeap {
  readonly kernels: KernelPool;
  readonly rows: RowKernels;
  /** Live buffers after the weights: float offset → end. */
  private readonly buffers = new Map<number, number>();

  private constructor(
    readonly config: GPT2Config,
    readonly memory: WasmMemory,
    threads: number,
    /** Float offset of each float32 parameter and the weight matrices' references (16-byte aligned); the row kernels' results; where buffers start. */
    private readonly offsets: Map<string, number>,
    private readonly refs: Map<string, WeightRef>,
    results: number,
    private readonly base: number,
    /** The dtype asked for the weight matrices (see storedAs). */
    readonly weightsDtype: WeightDtype,
  ) {
    this.kernels = new KernelPool(memory, threads);
    this.rows = new RowKernels(memory, results);
  }

  /** Bytes of the weights kept as `dtype` (see storedAs): what the decoder's memory starts with. */
  static weightBytes(config: GPT2Config, dtype: WeightDtype): number {
    return DecodeModel.layout(config, dtype).bytes;
  }

  private static layout(config: GPT2Config, dtype: WeightDtype) {
    const offsets = new Map<string, number>();
    const refs = new Map<string, WeightRef>();
    let bytes = 0;
    for (const [name, shape] of parameterShapes(config)) {
      const stored = storedAs(name, shape, dtype);
      if (stored) {
        const size = weightBytes(stored.dtype, shape[0], shape[1]);
        refs.set(name, { ...stored, offset: bytes, scales: size.scales ? bytes + size.values : 0, rows: shape[0], cols: shape[1] });
        if (stored.dtype === 'f32') offsets.set(name, bytes / 4); // the f32 path: a float offset, as before
        bytes += size.values + size.scales;
      } else {
        offsets.set(name, bytes / 4);
        bytes += Math.ceil(shape.reduce((a, b) => a * b, 1) / 4) * 16;
      }
    }
    return { offsets, refs, bytes };
  }

  private static empty(config: GPT2Config, threads: number, dtype: WeightDtype): DecodeModel {
    const { offsets, refs, bytes } = DecodeModel.layout(config, dtype);
    const results = Math.ceil(bytes / 64) * 16; // 16 floats, 64-byte aligned (RowKernels)
    const pages = Math.ceil(bytes / PAGE) + 1;
    if (pages > MAX_PAGES) {
      const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
      const fit = (['f16', 'q8_0'] as const).filter((d) => d !== dtype && DecodeModel.weightBytes(config, d) / PAGE + 1 <= MAX_PAGES);
      const hint = fit.length ? `--weights-dtype ${fit.map((d) => `${d} (${gib(DecodeModel.weightBytes(config, d))})`).join(' or ')} fits` : 'use the tensorflow backend';
      throw new ToolError(`the model's ${gib(bytes)} of weights as ${dtype} exceed wasm's 4 GiB memory; ${hint}`);
    }
    const memory = new wasmApi.Memory({ initial: pages, maximum: MAX_PAGES, shared: true });
    return new DecodeModel(config, memory, threads, offsets, refs, results, results + 16, dtype);
  }

  /**
   * Reads each parameter from `sources` straight into the shared memory, one at a time (a model
   * quantised at load never holds more than one tensor as float32): the weight matrices as
   * `dtype` (f32: float32 as read; f16 and q8_0 encoded here, or taken as the source holds them).
   */
  static async fromSources(config: GPT2Config, sources: ParameterSources, threads: number = availableParallelism(), dtype: WeightDtype = 'f32'): Promise<DecodeModel> {
    const model = DecodeModel.empty(config, threads, dtype);
    try {
      for (const [name, shape] of parameterShapes(config)) {
        const source: EncodedSource = sourceOf(sources, name, shape);
        const ref = model.refs.get(name);
        if (!ref || ref.dtype === 'f32') {
          await source.readInto(model.view(name, shape));
          continue;
        }
        const encoded = await source.readEncoded?.(ref.dtype);
        if (encoded) {
          writeEncoded(model.memory.buffer, ref, encoded, name);
          continue;
        }
        const values = new Float32Array(shape[0] * shape[1]);
        await source.readInto(values);
        writeWeight(model.memory.buffer, ref, values, name);
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
    if (at === undefined) throw new Error(`no float32 parameter ${PREFIX + name}`);
    return at;
  }

  weight(name: string): WeightRef {
    const ref = this.refs.get(PREFIX + name);
    if (ref === undefined) throw new Error(`no weight matrix ${PREFIX + name}`);
    return ref;
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
