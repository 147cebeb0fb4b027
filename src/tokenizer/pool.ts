/**
 * Encodes chunks of documents on N workers and hands the results back in input order, so the
 * token stream (and every shard written from it) is byte-identical for any N. Reading a pipe, even
 * N = 1 is a thread, so this thread keeps draining stdin while the worker encodes (otherwise an
 * upstream `wikitext-prep |` stalls on a full pipe and the two alternate instead of overlapping);
 * reading files, this thread is one of the N. An input of one chunk is encoded here, no threads.
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

export interface PoolOptions {
  /** The caller's tokenizer, for work done on this thread (loaded here if not given). */
  tokenizer?: () => Tokenizer;
  /** Start the threads now: the caller knows the input is large, so they boot while it loads. */
  eager?: boolean;
  /**
   * This thread takes a share of the chunks (reading files: nothing upstream waits on us), so
   * N workers are this thread + N − 1 threads, and one worker starts no thread at all. Reading a
   * pipe, all N are threads and this thread keeps draining the pipe.
   */
  mainShare?: boolean;
}

export function createEncoderPool(workers: number, setup: WorkerSetup, options: PoolOptions = {}): EncoderPool {
  const threads = Math.max(0, options.mainShare ? workers - 1 : workers);
  let encodeHere: ((text: string) => EncodedChunk) | undefined;
  const here = () => (encodeHere ??= inlineEncoder(setup, options.tokenizer?.() ?? loadTokenizer(setup.tokenizerDir)));
  const start = (inline: boolean) => (inline || threads === 0 ? chunkPool(0, setup, here) : chunkPool(threads, setup, options.mainShare ? here : undefined));
  let pool: EncoderPool | undefined = options.eager ? start(false) : undefined;
  return {
    async submit(chunk) {
      pool ??= start(chunk.final); // a lone final chunk is not worth starting threads for
      await pool.submit(chunk);
    },
    drain: () => pool?.drain() ?? [],
    finish: async () => pool?.finish() ?? [],
    close: async () => pool?.close(),
  };
}

function inlineEncoder(setup: WorkerSetup, tokenizer: Tokenizer): (text: string) => EncodedChunk {
  const how = { separator: separatorIds(tokenizer, setup.docSeparator), allowSpecial: setup.allowSpecial };
  return (text) => {
    const out = new IdBuffer(text.length >> 2);
    const documents = encodeDocuments(tokenizer, text, how, out);
    return { ids: out.view(), documents };
  };
}

/** Chunk k goes to slot k mod slots; slot 0 is this thread when `here` is given. */
function chunkPool(threads: number, setup: WorkerSetup, here?: () => (text: string) => EncodedChunk): EncoderPool {
  const url = new URL('./encode-worker.js', import.meta.url);
  const workers = Array.from({ length: threads }, () => new Worker(url, { workerData: setup }));
  const inline = here !== undefined;
  const slots = threads + (inline ? 1 : 0);
  const results = new Map<number, EncodedChunk>();
  let nextSeq = 0; // next chunk to submit
  let nextOut = 0; // next chunk to hand back
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const maxInFlight = 2 * slots;

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
    async submit(chunk) {
      check();
      while (inFlight() >= maxInFlight) {
        await wait();
        check();
      }
      const seq = nextSeq++;
      const slot = seq % slots;
      if (inline && slot === 0) {
        results.set(seq, here!()(chunk.text));
        return;
      }
      const copy = new Uint8Array(chunk.bytes); // own buffer, so it can be transferred
      workers[slot - (inline ? 1 : 0)].postMessage({ seq, bytes: copy }, [copy.buffer]);
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
