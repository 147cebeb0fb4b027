/**
 * gpt2-eval split across processes or machines (map/merge; any batch engine drives it: make -j,
 * xargs -P, GNU parallel, Slurm arrays, Kubernetes Indexed Jobs): `--part K/N` evaluates the K-th
 * of N contiguous slices of the records and prints its sums; `--merge` adds the parts' sums into
 * the single run's result. The loss is a token-weighted mean, so sums (not means) are what add:
 * merged, it equals the single run up to the order of the float64 additions (~1e-15 relative).
 *
 * A part names what it evaluated — the data set (its manifest's sha256), the model as given, the
 * adapter, --max-records — and merging refuses parts that differ in any of them, a part missing or
 * given twice, or parts of different N.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_FILE } from '../data/manifest.js';
import { fsError, ToolError, UsageError } from '../util/errors.js';
import { orderedParts, parsePart, type PartSpec } from '../util/parts.js';
import type { EvalResult, EvalSums } from './evaluate.js';

/** What a part line identifies, besides its sums. */
export interface PartOf {
  data: string;
  model: string;
  lora: string | null;
  max_records: number | null;
}

export interface PartLine extends EvalSums {
  format: typeof PART_FORMAT;
  part: string;
  of: PartOf;
}

const PART_FORMAT = 'gpt2-eval.part';

/** The data set's identity: its manifest's sha256 (the manifest holds every shard's sha256). */
export async function dataIdentity(dir: string): Promise<string> {
  const path = join(dir, MANIFEST_FILE);
  const bytes = await readFile(path).catch((err) => {
    throw fsError(err, path);
  });
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function partLine(part: PartSpec, of: PartOf, sums: EvalSums): PartLine {
  return { format: PART_FORMAT, part: `${part.k}/${part.n}`, of, loss_sum: sums.loss_sum, tokens: sums.tokens, records: sums.records };
}

/** Part lines read from files (one JSON line each; blank lines ignored), checked, added into the single run's result. */
export async function mergePartFiles(files: readonly string[]): Promise<EvalResult> {
  const lines: { line: PartLine; where: string }[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch((err) => {
      throw fsError(err, file);
    });
    text.split('\n').forEach((raw, i) => {
      if (raw.trim() === '') return;
      const where = `${file}:${i + 1}`;
      let line: unknown;
      try {
        line = JSON.parse(raw);
      } catch {
        throw new ToolError(`${where}: not a JSON line`);
      }
      lines.push({ line: checkedLine(line, where), where });
    });
  }
  return mergeParts(lines);
}

function checkedLine(line: unknown, where: string): PartLine {
  const l = line as Partial<PartLine> | null;
  const count = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (l?.format !== PART_FORMAT || typeof l.part !== 'string' || !l.of || typeof l.loss_sum !== 'number' || !Number.isFinite(l.loss_sum) || !count(l.tokens) || !count(l.records)) {
    throw new ToolError(`${where}: not a part line of gpt2-eval --part (format "${PART_FORMAT}", part, of, loss_sum, tokens, records)`);
  }
  parsePart(l.part);
  return l as PartLine;
}

export function mergeParts(lines: readonly { line: PartLine; where: string }[]): EvalResult {
  if (lines.length === 0) throw new UsageError('--merge: no part lines to merge');
  // In part order, so that the sum is the same whatever order the files come in.
  const ordered = orderedParts(lines, ({ line }) => line.part, ({ where }) => where, ({ line, where }, first) => {
    const differs = (Object.keys(first.line.of) as (keyof PartOf)[]).find((key) => JSON.stringify(line.of[key]) !== JSON.stringify(first.line.of[key]));
    if (differs) throw new ToolError(`${where}: evaluated ${differs} ${JSON.stringify(line.of[differs])}, ${first.where} ${JSON.stringify(first.line.of[differs])}: parts of different runs`);
  });
  const sum = ordered.reduce((s, { line }) => s + line.loss_sum, 0);
  const tokens = ordered.reduce((s, { line }) => s + line.tokens, 0);
  const records = ordered.reduce((s, { line }) => s + line.records, 0);
  if (tokens === 0) throw new ToolError('--merge: the parts hold no tokens');
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), tokens, records };
}
