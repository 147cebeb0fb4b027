/**
 * GPT-2 training steps and evaluation on the full-sequence pass outside tfjs (src/model/train-*.ts)
 * with AdamW in the same memory (memory-adamw.ts): what the trainer takes from GPT2 + AdamW +
 * trainStep + evaluate, computing the same things (lm-loss.ts's masked mean loss with the seed's
 * shift, 1/N weighting of N micro-batches, global-norm clipping, AdamW; evaluate.ts's loss sum),
 * with dropout in training drawn from (seed, step, micro-batch) as step.ts seeds it, though with
 * masks of its own (train-dropout.ts), and none in evaluation. Weights, gradients, moments and activations live in one shared wasm memory
 * laid out once (train-memory.ts), so the products can run on helper threads over it: the Gemm
 * kernel is the caller's choice (the reference one by default).
 *
 * With LoRA adapters (options.lora) only their A and B train: the base is frozen, with no
 * gradients or moments in the memory and none of its weight-gradient products in the backward
 * (train-backward.ts); clipping and AdamW (the same settings and decay rule: A and B are 2-D
 * weights and decay, as HF Trainer's get_decay_parameter_names decays PEFT's lora_A/lora_B, which
 * are no bias and no LayerNorm) run over A and B alone. LoRA dropout is drawn per (seed, step,
 * micro-batch) as the model's (train-lora.ts); evaluation applies the adapters unmerged, without
 * dropout: merging would change the base weights, which must stay as they are bit for bit, and
 * costs the same few rank-r products. The adapter and its moments go out and come back by lora.ts's
 * names (loraValues, optimizerState, and create/fromSources with options.lora), so a LoRA run
 * resumes bit for bit.
 */
import { referenceGemm, type Gemm, type GemmProvider } from '../backend/gemm.js';
import { MAX_PAGES, wasmApi } from '../backend/wasm-asm.js';
import { RowKernels } from '../backend/wasm-rows.js';
import type { TokenRecord } from '../data/records.js';
import { innerSize, type GPT2Config } from '../model/config.js';
import { checkLoraValues, loraShapes, type LoraSpec } from '../model/lora.js';
import { parameterShapes, type ParameterSources, type ParameterValues } from '../model/params.js';
import { backward } from '../model/train-backward.js';
import { DropoutDraw } from '../model/train-dropout.js';
import { forward, lossOf, topParam, type PassContext, type PassInput } from '../model/train-forward.js';
import { LoraDraw } from '../model/train-lora.js';
import { describeLayout, passLayout, type PassLayout, type PassShape } from '../model/train-memory.js';
import { ToolError } from '../util/errors.js';
import type { Scorer } from './evaluate.js';
import type { LossSum } from './loss.js';
import { MemoryAdamW } from './memory-adamw.js';
import type { AdamWSpec, AdamWState } from './optimizer.js';
import { shiftBatch } from './lm-loss.js';
import type { StepResult } from './step.js';

export interface PassTrainerOptions {
  /** The most records a pass takes at once (the micro-batch) and positions per record (block size − 1). */
  batch: number;
  length: number;
  /** AdamW's settings; without them the trainer only evaluates (no gradients, moments or saved activations). */
  optimizer?: AdamWSpec;
  /** The product kernel over the memory (default: the plain reference, for tests and tiny models). */
  gemm?: GemmProvider;
  headRows?: number;
  queryBlock?: number;
  /** LoRA adapters to train on a frozen base: the spec and A and B to start from (lora.ts's names and shapes). */
  lora?: { spec: LoraSpec; values: ParameterValues };
}

/**
 * Why the pass cannot train (or, with training false, evaluate) `config` at this shape, or
 * undefined when it can: its row kernels take widths (n_embd, n_inner) in multiples of 4, and
 * everything must fit in wasm's 4 GiB.
 */
export function passLimit(config: GPT2Config, shape: PassShape): string | undefined {
  const odd = ([['n_embd', config.n_embd], ['n_inner', innerSize(config)]] as const).filter(([, v]) => v % 4 !== 0);
  if (odd.length > 0) return `the wasm pass needs multiples of 4, and ${odd.map(([k, v]) => `${k} is ${v}`).join(', ')}`;
  try {
    passLayout(config, shape);
  } catch (err) {
    if (err instanceof ToolError) return err.message;
    throw err;
  }
  return undefined;
}

export class PassTrainer implements Scorer {
  private readonly ctx: PassContext;

  private constructor(
    readonly config: GPT2Config,
    readonly layout: PassLayout,
    private readonly heap: Float32Array,
    private readonly kernel: Gemm,
    rows: RowKernels,
    private readonly optimizer: MemoryAdamW | undefined,
  ) {
    this.ctx = { heap, gemm: kernel, rows, layout };
  }

  /** A trainer over a copy of `values` (checked against the config's shapes). */
  static create(config: GPT2Config, values: ParameterValues, options: PassTrainerOptions): PassTrainer {
    const trainer = PassTrainer.empty(config, options);
    for (const [name, view] of trainer.values()) view.data.set(valueOf(values, name, view.shape).data);
    return trainer;
  }

