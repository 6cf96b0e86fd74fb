/**
 * `setu bench csv`: FLamby's benchmark protocol on any federation of CSV files and a study file —
 * Pooled (all training rows in one place), Local-<site> (each site alone), and every federated
 * strategy, over many seeds, each evaluated on the pooled test set as FLamby evaluates (and on every
 * site's own test set); a table, CSV files and an SVG chart.
 *
 *   setu bench csv --federation bench.yaml [--seeds 42-61] [--methods all|pooled|local|fed|Pooled,Local-a,FedAvg,…]
 *                  [--init torch|setu] [--out DIR] [--json]
 *   setu bench csv --study study.yaml --site NAME=FILE … (the same, without per-site split files or a bench block)
 *
 * Every method of a seed starts from the same initial model (`initialWeights`: for logistic and linear
 * Cox studies, the one torch draws for the seed); the seeds of batch streams, central training and the
 * server are derived from the seed exactly as `setu bench flamby-heart` derives them, so a federation
 * holding the bundled heart data as CSV files reproduces that table.
 *
 * Cox studies report Harrell's C on every test set and, on the pooled test set, Uno's C, the mean time-dependent
 * AUC and the integrated Brier score (see `CsvRun.survival`).
 *
 * Defaults: Pooled and Local-<site> train with the study's optimizer and batch size for as many epochs as
 * process the rows the whole federation processes (rounds × steps × batch × sites ÷ pooled training rows);
 * every strategy uses the study's fit block (plus the study's own strategy params for its strategy).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { StudySpec } from '../../protocol/api.js';
import type { Weights } from '../../protocol/tensors.js';
import { BatchStream } from '../../learning/batches.js';
import { trainCentral } from '../../learning/client.js';
import { runFederation, type LocalSite } from '../../learning/federation.js';
import { createModel } from '../../learning/models/registry.js';
import { breslowBaseline, survivalMatrix } from '../../learning/models/cox-baseline.js';
import { brierScores, integratedBrierScore, timeDependentAuc, unoC } from '../../learning/survival-metrics.js';
import { createRng, deriveSeed } from '../../learning/rng.js';
import { createStrategy, STRATEGY_NAMES } from '../../learning/strategies/registry.js';
import type { Dataset, EvalMetrics, Model } from '../../learning/types.js';
import { initialWeights } from '../../coordinator/engine.js';
import { strategyParams } from '../../coordinator/strategy-host.js';
import { dotWhiskerSvg } from '../../plot/charts.js';
import { parse, UsageError } from '../args.js';
import { table } from '../table.js';
import { loadBenchData, readBenchStudy, readFederation, type BenchData, type CentralSpec, type FederationSpec } from './csv-federation.js';
import { meanSd, parseSeeds } from './flamby-heart.js';

export interface CsvRun {
  method: string;
  seed: number;
  /** 'Pooled Test' and one entry per site's own test set → the study's metric. */
  metric: Record<string, number>;
  seconds: number;
  /**
   * Cox studies: survival metrics beside Harrell's C on the pooled test set — Uno's C, the mean time-dependent AUC
   * and the integrated Brier score over the pooled test's event-time quartiles (survival curves from the Breslow
   * baseline of the pooled training rows; censoring weights from them too).
   */
  survival?: { unoC: number; meanAuc: number; ibs: number };
  /** Why the method could not run (e.g. Krum with too few sites); its metric is then empty. */
  error?: string;
}

/** The pooled test's event-time quartiles (25 %, 50 %, 75 %): where AUC(t) and the Brier score are read. */
export function evaluationTimes(test: Dataset): number[] {
  const t = Array.from(test.time!).filter((_, i) => test.event![i]! > 0.5).sort((a, b) => a - b);
  return [...new Set([0.25, 0.5, 0.75].map((q) => t[Math.min(t.length - 1, Math.floor(q * t.length))]!))];
}

function survivalMetrics(model: Model, w: Weights, data: BenchData): NonNullable<CsvRun['survival']> {
  const train = data.pooledTrain, test = data.pooledTest;
  const censoring = { time: train.time!, event: train.event! };
  const times = evaluationTimes(test);
  const risk = model.predict(w, test);
  const base = breslowBaseline(model.predict(w, train), train.time!, train.event!);
  const d = { time: test.time!, event: test.event! };
  const auc = timeDependentAuc(risk, d, times, { censoring }).filter(Number.isFinite);
  const bs = brierScores(survivalMatrix(base, risk, times), d, times, { censoring });
  return { unoC: unoC(risk, d, { censoring, tau: Math.max(...Array.from(train.time!)) }), meanAuc: auc.reduce((a, b) => a + b, 0) / auc.length, ibs: times.length > 1 ? integratedBrierScore(times, bs) : bs[0]! };
}

