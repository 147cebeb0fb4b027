/**
 * Encodes chunks of documents on N workers and hands the results back in input order, so the
 * token stream (and every shard written from it) is byte-identical for any N. This thread is one of
 * the N (mainShare), except reading a pipe with N = 1: then the one worker is a thread, so this
 * thread keeps draining stdin while it encodes (otherwise an upstream `wikitext-prep |` stalls on
 * a full pipe and the two alternate instead of overlapping). With N = 2 behind `wikitext-prep |`,
 * this thread + one thread took 1.08 s against 1.13 s for two threads with this one only reading
 * (medians of 10, alternated): a thread costs ~0.1 s of CPU to boot, which the pipe's 2 cores
 * could not spare. An input of one chunk is encoded here, no threads.
 *
 * Chunks are cut into parts of about `chunkBytes` at line ends (a file is read 1 MiB at a time)
 * and each part goes to the first thread with fewer than DEPTH queued, this thread taking one only
 * when every thread has DEPTH: a thread that boots late or runs slow gets less, no thread idles at
 * the end waiting on a big last chunk, and a second thread works (and is told to start: building
 * its tables, compiling the encoder) only when the input comes faster than the first keeps up
 * with. Behind `wikitext-prep |` on 2 cores it mostly does not; spreading parts evenly instead made
 * that pipeline slower (1.67 s against 1.62, medians of 5) as the threads took CPU from
 * wikitext-prep. Two or more encoders share the built-in image and one piece cache
 * (piece-cache.ts), so a piece merged by one is a hit for all.
 */
import type { Worker } from 'node:worker_threads';
import { imageSeedCache } from './compiled.js';
import { encodeDocuments, separatorIds } from './documents.js';
import { dropSpareEncoders, spareEncoders, takeEncoder } from './encoder-threads.js';
import { IdBuffer } from './id-buffer.js';
import { PieceCache } from './piece-cache.js';
import { builtinImage, loadTokenizer, type Tokenizer } from './tokenizer.js';
import { warmUp } from './warm-up.js';
import type { WorkReply, WorkerSetup, WorkerStart } from './encode-worker.js';

export interface EncodedChunk {
  ids: Uint32Array;
  documents: number;
}

export interface Chunk {
  /** Whole lines as valid UTF-8. */
  bytes: Uint8Array;
  /** No chunk follows. */
  final: boolean;
}

export interface EncoderPool {
  /** Queues a chunk; resolves when there is room for more (backpressure). */
  submit(chunk: Chunk): Promise<void>;
  /** Results in submission order, as they become available (a chunk's may come in several parts). */
  drain(): EncodedChunk[];
  /** Waits for everything submitted; returns the remaining results in order. */
  finish(): Promise<EncodedChunk[]>;
  close(): Promise<void>;
}

export interface PoolOptions {
  /** The caller's tokenizer, for work done on this thread (loaded here if not given; it switches to the cache the threads share). */
  tokenizer?: () => Tokenizer;
  /** Start the threads now: the caller knows the input is large, so they boot while it loads. */
  eager?: boolean;
  /**
   * This thread takes a share of the chunks, so N workers are this thread + N − 1 threads, and
   * one worker starts no thread at all. Without it all N are threads and this thread only reads.
   */
  mainShare?: boolean;
  /** Bytes of input per part handed to an encoder (default 256 KiB). */
  chunkBytes?: number;
  /** Slots of the cache the encoders share, to start with (default SHARED_CACHE_SLOTS; it grows). */
  cacheSlots?: number;
}

/**
 * Parts queued per thread, so a thread always has the next while this one encodes a part of its
 * own, reads or collects. Four: on the 536 MB text with -j2 the thread was busy 88% of the
 * encoding with two, 95% with four (19.8 s instead of 20.8); WikiText-2 the same (1.04–1.08 s).
 */
const DEPTH = 4;
/**
 * Slots of the cache the encoders share to start with: 2^18 (a 4 MB table, 131k entries;
 * WikiText-2 fills 69k), the size of the image's seed table, so it starts as a copy of that. Each
 * MB of cache costs ~1 ms to touch on our machines; bigger inputs grow it (piece-cache.ts).
 */
const SHARED_CACHE_SLOTS = 1 << 18;

export function createEncoderPool(workers: number, setup: WorkerSetup, options: PoolOptions = {}): EncoderPool {
  const threads = Math.max(0, options.mainShare ? workers - 1 : workers);
  const partBytes = options.chunkBytes ?? 1 << 18;
  let tokenizer: Tokenizer | undefined;
  let encodeHere: ((bytes: Uint8Array) => EncodedChunk) | undefined;
  /** This thread's encoder; cache: the one it shares with threads (if it works beside any) now. */
  const here = (cache?: PieceCache) => {
    tokenizer ??= options.tokenizer?.() ?? loadTokenizer(setup.tokenizerDir);
    if (cache) tokenizer.useCache(cache);
    return (encodeHere ??= inlineEncoder(setup, tokenizer, cache !== undefined));
  };
  const start = (inline: boolean) => {
    const cacheSlots = options.cacheSlots ?? SHARED_CACHE_SLOTS;
    const pool = inline || threads === 0 ? chunkPool(0, setup, partBytes, cacheSlots, here) : chunkPool(threads, setup, partBytes, cacheSlots, options.mainShare ? here : undefined);
    dropSpareEncoders();
    return pool;
  };
  // Threads already started for this pool (bpe-encode does for stdin and large files) start work now.
  let pool: EncoderPool | undefined = options.eager || (threads > 0 && spareEncoders() > 0) ? start(false) : undefined;
  return {
    async submit(chunk) {
      pool ??= start(chunk.final && chunk.bytes.length <= partBytes); // one small chunk is not worth threads
      await pool.submit(chunk);
    },
    drain: () => pool?.drain() ?? [],
    finish: async () => pool?.finish() ?? [],
    close: async () => {
      dropSpareEncoders();
      await pool?.close();
    },
  };
}

