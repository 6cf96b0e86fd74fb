/**
 * `setu bench flamby-heart`: FLamby's Fed-Heart-Disease table, reproduced in one process
 * with the same Strategy, model and client code as the federation (no HTTP).
 *
 *   setu bench flamby-heart [--seeds 42,43,44 | 42-61] [--methods all|Pooled,Local,fed,FedAvg,…]
 *                           [--json] [--out DIR] [--data-dir DIR]
 *
 * Protocol (../shared/peer/README.md): logistic regression on 13 features; Pooled and
 * Local k: Adam lr 1e-3, batch 4, 50 epochs; federated: 15 rounds × 100 SGD steps, batch 4,
 * clients 0..3 in turn, FLamby's hyper-parameters; every method of a seed starts from the
 * same initial model; accuracy on the "Pooled Test" set (254 rows, pooled normalisation)
 * and on each centre's test set (its own normalisation).
 *
 * By default each seed starts from the very model torch draws for that seed (see
 * torch-init.ts); the batch shuffles are Setu's own, so compare distributions over seeds (the
 * peer's 20-seed mean ± sd), not single runs. `--init setu` draws the initial models from
 * Setu's generator instead.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Weights } from '../../protocol/tensors.js';
import { BatchStream } from '../../learning/batches.js';
import { fit, trainCentral } from '../../learning/client.js';
import type { Cyclic } from '../../learning/strategies/cyclic.js';
import { runFederation, type LocalSite } from '../../learning/federation.js';
import { LogisticRegression } from '../../learning/models/logistic.js';
import { createRng, deriveSeed } from '../../learning/rng.js';
import { createStrategy } from '../../learning/strategies/registry.js';
import { torchLinearInit } from '../../learning/torch-init.js';
import type { Dataset } from '../../learning/types.js';
import { defaultHeartDir, loadHeartPooled, type HeartPooledData } from '../../site/data/heart.js';
import { parse } from '../args.js';

export const HEART_FED_METHODS = ['FedAvg', 'FedProx', 'FedAdam', 'FedYogi', 'FedAdagrad', 'Scaffold', 'Cyclic', 'CyclicFLamby'] as const;
export const HEART_ALL_METHODS = ['Pooled', 'Local0', 'Local1', 'Local2', 'Local3', ...HEART_FED_METHODS];

/** FLamby's config_heart_disease.json, translated to createStrategy parameters. */
export const HEART_STRATEGIES: Record<string, { strategy: string; params: Record<string, unknown> }> = {
  FedAvg: { strategy: 'FedAvg', params: { lr: 0.001 } },
  FedProx: { strategy: 'FedProx', params: { lr: 0.001, mu: 0.01 } },
  FedAdam: { strategy: 'FedAdam', params: { lr: 0.01, serverLr: 0.01, beta1: 0.9, beta2: 0.999, tau: 1e-8 } },
  FedYogi: { strategy: 'FedYogi', params: { lr: 0.003162, serverLr: 0.01, beta1: 0.9, beta2: 0.999, tau: 1e-8 } },
  FedAdagrad: { strategy: 'FedAdagrad', params: { lr: 0.003162, serverLr: 0.316228, beta1: 0.9, beta2: 0.999, tau: 1e-8 } },
  Scaffold: { strategy: 'SCAFFOLD', params: { lr: 0.001, serverLr: 1 } },
  Cyclic: { strategy: 'Cyclic', params: { lr: 0.01, deterministic: false } },
};

export const HEART_PROTOCOL = {
  batchSize: 4,
  pooledLr: 1e-3,
  pooledEpochs: 50,
  localSteps: 100,
  /** (486 // 4 // 4) * 50 // 100 */
  rounds: Math.floor((Math.floor(Math.floor(486 / 4) / 4) * 50) / 100),
};

export interface HeartRun {
  method: string;
  seed: number;
  /** 'Pooled Test' and 'client_test_0'..'client_test_3' → accuracy. */
  accuracy: Record<string, number>;
  seconds: number;
}

