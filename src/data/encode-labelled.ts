/**
 * bpe-encode's labelled mode: rows of TSV, CSV or JSON Lines → (text ids, label id) records →
 * classification shards. Texts are encoded whole (the joined columns, as the seed encodes
 * AG-News's title + ". " + description), cut to maxLength on one side, and stored unpadded.
 * Label names are --labels in the order given, else the distinct labels sorted (numerically when
 * every one is a number, so AG-News's 1 … 4 become ids 0 … 3 as the seed's `label - 1` does).
 *
 * One thread: SST-2's 67k rows (5 MB) encode in about a second, and a row's text may span lines
 * (quoted CSV), which the line-chunked worker pool does not allow.
 */
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { checkOutputDir } from '../util/atomic-dir.js';
import { ToolError, UsageError } from '../util/errors.js';
import { STDIN } from '../util/input.js';
import { checkPadId } from './encode-dataset.js';
import { checkColumnOptions, readLabelledRows, type ColumnOptions } from './labelled-input.js';
import { dtypeForVocab, replaceableRecords, type ClassificationManifest } from './manifest.js';
import { idArray, type LabelledRecord } from './records.js';
import type { ShardPlan } from './shard-writer.js';

export type TruncationSide = 'right' | 'left';

export interface EncodeLabelledOptions extends ColumnOptions {
  files: string[];
  out: string;
  overwrite?: boolean;
  /** Label names in id order; default: the distinct labels, sorted. */
  labels?: string[];
  maxLength: number;
  truncationSide: TruncationSide;
  /** Leave out bad rows (counted) instead of failing on the first. */
  skipBad?: boolean;
  padId?: number;
  plan?: ShardPlan;
  tokenizerDir?: string;
  allowSpecial?: boolean;
  lossy?: boolean;
  command?: string[];
  onWarning?: (message: string) => void;
  onBytes?: (bytes: number) => void;
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Distinct labels in id order: numerically if all are numbers, else by code point. */
export function sortLabels(labels: Iterable<string>): string[] {
  const distinct = [...new Set(labels)];
  const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  if (distinct.every((l) => NUMBER.test(l))) return distinct.sort((a, b) => Number(a) - Number(b) || byText(a, b));
  return distinct.sort(byText);
}

/** --labels a,b,c → ["a", "b", "c"], refusing empty or repeated names. */
export function parseLabels(list: string): string[] {
  const labels = list.split(',').map((l) => l.trim());
  if (labels.some((l) => l === '')) throw new UsageError(`--labels ${JSON.stringify(list)}: a label name is empty`);
  const seen = new Set<string>();
  for (const l of labels) {
    if (seen.has(l)) throw new UsageError(`--labels ${JSON.stringify(list)}: ${JSON.stringify(l)} is named twice`);
    seen.add(l);
  }
  return labels;
}

/** ids cut to maxLength (a copy): 'right' keeps the start (Hugging Face's default side), 'left' the end. */
export function truncate<A extends Uint16Array | Int32Array>(ids: A, maxLength: number, side: TruncationSide): A {
  if (ids.length <= maxLength) return ids;
  return (side === 'right' ? ids.slice(0, maxLength) : ids.slice(ids.length - maxLength)) as A;
}

export async function encodeLabelled(options: EncodeLabelledOptions): Promise<ClassificationManifest> {
  checkColumnOptions(options);
  if (!Number.isSafeInteger(options.maxLength) || options.maxLength < 1) throw new UsageError(`--max-length must be a positive integer, got ${options.maxLength}`);
  const inputs = [...options.files.filter((f) => f !== STDIN), ...(options.tokenizerDir ? [options.tokenizerDir] : [])];
  const overwrite = options.overwrite ? replaceableRecords(inputs) : undefined;
  await checkOutputDir(options.out, { overwrite });
  const tokenizer = loadTokenizer(options.tokenizerDir);
  const padId = checkPadId(tokenizer, options.padId);
  const dtype = dtypeForVocab(tokenizer.vocabSize);
  const given = options.labels && new Map(options.labels.map((l, k) => [l, k]));

  const ids: (Uint16Array | Int32Array)[] = [];
  const names: string[] = [];
  let skipped = 0;
  let firstSkipped = '';
  let truncated = 0;
  let inputBytes = 0;
  const onBytes = (b: number) => {
    inputBytes = b;
    options.onBytes?.(b);
  };
  const rows = readLabelledRows(options.files, options, { lossy: options.lossy, onWarning: options.onWarning, onBytes });
  for await (const row of rows) {
    if ('problem' in row || (given && !given.has(row.label))) {
      const problem = 'problem' in row ? row.problem : `label ${JSON.stringify(row.label)} is not one of --labels ${options.labels!.join(',')}`;
      const message = `${row.source}:${row.line}: ${problem}`;
      if (!options.skipBad) throw new ToolError(`${message} (--skip-bad leaves such rows out)`);
      if (skipped++ === 0) firstSkipped = message;
      continue;
    }
    const encoded = tokenizer.encode(row.text, { allowSpecial: options.allowSpecial });
    const record = idArray(dtype, encoded.length);
    record.set(encoded);
    if (record.length > options.maxLength) truncated++;
    ids.push(truncate(record, options.maxLength, options.truncationSide));
    names.push(row.label);
  }
  if (skipped > 0) options.onWarning?.(`skipped ${skipped} bad row${skipped === 1 ? '' : 's'} (the first: ${firstSkipped})`);
  if (truncated > 0) {
    const kept = options.truncationSide === 'right' ? 'start' : 'end';
    options.onWarning?.(`${truncated} of ${ids.length} texts were longer than --max-length ${options.maxLength} tokens; kept each one's ${kept}`);
  }
  if (ids.length === 0) {
    if (!options.labels) throw new ToolError('the input holds no rows, so it names no labels (give --labels to write an empty data set)');
    options.onWarning?.('the input holds no rows; writing an empty data set');
  }
  const labels = options.labels ?? sortLabels(names);
  const idOf = new Map(labels.map((l, k) => [l, k]));
  const records: LabelledRecord[] = ids.map((input_ids, k) => ({ input_ids, label: idOf.get(names[k])! }));
  let plan = options.plan ?? {};
  if (plan.numShards !== undefined && plan.numShards > records.length) {
    options.onWarning?.(`--num-shards ${plan.numShards} is more than the ${records.length} records; writing ${records.length} shard${records.length === 1 ? '' : 's'}`);
    plan = { numShards: records.length };
  }
  const { writeLabelledDataset } = await import('./shard-writer.js');
  const spec = {
    maxLength: options.maxLength,
    truncationSide: options.truncationSide,
    labels,
    dtype,
    padId,
    tokenizer: tokenizer.identity,
    plan,
    inputBytes,
    truncated,
    skipped,
    command: options.command ?? [],
  };
  return writeLabelledDataset(options.out, records, spec, overwrite);
}