/**
 * Alone, this thread's encoder is not warmed up: its recompiles run on the other core, and
 * within the noise (encode span of -j1 on WikiText-2, medians of 7: 745 ms with, 715 without).
 */
function inlineEncoder(setup: WorkerSetup, tokenizer: Tokenizer, beside: boolean): (bytes: Uint8Array) => EncodedChunk {
  const how = { separator: separatorIds(tokenizer, setup.docSeparator), allowSpecial: setup.allowSpecial };
  if (beside) warmUp(tokenizer, how);
  return (bytes) => {
    const out = new IdBuffer(bytes.length >> 2);
    const documents = encodeDocuments(tokenizer, bytes, how, out);
    return { ids: out.view(), documents };
  };
}

function chunkPool(threads: number, setup: WorkerSetup, partBytes: number, cacheSlots: number, here?: (cache?: PieceCache) => (bytes: Uint8Array) => EncodedChunk): EncoderPool {
  const inline = here !== undefined;
  // The image and the cache only (the seed is in the image): the threads build their tables
  // while this thread builds its own, later.
  const image = (setup.tokenizerDir === undefined && builtinImage()) || undefined;
  const imageSeed = image && imageSeedCache(new Uint8Array(image));
  const seed = imageSeed && imageSeed.table.length / 4 <= cacheSlots ? imageSeed : undefined; // a smaller cache starts empty
  let cache = threads + (inline ? 1 : 0) > 1 ? PieceCache.create({ slots: cacheSlots, seed, shared: true }) : undefined;
  const startMessage = { ...setup, image };
  const workers: Worker[] = [];
  const started: boolean[] = [];
  const queued: number[] = []; // parts sent to each thread and not yet answered
  const results = new Map<number, EncodedChunk>();
  let nextSeq = 0; // next part to number
  let nextOut = 0; // next part to hand back
  let closing = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;

  const settle = () => {
    wake?.();
    wake = undefined;
  };
  const fail = (err: Error) => {
    failure ??= err;
    settle();
  };
  const start = (k: number) => {
    const message: WorkerStart = { ...startMessage, cache: cache?.buffer as SharedArrayBuffer | undefined };
    workers[k].postMessage({ start: message });
    started[k] = true;
  };
  for (let k = 0; k < threads; k++) {
    const worker = takeEncoder();
    worker.on('message', (reply: WorkReply) => {
      if (reply.seq >= 0) queued[k]--;
      if ('error' in reply) fail(new Error(reply.error));
      else results.set(reply.seq, { ids: reply.ids, documents: reply.documents });
      settle();
    });
    worker.on('error', fail);
    worker.on('exit', (code) => closing || fail(new Error(`an encoding thread stopped (exit code ${code})`)));
    workers.push(worker);
    started.push(false);
    queued.push(0);
  }
  if (threads > 0) start(0);
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
  /**
   * The first thread with room, or −1 when every one has DEPTH queued (or there are none). Holding
   * back the second thread while the first was still on its first part (compiling: its queue says
   * nothing yet about the input's pace) made `wikitext-prep | bpe-encode -j2` slower (1.61 s
   * against 1.51, medians of 5): the second then compiled later, beside a busier first.
   */
  const withRoom = () => {
    for (let k = 0; k < threads; k++) if (queued[k] < DEPTH) return k;
    return -1;
  };

  /** A filling cache is replaced (piece-cache.ts), for every encoder from its next part on. */
  const renewCache = () => {
    if (!cache?.needsReplacing()) return;
    cache = cache.replacement(seed);
    workers.forEach((worker, k) => started[k] && worker.postMessage({ cache: cache!.buffer }));
  };

  const submitPart = async (bytes: Uint8Array) => {
    check();
    renewCache();
    let k = withRoom();
    if (k < 0 && inline) {
      await new Promise(setImmediate); // take in the replies that have come, before working here
      check();
      k = withRoom();
    }
    while (k < 0 && !inline) {
      await wait();
      check();
      k = withRoom();
    }
    const seq = nextSeq++;
    if (k < 0) {
      results.set(seq, here!(cache)(bytes));
      return;
    }
    if (!started[k]) start(k);
    const copy = new Uint8Array(bytes); // own buffer, so it can be transferred
    queued[k]++;
    workers[k].postMessage({ seq, bytes: copy }, [copy.buffer]);
  };

  return {
    async submit(chunk) {
      const { bytes } = chunk;
      if (bytes.length <= partBytes || threads === 0) return submitPart(bytes);
      for (const [start, end] of lineParts(bytes, partBytes)) await submitPart(bytes.subarray(start, end));
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
      closing = true;
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

/** [start, end) of consecutive parts of about `size` bytes, each ending at a line end (or the end). */
function lineParts(bytes: Uint8Array, size: number): [number, number][] {
  const parts: [number, number][] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = bytes.length;
    if (bytes.length - start > size) {
      const before = bytes.lastIndexOf(0x0a, start + size - 1);
      const after = bytes.indexOf(0x0a, start + size);
      end = before >= start ? before + 1 : after >= 0 ? after + 1 : bytes.length;
    }
    parts.push([start, end]);
    start = end;
  }
  return parts;
}