/** accuracy for binary models, Harrell's C for Cox models. */
export function metricName(study: StudySpec): 'accuracy' | 'cIndex' {
  return study.model.kind === 'cox' ? 'cIndex' : 'accuracy';
}

function metricOf(model: Model, w: Weights, data: Dataset, name: 'accuracy' | 'cIndex'): number {
  const m: EvalMetrics = model.evaluate(w, data);
  return m[name] ?? NaN;
}

export function defaultCentral(f: Pick<FederationSpec, 'study'>, data: BenchData): CentralSpec {
  const fit = f.study.fit;
  const perRound = fit.localSteps !== undefined || fit.epochs === undefined
    ? (fit.localSteps ?? 100) * fit.batchSize
    : Math.max(...data.sites.map((s) => s.train.n)) * fit.epochs;
  const epochs = Math.max(1, Math.round((f.study.rounds * perRound * data.sites.length) / data.pooledTrain.n));
  return { epochs, batchSize: fit.batchSize, optimizer: fit.optimizer };
}

export function methodList(f: Pick<FederationSpec, 'study' | 'methods' | 'sites'>): string[] {
  const fed = f.methods ? Object.keys(f.methods) : STRATEGY_NAMES;
  return ['Pooled', ...f.sites.map((s) => `Local-${s.name}`), ...fed];
}

/** Expands groups (all, pooled, local, fed) and checks names (case-insensitive). */
export function parseMethodList(s: string, known: string[], sites: string[]): string[] {
  const out: string[] = [];
  const fed = known.filter((m) => m !== 'Pooled' && !m.startsWith('Local-'));
  for (const raw of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = raw.toLowerCase();
    if (m === 'all') out.push(...known);
    else if (m === 'pooled') out.push('Pooled');
    else if (m === 'local') out.push(...sites.map((n) => `Local-${n}`));
    else if (m === 'fed') out.push(...fed);
    else {
      const name = known.find((n) => n.toLowerCase() === m);
      if (!name) throw new UsageError(`--methods: unknown method "${raw}" (known: all, pooled, local, fed, ${known.join(', ')})`);
      out.push(name);
    }
  }
  if (out.length === 0) throw new UsageError('--methods: no methods given');
  return [...new Set(out)];
}

export function runCsvMethod(f: FederationSpec, data: BenchData, method: string, seed: number, init: Weights, central: CentralSpec): CsvRun {
  const model = createModel(f.study.model);
  const name = metricName(f.study);
  const t0 = performance.now();
  let w: Weights;
  try {
    if (method === 'Pooled' || method.startsWith('Local-')) {
      const train = method === 'Pooled' ? data.pooledTrain : data.sites.find((s) => `Local-${s.name}` === method)!.train;
      // As FLamby (and bench flamby-heart): every baseline re-seeds identically before training.
      w = trainCentral({ model, weights: init, data: train, epochs: central.epochs, batchSize: central.batchSize, optimizer: central.optimizer, seed: deriveSeed(seed, 'central') }).weights;
    } else {
      const m = f.methods?.[method] ?? { strategy: method };
      const params: Record<string, unknown> = { ...strategyParams({ ...f.study, strategy: { name: m.strategy, ...(m.strategy === f.study.strategy.name && f.study.strategy.params ? { params: f.study.strategy.params } : {}) } }), ...(m.params ?? {}), seed: deriveSeed(seed, 'server') };
      const strategy = createStrategy(m.strategy, params);
      const batch = Number(params['batchSize'] ?? f.study.fit.batchSize);
      const sites: LocalSite[] = data.sites.map((s, k) => ({ id: s.name, data: s.train, stream: BatchStream.create(s.train.n, batch, deriveSeed(seed, 'client', k)) }));
      w = runFederation({ model, strategy, initial: init, rounds: f.study.rounds, sites });
    }
  } catch (e) {
    return { method, seed, metric: {}, seconds: (performance.now() - t0) / 1000, error: (e as Error).message };
  }
  const metric: Record<string, number> = { 'Pooled Test': metricOf(model, w, data.pooledTest, name) };
  for (const s of data.sites) metric[s.name] = metricOf(model, w, s.test, name);
  return { method, seed, metric, seconds: (performance.now() - t0) / 1000, ...(f.study.model.kind === 'cox' ? { survival: survivalMetrics(model, w, data) } : {}) };
}

