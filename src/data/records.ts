/**
 * One training record: a block of token ids. On disk a record is a msgpack map; typed arrays use
 * msgpackr's typed-array extension (ext type 0x74: one byte naming the array type, then the
 * little-endian elements). attention_mask is stored only for padded records and labels only when
 * they differ from input_ids; readers fill in the defaults.
 */
import { Packr, Unpackr } from 'msgpackr';
import type { IdDtype } from './manifest.js';

export interface StoredRecord {
  input_ids: Uint16Array | Int32Array;
  attention_mask?: Uint8Array;
  labels?: Uint16Array | Int32Array;
}

/** A record with every field present. */
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

export function withDefaults(r: StoredRecord): TokenRecord {
  return {
    input_ids: r.input_ids,
    attention_mask: r.attention_mask ?? ones(r.input_ids.length),
    labels: r.labels ?? r.input_ids,
  };
}
