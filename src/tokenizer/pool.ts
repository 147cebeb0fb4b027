/**
 * Encodes chunks of documents on N worker threads and hands the results back in input order, so
 * the token stream (and every shard written from it) is byte-identical for any N. Even N = 1 uses
 * a thread, so the main thread keeps reading stdin while the worker encodes (otherwise an
 * upstream `wikitext-prep |` stalls on a full pipe and the two alternate instead of overlapping).
 * An input that fits in one chunk is encoded inline, without starting threads.
 */
import { Worker } from 'node:worker_threads';
import { encodeDocuments, separatorIds } from './documents.js';
import { IdBuffer } from './id-buffer.js';
import { loadTokenizer, type Tokenizer } from './tokenizer.js';
import type { WorkReply, WorkerSetup } from './encode-worker.js';

export interface EncodedChunk {
  ids: Uint32Array;
  documents: number;
}

export interface Chunk {
  /** Whole lines as UTF-8 (what threads get) */
  bytes: Uint8Array;
  /** ... and as text (what the inline path uses; decoded on demand). */
  readonly text: string;
  /** No chunk follows. */
  final: boolean;
}

export interface EncoderPool {
  /** Queues a chunk; resolves when there is room for more (backpressure). */
  submit(chunk: Chunk): Promise<void>;
  /** Results in submission order, as they become available. */
  drain(): EncodedChunk[];
  /** Waits for everything submitted; returns the remaining results in order. */
  finish(): Promise<EncodedChunk[]>;
  close(): Promise<void>;
}

/**
 * `eager`: start the threads now (the caller knows the input is large), so they boot while the
 * main thread is still loading; otherwise the first chunk decides (a final one is done inline).
 */
export function createEncoderPool(workers: number, setup: WorkerSetup, options: { tokenizer?: () => Tokenizer; eager?: boolean } = {}): EncoderPool {
  let pool: EncoderPool | undefined = options.eager && workers >= 1 ? threadPool(workers, setup) : undefined;
  return {
    async submit(chunk) {
      pool ??= workers < 1 || chunk.final ? inlinePool(setup, options.tokenizer?.() ?? loadTokenizer(setup.tokenizerDir)) : threadPool(workers, setup);
      await pool.submit(chunk);
    },
    drain: () => pool?.drain() ?? [],
    finish: async () => pool?.finish() ?? [],
    close: async () => pool?.close(),
  };
}

function inlinePool(setup: WorkerSetup, tokenizer: Tokenizer): EncoderPool {
  const how = { separator: separatorIds(tokenizer, setup.docSeparator), allowSpecial: setup.allowSpecial };
  let ready: EncodedChunk[] = [];
  return {
    async submit({ text }) {
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
    async submit({ bytes }) {
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