  /** A trainer whose weights are read from `sources` straight into its memory (no second copy). */
  static async fromSources(config: GPT2Config, sources: ParameterSources, options: PassTrainerOptions): Promise<PassTrainer> {
    const trainer = PassTrainer.empty(config, options);
    try {
      for (const [name, view] of trainer.values()) await valueOf(sources, name, view.shape).readInto(view.data);
    } catch (err) {
      trainer.dispose();
      throw err;
    }
    return trainer;
  }

  /** Memory laid out for `config` at the options' shape, weights zero. */
  private static empty(config: GPT2Config, options: PassTrainerOptions): PassTrainer {
    const gemm = options.gemm ?? referenceGemm;
    const shape: PassShape = {
      batch: options.batch,
      length: options.length,
      training: options.optimizer !== undefined,
      headRows: options.headRows,
      queryBlock: options.queryBlock,
      gemmScratch: gemm.scratchFloats,
      lora: options.lora?.spec,
    };
    if (!(Number.isSafeInteger(shape.batch) && shape.batch >= 1 && Number.isSafeInteger(shape.length) && shape.length >= 1)) {
      throw new RangeError(`PassTrainer: batch and length must be positive integers, got ${shape.batch} and ${shape.length}`);
    }
    const lora = options.lora;
    if (lora) checkLoraValues(config, lora.spec, lora.values);
    const limit = passLimit(config, shape);
    if (limit) throw new ToolError(limit);
    const layout = passLayout(config, shape);
    const pages = Math.ceil((layout.floats * 4) / 65536);
    const memory = new wasmApi.Memory({ initial: pages, maximum: MAX_PAGES, shared: true });
    const heap = new Float32Array(memory.buffer);
    const rows = new RowKernels(memory, layout.scratch.args);
    const start = layout.trainable.start;
    const optimizer = options.optimizer && new MemoryAdamW(rows, heap, trainableTensors(layout), { grad: layout.grads - start, m: layout.m - start, v: layout.v - start }, options.optimizer);
    const trainer = new PassTrainer(config, layout, heap, gemm.create(memory, layout.scratch.gemm), rows, optimizer);
    if (lora) for (const [name, view] of trainer.loraValues()) view.data.set(lora.values.get(name)!.data);
    return trainer;
  }

  /**
   * One optimizer step over micro-batches (as step.ts's trainStep): each micro-batch's masked mean
   * loss, gradients summed with weight 1/N, clipped to a global norm of gradClip (0: no clipping),
   * one AdamW update at lr. With dropout (the model's or LoRA's), micro-batch m draws the masks of
   * (seed, step, m): seed and step are needed then, and the same ones give the same step bit for bit.
   */
  trainStep(microBatches: TokenRecord[][], options: { lr: number; gradClip: number; seed?: number; step?: number }): StepResult {
    const optimizer = this.trainable();
    if (microBatches.length === 0) throw new RangeError('trainStep: no micro-batches');
    const { heap, layout } = this;
    heap.fill(0, layout.grads, layout.grads + layout.trainable.floats);
    const lora = layout.lora?.spec;
    const N = microBatches.length;
    let lossSum = 0;
    let tokens = 0;
    for (const [m, records] of microBatches.entries()) {
      sameLength(records);
      const { inputs, labels, weights } = shiftBatch(records);
      const input: PassInput = {
        ...this.input(inputs.map((r) => Int32Array.from(r)), labels, weights),
        dropout: DropoutDraw.of(this.config, options.seed, options.step, m),
        lora: lora && LoraDraw.of(lora, options.seed, options.step, m),
      };
      const total = weights.reduce((a, b) => a + b, 0);
      tokens += total;
      if (total === 0) continue; // no target counts: loss 0 and no gradient, as step.ts
      forward(this.ctx, input);
      const coef = Float64Array.from(weights, (w) => w / total / N);
      const sum = lossOf(this.ctx, labels, weights, { coef, dhidden: layout.scratch.dx, dwte: lora ? undefined : layout.grads + topParam(layout, 'wte.weight') });
      backward(this.ctx, input);
      lossSum += sum / total;
    }
    const gradNorm = optimizer.clip(options.gradClip);
    optimizer.update(options.lr);
    return { loss: lossSum / N, gradNorm, tokens };
  }

  /**
   * Σ −log p over the positions whose target is real, and their count, as evaluate.ts sums them
   * (inputs ids[:-1], targets ids[1:], mask[1:]); records go through in groups of at most `batch`.
   */
  evalLoss(records: TokenRecord[]): LossSum {
    let sum = 0;
    let count = 0;
    for (let g = 0; g < records.length; g += this.layout.shape.batch) {
      const group = records.slice(g, g + this.layout.shape.batch);
      const T = sameLength(group) - 1;
      const labels = new Int32Array(group.length * T);
      const weights = new Uint8Array(group.length * T);
      group.forEach((r, b) => {
        labels.set(r.input_ids.subarray(1, T + 1), b * T);
        weights.set(r.attention_mask.subarray(1, T + 1), b * T);
      });
      const input = this.input(group.map((r) => Int32Array.from(r.input_ids.subarray(0, T))), labels, weights);
      forward(this.ctx, input);
      sum += lossOf(this.ctx, labels, weights);
      count += weights.reduce((a, b) => a + b, 0);
    }
    return { sum, count };
  }

