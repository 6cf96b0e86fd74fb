/** Helpers shared by this folder's tests (not part of the analytics API). */
import { readFileSync } from 'node:fs';
import { parseCsv, type CsvTable } from '../site/data/csv.js';
import type { DataSchema } from '../protocol/data-schema.js';
import { runR } from '../testing/oracles.js';
import { CryptoNormal } from '../privacy/noise.js';
import { SiteTable } from './columns.js';
import type { AnalyticsPolicy } from './spec.js';
import type { SiteInput } from './statistics.js';

/**
 * R's `lung` (NCCTG lung cancer trial), exported by Rscript as the tests' oracle sees it: the one row
 * without an institution dropped, status recoded to 0 = censored, 1 = died.
 */
export const LUNG_EXPORT = 'library(survival)\nd <- subset(lung, !is.na(inst))\nd$status <- d$status - 1\n';

export function lungCsvText(): string {
  return runR(`${LUNG_EXPORT}write.csv(d, stdout(), row.names = FALSE, na = "")\n`);
}

export const LUNG_SCHEMA: DataSchema = {
  features: [
    { name: 'age', type: 'numeric' },
    { name: 'sex', type: 'categorical', levels: ['1', '2'] },
    { name: 'ph.ecog', type: 'numeric' },
    { name: 'ph.karno', type: 'numeric' },
    { name: 'pat.karno', type: 'numeric' },
    { name: 'meal.cal', type: 'numeric' },
    { name: 'wt.loss', type: 'numeric' },
  ],
  task: { kind: 'survival', time: 'time', event: 'status' },
  split: { kind: 'stratified', trainFraction: 0.7, seed: 1 },
};

/** One table per value of `column` (rows keep their order): a multi-centre split of a pooled file. */
export function splitTable(table: CsvTable, column: string): Record<string, CsvTable> {
  const j = table.header.indexOf(column);
  if (j < 0) throw new Error(`no column ${column}`);
  const out: Record<string, CsvTable> = {};
  table.rows.forEach((r, k) => {
    const key = r[j] ?? 'NA';
    const t = (out[key] ??= { file: `${table.file}[${column}=${key}]`, header: table.header, rows: [], lines: [] });
    t.rows.push(r);
    t.lines.push(table.lines[k]!);
  });
  return out;
}

export function siteInputs(tables: Record<string, CsvTable>, schema: DataSchema, policy: AnalyticsPolicy): Record<string, SiteInput> {
  return Object.fromEntries(Object.entries(tables).map(([id, t]) => [id, { table: new SiteTable(t, schema), policy, noise: new CryptoNormal(new Uint8Array(32).fill(7)) }]));
}

export function lungTables(): { pooled: CsvTable; sites: Record<string, CsvTable> } {
  const pooled = parseCsv(lungCsvText(), 'lung.csv');
  return { pooled, sites: splitTable(pooled, 'inst') };
}

/** |a − b| ≤ tol·max(|b|, floor): a relative difference, absolute near zero. */
export function relClose(a: number, b: number, tol: number, floor = 1e-300): boolean {
  if (Number.isNaN(b)) return Number.isNaN(a);
  if (!Number.isFinite(b)) return a === b;
  return Math.abs(a - b) <= tol * Math.max(Math.abs(b), floor);
}

/** The UCI column names of the bundled Fed-Heart-Disease files (which have no header row). */
export const HEART_COLUMNS = ['age', 'sex', 'cp', 'trestbps', 'chol', 'fbs', 'restecg', 'thalach', 'exang', 'oldpeak', 'slope', 'ca', 'thal', 'num'];

/** Every column as the UCI documentation describes it; `?` is missing. */
export const HEART_STATS_SCHEMA: DataSchema = {
  features: [
    { name: 'age', type: 'numeric' },
    { name: 'sex', type: 'categorical', levels: ['0', '1'] },
    { name: 'cp', type: 'categorical', levels: ['1', '2', '3', '4'] },
    { name: 'trestbps', type: 'numeric' },
    { name: 'chol', type: 'numeric' },
    { name: 'fbs', type: 'categorical', levels: ['0', '1'] },
    { name: 'restecg', type: 'categorical', levels: ['0', '1', '2'] },
    { name: 'thalach', type: 'numeric' },
    { name: 'exang', type: 'categorical', levels: ['0', '1'] },
    { name: 'oldpeak', type: 'numeric' },
    { name: 'slope', type: 'categorical', levels: ['1', '2', '3'] },
    { name: 'ca', type: 'numeric' },
    { name: 'thal', type: 'categorical', levels: ['3', '6', '7'] },
  ],
  task: { kind: 'binary', label: 'num', positive: { above: 0 } },
  split: { kind: 'stratified', trainFraction: 0.66, seed: 43 },
};

/** Each hospital's file with the UCI header in front, read by the project's CSV reader. */
export function heartTables(dir: string): Record<string, CsvTable> {
  return Object.fromEntries(['cleveland', 'hungarian', 'switzerland', 'va'].map((c) => {
    const file = `${dir}/processed.${c}.data`;
    return [c, parseCsv(`${HEART_COLUMNS.join(',')}\n${readFileSync(file, 'utf8')}`, file)];
  }));
}
