import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CsvParser, type CsvRow } from '../../src/data/csv.js';
import { fixture } from '../helpers.js';

/** Python's csv.reader(strict=True) on each text (test/oracle/make_csv_cases.py). */
interface Case {
  text: string;
  rows: string[][];
  lines: number[];
  error: string | null;
  error_line: number | null;
}
const cases = JSON.parse(readFileSync(fixture('labelled', 'csv-cases.json'), 'utf8')) as Case[];

/** Our parser on the text, fed as readTextChunks feeds it: in pieces of whole lines. */
function parse(text: string, linesPerPush: number): CsvRow[] {
  const parser = new CsvParser();
  const lines = text.split(/(?<=\n)/);
  const rows: CsvRow[] = [];
  for (let k = 0; k < lines.length; k += linesPerPush) rows.push(...parser.push(lines.slice(k, k + linesPerPush).join('')));
  return [...rows, ...parser.end()];
}

describe('CSV parser against Python csv (strict)', () => {
  it('has cases with quotes, line breaks, CRLF, blank lines and errors', () => {
    expect(cases.length).toBeGreaterThanOrEqual(15);
    expect(cases.filter((c) => c.error !== null)).toHaveLength(2);
  });

  for (const [k, c] of cases.entries()) {
    it(`case ${k}: ${JSON.stringify(c.text).slice(0, 40)}`, () => {
      for (const per of [1, 2, 1000]) {
        const rows = parse(c.text, per);
        const good = c.error === null ? rows : rows.slice(0, c.rows.length);
        expect(good.map((r) => ('fields' in r ? r.fields : r.problem))).toEqual(c.rows);
        expect(good.map((r) => r.line)).toEqual(c.lines);
        if (c.error !== null) {
          // Python stops at the bad row; we report it (and would go on with the next row).
          const bad = rows[c.rows.length];
          expect(bad && 'problem' in bad, JSON.stringify(rows)).toBe(true);
          expect(bad.line).toBe(c.error_line);
        }
      }
    });
  }

  it('names the problem: text after a closing quote, an unclosed quote', () => {
    expect(parse('x,"a"b\n', 1)).toEqual([{ line: 1, problem: 'text after the closing quote of field 2' }]);
    expect(parse('ok\n"open\nstill open\n', 1)).toEqual([{ line: 1, fields: ['ok'] }, { line: 2, problem: 'a quoted field is not closed before the end of the input' }]);
  });
});
