/**
 * Which format a weights file is in, from its full signature, and the reader for each: the one
 * place that sniffs (checkpoint loading, convert-weights and the PyTorch reader all ask here).
 *
 * The first byte alone misleads: a safetensors file starts with its header length, and when that
 * length's low byte is 0x80 (1 in 32 Hugging Face files, whose headers are padded to 8 bytes) it
 * looks like a pickle's PROTO opcode. So each format is recognised by its whole signature.
 */
import { open } from 'node:fs/promises';
import { fsError, ToolError } from '../util/errors.js';
import { readSafetensors, type Tensor32 } from './safetensors.js';
import { isEncryptedCheckpoint, looksLikeCheckpoint, readMindsporeCheckpoint } from './mindspore.js';

export type WeightsFormat = 'safetensors' | 'zip' | 'torch-legacy' | 'pickle' | 'gguf' | 'mindspore';

/** How much of a file's start the signatures look at (the legacy magic sits in the first pickle). */
export const SIGNATURE_BYTES = 64;

/**
 * 0x1950a86a20f9469cfc6c, the legacy torch.save magic number, as pickle's LONG1 opcode writes it.
 * It follows PROTO directly (protocol 2, torch's default) or after a FRAME (protocols 4–5).
 */
export const LEGACY_MAGIC = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

const startsWith = (head: Uint8Array, bytes: number[]) => head.length >= bytes.length && bytes.every((b, i) => head[i] === b);

function indexOf(haystack: Uint8Array, needle: number[]): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** The 8-byte little-endian length a safetensors file starts with. */
const safetensorsHeaderLength = (head: Uint8Array) => Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
const isPickle = (head: Uint8Array) => head.length >= 2 && head[0] === 0x80 && head[1] >= 2 && head[1] <= 5;

type Reader = (path: string, onProgress?: (done: number, total: number) => void) => Promise<Map<string, Tensor32>>;

const readTorch: Reader = async (path, onProgress) => {
  const { readPytorchBin } = await import('./pytorch-bin.js'); // the unpickler only when needed
  return readPytorchBin(path, { onProgress });
};

/** Most specific first: a pickle never has "{" at byte 8 behind a length that fits the file. */
const FORMATS: { format: WeightsFormat; matches: (head: Uint8Array, size: number) => boolean; read: Reader }[] = [
  {
    format: 'safetensors',
    matches: (head, size) => head.length >= 9 && head[8] === 0x7b && 8 + safetensorsHeaderLength(head) <= size,
    read: async (path) => (await readSafetensors(path)).tensors,
  },
  // A local file header, or the end record that is all of an empty archive.
  { format: 'zip', matches: (head) => startsWith(head, [0x50, 0x4b, 3, 4]) || startsWith(head, [0x50, 0x4b, 5, 6]), read: readTorch },
  { format: 'torch-legacy', matches: (head) => isPickle(head) && indexOf(head.subarray(0, SIGNATURE_BYTES), LEGACY_MAGIC) >= 0, read: readTorch },
  // Any other pickle: the PyTorch reader says why it is not a checkpoint.
  { format: 'pickle', matches: isPickle, read: readTorch },
  {
    format: 'gguf',
    matches: (head) => startsWith(head, [0x47, 0x47, 0x55, 0x46]),
    // A GGUF file describes its model itself: its GPT-2 parameters under HF names, dequantised.
    read: async (path) => {
      const { readGgufWeights } = await import('./gguf-gpt2.js');
      const { values } = await readGgufWeights(path);
      return new Map([...values].map(([name, v]) => [name, { shape: v.shape, data: v.data, dtype: 'F32' as const }]));
    },
  },
  // A MindSpore .ckpt has no magic number: it is recognised by its first value (field 1 of the
  // Checkpoint message, 0x0a, a length that fits, a Value's field), after every format that has
  // one; an encrypted one by MindSpore's cipher magic, for the reader to refuse with a reason.
  {
    format: 'mindspore',
    matches: (head, size) => looksLikeCheckpoint(head, size) || isEncryptedCheckpoint(head),
    read: async (path, onProgress) => (await readMindsporeCheckpoint(path, onProgress)).tensors,
  },
];

const ACCEPTED = 'safetensors (an 8-byte header length, then "{") or a PyTorch pytorch_model.bin (a zip archive, "PK\\x03\\x04", or a legacy pickle, "\\x80" + protocol 2–5), GGUF ("GGUF"), or a MindSpore .ckpt (a protobuf Checkpoint: "\\x0a" and the length of its first value)';

/** The format whose signature `head` (the first SIGNATURE_BYTES bytes of a file of `size` bytes) carries. */
export function sniffFormat(head: Uint8Array, size: number): WeightsFormat | undefined {
  return FORMATS.find((f) => f.matches(head, size))?.format;
}

/** What a file that matches no signature looks like, for the message. */
function describeUnknown(head: Uint8Array, size: number): string {
  if (size === 0) return 'an empty file';
  if (head.length >= 9 && head[8] === 0x7b) {
    return `a safetensors header of ${safetensorsHeaderLength(head)} bytes that runs past the end of the file (${size} bytes): truncated?`;
  }
  if (head[0] === 0x0a && looksLikeCheckpoint(head, Number.MAX_SAFE_INTEGER)) {
    return `a MindSpore checkpoint whose first value runs past the end of the file (${size} bytes): truncated?`;
  }
  const start = Buffer.from(head.subarray(0, 16));
  const text = /^[\t\n\r\x20-\x7e]*$/.test(start.toString('latin1'));
  const shown = text ? JSON.stringify(start.toString('latin1')) : start.toString('hex').replace(/(..)(?!$)/g, '$1 ');
  return `${size} bytes starting ${shown}${text ? ', text' : ''}`;
}

/** Reads the start of `path` and names its format; a file of no known format is an error saying which are accepted. */
export async function identifyWeightsFile(path: string): Promise<WeightsFormat> {
  let head: Buffer;
  let size: number;
  try {
    const file = await open(path, 'r');
    try {
      size = (await file.stat()).size;
      head = Buffer.alloc(Math.min(size, SIGNATURE_BYTES));
      await file.read(head, 0, head.length, 0);
    } finally {
      await file.close();
    }
  } catch (err) {
    throw fsError(err, path);
  }
  const format = sniffFormat(head, size);
  if (!format) throw new ToolError(`${path}: not a weights file (${describeUnknown(head, size)}); accepted: ${ACCEPTED}`);
  return format;
}

/** Raw tensors of a weights file, by the reader of its format. */
export async function readWeightsFile(path: string, onProgress?: (done: number, total: number) => void): Promise<Map<string, Tensor32>> {
  const format = await identifyWeightsFile(path);
  return FORMATS.find((f) => f.format === format)!.read(path, onProgress);
}
