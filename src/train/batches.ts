/**
 * The order training reads records in, and where it stands in it. An epoch is `repeat` passes
 * over the shards, each pass in the reader's deterministic order for (seed, pass number): shards
 * shuffled, then records within each. A position (epoch, records consumed in it) is all a
 * checkpoint needs to continue the exact same stream.
 */
import type { IterateOptions } from '../data/shard-reader.js';
import { ToolError } from '../util/errors.js';

/** Records of a data set in the reader's order for (seed, epoch): ShardDataset's iterate, for any record type. */
export interface OrderedRecords<R> {
  readonly dir: string;
  readonly numRecords: number;
  iterate(options: IterateOptions): AsyncGenerator<{ record: R }>;
}

export interface DataPosition {
  epoch: number;
  /** Records of this epoch already consumed. */
  offset: number;
}

export interface BatchPlan {
  batchSize: number;
  shuffle: boolean;
  seed: number;
  repeat: number;
  dropRemainder: boolean;
}

/** Records of one epoch. */
export const recordsPerEpoch = (dataset: OrderedRecords<unknown>, plan: BatchPlan): number => dataset.numRecords * plan.repeat;

/** Micro-batches in one epoch (the last one may be short unless dropRemainder). */
export function batchesPerEpoch(dataset: OrderedRecords<unknown>, plan: BatchPlan): number {
  const n = recordsPerEpoch(dataset, plan);
  return plan.dropRemainder ? Math.floor(n / plan.batchSize) : Math.ceil(n / plan.batchSize);
}

/** Fails, naming the data set and the numbers, when an epoch does not fill one batch. */
export function checkEnoughRecords(dataset: OrderedRecords<unknown>, plan: BatchPlan): void {
  const n = recordsPerEpoch(dataset, plan);
  if (n > 0 && (n >= plan.batchSize || !plan.dropRemainder)) return;
  const records = `${dataset.numRecords} record${dataset.numRecords === 1 ? '' : 's'}${plan.repeat > 1 ? ` × repeat ${plan.repeat}` : ''}`;
  const fix = n === 0 ? 'encode more text' : 'use a smaller runner.batch_size, or train_dataset.drop_remainder: false';
  throw new ToolError(`${dataset.dir}: ${records} per epoch, fewer than one batch of ${plan.batchSize} (runner.batch_size); ${fix}`);
}

export class BatchStream<R> {
  private iterator: AsyncGenerator<{ record: R }> | undefined;
  private iteratorPass = -1;
  private nextInPass = 0;

  constructor(
    private readonly dataset: OrderedRecords<R>,
    private readonly plan: BatchPlan,
    /** Where to start; advanced as batches are taken. */
    readonly position: DataPosition = { epoch: 0, offset: 0 },
  ) {}

  /** The next micro-batch, moving on to the next epoch when this one is used up. */
  async next(): Promise<R[]> {
    const { batchSize, dropRemainder } = this.plan;
    checkEnoughRecords(this.dataset, this.plan);
    const perEpoch = recordsPerEpoch(this.dataset, this.plan);
    // left < 0: a resume onto a data set smaller than the one the position was taken in.
    const left = perEpoch - this.position.offset;
    if (left <= 0 || (dropRemainder && left < batchSize)) {
      this.position.epoch++;
      this.position.offset = 0;
    }
    const take = Math.min(batchSize, perEpoch - this.position.offset);
    const batch: R[] = [];
    for (let k = 0; k < take; k++) batch.push(await this.record(this.position.epoch, this.position.offset + k));
    this.position.offset += take;
    return batch;
  }

  /** Record `offset` of an epoch's order (reads sequentially; jumps restart the pass iterator). */
  private async record(epoch: number, offset: number): Promise<R> {
    const n = this.dataset.numRecords;
    const pass = epoch * this.plan.repeat + Math.floor(offset / n);
    const inPass = offset % n;
    if (pass !== this.iteratorPass || inPass !== this.nextInPass) {
      await this.iterator?.return(undefined);
      this.iterator = this.dataset.iterate({ shuffle: this.plan.shuffle, seed: this.plan.seed, epoch: pass, start: inPass });
      this.iteratorPass = pass;
    }
    const { value, done } = await this.iterator!.next();
    if (done || !value) throw new Error(`data order ended early at pass ${pass}, record ${inPass}`);
    this.nextInPass = inPass + 1;
    return value.record;
  }
}
