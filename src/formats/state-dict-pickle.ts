/**
 * What a PyTorch state-dict pickle may use, and nothing more: collections.OrderedDict, torch's
 * tensor-rebuild functions, the storage classes and persistent ids naming storages. Everything
 * else is refused by name before it could be called. Tensors come out as TensorRefs (storage,
 * offset, shape, stride) whose data is read afterwards. nanoGPT's ckpt.pt (AdamW's state dict,
 * the run's settings, model_args, a best_val_loss tensor) needs nothing more: its pickle names
 * only OrderedDict, _rebuild_tensor_v2 and FloatStorage (fixtures/nanogpt, saved as train.py does).
 */
import { ToolError } from '../util/errors.js';
import { PyDict, type UnpickleHooks } from './pickle.js';
import { STORAGE_CLASSES, type SourceDtype } from './dtypes.js';

export class StorageType {
  constructor(
    readonly name: string,
    readonly dtype: SourceDtype,
    readonly bytes: number,
  ) {}
}

/** A storage as saved: `key` names its record (zip) or its place in the key list (legacy); data is filled in later. */
export class RootStorage {
  data: Float32Array | undefined;
  constructor(
    readonly key: string,
    readonly type: StorageType,
    readonly numel: number,
  ) {}
}

/** A window of a root storage: the whole of it, or a legacy (torch < 0.4) storage view. */
export class StorageView {
  constructor(
    readonly root: RootStorage,
    readonly offset: number,
    readonly numel: number,
  ) {}
}

export class TensorRef {
  constructor(
    readonly storage: StorageView,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

/** An allowed callable, as GLOBAL leaves it on the stack. */
class Fn {
  constructor(readonly qualname: string) {}
}

const FUNCTIONS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'torch.device',
]);

/** A name from the pickle, fit for a one-line message: control characters escaped, length capped. */
export function printable(s: string): string {
  const clean = s.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return clean.length > 100 ? `${clean.slice(0, 100)}…` : clean;
}

/** The refusal every other global gets; also used for pickles that must hold plain data only. */
export function refuseGlobal(path: string, module: string, name: string): never {
  throw new ToolError(`${path}: refusing to load: the pickle calls ${printable(`${module}.${name}`)}, which a PyTorch state dict never needs`);
}

