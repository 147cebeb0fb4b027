/**
 * Incremental decoding for streaming output: push ids one at a time and get back only complete
 * characters. Bytes of a character split across tokens wait for the rest (a multi-byte emoji is
 * often two or three GPT-2 tokens); flush() turns whatever is left over into U+FFFD.
 */
import type { Tokenizer } from './tokenizer.js';

export class StreamDecoder {
  private readonly decoder = new TextDecoder('utf-8', { ignoreBOM: true });

  constructor(private readonly tokenizer: Tokenizer) {}

  push(id: number): string {
    return this.decoder.decode(this.tokenizer.bytesOf(id), { stream: true });
  }

  flush(): string {
    return this.decoder.decode();
  }
}
