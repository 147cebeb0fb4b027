/**
 * Worker thread of the encoding pool: bytes of whole lines in, ids out (see pool.ts). It may be
 * started before anyone knows what it will encode (encoder-threads.ts), so its first message says
 * that: the setup, the built-in image and the cache the encoders share.
 */
import { parentPort } from 'node:worker_threads';
import { encodeDocuments, separatorIds, type DocSeparator, type DocumentEncoding } from './documents.js';
import { IdBuffer } from './id-buffer.js';
import { PieceCache } from './piece-cache.js';
import { loadTokenizer, tokenizerFromImage, type Tokenizer } from './tokenizer.js';
import { warmUp } from './warm-up.js';

export interface WorkerSetup {
  tokenizerDir?: string;
  docSeparator: DocSeparator;
  allowSpecial: boolean;
}
/** The first message: the setup, plus the built-in image and a shared cache when there are. */
export interface WorkerStart extends WorkerSetup {
  image?: SharedArrayBuffer;
  cache?: SharedArrayBuffer;
}
export interface WorkRequest {
  seq: number;
  bytes: Uint8Array;
}
/** seq −1: the start failed. */
export type WorkReply = { seq: number; ids: Uint32Array; documents: number } | { seq: number; error: string };

let tokenizer: Tokenizer;
let how: DocumentEncoding;
/** Reused from part to part (what goes back is a copy of its ids, to transfer). */
const out = new IdBuffer(1 << 16);

function start(setup: WorkerStart): void {
  const cache = setup.cache && PieceCache.attach(setup.cache);
  tokenizer = setup.image ? tokenizerFromImage(setup.image, cache) : loadTokenizer(setup.tokenizerDir, cache);
  how = { separator: separatorIds(tokenizer, setup.docSeparator), allowSpecial: setup.allowSpecial };
  warmUp(tokenizer, how);
}

/** What the pool sends: the start, work, or the shared cache to use from now on (it replaced the last). */
type WorkerMessage = { start: WorkerStart } | WorkRequest | { cache: SharedArrayBuffer };

parentPort!.on('message', (message: WorkerMessage) => {
  const seq = 'seq' in message ? message.seq : -1;
  try {
    if ('start' in message) return start(message.start);
    if ('cache' in message) return void tokenizer.useCache(PieceCache.attach(message.cache));
    out.length = 0;
    const documents = encodeDocuments(tokenizer, message.bytes, how, out);
    const ids = out.data.slice(0, out.length);
    parentPort!.postMessage({ seq, ids, documents } satisfies WorkReply, [ids.buffer]);
  } catch (err) {
    parentPort!.postMessage({ seq, error: (err as Error).message } satisfies WorkReply);
  }
});
