/**
 * Fed-Heart-Disease loader, preprocessing exactly as FLamby does (protocol in
 * ../shared/peer/README.md, data bundled under data/fed-heart-disease):
 *
 *  1. read `processed.<centre>.data` (14 columns, no header, `?` = missing);
 *  2. drop columns 10–12 (slope, ca, thal), then every row that still has a `?`;
 *  3. label = num (column 13) > 0;
 *  4. 13 float32 features: age, sex, trestbps, chol, fbs, thalach, exang, oldpeak,
 *     cp==2, cp==3, cp==4, restecg==1, restecg==2;
 *  5. train/test membership from heart_split.csv (validated against the file);
 *  6. per-centre normalisation with the centre's own training mean and unbiased std
 *     (float32): x' = (x − mean) / (std + 1e−9).
 *
 * A hospital's site reads ONLY its own file plus the split file.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Dataset } from '../../learning/types.js';

export const HEART_CENTERS = ['cleveland', 'hungarian', 'switzerland', 'va'] as const;
export type HeartCenter = 0 | 1 | 2 | 3;

/** Train/test sizes per centre in FLamby's README; the split file must give exactly these. */
export const HEART_SPLIT_COUNTS: ReadonlyArray<readonly [number, number]> = [[199, 104], [172, 89], [30, 16], [85, 45]];

/**
 * One-hot levels. FLamby takes them from the union of all four centres (cp: 1..4,
 * restecg: 0..2) and drops the first level. They are fixed here so that a site needs only
 * its own file; heart.test.ts checks them against the union of the bundled files, and a
 * value outside these sets is refused rather than silently encoded as all zeros.
 */
export const CP_LEVELS = [1, 2, 3, 4] as const;
export const RESTECG_LEVELS = [0, 1, 2] as const;

export const HEART_FEATURES = ['age', 'sex', 'trestbps', 'chol', 'fbs', 'thalach', 'exang', 'oldpeak', 'cp_2', 'cp_3', 'cp_4', 'restecg_1', 'restecg_2'];
const NUMERIC_COLS = [0, 1, 3, 4, 5, 7, 8, 9];
const CP_COL = 2, RESTECG_COL = 6, LABEL_COL = 13;
/** Columns kept after dropping 10–12. */
const KEPT_COLS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13];

/** The bundled data folder, found relative to this module (src/ or dist/ alike). */
export function defaultHeartDir(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'data', 'fed-heart-disease');
}

/** A centre's rows after dropping missing values, before the split and normalisation. */
export interface HeartRaw {
  center: HeartCenter;
  name: string;
  /** 0-based line of each kept row in the original file. */
  rowInFile: number[];
  /** n × 13 float32 features (unnormalised). */
  features: Float32Array;
  labels: Float32Array;
  /** Raw cp and restecg values of every kept row (for the level check). */
  cp: number[];
  restecg: number[];
}

export function checkCenter(center: number): HeartCenter {
  if (!(Number.isInteger(center) && center >= 0 && center <= 3)) throw new Error(`heart: centre must be 0..3 (0 cleveland, 1 hungarian, 2 switzerland, 3 va), got ${center}`);
  return center as HeartCenter;
}

/** Parses one UCI file's text (exposed for tests). */
export function parseHeartFile(text: string, center: HeartCenter, fileLabel: string = HEART_CENTERS[center]): HeartRaw {
  const lines = text.split(/\r?\n/);
  // A trailing newline leaves one empty last element; pandas ignores it, so do we.
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const rowInFile: number[] = [], feats: number[] = [], labels: number[] = [], cps: number[] = [], ecgs: number[] = [];
  lines.forEach((line, li) => {
    const cells = line.split(',');
    if (cells.length !== 14) throw new Error(`heart: ${fileLabel} line ${li + 1} has ${cells.length} columns, expected 14`);
    const v: number[] = new Array(14).fill(NaN);
    for (const c of KEPT_COLS) {
      const s = cells[c]!.trim();
      if (s === '?') return; // dropped row: a kept column is missing
      const num = Number(s);
      if (s === '' || !Number.isFinite(num)) throw new Error(`heart: ${fileLabel} line ${li + 1} column ${c} is not a number: "${s}"`);
      v[c] = num;
    }
    const cp = v[CP_COL]!, ecg = v[RESTECG_COL]!;
    if (!(CP_LEVELS as readonly number[]).includes(cp)) throw new Error(`heart: ${fileLabel} line ${li + 1}: cp=${cp} is not one of ${CP_LEVELS.join(',')}`);
    if (!(RESTECG_LEVELS as readonly number[]).includes(ecg)) throw new Error(`heart: ${fileLabel} line ${li + 1}: restecg=${ecg} is not one of ${RESTECG_LEVELS.join(',')}`);
    rowInFile.push(li);
    for (const c of NUMERIC_COLS) feats.push(v[c]!);
    for (const level of CP_LEVELS.slice(1)) feats.push(cp === level ? 1 : 0);
    for (const level of RESTECG_LEVELS.slice(1)) feats.push(ecg === level ? 1 : 0);
    labels.push(v[LABEL_COL]! > 0 ? 1 : 0);
    cps.push(cp);
    ecgs.push(ecg);
  });
  return { center, name: HEART_CENTERS[center], rowInFile, features: new Float32Array(feats), labels: new Float32Array(labels), cp: cps, restecg: ecgs };
}

