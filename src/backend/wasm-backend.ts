/**
 * The parts of tfjs-backend-wasm's BackendWasm that our kernels use, typed here (its own .d.ts
 * leans on @types/emscripten, which we do not install), plus helpers for tensors that alias a
 * slice of another tensor's heap memory.
 */
import type { DataType, TensorInfo } from '@tensorflow/tfjs';
import type { WasmMemory } from './wasm-asm.js';

export interface WasmTensorData {
  id: number;
  memoryOffset: number;
  shape: number[];
  dtype: DataType;
  refCount: number;
}

export interface WasmModule {
  HEAPU8: Uint8Array;
  /** The emscripten module's exports, among them its memory (the heap). */
  asm?: { memory?: WasmMemory };
  cwrap(name: string, returnType: string | null, argTypes: string[]): (...args: unknown[]) => unknown;
  tfjs: {
    registerTensor(id: number, size: number, memoryOffset: number): void;
    disposeData(id: number): void;
  };
}

export interface WasmBackend {
  wasm: WasmModule;
  dataIdMap: {
    get(dataId: object): WasmTensorData;
    delete(dataId: object): boolean;
  };
  /** Allocates on the heap, or, given `memoryOffset`, registers memory allocated elsewhere. */
  makeOutput(shape: number[], dtype: DataType, memoryOffset?: number): TensorInfo;
  /** A view of the tensor's heap memory: invalid once the heap grows (any later allocation). */
  typedArrayFromHeap(info: TensorInfo): Float32Array | Int32Array | Uint8Array;
  readSync(dataId: object): unknown;
  disposeData(dataId: object, force?: boolean): boolean;
}

/** Byte offset of a tensor's data in the heap. */
export function heapOffset(backend: WasmBackend, info: TensorInfo): number {
  return backend.dataIdMap.get(info.dataId).memoryOffset;
}

export function wasmId(backend: WasmBackend, info: TensorInfo): number {
  return backend.dataIdMap.get(info.dataId).id;
}

/**
 * A float32 tensor of `shape` over `base`'s memory from element `elementOffset`, with a fresh id.
 * It never reaches the engine; release it with `dropView`, never `disposeData` (that would free
 * an interior pointer of `base`).
 */
export function makeView(backend: WasmBackend, base: TensorInfo, elementOffset: number, shape: number[]): TensorInfo {
  const { memoryOffset } = backend.dataIdMap.get(base.dataId);
  return backend.makeOutput(shape, 'float32', memoryOffset + elementOffset * 4);
}

/** Unregisters a view: the C++ side runs its disposal callbacks (e.g. drops cached XNNPACK ops). */
export function dropView(backend: WasmBackend, view: TensorInfo): void {
  backend.wasm.tfjs.disposeData(wasmId(backend, view));
  backend.dataIdMap.delete(view.dataId);
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Int32 shape as the byte array the C++ kernels take through cwrap's 'array' arguments. */
export function shapeBytes(shape: readonly number[]): Uint8Array {
  return new Uint8Array(new Int32Array(shape).buffer);
}
