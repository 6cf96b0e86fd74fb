/**
 * The data side of `setu bench csv`: a federation of CSV files (one per site) read through a study's
 * data schema into what FLamby's benchmarks train and evaluate on:
 *
 * - each site's train and test sets, normalised as the schema says (its own statistics for 'site', the
 *   federated ones — equal to the pooled training statistics — for 'global');
 * - the pooled training set (the sites' training rows in `pooledOrder`) and the pooled test set (their test
 *   rows in federation order), both normalised with the pooled training statistics: FLamby's "Pooled
 *   Test", on which every method is compared.
 *
 * The federation file (YAML, paths relative to it):
 *
 *   study: study.yaml                # a setu study file: model, fit, rounds, seed, dataSchema
 *   sites:
 *     - { name: cleveland, data: cleveland.csv }
 *     - { name: va, data: va.csv, splitFile: va-split.csv }    # for a schema split of kind 'file'
 *   pooledOrder: [cleveland, switzerland, hungarian, va]     # optional: order of the pooled training rows
 *   central: { epochs: 50, batchSize: 4, optimizer: { kind: adam, lr: 0.001 } }   # optional: Pooled and Local-k
 *   methods:                                                 # optional: default every strategy with the study's fit
 *     FedAvg: { strategy: FedAvg, params: { lr: 0.001 } }
 */
import { dirname, resolve } from 'node:path';
import { checkValue, StudySpecSchema, type StudySpec } from '../../protocol/api.js';
import type { Dataset, OptimizerSpec } from '../../learning/types.js';
import { readCsv, type CsvTable } from '../../site/data/csv.js';
import { combineSums, localSums, statsFromSums, type NormStats } from '../../site/data/global-stats.js';
import { parseDataSchema, type DataSchema } from '../../site/data/schema.js';
import { loadTabular, normaliseTabular, type TabularData } from '../../site/data/tabular.js';
import { UsageError } from '../args.js';
import { readYamlFile } from '../yaml-file.js';

export interface SiteFiles {
  name: string;
  data: string;
  splitFile?: string;
}

export interface CentralSpec {
  epochs: number;
  batchSize: number;
  optimizer: OptimizerSpec;
}

export interface FederationSpec {
  study: StudySpec;
  schema: DataSchema;
  sites: SiteFiles[];
  pooledOrder: string[];
  central?: CentralSpec;
  methods?: Record<string, { strategy: string; params?: Record<string, unknown> }>;
}

export interface BenchSite {
  name: string;
  train: Dataset;
  /** The site's own test rows, normalised as the site trains. */
  test: Dataset;
}

export interface BenchData {
  sites: BenchSite[];
  pooledTrain: Dataset;
  pooledTest: Dataset;
}


/** A study file, validated as `setu study create` would, that declares a data schema. */
export function readBenchStudy(file: string): { study: StudySpec; schema: DataSchema } {
  const spec = readYamlFile(file, 'study file');
  const problems = checkValue(StudySpecSchema, spec);
  if (problems.length) throw new UsageError(`${file}: ${problems.join('; ')}`);
  const study = spec as StudySpec;
  if (!study.dataSchema) throw new UsageError(`${file}: the study declares no dataSchema; a CSV federation needs one to read its files`);
  try {
    return { study, schema: parseDataSchema(study.dataSchema) };
  } catch (e) {
    throw new UsageError(`${file}: ${(e as Error).message}`);
  }
}

const FED_KEYS = ['study', 'sites', 'pooledOrder', 'central', 'methods'];

