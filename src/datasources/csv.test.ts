import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CsvError, parseCsv, readCsv } from './csv.js';

test('header, quoted fields with commas, newlines and doubled quotes, CRLF, BOM', () => {
  const t = parseCsv('\ufeffid,note,age\r\n1,"a, b",40\r\n2,"say ""hi""\nthere", 51 \r\n', 'f.csv');
  assert.deepEqual(t.header, ['id', 'note', 'age']);
  assert.deepEqual(t.rows, [['1', 'a, b', '40'], ['2', 'say "hi"\nthere', '51']]);
  assert.deepEqual(t.lines, [2, 3]);
});

test('missing values: empty, ?, NA become null; blank lines are skipped', () => {
  const t = parseCsv('a,b,c,d\n1,,?,NA\n\n"",x,"?",n/a\n', 'f.csv');
  // A quoted "?" is data, not a missing marker; a quoted empty string is missing.
  assert.deepEqual(t.rows, [['1', null, null, null], [null, 'x', '?', null]]);
  assert.deepEqual(t.lines, [2, 4]);
});

test('malformed rows name the file, line and column', () => {
  assert.throws(() => parseCsv('a,b,c\n1,2,3\n4,5\n', 'site.csv'), (e: unknown) => {
    assert.ok(e instanceof CsvError);
    assert.equal(e.message, 'site.csv, line 3, column 3 ("c"): expected 3 fields as in the header, found 2');
    return true;
  });
  assert.throws(() => parseCsv('a,b\n1,2,3\n', 's.csv'), /s\.csv, line 2, column 3: expected 2 fields/);
  assert.throws(() => parseCsv('a,b\n1,"open\n2,3\n', 's.csv'), /s\.csv, line 2, column 2: unterminated quoted field/);
  assert.throws(() => parseCsv('a,b\n1,x"y\n', 's.csv'), /line 2, column 2: a quote inside an unquoted field/);
  assert.throws(() => parseCsv('a,b\n1,"x"y\n', 's.csv'), /line 2, column 2: unexpected character "y" after a closing quote/);
  assert.throws(() => parseCsv('a,a\n1,2\n', 's.csv'), /line 1, column 2 \("a"\): duplicate column name/);
  assert.throws(() => parseCsv('', 's.csv'), /empty; a header row is required/);
});

test('readCsv reads a file and reports an unreadable one by path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-csv-'));
  writeFileSync(join(dir, 'x.csv'), 'a\n1\n');
  assert.deepEqual(readCsv(join(dir, 'x.csv')).rows, [['1']]);
  assert.throws(() => readCsv(join(dir, 'nope.csv')), /cannot read data file .*nope\.csv/);
});
