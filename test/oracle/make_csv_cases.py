"""Writes fixtures/labelled/csv-cases.json: CSV texts and how Python's csv module reads them.

Run once by hand (python3 test/oracle/make_csv_cases.py); the output is committed. The reader is
csv.reader(strict=True), so text after a closing quote and an unclosed quote are errors, as in
src/data/csv.ts. For each case: the rows (empty rows, i.e. blank lines, left out, as our parser
does) with the 1-based line each starts on, and the error and the line its row starts on, if any.
Lone "\\r" line ends are not used: Python ends a row there, our parser does not.
"""
import csv
import io
import json
import pathlib

cases = [
    'a,b,c\n1,2,3\n',
    '"a","b,c"\n',
    '"he said ""hi""",x\n',
    '"multi\nline",y\nnext,row\n',
    '"two\n\nblank-ish\n",z\nafter,it\n',
    'a,b\r\nc,d\r\n',
    '"a\r\nb",c\r\n',
    'a,,c\n,\n',
    'x\n\ny\n\n\nz\n',
    'ab"c,d\n',
    ' "a",b\n',
    '""\n"",""\n',
    'a,b,\n',
    'no newline at the end',
    '"quoted at the end"',
    '\u00e9,"\u00fc ""q"""\n\U0001F600,"tab\tinside"\n',
    'x,y\n"a"b,c\nnext,ok\n',
    'x,y\n"unterminated,z\nmore\n',
    '"1","Title, with comma","Desc ""quoted"" here"\n"2","T","line one\nline two"\n',
]

def read(text):
    rows, starts = [], []
    reader = csv.reader(io.StringIO(text, newline=''), strict=True)
    line = 0
    try:
        for row in reader:
            if row:
                rows.append(row)
                starts.append(line + 1)
            line = reader.line_num
    except csv.Error as err:
        # The bad row starts on the line after the last complete one (blank lines counted there).
        return {'text': text, 'rows': rows, 'lines': starts, 'error': str(err), 'error_line': line + 1}
    return {'text': text, 'rows': rows, 'lines': starts, 'error': None, 'error_line': None}

labelled = pathlib.Path(__file__).resolve().parents[2] / 'fixtures' / 'labelled'
cases.append((labelled / 'topics.csv').read_text())  # the AG-News-style fixture, as a whole
out = labelled / 'csv-cases.json'
out.write_text(json.dumps([read(t) for t in cases], ensure_ascii=False, indent=1) + '\n')
print(f'{out}: {len(cases)} cases')
