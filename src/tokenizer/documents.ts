/**
 * Encoding "one document per line" text into one token stream: documents joined by a separator
 * (after every document; the caller drops the final one). Shared by the inline path and the
 * worker threads so both produce identical ids.
 */
import { IdBuffer } from './id-buffer.js';
import type { Tokenizer } from './tokenizer.js';

export type DocSeparator = 'eos' | 'newline' | 'none';

export interface DocumentEncoding {
  /** Ids to put after each document. */
  separator: readonly number[];
  allowSpecial: boolean;
}

export function separatorIds(tokenizer: Tokenizer, kind: DocSeparator): number[] {
  if (kind === 'none') return [];
  if (kind === 'newline') return tokenizer.encode('\n');
  if (tokenizer.eosId === undefined) throw new Error('the vocabulary has no <|endoftext|> token for --doc-separator eos');
  return [tokenizer.eosId];
}

/**
 * Appends every non-empty line of bytes (UTF-8; a trailing "\r" is dropped) followed by the
 * separator. Returns the number of documents.
 */
export function encodeDocuments(tokenizer: Tokenizer, bytes: Uint8Array, how: DocumentEncoding, out: IdBuffer): number {
  let documents = 0;
  const options = { allowSpecial: how.allowSpecial };
  for (let start = 0; start < bytes.length; ) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    const stop = end > start && bytes[end - 1] === 0x0d ? end - 1 : end;
    if (stop > start) {
      tokenizer.encodeBytes(bytes, start, stop, out, options);
      for (const id of how.separator) out.push(id);
      documents++;
    }
    start = end + 1;
  }
  return documents;
}