  /** evaluate.ts's Scorer: evalLoss. */
  async score(records: TokenRecord[]): Promise<LossSum> {
    return this.evalLoss(records);
  }

  async firstNonFinite(): Promise<string | undefined> {
    for (const [name, { data }] of [...this.values(), ...this.loraValues()]) {
      const k = data.findIndex((v) => !Number.isFinite(v));
      if (k >= 0) return `${name} holds ${data[k]} (element ${k} of ${data.length})`;
    }
    return undefined;
  }

  /** The base parameters by HF name: views of the memory (no copy), valid until the next step. */
  values(): ParameterValues {
    return views(this.heap, parameterShapes(this.config), this.layout.params, 0);
  }

  /** LoRA's A and B by lora.ts's names (views, as values()); empty without LoRA. */
  loraValues(): ParameterValues {
    const lora = this.layout.lora;
    return lora ? views(this.heap, loraShapes(this.config, lora.spec), lora.params, 0) : new Map();
  }

  /** The last step's gradients, clipped, of what trains: the parameters, or LoRA's A and B (views, as values()). */
  gradients(): ParameterValues {
    this.trainable();
    const tensors = trainableTensors(this.layout);
    return views(this.heap, tensors.map((t) => [t.name, t.shape]), new Map(tensors.map((t) => [t.name, t.at])), this.layout.grads - this.layout.trainable.start);
  }

  /** AdamW's moments (of what trains, by the names gradients() uses) and step as the checkpoint code saves them (views, valid until the next step). */
  optimizerState(): AdamWState {
    return this.trainable().state();
  }

  loadOptimizer(state: AdamWState): void {
    this.trainable().load(state);
  }

  /** The memory table (train-memory.ts) of this trainer's layout. */
  describe(): string {
    return describeLayout(this.layout);
  }

  dispose(): void {
    this.kernel.close();
  }

  private trainable(): MemoryAdamW {
    if (!this.optimizer) throw new Error('PassTrainer: created for evaluation only (no optimizer settings)');
    return this.optimizer;
  }

  /** Checks and flattens a group of equal-length sequences (with their targets) for the pass. */
  private input(sequences: Int32Array[], labels: Int32Array, weights: ArrayLike<number>): PassInput {
    const { batch, length } = this.layout.shape;
    const { vocab_size: V, n_positions } = this.config;
    const B = sequences.length;
    const T = sequences[0]?.length ?? 0;
    if (B === 0 || T === 0) throw new ToolError('empty input: no tokens to run');
    if (B > batch) throw new ToolError(`${B} records in one pass; this trainer takes at most ${batch}`);
    if (T > length || T > n_positions) throw new ToolError(`records of ${T + 1} tokens are longer than this trainer's ${Math.min(length, n_positions) + 1}`);
    const ids = new Int32Array(B * T);
    sequences.forEach((s, b) => ids.set(s, b * T));
    const bad = ids.find((id) => !(id >= 0 && id < V)) ?? labels.find((id, r) => weights[r] !== 0 && !(id >= 0 && id < V));
    if (bad !== undefined) throw new ToolError(`token id ${bad} is outside the vocabulary (vocab_size ${V})`);
    return { ids, B, T };
  }
}

/** Name, shape and offset of each tensor that trains: LoRA's A and B when there are adapters, else every parameter. */
function trainableTensors(layout: PassLayout): { name: string; shape: number[]; at: number }[] {
  const { config, lora } = layout;
  if (lora) return loraShapes(config, lora.spec).map(([name, shape]) => ({ name, shape, at: lora.params.get(name)! }));
  return parameterShapes(config).map(([name, shape]) => ({ name, shape, at: layout.params.get(name)! }));
}

/** Views of tensors at `shift` + their offsets. */
function views(heap: Float32Array, shapes: [string, number[]][], offsets: Map<string, number>, shift: number): ParameterValues {
  return new Map(
    shapes.map(([name, shape]) => {
      const at = shift + offsets.get(name)!;
      return [name, { shape, data: heap.subarray(at, at + shape.reduce((a, b) => a * b, 1)) }];
    }),
  );
}

/** A parameter's entry in `values`, checked against the config's shape. */
function valueOf<T extends { shape: number[] }>(values: Map<string, T>, name: string, dims: number[]): T {
  const v = values.get(name);
  if (!v) throw new ToolError(`missing tensor ${name}`);
  if (v.shape.join(',') !== dims.join(',')) throw new ToolError(`tensor ${name} has shape [${v.shape.join(', ')}], expected [${dims.join(', ')}]`);
  return v;
}

/** The records' common length (they are one batch). */
function sameLength(records: TokenRecord[]): number {
  const length = records[0]?.input_ids.length ?? 0;
  if (records.some((r) => r.input_ids.length !== length || r.attention_mask.length !== length || r.labels.length !== length)) {
    throw new ToolError('all records of a batch must have the same length');
  }
  return length;
}