/** Accepts "42,43,44", "42-61" or a mix ("42-44,50"). */
export function parseSeeds(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(-?\d+)-(\d+)$/.exec(part);
    if (m) {
      const a = Number(m[1]), b = Number(m[2]);
      if (b < a || b - a > 100000) throw new Error(`--seeds: bad range "${part}"`);
      for (let i = a; i <= b; i++) out.push(i);
    } else if (/^-?\d+$/.test(part)) out.push(Number(part));
    else throw new Error(`--seeds: "${part}" is not an integer or a range like 42-61`);
  }
  if (out.length === 0) throw new Error('--seeds: no seeds given');
  return [...new Set(out)];
}

/** Expands groups (all, pooled, local, fed) and checks names (case-insensitive). */
export function parseMethods(s: string): string[] {
  const out: string[] = [];
  for (const raw of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = raw.toLowerCase();
    if (m === 'all') out.push(...HEART_ALL_METHODS);
    else if (m === 'local') out.push('Local0', 'Local1', 'Local2', 'Local3');
    else if (m === 'fed') out.push(...HEART_FED_METHODS);
    else {
      const name = HEART_ALL_METHODS.find((n) => n.toLowerCase() === m || (m === 'scaffold' && n === 'Scaffold'));
      if (!name) throw new Error(`--methods: unknown method "${raw}" (known: all, local, fed, ${HEART_ALL_METHODS.join(', ')})`);
      out.push(name);
    }
  }
  if (out.length === 0) throw new Error('--methods: no methods given');
  return [...new Set(out)];
}

function evaluateAll(model: LogisticRegression, w: Weights, data: HeartPooledData): Record<string, number> {
  const acc: Record<string, number> = { 'Pooled Test': model.evaluate(w, data.test).accuracy! };
  data.centers.forEach((c, k) => (acc[`client_test_${k}`] = model.evaluate(w, c.test).accuracy!));
  return acc;
}

/** Runs one method for one seed from the seed's shared initial model. */
export function runHeartMethod(method: string, seed: number, data: HeartPooledData, init: Weights): HeartRun {
  const model = new LogisticRegression(13);
  const t0 = performance.now();
  let w: Weights;
  if (method === 'Pooled' || /^Local[0-3]$/.test(method)) {
    const train: Dataset = method === 'Pooled' ? data.train : data.centers[Number(method.slice(5))]!.train;
    w = trainCentral({
      model, weights: init, data: train, epochs: HEART_PROTOCOL.pooledEpochs, batchSize: HEART_PROTOCOL.batchSize,
      // Like FLamby, every baseline re-seeds identically before training: same seed, same shuffles.
      optimizer: { kind: 'adam', lr: HEART_PROTOCOL.pooledLr }, seed: deriveSeed(seed, 'central'),
    }).weights;
  } else if (method === 'CyclicFLamby') {
    w = cyclicAsFlambyRanIt(seed, data, init);
  } else {
    const spec = HEART_STRATEGIES[method];
    if (!spec) throw new Error(`unknown heart method "${method}"`);
    const strategy = createStrategy(spec.strategy, {
      ...spec.params, localSteps: HEART_PROTOCOL.localSteps, batchSize: HEART_PROTOCOL.batchSize, seed: deriveSeed(seed, 'server'),
    });
    const sites = heartSites(seed, data);
    w = runFederation({ model, strategy, initial: init, rounds: HEART_PROTOCOL.rounds, sites });
  }
  const accuracy = evaluateAll(model, w, data);
  return { method, seed, accuracy, seconds: (performance.now() - t0) / 1000 };
}

/**
 * Each client's persistent stream of shuffled batches, seeded per (seed, client) and the same
 * for every federated method of a seed, as FLamby's re-seeding before each strategy makes them.
 */
function heartSites(seed: number, data: HeartPooledData): LocalSite[] {
  return data.centers.map((c, k) => ({
    id: `client${k}`, data: c.train, stream: BatchStream.create(c.train.n, HEART_PROTOCOL.batchSize, deriveSeed(seed, 'client', k)),
  }));
}

