/** Worker thread of the encoding pool: bytes of whole lines in, ids out (see pool.ts). */
import { parentPort, workerData } from 'node:worker_threads';
import { encodeDocuments, type DocumentEncoding } from './documents.js';
import { IdBuffer } from './id-buffer.js';
import { loadTokenizer } from './tokenizer.js';

export interface WorkerSetup extends DocumentEncoding {
  tokenizerDir?: string;
}
export interface WorkRequest {
  seq: number;
  bytes: Uint8Array;
}
export type WorkReply = { seq: number; ids: Uint32Array; documents: number } | { seq: number; error: string };

const setup = workerData as WorkerSetup;
const tokenizer = loadTokenizer(setup.tokenizerDir);
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });

parentPort!.on('message', ({ seq, bytes }: WorkRequest) => {
  try {
    const out = new IdBuffer(bytes.length >> 1);
    const documents = encodeDocuments(tokenizer, decoder.decode(bytes), setup, out);
    const ids = out.data.slice(0, out.length);
    parentPort!.postMessage({ seq, ids, documents } satisfies WorkReply, [ids.buffer]);
  } catch (err) {
    parentPort!.postMessage({ seq, error: (err as Error).message } satisfies WorkReply);
  }
});
