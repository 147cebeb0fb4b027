/**
 * Whether a training run can fit in this machine's memory at all, asked before any weight is made
 * or read: the seed's gpt2-13b and gpt2-52b configs (and full training of gpt2-xl on a 24 GB
 * machine) would otherwise fill the memory for minutes making random weights and then die.
 * The floor counted here is what any of our engines holds in fp32 whatever the batch: the weights,
 * and for each trained parameter its gradient and AdamW's two moments. Activations, the runtime and
 * the system come on top, so the floor may take at most 3/4 of the memory: gpt2-xl's 24.9 GB on a
 * 25 GB machine passed a plain comparison and then swapped the machine to a standstill.
 */
import { totalmem } from 'node:os';
import { requestsWasm } from '../backend/select.js';
import { ToolError } from '../util/errors.js';
import { parameterCount, type GPT2Config } from '../model/config.js';

const GB = 1e9;

/**
 * Refuses a run whose weights, gradients and moments alone exceed `memory` bytes (default: this
 * machine's), and one on wasm (`backend` lands there) whose weights alone fill wasm's memory.
 */
export function checkTrainingFits(config: GPT2Config, what: string, options: { trainable?: number; memory?: number; backend?: string } = {}): void {
  const params = parameterCount(config);
  const trainable = options.trainable ?? params;
  const memory = options.memory ?? totalmem();
  const need = 4 * params + 12 * trainable;
  if (need <= 0.75 * memory) {
    if (options.backend !== undefined && requestsWasm(options.backend)) checkWasmHolds(config, what);
    return;
  }
  const held = trainable === params ? 'weights, gradients and two AdamW moments' : `weights, and gradients and two AdamW moments of ${(trainable / 1e6).toFixed(1)}M trained parameters`;
  throw new ToolError(
    `${what}: ${(params / 1e9).toFixed(2)}B parameters need ${(need / GB).toFixed(1)} GB in fp32 (${held}) before activations, ` +
      `and this machine has ${(memory / GB).toFixed(1)} GB, of which a quarter is left for activations and the system; ` +
      (params > 5e9
        ? 'the seed trains such models across many accelerators with model and pipeline parallelism, which gpt2-toolchain does not do'
        : 'train it on a machine with more memory (--backend tensorflow-gpu where installed), or fine-tune it with LoRA (a lora: section), which trains a few million parameters'),
  );
}

/**
 * Refuses a model whose fp32 weights alone fill wasm32's 4 GiB, on wasm: neither our pass nor
 * tfjs-wasm (one wasm memory too, measured to fail past 4 GiB of tensors) could hold it, and
 * tfjs-wasm would die with "memory access out of bounds" after minutes of loading. gpt2-xl (6.2 GB,
 * run_gpt2_xl and run_gpt2_xl_lora: a frozen base is still all there) is the seed's first such model.
 */
export function checkWasmHolds(config: GPT2Config, what = 'the model'): void {
  const bytes = 4 * parameterCount(config);
  if (bytes <= 0.9 * WASM_MEMORY) return;
  throw new ToolError(
    `${what}: ${(parameterCount(config) / 1e9).toFixed(2)}B parameters are ${(bytes / 1e9).toFixed(1)} GB in fp32, more than wasm's 4 GiB memory ` +
      `(our pass's and tfjs-wasm's alike): run it where --backend tensorflow or tensorflow-gpu is installed, or on --backend cpu (tfjs in JavaScript's memory, far slower)`,
  );
}
const WASM_MEMORY = 4 * 2 ** 30;

