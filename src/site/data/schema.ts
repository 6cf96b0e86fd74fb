/**
 * A study's data schema: which CSV columns are features and how they are encoded, the task
 * (binary label or survival time/event), preprocessing and the train/test split. The TypeBox
 * schema below is the documentation; `parseDataSchema` validates a study file's `data:` block
 * and names the field at fault.
 *
 * In a study file (YAML):
 *
 *   data:
 *     features:
 *       - { name: age, type: numeric }
 *       - { name: cp, type: categorical, levels: ["1", "2", "3", "4"], dropFirst: true }
 *     task: { kind: binary, label: num, positive: { above: 0 } }   # or { kind: survival, time: T, event: E }
 *     preprocessing: { normalise: site, scope: numeric, missing: drop }   # normalise: site | global | none; arithmetic: float64 | float32
 *     split: { kind: stratified, trainFraction: 0.66, seed: 43 }   # or { kind: column, column: set }
 *
 * `checkSchema` checks one site's CSV against it and lists every problem by column, so a study
 * can refuse to start with a message naming the site (the caller prefixes it) and the column.
 */
import { Value } from '@sinclair/typebox/value';
import type { CsvTable } from './csv.js';

export { NumericColumn, CategoricalColumn, FeatureColumn, BinaryTask, SurvivalTask, Preprocessing, Split, DataSchemaT } from '../../protocol/data-schema.js';
export type { DataSchema, FeatureColumnSpec } from '../../protocol/data-schema.js';
import { DataSchemaT, type DataSchema } from '../../protocol/data-schema.js';

/** Validates an untrusted schema object; the error names every bad field by its path. */
export function parseDataSchema(input: unknown): DataSchema {
  if (!Value.Check(DataSchemaT, input)) {
    const errs = [...Value.Errors(DataSchemaT, input)].slice(0, 5).map((e) => `${e.path || '/'}: ${e.message}`);
    throw new Error(`invalid data schema: ${errs.join('; ')}`);
  }
  const s = input as DataSchema;
  const names = new Set<string>();
  for (const [i, f] of s.features.entries()) {
    if (names.has(f.name)) throw new Error(`invalid data schema: /features/${i}/name: column "${f.name}" is listed twice`);
    names.add(f.name);
    if (f.type === 'categorical' && new Set(f.levels).size !== f.levels.length) throw new Error(`invalid data schema: /features/${i}/levels: levels of "${f.name}" repeat`);
    if (f.type === 'categorical' && f.dropFirst && f.levels.length < 2) throw new Error(`invalid data schema: /features/${i}: "${f.name}" needs two levels to drop the first`);
  }
  for (const c of targetColumns(s)) if (names.has(c)) throw new Error(`invalid data schema: column "${c}" is both a feature and a target/split column`);
  return s;
}

/** Task (and split) columns that every site file must have. */
export function targetColumns(s: DataSchema): string[] {
  const t = s.task.kind === 'binary' ? [s.task.label] : [s.task.time, s.task.event];
  return s.split.kind === 'column' ? [...t, s.split.column] : t;
}

/** Every column a site's table must have a value in for a row to be used: features, then task and split columns. */
export function usedColumns(s: DataSchema): string[] {
  return [...s.features.map((f) => f.name), ...targetColumns(s)];
}

/** Names of the encoded feature columns, in order: numeric as is, categorical as `name_level`. */
export function encodedFeatureNames(s: DataSchema): string[] {
  const out: string[] = [];
  for (const f of s.features) {
    if (f.type === 'numeric') out.push(f.name);
    else f.levels.slice(f.dropFirst ? 1 : 0).forEach((l) => out.push(`${f.name}_${l}`));
  }
  return out;
}

export interface SchemaProblem {
  column: string;
  message: string;
}

/** A finite number, or null for text that is not one. */
export function parseNumber(v: string): number | null {
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v)) return null;
  const x = Number(v);
  return Number.isFinite(x) ? x : null;
}

/**
 * Index of `v` among declared categorical levels, or -1. Exact text first; otherwise numeric
 * equality when both parse as numbers, because hospitals' exports write "2" and "2.0" alike.
 */
export function levelIndex(levels: readonly string[], v: string): number {
  const exact = levels.indexOf(v);
  if (exact >= 0) return exact;
  const x = parseNumber(v);
  return x === null ? -1 : levels.findIndex((l) => parseNumber(l) === x);
}

/** Every mismatch between a site's CSV and the schema, one entry per column at fault. */
export function checkSchema(table: CsvTable, schema: DataSchema): SchemaProblem[] {
  const problems: SchemaProblem[] = [];
  const col = new Map(table.header.map((h, i) => [h, i]));
  const scan = (name: string, bad: (v: string) => string | null): void => {
    const j = col.get(name);
    if (j === undefined) {
      problems.push({ column: name, message: `column "${name}" is missing from ${table.file}` });
      return;
    }
    let first: string | null = null, count = 0;
    table.rows.forEach((r, k) => {
      const v = r[j];
      if (v === null || v === undefined) return;
      const why = bad(v);
      if (why === null) return;
      count++;
      first ??= `${why} on line ${table.lines[k]}`;
    });
    if (first !== null) problems.push({ column: name, message: `column "${name}": ${first}${count > 1 ? ` (and ${count - 1} more rows)` : ''}` });
  };
  const numeric = (v: string): string | null => (parseNumber(v) === null ? `non-numeric value ${JSON.stringify(v)}` : null);
  for (const f of schema.features) {
    if (f.type === 'numeric') scan(f.name, numeric);
    else {
      scan(f.name, (v) => (levelIndex(f.levels, v) >= 0 ? null : `unknown level ${JSON.stringify(v)} (declared: ${f.levels.map((l) => JSON.stringify(l)).join(', ')})`));
    }
  }
  const t = schema.task;
  if (t.kind === 'binary') {
    const rule = t.positive;
    if (!rule) scan(t.label, (v) => (parseNumber(v) === 0 || parseNumber(v) === 1 ? null : `label not binary: value ${JSON.stringify(v)} is not 0 or 1`));
    else if ('above' in rule) scan(t.label, numeric);
    else scan(t.label, () => null);
  } else {
    scan(t.time, (v) => {
      const x = parseNumber(v);
      return x === null ? `non-numeric time ${JSON.stringify(v)}` : x < 0 ? `negative time ${v}` : null;
    });
    scan(t.event, (v) => (parseNumber(v) === 0 || parseNumber(v) === 1 ? null : `event must be 0 or 1, found ${JSON.stringify(v)}`));
  }
  if (schema.split.kind === 'column') {
    const tr = schema.split.train ?? 'train', te = schema.split.test ?? 'test';
    scan(schema.split.column, (v) => (v === tr || v === te ? null : `split value ${JSON.stringify(v)} is neither "${tr}" nor "${te}"`));
  }
  if (table.rows.length === 0) problems.push({ column: '*', message: `${table.file} has a header but no rows` });
  return problems;
}