export function readHeartRaw(dataDir: string, center: HeartCenter, dataFile?: string): HeartRaw {
  const file = dataFile ?? join(dataDir, `processed.${HEART_CENTERS[center]}.data`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`heart: cannot read ${file}: ${(e as Error).message}`);
  }
  return parseHeartFile(text, center, file);
}

/** Test membership per centre, from heart_split.csv: center -> (row_in_file -> isTest). */
export function readHeartSplit(splitFile: string): Map<number, Map<number, boolean>> {
  let text: string;
  try {
    text = readFileSync(splitFile, 'utf8');
  } catch (e) {
    throw new Error(`heart: cannot read split file ${splitFile}: ${(e as Error).message}`);
  }
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines[0]?.trim() !== 'center,row_in_file,set') throw new Error(`heart: ${splitFile} must start with the header "center,row_in_file,set"`);
  const out = new Map<number, Map<number, boolean>>();
  for (let i = 1; i < lines.length; i++) {
    const [c, r, s] = lines[i]!.split(',').map((x) => x.trim());
    const center = Number(c), row = Number(r);
    if (!Number.isInteger(center) || !Number.isInteger(row) || (s !== 'train' && s !== 'test')) {
      throw new Error(`heart: ${splitFile} line ${i + 1} is malformed: "${lines[i]}"`);
    }
    let m = out.get(center);
    if (!m) out.set(center, (m = new Map()));
    if (m.has(row)) throw new Error(`heart: ${splitFile} lists centre ${center} row ${row} twice`);
    m.set(row, s === 'test');
  }
  return out;
}

/** Test flag per kept row, checked against the split file and FLamby's counts. */
export function splitFlags(raw: HeartRaw, split: Map<number, Map<number, boolean>>): boolean[] {
  const m = split.get(raw.center);
  if (!m) throw new Error(`heart: the split file has no rows for centre ${raw.center} (${raw.name})`);
  if (m.size !== raw.rowInFile.length) throw new Error(`heart: the split file lists ${m.size} rows for ${raw.name} but the data file has ${raw.rowInFile.length} complete rows`);
  const flags = raw.rowInFile.map((r) => {
    const t = m.get(r);
    if (t === undefined) throw new Error(`heart: row ${r} of ${raw.name} is not in the split file`);
    return t;
  });
  const nTest = flags.filter(Boolean).length, nTrain = flags.length - nTest;
  const [wantTrain, wantTest] = HEART_SPLIT_COUNTS[raw.center]!;
  if (nTrain !== wantTrain || nTest !== wantTest) throw new Error(`heart: ${raw.name} splits ${nTrain}/${nTest}, expected ${wantTrain}/${wantTest}`);
  return flags;
}

/** Rows of `raw` selected by `keep`, as an unnormalised Dataset. */
function subset(raws: HeartRaw[], keep: boolean[][]): Dataset {
  const d = HEART_FEATURES.length;
  let n = 0;
  for (const k of keep) for (const b of k) if (b) n++;
  const x = new Float32Array(n * d), y = new Float32Array(n);
  let r = 0;
  raws.forEach((raw, ri) => {
    keep[ri]!.forEach((b, i) => {
      if (!b) return;
      x.set(raw.features.subarray(i * d, (i + 1) * d), r * d);
      y[r] = raw.labels[i]!;
      r++;
    });
  });
  return { x, n, d, y, featureNames: [...HEART_FEATURES] };
}

export interface ColumnStats {
  mean: Float32Array;
  std: Float32Array;
}

