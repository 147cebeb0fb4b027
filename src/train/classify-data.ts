/**
 * Labelled record shards as the classification task reads them: each record's input_ids and label.
 */
import type { IterateOptions, ShardDataset } from '../data/shard-reader.js';
import type { OrderedRecords } from './batches.js';
import type { LabelledSource } from './classify-eval.js';
import type { LabelledRecord } from './classify-loss.js';

/** A shard directory of labelled records, for training (in the run's order) and evaluation (in file order). */
export function labelledRecords(data: ShardDataset): OrderedRecords<LabelledRecord> & LabelledSource & { readonly blockSize: number } {
  async function* iterate(options: IterateOptions = {}) {
    for await (const p of data.iterate(options)) {
      const r = p.record as unknown as LabelledRecord;
      yield { record: { input_ids: r.input_ids, label: r.label }, shard: p.shard, index: p.index };
    }
  }
  return { dir: data.dir, numRecords: data.numRecords, blockSize: data.blockSize, iterate };
}
