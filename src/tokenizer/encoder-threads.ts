/**
 * Encoding threads started before the pool that uses them. A worker thread takes 55–65 ms to boot
 * on our 2-core machines (100–150 ms while this thread is busy), so bpe-encode starts its threads
 * as soon as it knows it will encode: they boot while it loads its modules and the tokenizer
 * (pool creation comes ~100 ms after that point), and each is told what to do by its first
 * message (see encode-worker.ts). Kept apart from pool.ts so that starting them loads nothing else.
 */
import { Worker } from 'node:worker_threads';

const url = new URL('./encode-worker.js', import.meta.url);
/** Spare threads and the listener that forgets one that fails before it is taken. */
const spares = new Map<Worker, () => void>();

/** Starts n threads for the next pool to take; they do not keep the process alive until taken. */
export function prestartEncoders(n: number): void {
  for (let k = 0; k < n; k++) {
    const worker = new Worker(url);
    worker.unref();
    const gone = () => void spares.delete(worker);
    worker.on('error', gone).on('exit', gone);
    spares.set(worker, gone);
  }
}

export const spareEncoders = (): number => spares.size;

/**
 * Whether the main thread is one of the N encoders (pool.ts mainShare): always, except reading a
 * pipe with N = 1, where the one encoder is a thread so that the main thread keeps draining the pipe.
 */
export const mainEncodes = (workers: number, readingPipe: boolean): boolean => !readingPipe || workers > 1;

/** A started thread if one is spare, else a new one. */
export function takeEncoder(): Worker {
  const [spare] = spares;
  if (!spare) return new Worker(url);
  const [worker, gone] = spare;
  spares.delete(worker);
  worker.off('error', gone).off('exit', gone);
  worker.ref();
  return worker;
}

/** Stops the threads nobody took (the input turned out small, or the pool needed fewer). */
export function dropSpareEncoders(): void {
  for (const worker of [...spares.keys()]) void worker.terminate();
  spares.clear();
}