export function readFederation(file: string): FederationSpec {
  const doc = readYamlFile(file, 'federation file') as Record<string, unknown> | null;
  if (!doc || typeof doc !== 'object') throw new UsageError(`${file}: expected a mapping with study and sites`);
  const unknown = Object.keys(doc).filter((k) => !FED_KEYS.includes(k));
  if (unknown.length) throw new UsageError(`${file}: unknown field ${unknown.join(', ')} (allowed: ${FED_KEYS.join(', ')})`);
  const base = dirname(resolve(file));
  if (typeof doc['study'] !== 'string') throw new UsageError(`${file}: study: the path of a study file is required`);
  const { study, schema } = readBenchStudy(resolve(base, doc['study']));
  const rawSites = doc['sites'];
  if (!Array.isArray(rawSites) || rawSites.length === 0) throw new UsageError(`${file}: sites: a list of { name, data } is required`);
  const sites = rawSites.map((s, i): SiteFiles => {
    const o = s as Record<string, unknown>;
    const extra = Object.keys(o ?? {}).filter((k) => !['name', 'data', 'splitFile'].includes(k));
    if (!o || typeof o['name'] !== 'string' || !o['name'] || typeof o['data'] !== 'string') throw new UsageError(`${file}: sites[${i}]: needs name and data (a CSV path)`);
    if (extra.length) throw new UsageError(`${file}: sites[${i}]: unknown field ${extra.join(', ')} (allowed: name, data, splitFile)`);
    if (o['splitFile'] !== undefined && typeof o['splitFile'] !== 'string') throw new UsageError(`${file}: sites[${i}].splitFile: a path`);
    return { name: o['name'], data: resolve(base, o['data']), ...(typeof o['splitFile'] === 'string' ? { splitFile: resolve(base, o['splitFile']) } : {}) };
  });
  const names = sites.map((s) => s.name);
  if (new Set(names).size !== names.length) throw new UsageError(`${file}: sites: names repeat`);
  const order = doc['pooledOrder'];
  if (order !== undefined && (!Array.isArray(order) || [...order].sort().join('\n') !== [...names].sort().join('\n'))) throw new UsageError(`${file}: pooledOrder must list every site once (${names.join(', ')})`);
  const central = doc['central'] as CentralSpec | undefined;
  if (central !== undefined) {
    const probs = checkValue(StudySpecSchema.properties.fit, { batchSize: central.batchSize, optimizer: central.optimizer, epochs: central.epochs });
    if (probs.length || !Number.isInteger(central.epochs)) throw new UsageError(`${file}: central needs epochs (an integer), batchSize and optimizer: ${probs.join('; ')}`);
  }
  const methods = doc['methods'] as FederationSpec['methods'];
  if (methods !== undefined) {
    if (typeof methods !== 'object' || methods === null) throw new UsageError(`${file}: methods: a mapping of name → { strategy, params }`);
    for (const [m, v] of Object.entries(methods)) if (!v || typeof v.strategy !== 'string') throw new UsageError(`${file}: methods.${m}: needs strategy (a strategy name)`);
  }
  return { study, schema, sites, pooledOrder: (order as string[] | undefined) ?? names, ...(central ? { central } : {}), ...(methods ? { methods } : {}) };
}

function concat(parts: Dataset[]): Dataset {
  const d = parts[0]!.d;
  const n = parts.reduce((a, p) => a + p.n, 0);
  const x = new Float32Array(n * d), y = new Float32Array(n);
  const survival = parts.every((p) => p.time && p.event);
  const time = survival ? new Float32Array(n) : undefined, event = survival ? new Float32Array(n) : undefined;
  let o = 0;
  for (const p of parts) {
    x.set(p.x, o * d);
    y.set(p.y, o);
    if (time && event) {
      time.set(p.time!, o);
      event.set(p.event!, o);
    }
    o += p.n;
  }
  return { x, n, d, y, ...(time && event ? { time, event } : {}), ...(parts[0]!.featureNames ? { featureNames: [...parts[0]!.featureNames] } : {}) };
}

/** Loads every site and builds the pooled sets; a site's error names it. */
export function loadBenchData(f: Pick<FederationSpec, 'schema' | 'sites' | 'pooledOrder'>): BenchData {
  const raw = new Map<string, TabularData>();
  for (const s of f.sites) {
    try {
      const table: CsvTable = readCsv(s.data);
      raw.set(s.name, loadTabular(table, f.schema, { site: s.name, ...(s.splitFile ? { splitFile: readCsv(s.splitFile) } : {}) }));
    } catch (e) {
      throw new UsageError(`site ${s.name}: ${(e as Error).message}`);
    }
  }
  const mode = f.schema.preprocessing?.normalise ?? 'none';
  // 'global': the federation's statistics, from the sites' sums exactly as the prepare round combines them.
  const global: NormStats | undefined = mode === 'global' ? statsFromSums(combineSums(f.sites.map((s) => localSums(raw.get(s.name)!.train, 0)))) : undefined;
  const sites = f.sites.map((s) => {
    const n = normaliseTabular(raw.get(s.name)!, f.schema, global);
    return { name: s.name, train: n.train, test: n.test };
  });
  const first = raw.get(f.sites[0]!.name)!;
  const pooled: TabularData = {
    train: concat(f.pooledOrder.map((name) => raw.get(name)!.train)),
    test: concat(f.sites.map((s) => raw.get(s.name)!.test)),
    featureNames: first.featureNames, normaliseMask: first.normaliseMask, droppedLines: [],
  };
  // 'site' with no statistics given normalises by the (pooled) training rows' own: the pooled statistics.
  const p = normaliseTabular(pooled, f.schema, global);
  return { sites, pooledTrain: p.train, pooledTest: p.test };
}