/** Hooks for pickles that hold plain data only (the legacy format's header and key list). */
export function plainDataHooks(path: string): UnpickleHooks {
  return {
    findClass: (module, name) => refuseGlobal(path, module, name),
    call: () => {
      throw new ToolError(`${path}: damaged checkpoint: a call where plain data belongs`);
    },
    build: () => {
      throw new ToolError(`${path}: damaged checkpoint: BUILD where plain data belongs`);
    },
    persistentLoad: () => {
      throw new ToolError(`${path}: damaged checkpoint: a persistent id where plain data belongs`);
    },
  };
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isCounts = (v: unknown): v is number[] => Array.isArray(v) && v.every(isCount);

export interface StateDictPickle {
  hooks: UnpickleHooks;
  /** Every storage a persistent id named, by key, in first-use order. */
  roots: Map<string, RootStorage>;
}

export function stateDictHooks(path: string): StateDictPickle {
  const damaged = (what: string): never => {
    throw new ToolError(`${path}: damaged checkpoint: ${what}`);
  };
  const roots = new Map<string, RootStorage>();
  const wholes = new Map<RootStorage, StorageView>();
  const views = new Map<string, StorageView>();

  const persistentLoad = (pid: unknown): StorageView => {
    // ('storage', storage_type, key, location, numel) in zip archives; legacy ones add view_metadata.
    if (!Array.isArray(pid) || pid[0] !== 'storage' || (pid.length !== 5 && pid.length !== 6)) {
      return damaged('a persistent id that does not name a storage');
    }
    const [, type, key, , numel, viewMeta] = pid as unknown[];
    if (!(type instanceof StorageType) || typeof key !== 'string' || !isCount(numel)) return damaged(`malformed storage id for storage ${String(key)}`);
    let root = roots.get(key);
    if (!root) roots.set(key, (root = new RootStorage(key, type, numel)));
    else if (root.type.dtype !== type.dtype) damaged(`storage ${key} is used as both ${root.type.name} and ${type.name}`);
    if (viewMeta === undefined || viewMeta === null) {
      let whole = wholes.get(root);
      if (!whole) wholes.set(root, (whole = new StorageView(root, 0, root.numel)));
      return whole;
    }
    if (!Array.isArray(viewMeta) || viewMeta.length !== 3 || typeof viewMeta[0] !== 'string' || !isCount(viewMeta[1]) || !isCount(viewMeta[2])) {
      return damaged(`malformed view of storage ${key}`);
    }
    const [viewKey, offset, size] = viewMeta as [string, number, number];
    let view = views.get(viewKey);
    if (!view) {
      if (offset + size > root.numel) damaged(`storage view ${viewKey} reads past storage ${key}`);
      views.set(viewKey, (view = new StorageView(root, offset, size)));
    }
    return view;
  };

  const rebuildTensor = (args: unknown[]): TensorRef => {
    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    const [storage, offset, shape, stride] = args;
    if (!(storage instanceof StorageView) || !isCount(offset) || !isCounts(shape) || !isCounts(stride) || shape.length !== stride.length) {
      return damaged('malformed tensor (storage, offset, size, stride)');
    }
    return new TensorRef(storage, offset, shape, stride);
  };

  const hooks: UnpickleHooks = {
    findClass(module, name) {
      const qualname = `${module}.${name}`;
      if (FUNCTIONS.has(qualname)) return new Fn(qualname);
      const storage = STORAGE_CLASSES.get(name);
      if (storage && (module === 'torch' || module === 'torch.cuda')) return new StorageType(qualname, storage.dtype, storage.bytes);
      return refuseGlobal(path, module, name);
    },
    call(callable, args) {
      const fn = callable instanceof Fn ? callable.qualname : undefined;
      switch (fn) {
        case 'collections.OrderedDict': {
          const dict = new PyDict();
          if (args.length === 1 && Array.isArray(args[0])) {
            for (const pair of args[0]) {
              if (!Array.isArray(pair) || pair.length !== 2) damaged('OrderedDict built from something other than pairs');
              dict.map.set(pair[0], pair[1]);
            }
          } else if (args.length !== 0) damaged('OrderedDict called with unexpected arguments');
          return dict;
        }
        case 'torch._utils._rebuild_tensor_v2':
        case 'torch._utils._rebuild_tensor':
          return rebuildTensor(args);
        case 'torch._utils._rebuild_parameter':
        case 'torch._utils._rebuild_parameter_with_state':
          return args[0] instanceof TensorRef ? args[0] : damaged('a parameter without a tensor');
        case 'torch.device':
          return typeof args[0] === 'string' ? args[0] : damaged('torch.device without a name');
      }
      const what = callable instanceof StorageType ? callable.name : callable instanceof Fn ? callable.qualname : 'a value that is not a function';
      return damaged(`the pickle calls ${what}, which a state dict never does`);
    },
    build(obj, state) {
      // OrderedDict.__reduce__ hands over its __dict__: state_dict()'s `_metadata` (module versions).
      if (obj instanceof PyDict) obj.state = state;
      else damaged('BUILD on something that is not a dict');
    },
    persistentLoad,
  };
  return { hooks, roots };
}

/**
 * The state dict's tensors in order. Nested dicts (a checkpoint wrapping a state dict) are
 * flattened with dotted names; values that are not tensors (step counters, …) are skipped.
 */
export function collectTensors(path: string, value: unknown): Array<[string, TensorRef]> {
  if (!(value instanceof PyDict)) {
    const kind = value instanceof TensorRef ? 'a single tensor' : Array.isArray(value) ? 'a list or tuple' : `a ${typeof value}`;
    throw new ToolError(`${path}: not a state dict: the checkpoint holds ${kind}, not a dict of tensors`);
  }
  const out: Array<[string, TensorRef]> = [];
  const seen = new Set<PyDict>();
  const walk = (dict: PyDict, prefix: string) => {
    if (seen.has(dict)) return; // a dict that contains itself (only a crafted pickle does that)
    seen.add(dict);
    for (const [key, v] of dict.map) {
      const name = prefix + String(key);
      if (v instanceof TensorRef) out.push([name, v]);
      else if (v instanceof PyDict) walk(v, `${name}.`);
    }
  };
  walk(value, '');
  return out;
}
