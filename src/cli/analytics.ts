/**
 * `setu analytics`: the federated statistics and survival queries run locally on CSV files — one
 * pooled file, a pooled file split into sites by a column, or one file per site — with exactly the
 * site and coordinator code a federation runs (src/analytics), so a biostatistician can check a
 * federated result against the pooled one and see what each site would release.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SiteTable } from '../analytics/columns.js';
import { QueryFailed, runQuery } from '../analytics/query.js';
import { parseAnalyticsSpec, parsePolicy, parseQuery, type AnalyticsPolicy, type QuerySpec } from '../analytics/spec.js';
import type { SiteInput } from '../analytics/statistics.js';
import { CryptoNormal } from '../privacy/noise.js';
import { PrivacyBudget } from '../privacy/budget.js';
import { readCsv, type CsvTable } from '../site/data/csv.js';
import { parseDataSchema, type DataSchema } from '../site/data/schema.js';
import { numFlag, parse, UsageError } from './args.js';
import { report } from './analytics-report.js';
import { readYamlFile } from './yaml-file.js';

const KINDS: Record<string, QuerySpec['kind']> = {
  count: 'count', summary: 'summary', histogram: 'histogram', quantiles: 'quantiles', missingness: 'missingness',
  km: 'kaplan-meier', 'kaplan-meier': 'kaplan-meier', logrank: 'log-rank', 'log-rank': 'log-rank', cox: 'cox',
};

export const ANALYTICS_USAGE = `usage: setu analytics <query> --study study.yaml (--data pooled.csv [--split-by COLUMN] | --site NAME=FILE …) [options]

queries (columns as the study's data schema names them):
  count [--by a,b,…]                                    overall, by category, cross-tabulation
  summary --column C [--by G] [--stats mean,variance,sd,min,max] [--bounds LO,HI]
  histogram --column C --range LO,HI --bins K
  quantiles --column C --probs 0.25,0.5,0.75 --range LO,HI --bins K
  missingness [--columns a,b,…]
  km [--by G] [--conf-level 0.95] [--conf-type log|log-log|plain]   Kaplan–Meier, Greenwood CIs, median
  logrank --group G [--strata none|site]
  cox --covariates a,b,… [--ties efron|breslow] [--strata site|none] [--conf-level 0.95]
  run                                                   every query of the study file's analytics: block

  --study FILE        a study file with a dataSchema: block (or a bare data schema); its time/event columns drive survival queries
  --data FILE         one pooled CSV file; --split-by COLUMN makes one site per value of that column
  --site NAME=FILE    one site's CSV file (repeat for a federation)
  --min-cell N        each site's minimum cell count (default 1: nothing suppressed)
  --policy FILE       a site policy (YAML: minCellCount, suppressZeros, allow, dp, minMaxNoise, allowRiskSetSums) for every site
  --time-resolution T round times up to multiples of T before survival queries
  --json              print the results as JSON on stdout
  --out DIR           write each result as CSV (and SVG: curves, forest plot, histogram) into DIR`;

const list = (v: string | undefined) => (v === undefined ? undefined : v.split(',').map((s) => s.trim()).filter(Boolean));
function pair(v: string | undefined, flag: string): [number, number] | undefined {
  if (v === undefined) return undefined;
  const xs = v.split(',').map(Number);
  if (xs.length !== 2 || xs.some((x) => !Number.isFinite(x))) throw new UsageError(`--${flag} must be two numbers LO,HI, got "${v}"`);
  return [xs[0]!, xs[1]!];
}


/** A study file's `dataSchema` (and `analytics` queries), or a file that is a bare data schema. */
function readStudy(file: string): { schema: DataSchema; analytics?: unknown } {
  const doc = readYamlFile(file, 'study file') as { dataSchema?: unknown; analytics?: unknown } | null;
  const raw = doc && typeof doc === 'object' && 'dataSchema' in doc ? doc.dataSchema : doc;
  try {
    return { schema: parseDataSchema(raw), ...(doc && typeof doc === 'object' && 'analytics' in doc ? { analytics: doc.analytics } : {}) };
  } catch (e) {
    throw new UsageError(`${file}: ${(e as Error).message}`);
  }
}

