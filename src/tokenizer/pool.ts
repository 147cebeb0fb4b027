/**
 * Encodes chunks of documents on N worker threads and hands the results back in input order, so
 * the token stream (and every shard written from it) is byte-identical for any N. Even N = 1 uses
 * a thread, so the main thread keeps reading stdin while the worker encodes (otherwise an
 * upstream `wikitext-prep |` stalls on a full pipe and the two alternate instead of overlapping).
 * Threads start only once a second chunk arrives: an input of one chunk is encoded inline.
 */
import { Worker } from 'node:worker_threads';
import { encodeDocuments, type DocumentEncoding } from './documents.js';
import { IdBuffer } from './id-buffer.js';
import { loadTokenizer, type Tokenizer } from './tokenizer.js';
import type { WorkReply, WorkerSetup } from './encode-worker.js';

export interface EncodedChunk {
  ids: Uint32Array;
  documents: number;
}

export interface EncoderPool {
  /** Queues a chunk; resolves when there is room for more (backpressure). */
  submit(bytes: Uint8Array, text: string): Promise<void>;
  /** Results in submission order, as they become available. */
  drain(): EncodedChunk[];
  /** Waits for everything submitted; returns the remaining results in order. */
  finish(): Promise<EncodedChunk[]>;
  close(): Promise<void>;
}

export function createEncoderPool(workers: number, setup: WorkerSetup, tokenizer?: Tokenizer): EncoderPool {
  if (workers < 1) return inlinePool(setup, tokenizer ?? loadTokenizer(setup.tokenizerDir));
  let first: { bytes: Uint8Array; text: string } | undefined;
  let pool: EncoderPool | undefined;
  return {
    async submit(bytes, text) {
      if (!pool && !first) {
        first = { bytes, text };
        return;
      }
      if (!pool) {
        pool = threadPool(workers, setup);
        await pool.submit(first!.bytes, first!.text);
        first = undefined;
      }
      await pool.submit(bytes, text);
    },
    drain: () => pool?.drain() ?? [],
    async finish() {
      if (pool) return pool.finish();
      if (!first) return [];
      const inline = inlinePool(setup, tokenizer ?? loadTokenizer(setup.tokenizerDir));
      await inline.submit(first.bytes, first.text);
      first = undefined;
      return inline.finish();
    },
    close: async () => pool?.close(),
  };
}

function inlinePool(how: DocumentEncoding, tokenizer: Tokenizer): EncoderPool {
  let ready: EncodedChunk[] = [];
  return {
    async submit(_bytes, text) {
      const out = new IdBuffer(text.length >> 2);
      const documents = encodeDocuments(tokenizer, text, how, out);
      ready.push({ ids: out.view(), documents });
    },
    drain: () => ready.splice(0),
    finish: async () => ready.splice(0),
    close: async () => {
      ready = [];
    },
  };
}

function threadPool(size: number, setup: WorkerSetup): EncoderPool {
  const url = new URL('./encode-worker.js', import.meta.url);
  const workers = Array.from({ length: size }, () => new Worker(url, { workerData: setup }));
  const results = new Map<number, EncodedChunk>();
  let nextSeq = 0; // next chunk to submit
  let nextOut = 0; // next chunk to hand back
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const maxInFlight = 2 * size;

  const settle = () => {
    wake?.();
    wake = undefined;
  };
  for (const worker of workers) {
    worker.on('message', (reply: WorkReply) => {
      if ('error' in reply) failure ??= new Error(reply.error);
      else results.set(reply.seq, { ids: reply.ids, documents: reply.documents });
      settle();
    });
    worker.on('error', (err) => {
      failure ??= err;
      settle();
    });
  }
  const inFlight = () => nextSeq - nextOut - results.size;
  const wait = () => new Promise<void>((resolve) => (wake = resolve));
  const check = () => {
    if (failure) throw failure;
  };
  const drain = (): EncodedChunk[] => {
    const out: EncodedChunk[] = [];
    for (let r = results.get(nextOut); r; r = results.get(nextOut)) {
      results.delete(nextOut++);
      out.push(r);
    }
    return out;
  };

  return {
    async submit(bytes) {
      check();
      while (inFlight() >= maxInFlight) {
        await wait();
        check();
      }
      const copy = new Uint8Array(bytes); // own buffer, so it can be transferred
      workers[nextSeq % size].postMessage({ seq: nextSeq, bytes: copy }, [copy.buffer]);
      nextSeq++;
    },
    drain,
    async finish() {
      const out: EncodedChunk[] = [];
      for (;;) {
        check();
        out.push(...drain());
        if (nextOut === nextSeq) return out;
        await wait();
      }
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
