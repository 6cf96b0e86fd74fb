/**
 * A site's raw table read through the study's data schema: the columns a query may name, their
 * types, and their values with missing cells as null. Nothing here leaves the site.
 *
 * Which columns exist: the schema's features (numeric or categorical with their declared levels),
 * the task's columns (a survival task's time is numeric and its event categorical "0"/"1"; a binary
 * label is categorical "0"/"1" after the schema's positive rule) and a split column (its two labels).
 */
import type { CsvTable } from '../site/data/csv.js';
import { checkSchema, levelIndex, parseNumber, splitLabels, type DataSchema } from '../site/data/schema.js';

export type ColumnType = { type: 'numeric' } | { type: 'categorical'; levels: string[] };

/** Why a site will not answer: a reason a person can act on. The agent prefixes the site's name. */
export class QueryRefused extends Error {
  constructor(
    readonly code: 'unknown-column' | 'type' | 'schema' | 'policy' | 'budget' | 'too-few' | 'no-survival-task',
    message: string,
  ) {
    super(message);
    this.name = 'QueryRefused';
  }
}

export function declaredColumns(schema: DataSchema, site?: string): Map<string, ColumnType> {
  const out = new Map<string, ColumnType>();
  for (const f of schema.features) out.set(f.name, f.type === 'numeric' ? { type: 'numeric' } : { type: 'categorical', levels: [...f.levels] });
  const t = schema.task;
  if (t.kind === 'survival') {
    out.set(t.time, { type: 'numeric' });
    out.set(t.event, { type: 'categorical', levels: ['0', '1'] });
  } else out.set(t.label, { type: 'categorical', levels: ['0', '1'] });
  const s = schema.split;
  if (s.kind === 'column') {
    const l = splitLabels(schema, site);
    out.set(s.column, { type: 'categorical', levels: [l.train, l.test] });
  }
  return out;
}

function listOf(cols: Map<string, ColumnType>, want?: 'numeric' | 'categorical'): string {
  const names = [...cols].filter(([, c]) => !want || c.type === want).map(([n]) => n);
  return names.length ? names.join(', ') : '(none)';
}

/** The table, checked once against the schema, with typed column access. */
export class SiteTable {
  readonly n: number;
  readonly columns: Map<string, ColumnType>;
  private readonly index: Map<string, number>;

  /** `site`: this site's name, for per-site split labels. */
  constructor(readonly table: CsvTable, readonly schema: DataSchema, site?: string) {
    const problems = checkSchema(table, schema, site);
    if (problems.length) throw new QueryRefused('schema', `the data does not match the study's schema: ${problems.map((p) => p.message).join('; ')}`);
    this.n = table.rows.length;
    this.columns = declaredColumns(schema, site);
    this.index = new Map(table.header.map((h, i) => [h, i]));
  }

  type(name: string, want?: 'numeric' | 'categorical', role = 'column'): ColumnType {
    const c = this.columns.get(name);
    if (!c) throw new QueryRefused('unknown-column', `unknown ${role} "${name}": the study's data schema has no such column (its ${want ? `${want} ` : ''}columns: ${listOf(this.columns, want)})`);
    if (want && c.type !== want) throw new QueryRefused('type', `${role} "${name}" is ${c.type}, this query needs a ${want} column (${want} columns: ${listOf(this.columns, want)})`);
    return c;
  }

  /** Numeric values, null where missing. */
  numeric(name: string, role?: string): Array<number | null> {
    this.type(name, 'numeric', role);
    const j = this.index.get(name)!;
    return this.table.rows.map((r) => (r[j] === null || r[j] === undefined ? null : parseNumber(r[j]!)));
  }

  /** Level index per row (−1 where missing) and the levels. */
  categorical(name: string, role?: string): { levels: string[]; codes: Int32Array } {
    const c = this.type(name, 'categorical', role) as { type: 'categorical'; levels: string[] };
    const j = this.index.get(name)!;
    const codes = new Int32Array(this.n);
    const t = this.schema.task;
    const isLabel = t.kind === 'binary' && t.label === name;
    this.table.rows.forEach((r, k) => {
      const v = r[j];
      if (v === null || v === undefined) codes[k] = -1;
      else if (isLabel && t.kind === 'binary' && t.positive) codes[k] = ('above' in t.positive ? parseNumber(v)! > t.positive.above : t.positive.equals.includes(v)) ? 1 : 0;
      else codes[k] = levelIndex(c.levels, v);
    });
    return { levels: c.levels, codes };
  }

  /** Whether the raw cell is missing. */
  missing(name: string): boolean[] {
    this.type(name);
    const j = this.index.get(name)!;
    return this.table.rows.map((r) => r[j] === null || r[j] === undefined);
  }

  /** The survival task's time and event (1 = event), null where either is missing. */
  survival(resolution?: number): { time: Array<number | null>; event: Array<number | null> } {
    const t = this.schema.task;
    if (t.kind !== 'survival') throw new QueryRefused('no-survival-task', `survival queries need a data schema with a survival task (time and event columns); this study's task is ${t.kind}`);
    const time = this.numeric(t.time, 'time column').map((v) => (v === null || resolution === undefined ? v : roundUp(v, resolution)));
    const ev = this.categorical(t.event, 'event column').codes;
    return { time, event: Array.from(ev, (c) => (c < 0 ? null : c)) };
  }
}

/** Rounds a time up to a multiple of `step`, in a way that maps every value in ((k−1)·step, k·step] to k·step exactly. */
export function roundUp(t: number, step: number): number {
  const k = Math.ceil(t / step - 1e-12);
  return k * step;
}
