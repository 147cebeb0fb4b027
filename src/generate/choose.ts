/**
 * How generation runs, decided in one place (chooseEngine) and said on stderr with the reason:
 *
 * - on wasm (asked for, or where 'auto' lands), our wasm decoder (DecodeModel: weights in a shared
 *   memory, products on every core; tfjs is not even loaded when wasm was asked for), when its
 *   kernels take the model's widths;
 * - otherwise GPT2 on the selected tfjs backend.
 *
 * Either engine with or without the key/value cache (--no-cache: the whole context every step).
 */
import { requestsWasm, selectBackend, type SelectedBackend } from '../backend/select.js';
import type { GPT2Config } from '../model/config.js';
import { DecodeModel } from '../model/decode-model.js';
import { GPT2 } from '../model/gpt2.js';
import { loadModel, type LoadedModel, type OpenOptions } from '../model/open.js';
import { decoderLimit } from '../model/wasm-decoder.js';
import { decoderModel, tfjsModel, type GenerationModel } from './model.js';
import type { WeightDtype } from '../backend/encoded-weights.js';
import { UsageError } from '../util/errors.js';

export type Engine = 'wasm-decoder' | 'tfjs';

/** The engine for a model on a backend: our wasm decoder where it can run the model, else tfjs; and why. */
export function chooseEngine(config: GPT2Config, backend: string): { engine: Engine; why: string } {
  if (backend !== 'wasm') return { engine: 'tfjs', why: `backend ${backend}` };
  const limit = decoderLimit(config);
  return limit ? { engine: 'tfjs', why: limit } : { engine: 'wasm-decoder', why: 'backend wasm' };
}

export interface GenerationOpenOptions extends OpenOptions {
  /** The key/value cache (false: the whole context every step). */
  cache: boolean;
  /** Threads of the wasm decoder (default: one per core). */
  threads?: number;
  /** How the wasm decoder keeps its weight matrices (default f32); tfjs runs float32 only. */
  weightsDtype?: WeightDtype;
}

/** The model `source` names (see loadModel) on the engine chooseEngine picks. */
export async function openGenerationModel(source: string, options: GenerationOpenOptions): Promise<LoadedModel<GenerationModel>> {
  // Asked for wasm: known without loading tfjs. Otherwise selecting loads it, and may land on wasm.
  let selected: SelectedBackend | undefined = requestsWasm(options.backend) ? undefined : await selectBackend(options.backend, options.log, { gradients: false });
  let why = '';
  const opened = await loadModel(source, options, async (config, params) => {
    const choice = chooseEngine(config, selected?.name ?? 'wasm');
    why = choice.why;
    if (choice.engine === 'wasm-decoder') return decoderModel(await DecodeModel.fromSources(config, params, options.threads, options.weightsDtype), options.cache);
    if ((options.weightsDtype ?? 'f32') !== 'f32') throw new UsageError(`--weights-dtype ${options.weightsDtype} needs the wasm decoder (--backend wasm); it runs here on tfjs (${choice.why})`);
    selected ??= await selectBackend(options.backend, options.log, { gradients: false });
    return tfjsModel(await GPT2.fromSources(selected.tf, config, params), options.cache, selected.name);
  });
  options.log?.(`generation: ${opened.model.description} (${why})`);
  return opened;
}