/**
 * "Cyclic" as FLamby's benchmark actually ran it (flamby/strategies/cyclic.py with
 * strategies/utils.py): every client trains its OWN deep copy of the initial model when its
 * turn in the shuffled cycle comes, no weights pass between clients, and the benchmark
 * evaluates `run()[0]`, client 0's model. Its published Cyclic figures therefore measure
 * client 0 trained alone with SGD (lr 0.01) during its turns. Setu's real Cyclic strategy
 * (weight transfer) is the "Cyclic" row; this row exists only to compare with FLamby's number.
 */
function cyclicAsFlambyRanIt(seed: number, data: HeartPooledData, init: Weights): Weights {
  const spec = HEART_STRATEGIES['Cyclic']!;
  const cyclic = createStrategy('Cyclic', { ...spec.params, localSteps: HEART_PROTOCOL.localSteps, batchSize: HEART_PROTOCOL.batchSize, seed: deriveSeed(seed, 'server') }) as Cyclic;
  const sites = heartSites(seed, data);
  const ids = sites.map((s) => s.id);
  const model = new LogisticRegression(13);
  let w = init;
  for (let round = 1; round <= HEART_PROTOCOL.rounds; round++) {
    if (cyclic.siteFor(round, ids) !== 'client0') continue;
    const [task] = cyclic.configureFit(round, w, ids);
    w = fit({ model, weights: w, data: sites[0]!.data, config: task!.config, stream: sites[0]!.stream }).weights;
  }
  return w;
}

export type HeartInit = 'torch' | 'setu';

/**
 * The initial model of a seed. 'torch' (default): exactly the model
 * `torch.manual_seed(seed); nn.Linear(13, 1)` draws, as the peer and FLamby start from, so
 * seed s here starts where seed s started there (FedAvg's result depends mostly on it).
 * 'setu': the same U(±1/√13) law from Setu's own generator (seed, 'init').
 */
export function heartInitialWeights(seed: number, init: HeartInit = 'torch'): Weights {
  return init === 'torch' ? torchLinearInit(seed, 13, 1) : new LogisticRegression(13).init(createRng(seed, 'init'));
}

/** Every (seed, method) run; the initial model of a seed is shared by all its methods. */
export function runHeartBenchmark(opts: { seeds: number[]; methods: string[]; dataDir?: string; init?: HeartInit; onRun?: (r: HeartRun) => void }): HeartRun[] {
  const data = loadHeartPooled(opts.dataDir);
  const runs: HeartRun[] = [];
  for (const seed of opts.seeds) {
    const init = heartInitialWeights(seed, opts.init);
    for (const method of opts.methods) {
      const r = runHeartMethod(method, seed, data, init);
      runs.push(r);
      opts.onRun?.(r);
    }
  }
  return runs;
}

export interface MethodSummary {
  mean: number;
  sd: number;
  n: number;
  /** Mean wall seconds per run. */
  seconds: number;
}

export function meanSd(xs: number[]): { mean: number; sd: number } {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, sd };
}

export function summarize(runs: HeartRun[], test = 'Pooled Test'): Record<string, MethodSummary> {
  const out: Record<string, MethodSummary> = {};
  for (const m of [...new Set(runs.map((r) => r.method))]) {
    const rs = runs.filter((r) => r.method === m);
    const { mean, sd } = meanSd(rs.map((r) => r.accuracy[test]!));
    out[m] = { mean, sd, n: rs.length, seconds: rs.reduce((a, r) => a + r.seconds, 0) / rs.length };
  }
  return out;
}

/** Reference figures bundled in data/fed-heart-disease/reference. */
export interface HeartReference {
  /** Peer (PyTorch) 20-seed pooled-test mean ± sd, seeds 42–61. */
  peer: Record<string, { mean: number; sd: number; n: number }>;
  /** FLamby's published pooled-test mean over its seeds (42–46). */
  flamby: Record<string, { mean: number; n: number }>;
}