function readTable(file: string): CsvTable {
  try {
    return readCsv(file);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Sites from --data [--split-by] or --site NAME=FILE. */
function siteTables(v: { data?: string; 'split-by'?: string; site?: string[] }): Record<string, CsvTable> {
  if (v.data && v.site?.length) throw new UsageError('give either --data (one pooled file) or --site NAME=FILE (one per site), not both');
  if (v.site?.length) {
    const out: Record<string, CsvTable> = {};
    for (const s of v.site) {
      const m = /^([^=]+)=(.+)$/.exec(s);
      if (!m) throw new UsageError(`--site must be NAME=FILE, got "${s}"`);
      if (out[m[1]!]) throw new UsageError(`--site: site "${m[1]}" is given twice`);
      out[m[1]!] = readTable(resolve(m[2]!));
    }
    return out;
  }
  if (!v.data) throw new UsageError('no data: give --data FILE or --site NAME=FILE');
  const t = readTable(resolve(v.data));
  const by = v['split-by'];
  if (!by) return { pooled: t };
  const j = t.header.indexOf(by);
  if (j < 0) throw new UsageError(`--split-by: ${t.file} has no column "${by}" (it has: ${t.header.join(', ')})`);
  const out: Record<string, CsvTable> = {};
  t.rows.forEach((r, k) => {
    const key = r[j] ?? 'NA';
    const s = (out[key] ??= { file: `${t.file} (${by} = ${key})`, header: t.header, rows: [], lines: [] });
    s.rows.push(r);
    s.lines.push(t.lines[k]!);
  });
  return out;
}

type Values = Record<string, string | boolean | string[] | undefined>;

function queryFrom(kind: QuerySpec['kind'], v: Values): QuerySpec {
  const s = (k: string) => v[k] as string | undefined;
  const q: Record<string, unknown> = { kind };
  const set = (k: string, val: unknown) => val !== undefined && (q[k] = val);
  const res = numFlag(s('time-resolution'), 'time-resolution');
  switch (kind) {
    case 'count':
      set('by', list(s('by')));
      break;
    case 'summary':
      set('column', s('column'));
      set('by', s('by'));
      set('statistics', list(s('stats')));
      set('bounds', pair(s('bounds'), 'bounds'));
      break;
    case 'histogram':
    case 'quantiles':
      set('column', s('column'));
      set('range', pair(s('range'), 'range'));
      set('bins', numFlag(s('bins'), 'bins', true));
      if (kind === 'quantiles') set('probs', list(s('probs'))?.map(Number));
      break;
    case 'missingness':
      set('columns', list(s('columns')));
      break;
    case 'kaplan-meier':
      set('by', s('by'));
      set('confLevel', numFlag(s('conf-level'), 'conf-level'));
      set('confType', s('conf-type'));
      set('timeResolution', res);
      break;
    case 'log-rank':
      set('group', s('group'));
      set('strata', s('strata'));
      set('timeResolution', res);
      break;
    case 'cox':
      set('covariates', list(s('covariates')));
      set('ties', s('ties'));
      set('strata', s('strata'));
      set('confLevel', numFlag(s('conf-level'), 'conf-level'));
      set('timeResolution', res);
      break;
  }
  try {
    return parseQuery(q);
  } catch (e) {
    // Speak of flags, not schema paths: "/confLevel: Expected required property" → "--conf-level is required".
    const flag = (f: string) => `--${f.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    const msg = (e as Error).message.replace(/\/(\w+): Expected required property(; \/\1: [^;]*)*/g, (_, f: string) => `${flag(f)} is required`).replace(/\/(\w+)/g, (_, f: string) => flag(f));
    throw new UsageError(msg.replace(/^invalid (\S+) query: /, `analytics ${kind === 'kaplan-meier' ? 'km' : kind === 'log-rank' ? 'logrank' : kind}: `));
  }
}

export async function analyticsCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(ANALYTICS_USAGE + '\n');
    return 0;
  }
  const { values: v } = parse(rest, {
    study: { type: 'string' }, data: { type: 'string' }, 'split-by': { type: 'string' }, site: { type: 'string', multiple: true },
    'min-cell': { type: 'string' }, policy: { type: 'string' }, json: { type: 'boolean' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    by: { type: 'string' }, column: { type: 'string' }, columns: { type: 'string' }, stats: { type: 'string' }, bounds: { type: 'string' },
    range: { type: 'string' }, bins: { type: 'string' }, probs: { type: 'string' }, 'conf-level': { type: 'string' }, 'conf-type': { type: 'string' },
    group: { type: 'string' }, strata: { type: 'string' }, covariates: { type: 'string' }, ties: { type: 'string' }, 'time-resolution': { type: 'string' },
  });
  if (v.help) {
    process.stdout.write(ANALYTICS_USAGE + '\n');
    return 0;
  }
  const kind = KINDS[sub];
  if (!kind && sub !== 'run') throw new UsageError(`unknown analytics query "${sub}" (known: ${[...Object.keys(KINDS).filter((k) => !k.includes('-')), 'run'].join(', ')}); run setu analytics --help`);
  if (!v.study) throw new UsageError('--study FILE is required: its data schema says what each column is');
  const study = readStudy(v.study);
  let queries: Array<QuerySpec & { name?: string }>;
  if (kind) queries = [{ ...queryFrom(kind, v), name: sub }];
  else {
    if (study.analytics === undefined) throw new UsageError(`${v.study} has no analytics: block to run`);
    try {
      queries = parseAnalyticsSpec(study.analytics).queries;
    } catch (e) {
      throw new UsageError(`${v.study}: analytics${(e as Error).message.startsWith('/') ? '' : ': '}${(e as Error).message}`);
    }
  }
  let policy: AnalyticsPolicy = { minCellCount: numFlag(v['min-cell'], 'min-cell', true) ?? 1, allowRiskSetSums: true };
  if (v.policy) {
    try {
      policy = parsePolicy(readYamlFile(v.policy, 'policy file'));
    } catch (e) {
      throw new UsageError(`${v.policy}: ${(e as Error).message}`);
    }
  }
  if (!(policy.minCellCount >= 1)) throw new UsageError('--min-cell must be at least 1');
  const tables = siteTables(v as { data?: string; 'split-by'?: string; site?: string[] });
  const sites: Record<string, SiteInput> = {};
  for (const [id, t] of Object.entries(tables)) {
    try {
      // A local run spends nothing real; a DP policy gets a budget as large as its queries need.
      sites[id] = { table: new SiteTable(t, study.schema), policy, noise: new CryptoNormal(), dp: { budget: new PrivacyBudget(1e9, policy.dp?.delta ?? 1e-5), noise: new CryptoNormal() } };
    } catch (e) {
      throw new UsageError(`site ${id}: ${(e as Error).message}`);
    }
  }
  const out = v.out ? resolve(v.out) : undefined;
  if (out) mkdirSync(out, { recursive: true });
  const json: Record<string, unknown> = {};
  const written: string[] = [];
  queries.forEach((q, i) => {
    const name = (q.name ?? `${q.kind}-${i + 1}`).replace(/[^A-Za-z0-9._-]/g, '_');
    let run;
    try {
      run = runQuery(q, sites);
    } catch (e) {
      if (e instanceof QueryFailed) throw new UsageError(`${name}: ${e.message}`);
      throw e;
    }
    const rep = report(name, run.result);
    json[name] = { query: q, result: run.result, refusals: run.refusals, sites: Object.keys(sites).length };
    if (!v.json) {
      process.stdout.write(`\n${name} (${q.kind}, ${Object.keys(sites).length} site${Object.keys(sites).length === 1 ? '' : 's'})\n${rep.text}\n`);
      for (const [s, why] of Object.entries(run.refusals)) process.stdout.write(`site ${s} refused: ${why}\n`);
    }
    if (out) for (const [f, body] of Object.entries({ ...rep.csv, ...rep.svg })) {
      writeFileSync(join(out, f), body);
      written.push(join(out, f));
    }
  });
  if (v.json) process.stdout.write(JSON.stringify(json, (_, x) => (typeof x === 'number' && !Number.isFinite(x) ? String(x) : x)) + '\n');
  if (written.length) (v.json ? process.stderr : process.stdout).write(`\nwrote ${written.join(', ')}\n`);
  return 0;
}
