/**
 * GPT-2's reversible byte ↔ printable-character mapping (OpenAI's `bytes_to_unicode`).
 * vocab.json and merges.txt spell every token in this alphabet, so that byte 0x20 reads "Ġ".
 */

/** BYTE_TO_CHAR[b] is the character that stands for byte b in vocab.json/merges.txt. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** Inverse of BYTE_TO_CHAR: char code → byte, or -1 for characters outside the alphabet. */
export const CHAR_TO_BYTE: Int16Array = buildCharToByte();

function buildByteToChar(): string[] {
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out = new Array<string>(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCharCode(printable(b) ? b : 256 + shifted++);
  }
  return out;
}

function buildCharToByte(): Int16Array {
  const table = new Int16Array(512).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => (table[ch.charCodeAt(0)] = b));
  return table;
}

/** Decodes a vocab.json token string to its bytes; returns null if a character is outside the alphabet. */
export function tokenStringToBytes(token: string): Uint8Array | null {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const code = token.charCodeAt(i);
    const b = code < 512 ? CHAR_TO_BYTE[code] : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}