function readCsv(path: string): Record<string, string>[] {
  const lines = readFileSync(path, 'utf8').split(/\r?\n/).filter((l) => l.trim() !== '');
  const head = lines[0]!.split(',');
  return lines.slice(1).map((l) => {
    const cells = l.split(',');
    return Object.fromEntries(head.map((h, i) => [h, cells[i] ?? '']));
  });
}

/** FLamby names → ours. */
function canonicalMethod(m: string): string {
  return m.replace('Pooled Training', 'Pooled').replace(/^Local (\d)$/, 'Local$1').replace(/100$/, '');
}

/** FLamby's published "Cyclic" is what our CyclicFLamby row emulates; show it on both rows. */
function withAliases(r: HeartReference['flamby']): HeartReference['flamby'] {
  if (r['Cyclic']) r['CyclicFLamby'] = r['Cyclic'];
  return r;
}

export function loadHeartReference(dataDir = defaultHeartDir()): HeartReference {
  const peerRows = readCsv(join(dataDir, 'reference', 'results_heart_20seeds.csv')).filter((r) => r['test'] === 'Pooled Test');
  const peer: HeartReference['peer'] = {};
  for (const m of [...new Set(peerRows.map((r) => r['method']!))]) {
    const xs = peerRows.filter((r) => r['method'] === m).map((r) => Number(r['metric']));
    peer[canonicalMethod(m)] = { ...meanSd(xs), n: xs.length };
  }
  const pubRows = readCsv(join(dataDir, 'reference', 'flamby_published_heart.csv')).filter((r) => r['test'] === 'Pooled Test');
  const flamby: HeartReference['flamby'] = {};
  for (const m of [...new Set(pubRows.map((r) => r['method']!))]) {
    const xs = pubRows.filter((r) => r['method'] === m).map((r) => Number(r['metric']));
    flamby[canonicalMethod(m)] = { mean: meanSd(xs).mean, n: xs.length };
  }
  return { peer, flamby: withAliases(flamby) };
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const lpad = (s: string, n: number) => (s.length >= n ? s : ' '.repeat(n - s.length) + s);

/** The readable table: Setu beside the peer's 20-seed band and FLamby's published mean. */
export function formatTable(summary: Record<string, MethodSummary>, ref: HeartReference, perCentre: Record<string, number[]>): string {
  const rows = [['method', 'Setu mean ± sd (n)', 'peer 20-seed mean ± sd', 'in band', 'FLamby published', 'per-centre test acc (0/1/2/3)', 's/run']];
  for (const [m, s] of Object.entries(summary)) {
    const p = ref.peer[m], f = ref.flamby[m];
    const inBand = p ? (Math.abs(s.mean - p.mean) <= p.sd ? 'yes' : 'NO') : '–';
    rows.push([
      m,
      `${s.mean.toFixed(4)} ± ${s.sd.toFixed(4)} (${s.n})`,
      p ? `${p.mean.toFixed(4)} ± ${p.sd.toFixed(4)}` : '–',
      inBand,
      f ? `${f.mean.toFixed(4)} (${f.n} seeds)` : '–',
      (perCentre[m] ?? []).map((v) => v.toFixed(3)).join(' / '),
      s.seconds.toFixed(3),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 || i === 5 ? pad(c, widths[i]!) : lpad(c, widths[i]!))).join('  ');
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Hand-written SVG: per-method pooled-test accuracy (mean ± sd) beside the peer's band. */
export function renderSvg(summary: Record<string, MethodSummary>, ref: HeartReference, title: string): string {
  const methods = Object.keys(summary);
  const W = 80 + methods.length * 70, H = 380, top = 50, bottom = 300, left = 60;
  const lo = 0.3, hi = 0.9;
  const yOf = (v: number) => bottom - ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * (bottom - top);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  for (let t = lo; t <= hi + 1e-9; t += 0.1) {
    const y = yOf(t);
    parts.push(`<line x1="${left}" x2="${W - 10}" y1="${y}" y2="${y}" stroke="#ddd"/>`, `<text x="${left - 6}" y="${y + 4}" text-anchor="end">${t.toFixed(1)}</text>`);
  }
  parts.push(`<text transform="translate(16 ${(top + bottom) / 2}) rotate(-90)" text-anchor="middle">pooled-test accuracy</text>`);
  methods.forEach((m, i) => {
    const cx = left + 40 + i * 70, s = summary[m]!, p = ref.peer[m], f = ref.flamby[m];
    if (p) parts.push(`<rect x="${cx - 22}" y="${yOf(p.mean + p.sd)}" width="44" height="${Math.max(1, yOf(p.mean - p.sd) - yOf(p.mean + p.sd))}" fill="#f4c27a" opacity="0.6"><title>peer ${p.mean.toFixed(4)} ± ${p.sd.toFixed(4)}</title></rect>`,
      `<line x1="${cx - 22}" x2="${cx + 22}" y1="${yOf(p.mean)}" y2="${yOf(p.mean)}" stroke="#c47a00" stroke-width="2"/>`);
    if (f) parts.push(`<path d="M ${cx + 14} ${yOf(f.mean) - 5} l 5 5 l -5 5 l -5 -5 z" fill="#7a3db8"><title>FLamby published ${f.mean.toFixed(4)}</title></path>`);
    parts.push(
      `<line x1="${cx}" x2="${cx}" y1="${yOf(s.mean + s.sd)}" y2="${yOf(s.mean - s.sd)}" stroke="#1f4e9c" stroke-width="2"/>`,
      `<line x1="${cx - 6}" x2="${cx + 6}" y1="${yOf(s.mean + s.sd)}" y2="${yOf(s.mean + s.sd)}" stroke="#1f4e9c" stroke-width="2"/>`,
      `<line x1="${cx - 6}" x2="${cx + 6}" y1="${yOf(s.mean - s.sd)}" y2="${yOf(s.mean - s.sd)}" stroke="#1f4e9c" stroke-width="2"/>`,
      `<circle cx="${cx}" cy="${yOf(s.mean)}" r="4" fill="#1f4e9c"><title>Setu ${s.mean.toFixed(4)} ± ${s.sd.toFixed(4)} (n=${s.n})</title></circle>`,
      `<text x="${cx}" y="${bottom + 16}" text-anchor="end" transform="rotate(-35 ${cx} ${bottom + 16})">${esc(m)}</text>`,
    );
  });
  const ly = H - 22;
  parts.push(
    `<circle cx="${left}" cy="${ly}" r="4" fill="#1f4e9c"/><text x="${left + 8}" y="${ly + 4}">Setu mean ± sd</text>`,
    `<rect x="${left + 110}" y="${ly - 6}" width="22" height="12" fill="#f4c27a" opacity="0.6"/><text x="${left + 138}" y="${ly + 4}">PyTorch peer, 20 seeds (mean ± sd)</text>`,
    `<path d="M ${left + 345} ${ly - 5} l 5 5 l -5 5 l -5 -5 z" fill="#7a3db8"/><text x="${left + 355}" y="${ly + 4}">FLamby published</text>`,
    '</svg>',
  );
  return parts.join('\n') + '\n';
}

export function runsCsv(runs: HeartRun[]): string {
  const lines = ['method,seed,test,accuracy,seconds'];
  for (const r of runs) for (const [t, a] of Object.entries(r.accuracy)) lines.push(`${r.method},${r.seed},${t},${a},${r.seconds.toFixed(6)}`);
  return lines.join('\n') + '\n';
}

interface Args {
  seeds: number[];
  methods: string[];
  json: boolean;
  out: string;
  init: HeartInit;
  dataDir?: string;
}

function parseArgs(argv: string[]): Args {
  const { values: v } = parse(argv, {
    seeds: { type: 'string' }, methods: { type: 'string' }, json: { type: 'boolean' }, out: { type: 'string' },
    'data-dir': { type: 'string' }, init: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  });
  if (v.help) throw new HelpRequested();
  if (v.init !== undefined && v.init !== 'torch' && v.init !== 'setu') throw new Error(`--init must be "torch" or "setu", got "${v.init}"`);
  return {
    seeds: v.seeds !== undefined ? parseSeeds(v.seeds) : [42, 43, 44],
    methods: v.methods !== undefined ? parseMethods(v.methods) : HEART_ALL_METHODS,
    json: !!v.json,
    out: v.out ?? 'setu-bench-out',
    init: (v.init as HeartInit | undefined) ?? 'torch',
    ...(v['data-dir'] !== undefined ? { dataDir: v['data-dir'] } : {}),
  };
}

class HelpRequested extends Error {}

const USAGE = `usage: setu bench flamby-heart [--seeds 42,43,44|42-61] [--methods all|local|fed|Pooled,Local0,…,FedAvg,FedProx,FedAdam,FedYogi,FedAdagrad,Scaffold,Cyclic] [--init torch|setu] [--json] [--out DIR] [--data-dir DIR]`;

export async function main(argv: string[]): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (e instanceof HelpRequested) {
      process.stdout.write(USAGE + '\n');
      return 0;
    }
    process.stderr.write(`setu bench flamby-heart: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const dataDir = args.dataDir ? resolve(args.dataDir) : undefined;
  const total = args.seeds.length * args.methods.length;
  let done = 0;
  const t0 = performance.now();
  const runs = runHeartBenchmark({
    seeds: args.seeds, methods: args.methods, init: args.init, ...(dataDir ? { dataDir } : {}),
    onRun: (r) => {
      done++;
      process.stderr.write(`[${done}/${total}] seed ${r.seed} ${pad(r.method, 10)} pooled-test ${r.accuracy['Pooled Test']!.toFixed(4)}  (${r.seconds.toFixed(3)} s)\n`);
    },
  });
  const wall = (performance.now() - t0) / 1000;
  const summary = summarize(runs);
  if (args.json) {
    process.stdout.write(JSON.stringify({ methods: summary }) + '\n');
  }
  const ref = loadHeartReference(dataDir);
  const perCentre: Record<string, number[]> = {};
  for (const m of Object.keys(summary)) perCentre[m] = [0, 1, 2, 3].map((k) => summarize(runs.filter((r) => r.method === m), `client_test_${k}`)[m]!.mean);
  const out = resolve(args.out);
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'flamby-heart-runs.csv'), runsCsv(runs));
  writeFileSync(join(out, 'flamby-heart-summary.csv'), ['method,mean,sd,n,seconds_per_run,peer_mean,peer_sd,flamby_published_mean',
    ...Object.entries(summary).map(([m, s]) => [m, s.mean, s.sd, s.n, s.seconds, ref.peer[m]?.mean ?? '', ref.peer[m]?.sd ?? '', ref.flamby[m]?.mean ?? ''].join(','))].join('\n') + '\n');
  const seedText = args.seeds.length > 3 ? `${args.seeds[0]}–${args.seeds[args.seeds.length - 1]}` : args.seeds.join(',');
  writeFileSync(join(out, 'flamby-heart.svg'), renderSvg(summary, ref, `Fed-Heart-Disease, pooled-test accuracy, seeds ${seedText} (n=${args.seeds.length})`));
  const report = `\nFed-Heart-Disease (FLamby protocol), pooled-test accuracy over seeds ${seedText}, ${args.init === 'torch' ? "torch's initial model per seed" : "Setu's own initial models"}; ${total} runs in ${wall.toFixed(2)} s\n` +
    formatTable(summary, ref, perCentre) +
    `\n\n"in band": |Setu mean − peer mean| ≤ peer sd. Batch shuffles are Setu's own, not torch's: compare distributions.\n` +
    `Wrote ${join(out, 'flamby-heart-runs.csv')}, flamby-heart-summary.csv and flamby-heart.svg\n`;
  (args.json ? process.stderr : process.stdout).write(report);
  return 0;
}

/** Run directly: node dist/cli/bench/flamby-heart.js … */
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((c) => process.exit(c));
}

