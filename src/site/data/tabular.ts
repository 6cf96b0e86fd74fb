/**
 * Any tabular dataset: a site's CSV + the study's data schema → train/test `Dataset`s.
 *
 *   const raw = loadTabular(readCsv(path), schema);      // checked, encoded, split; not normalised
 *   // 'site':   normaliseTabular(raw, schema)             // the site's own training statistics
 *   // 'global': report localSums(raw.train); the coordinator combines them with combineSums and
 *   //           statsFromSums; then normaliseTabular(raw, schema, thoseStats)
 *
 * Rows with a missing value in any used column are dropped (or refused, per the schema);
 * their lines are reported so the site can see what was left out.
 */
import { createRng, permutation } from '../../learning/rng.js';
import type { Dataset } from '../../learning/types.js';
import type { CsvTable } from './csv.js';
import { applyStats, localSums, statsFromSums, type NormStats } from './global-stats.js';
import { checkSchema, encodedFeatureNames, levelIndex, parseNumber, usedColumns, type DataSchema } from './schema.js';

export interface TabularData {
  train: Dataset;
  test: Dataset;
  featureNames: string[];
  /** Per encoded column: true for columns the preprocessing normalises. */
  normaliseMask: boolean[];
  /** CSV lines of rows dropped for missing values. */
  droppedLines: number[];
}

export class SchemaMismatchError extends Error {
  constructor(readonly problems: Array<{ column: string; message: string }>) {
    super(problems.map((p) => p.message).join('; '));
    this.name = 'SchemaMismatchError';
  }
}

export function loadTabular(table: CsvTable, schema: DataSchema): TabularData {
  const problems = checkSchema(table, schema);
  if (problems.length) throw new SchemaMismatchError(problems);
  const col = new Map(table.header.map((h, i) => [h, i]));
  const used = usedColumns(schema).map((c) => col.get(c)!);
  const featureNames = encodedFeatureNames(schema);
  const d = featureNames.length;
  const keep: number[] = [], droppedLines: number[] = [];
  table.rows.forEach((r, k) => {
    const missing = used.find((j) => r[j] === null);
    if (missing === undefined) keep.push(k);
    else if (schema.preprocessing?.missing === 'error') throw new Error(`${table.file}, line ${table.lines[k]}, column ${table.header[missing]}: missing value`);
    else droppedLines.push(table.lines[k]!);
  });
  const n = keep.length;
  if (n === 0) throw new Error(`${table.file}: no row is complete in the schema's columns`);

  const x = new Float32Array(n * d);
  keep.forEach((k, r) => {
    const row = table.rows[k]!;
    let o = r * d;
    for (const f of schema.features) {
      const v = row[col.get(f.name)!]!;
      if (f.type === 'numeric') x[o++] = parseNumber(v)!;
      else {
        const level = levelIndex(f.levels, v);
        for (let l = f.dropFirst ? 1 : 0; l < f.levels.length; l++) x[o++] = level === l ? 1 : 0;
      }
    }
  });
  const num = (name: string): Float32Array => Float32Array.from(keep, (k) => parseNumber(table.rows[k]![col.get(name)!]!)!);
  const t = schema.task;
  let y: Float32Array, time: Float32Array | undefined, event: Float32Array | undefined;
  if (t.kind === 'binary') {
    const rule = t.positive;
    y = Float32Array.from(keep, (k) => {
      const v = table.rows[k]![col.get(t.label)!]!;
      if (!rule) return parseNumber(v)!;
      return 'above' in rule ? (parseNumber(v)! > rule.above ? 1 : 0) : rule.equals.includes(v) ? 1 : 0;
    });
  } else {
    time = num(t.time);
    event = num(t.event);
    y = new Float32Array(event);
  }

  const s = schema.split;
  let isTrain: boolean[];
  if (s.kind === 'column') {
    const tr = s.train ?? 'train';
    isTrain = keep.map((k) => table.rows[k]![col.get(s.column)!] === tr);
  } else isTrain = stratifiedSplit(y, s.trainFraction, s.seed);

  const numericMask = schema.features.flatMap((f) => (f.type === 'numeric' ? [true] : new Array<boolean>(f.levels.length - (f.dropFirst ? 1 : 0)).fill(false)));
  const all: Dataset = { x, n, d, y, featureNames, ...(time ? { time, event } : {}) };
  return {
    train: subset(all, isTrain.flatMap((b, i) => (b ? [i] : []))),
    test: subset(all, isTrain.flatMap((b, i) => (b ? [] : [i]))),
    featureNames,
    normaliseMask: schema.preprocessing?.scope === 'all' ? numericMask.map(() => true) : numericMask,
    droppedLines,
  };
}

/**
 * Seeded stratified split: within each stratum (label or event value), a seeded permutation
 * and the first round(fraction·count) rows go to training. Returns a train flag per row.
 */
export function stratifiedSplit(strata: ArrayLike<number>, trainFraction: number, seed: number): boolean[] {
  if (!(trainFraction > 0 && trainFraction < 1)) throw new Error(`trainFraction must be in (0, 1), got ${trainFraction}`);
  const groups = new Map<number, number[]>();
  for (let i = 0; i < strata.length; i++) {
    const g = groups.get(strata[i]!) ?? [];
    g.push(i);
    groups.set(strata[i]!, g);
  }
  const flags = new Array<boolean>(strata.length).fill(false);
  const rng = createRng(seed, 'split');
  for (const key of [...groups.keys()].sort((a, b) => a - b)) {
    const rows = groups.get(key)!;
    const perm = permutation(rows.length, rng);
    const nTrain = Math.round(trainFraction * rows.length);
    for (let k = 0; k < nTrain; k++) flags[rows[perm[k]!]!] = true;
  }
  return flags;
}

/** Rows `idx` of `ds`, in that order. */
export function subset(ds: Dataset, idx: readonly number[]): Dataset {
  const { d } = ds;
  const x = new Float32Array(idx.length * d);
  idx.forEach((r, k) => x.set(ds.x.subarray(r * d, r * d + d), k * d));
  const pick = (a: Float32Array): Float32Array => Float32Array.from(idx, (r) => a[r]!);
  const out: Dataset = { x, n: idx.length, d, y: ds.y.length === ds.n ? pick(ds.y) : new Float32Array(0) };
  if (ds.time) out.time = pick(ds.time);
  if (ds.event) out.event = pick(ds.event);
  if (ds.featureNames) out.featureNames = [...ds.featureNames];
  return out;
}

/**
 * Applies the schema's normalisation. 'site' uses the site's own training statistics; 'global'
 * needs the federated `stats`; 'none' (or no preprocessing block) leaves x as is.
 */
export function normaliseTabular(data: TabularData, schema: DataSchema, stats?: NormStats): { train: Dataset; test: Dataset; stats: NormStats | null } {
  const p = schema.preprocessing;
  if (!p || p.normalise === 'none') return { train: data.train, test: data.test, stats: null };
  let st: NormStats;
  // Site statistics never leave the site, so the reporting minimum of localSums does not apply.
  if (p.normalise === 'site') st = stats ?? statsFromSums(localSums(data.train, 0));
  else if (!stats) throw new Error('global normalisation needs the federated statistics (combineSums of every site\'s localSums)');
  else st = stats;
  const eps = p.epsilon ?? 1e-9, arith = p.arithmetic ?? 'float64';
  return { train: applyStats(data.train, st, data.normaliseMask, eps, arith), test: applyStats(data.test, st, data.normaliseMask, eps, arith), stats: st };
}