export function initialModel(study: StudySpec, seed: number, init: 'torch' | 'setu'): Weights {
  return init === 'torch' ? initialWeights({ ...study, seed }) : createModel(study.model).init(createRng(seed, 'init'));
}

export function runCsvBenchmark(f: FederationSpec, opts: { seeds: number[]; methods: string[]; init?: 'torch' | 'setu'; onRun?: (r: CsvRun) => void }): { runs: CsvRun[]; data: BenchData; central: CentralSpec } {
  const data = loadBenchData(f);
  const central = f.central ?? defaultCentral(f, data);
  const runs: CsvRun[] = [];
  for (const seed of opts.seeds) {
    const init = initialModel(f.study, seed, opts.init ?? 'torch');
    for (const m of opts.methods) {
      const r = runCsvMethod(f, data, m, seed, init, central);
      runs.push(r);
      opts.onRun?.(r);
    }
  }
  return { runs, data, central };
}

export interface CsvSummary {
  method: string;
  /** Over seeds, on the pooled test set. */
  mean: number;
  sd: number;
  n: number;
  /** Mean over seeds on each site's own test set. */
  perSite: Record<string, number>;
  /** Cox studies: the survival metrics' means over seeds. */
  survival?: { unoC: number; meanAuc: number; ibs: number };
  seconds: number;
  error?: string;
}

export function summarizeCsv(runs: CsvRun[], sites: string[]): CsvSummary[] {
  return [...new Set(runs.map((r) => r.method))].map((method) => {
    const rs = runs.filter((r) => r.method === method);
    const ok = rs.filter((r) => !r.error);
    const { mean, sd } = ok.length ? meanSd(ok.map((r) => r.metric['Pooled Test']!)) : { mean: NaN, sd: NaN };
    const perSite = Object.fromEntries(sites.map((s) => [s, ok.length ? meanSd(ok.map((r) => r.metric[s]!)).mean : NaN]));
    const surv = ok.filter((r) => r.survival).map((r) => r.survival!);
    const survival = surv.length ? { unoC: meanSd(surv.map((x) => x.unoC)).mean, meanAuc: meanSd(surv.map((x) => x.meanAuc)).mean, ibs: meanSd(surv.map((x) => x.ibs)).mean } : undefined;
    return { method, mean, sd, n: ok.length, perSite, ...(survival ? { survival } : {}), seconds: rs.reduce((a, r) => a + r.seconds, 0) / rs.length, ...(ok.length < rs.length ? { error: rs.find((r) => r.error)!.error! } : {}) };
  });
}

export function formatCsvTable(summary: CsvSummary[], sites: string[], metric: string): string {
  const surv = summary.some((s) => s.survival);
  const f3 = (v: number | undefined) => (v !== undefined && Number.isFinite(v) ? v.toFixed(3) : '–');
  const rows = summary.map((s) => [
    s.method, s.error && s.n === 0 ? `not run: ${s.error}` : `${s.mean.toFixed(4)} ± ${s.sd.toFixed(4)} (${s.n})`, sites.map((n) => f3(s.perSite[n])).join(' / '),
    ...(surv ? [f3(s.survival?.unoC), f3(s.survival?.meanAuc), f3(s.survival?.ibs)] : []), s.seconds.toFixed(3),
  ]);
  return table(['method', `pooled-test ${metric} mean ± sd (seeds)`, `per-site test (${sites.join(' / ')})`, ...(surv ? ["Uno's C", 'mean AUC(t)', 'IBS'] : []), 's/run'], rows, ['l', 'r', 'l', ...(surv ? ['r' as const, 'r' as const, 'r' as const] : []), 'r']);
}

export function runsCsvText(runs: CsvRun[], sites: string[]): string {
  const lines = ['method,seed,test,metric,seconds,error'];
  for (const r of runs) {
    if (r.error) lines.push(`${r.method},${r.seed},,,${r.seconds.toFixed(6)},"${r.error.replace(/"/g, '""')}"`);
    else {
      for (const t of ['Pooled Test', ...sites]) lines.push(`${r.method},${r.seed},${t},${r.metric[t]},${r.seconds.toFixed(6)},`);
      if (r.survival) for (const [k, v] of Object.entries(r.survival)) lines.push(`${r.method},${r.seed},Pooled Test ${k},${v},${r.seconds.toFixed(6)},`);
    }
  }
  return lines.join('\n') + '\n';
}

const USAGE = `usage: setu bench csv --federation bench.yaml | --study study.yaml --site NAME=FILE [--site …]
                      [--seeds 42,43,44|42-61] [--methods all|pooled|local|fed|Pooled,Local-<site>,FedAvg,…] [--init torch|setu] [--out DIR] [--json]`;

