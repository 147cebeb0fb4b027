/**
 * One training record. On disk a record is a msgpack map; typed arrays use msgpackr's typed-array
 * extension (ext type 0x74: one byte naming the array type, then the little-endian elements).
 * A causal LM's record is a block of token ids: attention_mask is stored only for padded records
 * and labels only when they differ from input_ids; readers fill in the defaults. A classifier's
 * record is a text's ids, unpadded, and its label id.
 */
import { Packr, Unpackr } from 'msgpackr';
import type { IdDtype } from './manifest.js';

export interface StoredRecord {
  input_ids: Uint16Array | Int32Array;
  attention_mask?: Uint8Array;
  labels?: Uint16Array | Int32Array;
}

/** A labelled text: 1 to max_length ids, no padding, and a label in 0 … num_labels − 1. */
export interface LabelledRecord {
  input_ids: Uint16Array | Int32Array;
  label: number;
}

/** A causal LM's record with every field present. */
export interface TokenRecord {
  input_ids: Uint16Array | Int32Array;
  attention_mask: Uint8Array;
  labels: Uint16Array | Int32Array;
}

const options = { useRecords: false, moreTypes: true, variableMapSize: true } as const;
export const packer = new Packr(options);
export const unpacker = new Unpackr(options);

export function idArray(dtype: IdDtype, length: number): Uint16Array | Int32Array {
  return dtype === 'uint16' ? new Uint16Array(length) : new Int32Array(length);
}

const ONES = new Map<number, Uint8Array>();
/** Shared all-ones mask of a length (read-only by convention). */
function ones(length: number): Uint8Array {
  let mask = ONES.get(length);
  if (!mask) ONES.set(length, (mask = new Uint8Array(length).fill(1)));
  return mask;
}

export interface RecordShape {
  blockSize: number;
  dtype: IdDtype;
  /** Ids must be below this (the tokenizer's vocabulary size). */
  vocabSize: number;
}

/**
 * Why a decoded record is unusable (undefined when it is fine): each field an array of the
 * manifest's type and length, ids inside the vocabulary, mask values 0 or 1. Readers check this
 * so that a bad value is named where it is, not met later as a wrong loss or "no tokens".
 */
export function recordProblem(r: StoredRecord | undefined, shape: RecordShape): string | undefined {
  const { blockSize, dtype, vocabSize } = shape;
  const Ids = dtype === 'uint16' ? Uint16Array : Int32Array;
  if (!r || !(r.input_ids instanceof Ids)) return `input_ids is not a ${dtype} array`;
  const ids = (name: string, a: unknown): string | undefined => {
    if (!(a instanceof Ids)) return `${name} is not a ${dtype} array`;
    if (a.length !== blockSize) return `${name} has ${a.length} tokens, block_size is ${blockSize}`;
    const t = a.findIndex((id) => id < 0 || id >= vocabSize);
    return t < 0 ? undefined : `${name}[${t}] is ${a[t]}, outside the vocabulary of ${vocabSize} ids (0 to ${vocabSize - 1})`;
  };
  const problem = ids('input_ids', r.input_ids) ?? (r.labels === undefined ? undefined : ids('labels', r.labels));
  if (problem !== undefined || r.attention_mask === undefined) return problem;
  const mask = r.attention_mask;
  if (!(mask instanceof Uint8Array)) return 'attention_mask is not a uint8 array';
  if (mask.length !== blockSize) return `attention_mask has ${mask.length} values, block_size is ${blockSize}`;
  const t = mask.findIndex((m) => m > 1);
  return t < 0 ? undefined : `attention_mask[${t}] is ${mask[t]}, must be 0 or 1`;
}

export interface LabelledShape {
  maxLength: number;
  dtype: IdDtype;
  vocabSize: number;
  numLabels: number;
}

/** Why a decoded classification record is unusable (undefined when it is fine). */
export function labelledProblem(r: LabelledRecord | undefined, shape: LabelledShape): string | undefined {
  const { maxLength, dtype, vocabSize, numLabels } = shape;
  const ids = r?.input_ids;
  if (!(ids instanceof (dtype === 'uint16' ? Uint16Array : Int32Array))) return `input_ids is not a ${dtype} array`;
  if (ids.length === 0 || ids.length > maxLength) return `input_ids has ${ids.length} tokens, must have 1 to max_length ${maxLength}`;
  const t = ids.findIndex((id) => id < 0 || id >= vocabSize);
  if (t >= 0) return `input_ids[${t}] is ${ids[t]}, outside the vocabulary of ${vocabSize} ids (0 to ${vocabSize - 1})`;
  const label = r!.label;
  if (!Number.isInteger(label) || label < 0 || label >= numLabels) return `label is ${JSON.stringify(label)}, must be an integer in 0 … ${numLabels - 1} (num_labels ${numLabels})`;
  return undefined;
}

export function withDefaults(r: StoredRecord): TokenRecord {
  return {
    input_ids: r.input_ids,
    attention_mask: r.attention_mask ?? ones(r.input_ids.length),
    labels: r.labels ?? r.input_ids,
  };
}
