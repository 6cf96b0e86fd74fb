/**
 * A strict CSV reader for site data files: RFC 4180 quoting (a quoted field may hold commas,
 * newlines and doubled quotes), a header row, LF or CRLF line ends, an optional UTF-8 BOM.
 * Missing values — an empty field, `?`, `NA` (also `na`, `N/A`) — come back as null.
 *
 * Anything malformed (a row with the wrong number of fields, a stray or unterminated quote, a
 * duplicate or empty header) is an error that names the file, the line and the column, because
 * a hospital's data team has to find it in a file nobody else may see.
 */
import { readFileSync } from 'node:fs';

export interface CsvTable {
  file: string;
  header: string[];
  /** Cell values, trimmed; null where missing. */
  rows: Array<Array<string | null>>;
  /** 1-based line on which each row starts, for error messages. */
  lines: number[];
}

export class CsvError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: string | null,
    detail: string,
  ) {
    super(`${file}, line ${line}${column === null ? '' : `, column ${column}`}: ${detail}`);
    this.name = 'CsvError';
  }
}

const MISSING = new Set(['', '?', 'NA', 'na', 'N/A', 'n/a']);

export function isMissing(raw: string): boolean {
  return MISSING.has(raw.trim());
}

export function parseCsv(text: string, file = '<csv>'): CsvTable {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const records = splitRecords(text, file);
  while (records.length && isBlank(records[records.length - 1]!.fields)) records.pop();
  if (records.length === 0) throw new CsvError(file, 1, null, 'the file is empty; a header row is required');
  const head = records[0]!;
  const header = head.fields.map((f) => f.value.trim());
  const seen = new Map<string, number>();
  header.forEach((h, i) => {
    if (h === '') throw new CsvError(file, head.line, `${i + 1}`, 'empty column name in the header');
    if (seen.has(h)) throw new CsvError(file, head.line, `${i + 1} ("${h}")`, `duplicate column name (also column ${seen.get(h)! + 1})`);
    seen.set(h, i);
  });
  const rows: Array<Array<string | null>> = [];
  const lines: number[] = [];
  for (const rec of records.slice(1)) {
    if (isBlank(rec.fields)) continue; // blank lines carry no row
    if (rec.fields.length !== header.length) {
      const col = rec.fields.length > header.length ? `${header.length + 1}` : `${rec.fields.length + 1} ("${header[rec.fields.length]}")`;
      throw new CsvError(file, rec.line, col, `expected ${header.length} fields as in the header, found ${rec.fields.length}`);
    }
    rows.push(rec.fields.map((f) => (!f.quoted && isMissing(f.value)) || (f.quoted && f.value === '') ? null : f.quoted ? f.value : f.value.trim()));
    lines.push(rec.line);
  }
  return { file, header, rows, lines };
}

export function readCsv(path: string): CsvTable {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read data file ${path}: ${(e as Error).message}`);
  }
  return parseCsv(text, path);
}

interface Field {
  value: string;
  quoted: boolean;
}
interface CsvRecord {
  line: number;
  fields: Field[];
}

function isBlank(fields: Field[]): boolean {
  return fields.length === 1 && !fields[0]!.quoted && fields[0]!.value.trim() === '';
}

/** Splits text into records of fields, honouring quotes; tracks the starting line of each record. */
function splitRecords(text: string, file: string): CsvRecord[] {
  const out: CsvRecord[] = [];
  let line = 1, i = 0;
  const n = text.length;
  while (i < n) {
    const rec: CsvRecord = { line, fields: [] };
    for (;;) {
      // One field starting at i.
      let value = '', quoted = false;
      // Leading spaces before an opening quote are tolerated.
      let j = i;
      while (j < n && text[j] === ' ') j++;
      if (text[j] === '"') {
        quoted = true;
        const openLine = line;
        i = j + 1;
        for (;;) {
          if (i >= n) throw new CsvError(file, openLine, `${rec.fields.length + 1}`, 'unterminated quoted field');
          const ch = text[i]!;
          if (ch === '"') {
            if (text[i + 1] === '"') {
              value += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (ch === '\n') line++;
          value += ch;
          i++;
        }
        while (i < n && text[i] === ' ') i++;
        if (i < n && text[i] !== ',' && text[i] !== '\n' && text[i] !== '\r') {
          throw new CsvError(file, line, `${rec.fields.length + 1}`, `unexpected character ${JSON.stringify(text[i])} after a closing quote`);
        }
      } else {
        const start = i;
        while (i < n && text[i] !== ',' && text[i] !== '\n' && text[i] !== '\r') {
          if (text[i] === '"') throw new CsvError(file, line, `${rec.fields.length + 1}`, 'a quote inside an unquoted field (quote the whole field and double the inner quote)');
          i++;
        }
        value = text.slice(start, i);
      }
      rec.fields.push({ value, quoted });
      if (i < n && text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === '\r') i++;
      if (text[i] === '\n') i++;
      line++;
      break;
    }
    out.push(rec);
  }
  return out;
}