export async function main(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    federation: { type: 'string' }, study: { type: 'string' }, site: { type: 'string', multiple: true }, seeds: { type: 'string' }, methods: { type: 'string' },
    init: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  });
  if (v.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  let f: FederationSpec;
  if (v.federation) {
    if (v.study || v.site?.length) throw new UsageError('give --federation, or --study with --site, not both');
    f = readFederation(v.federation);
  } else {
    if (!v.study || !v.site?.length) throw new UsageError(`${USAGE}\n(no federation: give --federation FILE, or --study FILE and --site NAME=FILE for each site)`);
    const { study, schema } = readBenchStudy(v.study);
    const sites = v.site.map((s) => {
      const m = /^([^=]+)=(.+)$/.exec(s);
      if (!m) throw new UsageError(`--site must be NAME=FILE, got "${s}"`);
      return { name: m[1]!, data: resolve(m[2]!) };
    });
    if (new Set(sites.map((s) => s.name)).size !== sites.length) throw new UsageError('--site: a site name is given twice');
    f = { study, schema, sites, pooledOrder: sites.map((s) => s.name) };
  }
  if (v.init !== undefined && v.init !== 'torch' && v.init !== 'setu') throw new UsageError(`--init must be "torch" or "setu", got "${v.init}"`);
  let seeds: number[];
  try {
    seeds = v.seeds !== undefined ? parseSeeds(v.seeds) : [42, 43, 44];
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const known = methodList(f);
  const siteNames = f.sites.map((s) => s.name);
  const methods = v.methods !== undefined ? parseMethodList(v.methods, known, siteNames) : known;
  const total = seeds.length * methods.length;
  let done = 0;
  const metric = metricName(f.study);
  const t0 = performance.now();
  const { runs, data, central } = runCsvBenchmark(f, {
    seeds, methods, init: (v.init as 'torch' | 'setu' | undefined) ?? 'torch',
    onRun: (r) => process.stderr.write(`[${++done}/${total}] seed ${r.seed} ${r.method.padEnd(14)} ${r.error ? `not run: ${r.error}` : `pooled-test ${metric} ${r.metric['Pooled Test']!.toFixed(4)}`}  (${r.seconds.toFixed(3)} s)\n`),
  });
  const wall = (performance.now() - t0) / 1000;
  const summary = summarizeCsv(runs, siteNames);
  const out = resolve(v.out ?? 'setu-bench-out');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'csv-bench-runs.csv'), runsCsvText(runs, siteNames));
  writeFileSync(join(out, 'csv-bench-summary.csv'), [`method,mean,sd,n,seconds_per_run,${siteNames.map((s) => `site_${s}`).join(',')},error`,
    ...summary.map((s) => [s.method, s.mean, s.sd, s.n, s.seconds, ...siteNames.map((n) => s.perSite[n]), s.error ? `"${s.error.replace(/"/g, '""')}"` : ''].join(','))].join('\n') + '\n');
  const seedText = seeds.length > 3 ? `${seeds[0]}–${seeds[seeds.length - 1]}` : seeds.join(',');
  const plotted = summary.filter((s) => s.n > 0);
  if (plotted.length) writeFileSync(join(out, 'csv-bench.svg'), dotWhiskerSvg({ title: `${f.study.name}: pooled-test ${metric}, seeds ${seedText} (mean ± sd)`, rows: plotted.map((s) => ({ label: s.method, mean: s.mean, lower: s.mean - s.sd, upper: s.mean + s.sd })), yLabel: `pooled-test ${metric}` }));
  if (v.json) process.stdout.write(JSON.stringify({ metric, sites: siteNames, central, pooled: { train: data.pooledTrain.n, test: data.pooledTest.n }, methods: summary }) + '\n');
  const text = `\n${f.study.name}: ${data.sites.length} sites (${data.sites.map((s) => `${s.name} ${s.train.n}/${s.test.n}`).join(', ')} train/test), pooled test ${data.pooledTest.n} rows; ` +
    `seeds ${seedText}; Pooled/Local: ${central.epochs} epochs, batch ${central.batchSize}, ${central.optimizer.kind} lr ${central.optimizer.lr}; ${f.study.rounds} rounds; ${total} runs in ${wall.toFixed(2)} s\n` +
    formatCsvTable(summary, siteNames, metric) + `\n\nWrote ${join(out, 'csv-bench-runs.csv')}, csv-bench-summary.csv${plotted.length ? ' and csv-bench.svg' : ''}\n`;
  (v.json ? process.stderr : process.stdout).write(text);
  return 0;
}
