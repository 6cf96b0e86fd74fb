/**
 * Fed-Heart-Disease hospitals as plain CSV files: one file per hospital with the UCI columns under
 * their names, `?` written as an empty field, and FLamby's train/test split as a `set` column (empty
 * for a row FLamby drops, since the split file lists only complete rows). With the study file's data
 * schema (`HEART_DATA_SCHEMA`) the CSV path reproduces the bundled `fed-heart-disease` loader.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HEART_CENTERS, defaultHeartDir, readHeartSplit, type HeartCenter } from '../site/data/heart.js';
import type { DataSchema } from '../protocol/data-schema.js';

/** The 14 UCI columns, in file order. */
export const UCI_COLUMNS = ['age', 'sex', 'cp', 'trestbps', 'chol', 'fbs', 'restecg', 'thalach', 'exang', 'oldpeak', 'slope', 'ca', 'thal', 'num'] as const;
export type UciColumn = (typeof UCI_COLUMNS)[number];

/** One row of a hospital's UCI file: raw cells (null where `?`), its 0-based line and FLamby's split. */
export interface HeartRecord {
  line: number;
  cells: Record<UciColumn, string | null>;
  set: 'train' | 'test' | null;
}

/** Every row of one hospital's UCI file, with its split (null for rows FLamby drops). */
export function heartRecords(center: HeartCenter, dir = defaultHeartDir()): HeartRecord[] {
  const split = readHeartSplit(join(dir, 'heart_split.csv')).get(center) ?? new Map<number, boolean>();
  const text = readFileSync(join(dir, `processed.${HEART_CENTERS[center]}.data`), 'utf8');
  return text
    .split(/\r?\n/)
    .filter((l) => l !== '')
    .map((l, line) => {
      const raw = l.split(',');
      if (raw.length !== UCI_COLUMNS.length) throw new Error(`heart: ${HEART_CENTERS[center]} line ${line + 1} has ${raw.length} fields, expected ${UCI_COLUMNS.length}`);
      const cells = Object.fromEntries(UCI_COLUMNS.map((c, i) => [c, raw[i]!.trim() === '?' ? null : raw[i]!.trim()])) as Record<UciColumn, string | null>;
      const t = split.get(line);
      return { line, cells, set: t === undefined ? null : t ? 'test' : 'train' };
    });
}

/** One hospital as CSV text. */
export function heartCsv(center: HeartCenter, dir?: string): string {
  const rows = heartRecords(center, dir).map((r) => [...UCI_COLUMNS.map((c) => r.cells[c] ?? ''), r.set ?? ''].join(','));
  return [[...UCI_COLUMNS, 'set'].join(','), ...rows].join('\n') + '\n';
}

/**
 * The data schema that makes the CSV path equal to the `fed-heart-disease` loader: FLamby's 13
 * features in its order, label num > 0, the split column, and normalisation over every column
 * (one-hot included) with the site's own training statistics in float32 arithmetic, as FLamby's
 * PyTorch code does it.
 */
export const HEART_DATA_SCHEMA: DataSchema = {
  features: [
    ...(['age', 'sex', 'trestbps', 'chol', 'fbs', 'thalach', 'exang', 'oldpeak'] as const).map((name) => ({ name, type: 'numeric' as const })),
    { name: 'cp', type: 'categorical', levels: ['1', '2', '3', '4'], dropFirst: true },
    { name: 'restecg', type: 'categorical', levels: ['0', '1', '2'], dropFirst: true },
  ],
  task: { kind: 'binary', label: 'num', positive: { above: 0 } },
  preprocessing: { normalise: 'site', scope: 'all', missing: 'drop', arithmetic: 'float32' },
  split: { kind: 'column', column: 'set', train: 'train', test: 'test' },
};
