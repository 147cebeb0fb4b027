/**
 * Labelled rows from TSV, CSV or JSON Lines: each row's text (one or more columns joined by a
 * separator) and its label, with the file and 1-based line it came from (the header counts), or
 * why the row is unusable. Per-row problems (a ragged row, a missing JSON field, invalid JSON, an
 * empty text or label) come back as rows for the caller to refuse or skip; problems of a whole file
 * (a column the header lacks) are thrown.
 *
 * TSV is GLUE's: fields split on every tab, no quoting (a '"' is text; SST-2's sentences hold
 * quotes), a trailing "\r" dropped. CSV is RFC 4180 (csv.ts). Each file of TSV or CSV starts with
 * its own header line unless header is false. A line with nothing on it is no row in any format.
 */
import { ToolError, UsageError } from '../util/errors.js';
import { chunkLines, readTextChunks, type ReadOptions } from '../util/input.js';
import { CsvParser, type CsvRow } from './csv.js';

export type LabelledFormat = 'tsv' | 'csv' | 'jsonl';

export interface ColumnOptions {
  format: LabelledFormat;
  /** Column names or 0-based indices (TSV/CSV), or field names (JSON Lines). */
  textColumns: string[];
  labelColumn: string;
  textSeparator: string;
  /** TSV/CSV: the first line of each file names the columns. */
  header: boolean;
}

export type LabelledRow = { source: string; line: number; text: string; label: string } | { source: string; line: number; problem: string };

/** Checks the column flags before any input is read. */
export function checkColumnOptions(o: ColumnOptions): void {
  if (o.textColumns.length === 0) throw new UsageError(`--input-format ${o.format} needs --text-column NAME|INDEX`);
  if (o.format === 'jsonl' && !o.header) throw new UsageError('--no-header is for tsv and csv (JSON Lines has no header)');
  for (const c of [...o.textColumns, o.labelColumn]) {
    if (c === '') throw new UsageError('a column name must not be empty');
    if (o.format !== 'jsonl' && !o.header && !/^\d+$/.test(c)) {
      throw new UsageError(`column ${JSON.stringify(c)}: with --no-header, columns are given by index (0 is the first)`);
    }
  }
}

const quoted = (names: readonly string[]) => names.map((n) => JSON.stringify(n)).join(', ');

/** Where each wanted column is in a TSV/CSV row, from the header (or, without one, the first row). */
function columnIndices(o: ColumnOptions, first: string[], where: string): number[] {
  return [...o.textColumns, o.labelColumn].map((c) => {
    if (o.header) {
      const k = first.indexOf(c);
      if (k >= 0) return k;
    }
    const k = /^\d+$/.test(c) ? Number(c) : -1;
    if (k >= 0 && k < first.length) return k;
    const has = o.header ? `the header has ${first.length} columns: ${quoted(first)}` : `rows have ${first.length} fields`;
    throw new ToolError(`${where}: no column ${k >= 0 ? c : JSON.stringify(c)} (${has})`);
  });
}

/** The row's text and label from its fields, or its problem. */
function fromValues(values: string[], o: ColumnOptions, names: readonly string[]): { text: string; label: string } | { problem: string } {
  const label = values[values.length - 1].trim();
  const text = values.slice(0, -1).join(o.textSeparator);
  if (text.trim() === '') return { problem: `empty text (${o.textColumns.length > 1 ? 'columns' : 'column'} ${names.slice(0, -1).join(', ')})` };
  if (label === '') return { problem: `empty label (column ${names[names.length - 1]})` };
  return { text, label };
}

/** A JSON Lines value as text: strings as they are, numbers and booleans spelled as JSON. */
function jsonValue(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

function jsonRow(line: string, o: ColumnOptions): { text: string; label: string } | { problem: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    return { problem: `not valid JSON (${(err as Error).message})` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { problem: 'not a JSON object' };
  const names = [...o.textColumns, o.labelColumn];
  const values: string[] = [];
  for (const name of names) {
    const v = (value as Record<string, unknown>)[name];
    if (v === undefined || v === null) return { problem: `no field ${JSON.stringify(name)}` };
    const s = jsonValue(v);
    if (s === undefined) return { problem: `field ${JSON.stringify(name)} is ${Array.isArray(v) ? 'an array' : 'an object'}, not a string or number` };
    values.push(s);
  }
  return fromValues(values, o, names);
}

/** Rows of fields from one chunk of TSV or CSV text, with the line each starts on. */
function tableRows(text: string, firstLine: number, csv: CsvParser | undefined): CsvRow[] {
  if (csv) return csv.push(text);
  const rows: CsvRow[] = [];
  chunkLines(text).forEach((line, k) => {
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line !== '') rows.push({ line: firstLine + k, fields: line.split('\t') });
  });
  return rows;
}

/** Every row of every input, in order. */
export async function* readLabelledRows(files: readonly string[], o: ColumnOptions, read: ReadOptions = {}): AsyncGenerator<LabelledRow> {
  const names = [...o.textColumns, o.labelColumn];
  let source = '';
  let csv: CsvParser | undefined;
  let columns: number[] | undefined; // where the wanted columns are in this file's rows
  let width = 0;

  const tableRow = (r: CsvRow): LabelledRow | undefined => {
    const at = { source, line: r.line };
    if ('problem' in r) {
      if (columns === undefined && o.header) throw new ToolError(`${source}:${r.line}: ${r.problem} (in the header)`);
      return { ...at, problem: r.problem };
    }
    if (columns === undefined) {
      columns = columnIndices(o, r.fields, `${source}:${r.line}`);
      width = r.fields.length;
      if (o.header) return undefined;
    }
    if (r.fields.length !== width) {
      return { ...at, problem: `${r.fields.length} field${r.fields.length === 1 ? '' : 's'}, ${o.header ? 'the header has' : 'the first row has'} ${width}` };
    }
    return { ...at, ...fromValues(columns.map((k) => r.fields[k]), o, names) };
  };
  const endOfFile = () => (csv?.end() ?? []).map(tableRow).filter((r) => r !== undefined);

  for await (const chunk of readTextChunks(files, read)) {
    let text = chunk.text;
    if (chunk.firstLine === 1) {
      // A new input has its own header, and never continues the last one's quoted field.
      yield* endOfFile();
      source = chunk.source;
      csv = o.format === 'csv' ? new CsvParser() : undefined;
      columns = undefined;
      if (text.startsWith('\ufeff')) text = text.slice(1); // a byte-order mark (spreadsheets write one) is not text
    }
    if (o.format === 'jsonl') {
      const lines = chunkLines(text);
      for (let k = 0; k < lines.length; k++) {
        const line = lines[k].endsWith('\r') ? lines[k].slice(0, -1) : lines[k];
        if (line.trim() !== '') yield { source, line: chunk.firstLine + k, ...jsonRow(line, o) };
      }
    } else {
      for (const r of tableRows(text, chunk.firstLine, csv)) {
        const row = tableRow(r);
        if (row) yield row;
      }
    }
  }
  yield* endOfFile();
}