/** Column mean and unbiased (ddof=1) std, accumulated in float64 and stored as float32 like torch's. */
export function columnStats(ds: Dataset): ColumnStats {
  const { n, d, x } = ds;
  if (n < 2) throw new Error(`heart: need at least 2 training rows for an unbiased std, got ${n}`);
  const mean = new Float32Array(d), std = new Float32Array(d);
  for (let j = 0; j < d; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += x[i * d + j]!;
    const m = s / n;
    let ss = 0;
    for (let i = 0; i < n; i++) {
      const e = x[i * d + j]! - m;
      ss += e * e;
    }
    mean[j] = m;
    std[j] = Math.sqrt(ss / (n - 1));
  }
  return { mean, std };
}

/** x' = (x − mean) / (std + 1e−9), each operation rounded to float32 as torch does. */
export function normalize(ds: Dataset, st: ColumnStats): Dataset {
  const { n, d, x } = ds;
  const out = new Float32Array(n * d);
  const denom = st.std.map((s) => Math.fround(s + 1e-9));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) out[i * d + j] = Math.fround(x[i * d + j]! - st.mean[j]!) / denom[j]!;
  }
  return { ...ds, x: out };
}

export interface HeartCenterData {
  center: HeartCenter;
  name: string;
  train: Dataset;
  test: Dataset;
  /** The centre's own training statistics used for its normalisation. */
  stats: ColumnStats;
}

export interface HeartFiles {
  /** This hospital's UCI file (default `<dataDir>/processed.<centre>.data`). */
  dataFile?: string;
  /** Default `<dataDir>/heart_split.csv`. */
  splitFile?: string;
}

/** One hospital's train/test sets, normalised with its own training statistics. Reads only its own file. */
export function loadHeartCenter(dataDir: string | undefined, center: number, files: HeartFiles = {}): HeartCenterData {
  const c = checkCenter(center);
  const dir = dataDir ?? defaultHeartDir();
  const raw = readHeartRaw(dir, c, files.dataFile);
  const flags = splitFlags(raw, readHeartSplit(files.splitFile ?? join(dir, 'heart_split.csv')));
  return centerFromRaw(raw, flags);
}

function centerFromRaw(raw: HeartRaw, flags: boolean[]): HeartCenterData {
  const trainRaw = subset([raw], [flags.map((t) => !t)]);
  const testRaw = subset([raw], [flags]);
  const stats = columnStats(trainRaw);
  return { center: raw.center, name: raw.name, train: normalize(trainRaw, stats), test: normalize(testRaw, stats), stats };
}

export interface HeartPooledData {
  /** The four centres, each normalised with its own training statistics. */
  centers: HeartCenterData[];
  /** 486 training rows in FLamby's concatenation order (cleveland, switzerland, hungarian, va), pooled normalisation. */
  train: Dataset;
  /** 254 test rows, centres 0..3 in order, pooled normalisation: FLamby's "Pooled Test". */
  test: Dataset;
  /** Each centre's test rows under the pooled normalisation. */
  centerTests: Dataset[];
  stats: ColumnStats;
}

/** Pooled train order used by FLamby's published pooled numbers (directory-listing order). */
export const HEART_POOLED_ORDER: readonly HeartCenter[] = [0, 2, 1, 3];

/** All four centres plus the pooled sets (for the benchmark, which plays every hospital). */
export function loadHeartPooled(dataDir?: string, order: readonly HeartCenter[] = HEART_POOLED_ORDER): HeartPooledData {
  const dir = dataDir ?? defaultHeartDir();
  if ([...order].sort().join() !== '0,1,2,3') throw new Error(`heart: pooled order must be a permutation of 0,1,2,3, got ${order.join(',')}`);
  const split = readHeartSplit(join(dir, 'heart_split.csv'));
  const raws = HEART_CENTERS.map((_, c) => readHeartRaw(dir, c as HeartCenter));
  const flags = raws.map((r) => splitFlags(r, split));
  const centers = raws.map((r, c) => centerFromRaw(r, flags[c]!));
  const trainRaw = subset(order.map((c) => raws[c]!), order.map((c) => flags[c]!.map((t) => !t)));
  const stats = columnStats(trainRaw);
  const testRaw = subset(raws, flags);
  const centerTests = raws.map((r, c) => normalize(subset([r], [flags[c]!]), stats));
  return { centers, train: normalize(trainRaw, stats), test: normalize(testRaw, stats), centerTests, stats };
}
