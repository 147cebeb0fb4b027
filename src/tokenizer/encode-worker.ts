/** Worker thread of the encoding pool: bytes of whole lines in, ids out (see pool.ts). */
import { parentPort, workerData } from 'node:worker_threads';
import { encodeDocuments, separatorIds, type DocSeparator } from './documents.js';
import { IdBuffer } from './id-buffer.js';
import { loadTokenizer } from './tokenizer.js';

export interface WorkerSetup {
  tokenizerDir?: string;
  docSeparator: DocSeparator;
  allowSpecial: boolean;
}
export interface WorkRequest {
  seq: number;
  bytes: Uint8Array;
}
export type WorkReply = { seq: number; ids: Uint32Array; documents: number } | { seq: number; error: string };

const setup = workerData as WorkerSetup;
const tokenizer = loadTokenizer(setup.tokenizerDir);
const how = { separator: separatorIds(tokenizer, setup.docSeparator), allowSpecial: setup.allowSpecial };
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });

parentPort!.on('message', ({ seq, bytes }: WorkRequest) => {
  try {
    const out = new IdBuffer(bytes.length >> 1);
    const documents = encodeDocuments(tokenizer, decoder.decode(bytes), how, out);
    const ids = out.data.slice(0, out.length);
    parentPort!.postMessage({ seq, ids, documents } satisfies WorkReply, [ids.buffer]);
  } catch (err) {
    parentPort!.postMessage({ seq, error: (err as Error).message } satisfies WorkReply);
  }
});
