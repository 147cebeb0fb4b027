/**
 * Making a float32 tensor whose values a reader writes straight into the backend's memory. On
 * wasm the reader gets a view of the tensor's heap memory, so loading a checkpoint reads the file
 * into the model's own copy with no JavaScript array in between (a 124M model would otherwise hold
 * ~0.5 GB of garbage arrays until the next collection). Elsewhere the reader fills a fresh array.
 */
import type { Tensor } from '@tensorflow/tfjs';
import type { Tf } from './select.js';
import { sizeOf, type WasmBackend } from './wasm-backend.js';

/** `fill` must finish writing before it resolves and allocate no tensors meanwhile. */
export async function tensorFromReader(tf: Tf, shape: number[], fill: (dest: Float32Array) => Promise<void>): Promise<Tensor> {
  const size = sizeOf(shape);
  if (tf.getBackend() === 'wasm' && size > 0) {
    const backend = tf.backend() as unknown as WasmBackend;
    const info = backend.makeOutput(shape, 'float32');
    try {
      const { memoryOffset } = backend.dataIdMap.get(info.dataId);
      await fill(new Float32Array(backend.wasm.HEAPU8.buffer, memoryOffset, size));
    } catch (err) {
      backend.disposeData(info.dataId, true);
      throw err;
    }
    return tf.engine().makeTensorFromTensorInfo(info, tf.backend());
  }
  const values = new Float32Array(size);
  await fill(values);
  return tf.tensor(values, shape, 'float32');
}
