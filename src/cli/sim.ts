/**
 * `setu sim`: many virtual sites in one process, driven by the same Strategy and client code
 * as the federation.
 *
 *   setu sim --sites 10000 --sample 100 --rounds 20 [--partition synthetic-noniid|heart]
 *            [--strategy FedAvg] [--lr 0.05] [--local-steps 10] [--batch-size 8]
 *            [--features 20] [--seed 42] [--json]
 *
 * Memory does not grow with the number of sites: a virtual site's data is generated from its
 * id when it is sampled and dropped after its update has been added to the strategy's
 * streaming aggregator; what persists per site is only its batch-stream position (two
 * integers), so sites continue their shuffled streams across rounds as real ones do.
 * (Strategies with per-client state, SCAFFOLD, keep that state only for sites that have
 * taken part.)
 *
 * Partitions:
 *  - synthetic-noniid: logistic ground truth w*; site i has 10–100 rows with its own feature
 *    shift (covariate skew) and its own logit offset (label skew).
 *  - heart: the four Fed-Heart-Disease hospitals split further: site i belongs to hospital
 *    i mod 4 and holds 4–16 of that hospital's training rows (own normalisation), drawn
 *    without replacement from a seed derived from i. Evaluated on FLamby's pooled test set.
 */
import { resolve } from 'node:path';
import { numFlag, parse } from './args.js';
import { fileURLToPath } from 'node:url';
import { BatchStream } from '../learning/batches.js';
import { runFederation, type LocalSite } from '../learning/federation.js';
import { LogisticRegression } from '../learning/models/logistic.js';
import { createRng, deriveSeed } from '../learning/rng.js';
import { createStrategy } from '../learning/strategies/registry.js';
import type { ClientState } from '../learning/client.js';
import type { Dataset } from '../learning/types.js';
import { loadHeartPooled } from '../site/data/heart.js';

export type Partition = 'synthetic-noniid' | 'heart';

/** Generates each virtual site's data from (seed, id) and a fixed test set. */
export interface VirtualPopulation {
  features: number;
  siteData(index: number): Dataset;
  test: Dataset;
}

export function syntheticNonIid(seed: number, d: number): VirtualPopulation {
  const truth = createRng(seed, 'truth');
  const wStar = Float64Array.from({ length: d }, () => truth.normal());
  const gen = (rng: ReturnType<typeof createRng>, n: number): Dataset => {
    const shift = Float64Array.from({ length: d }, () => 0.5 * rng.normal());
    const offset = rng.normal();
    const x = new Float32Array(n * d), y = new Float32Array(n);
    for (let r = 0; r < n; r++) {
      let z = offset;
      for (let j = 0; j < d; j++) {
        const v = shift[j]! + rng.normal();
        x[r * d + j] = v;
        z += (wStar[j]! * v) / Math.sqrt(d);
      }
      y[r] = rng.next() < 1 / (1 + Math.exp(-z)) ? 1 : 0;
    }
    return { x, n, d, y };
  };
  // Test set: 100 fresh virtual sites (ids no training site has) of 20 rows each.
  const parts = Array.from({ length: 100 }, (_, j) => gen(createRng(seed, 'test-site', j), 20));
  const test = concat(parts, d);
  return {
    features: d,
    siteData: (i) => {
      const rng = createRng(seed, 'site', i);
      return gen(rng, 10 + rng.nextInt(91));
    },
    test,
  };
}

export function heartPopulation(seed: number, dataDir?: string): VirtualPopulation {
  const h = loadHeartPooled(dataDir);
  return {
    features: 13,
    siteData: (i) => {
      const src = h.centers[i % 4]!.train;
      const rng = createRng(seed, 'site', i);
      const m = Math.min(src.n, 4 + rng.nextInt(13));
      const idx = Uint32Array.from({ length: src.n }, (_, k) => k);
      for (let k = 0; k < m; k++) {
        const j = k + rng.nextInt(src.n - k);
        const t = idx[k]!;
        idx[k] = idx[j]!;
        idx[j] = t;
      }
      const x = new Float32Array(m * 13), y = new Float32Array(m);
      for (let k = 0; k < m; k++) {
        x.set(src.x.subarray(idx[k]! * 13, idx[k]! * 13 + 13), k * 13);
        y[k] = src.y[idx[k]!]!;
      }
      return { x, n: m, d: 13, y };
    },
    test: h.test,
  };
}

function concat(parts: Dataset[], d: number): Dataset {
  const n = parts.reduce((a, p) => a + p.n, 0);
  const x = new Float32Array(n * d), y = new Float32Array(n);
  let r = 0;
  for (const p of parts) {
    x.set(p.x, r * d);
    y.set(p.y, r);
    r += p.n;
  }
  return { x, n, d, y };
}

export interface SimOptions {
  sites: number;
  sample: number;
  rounds: number;
  partition: Partition;
  strategy: string;
  lr: number;
  localSteps: number;
  batchSize: number;
  features: number;
  seed: number;
  dataDir?: string;
}

export interface SimRound {
  round: number;
  sites: number;
  trainLoss: number;
  testAccuracy: number;
  testLoss: number;
  rssMiB: number;
}

export interface SimResult {
  options: SimOptions;
  rounds: SimRound[];
  final: { accuracy: number; loss: number; auc: number };
  initial: { accuracy: number; loss: number };
  seconds: number;
  /** Peak resident set size of this process (getrusage maxrss). */
  peakRssMiB: number;
  /** Distinct sites that took part at least once. */
  sitesSeen: number;
}

const pad = (n: number, w: number) => String(n).padStart(w, '0');

export function runSim(o: SimOptions, onRound?: (r: SimRound) => void): SimResult {
  for (const [k, v] of Object.entries({ sites: o.sites, sample: o.sample, rounds: o.rounds, localSteps: o.localSteps, batchSize: o.batchSize, features: o.features })) {
    if (!(Number.isInteger(v) && v >= 1)) throw new Error(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} must be a positive integer, got ${v}`);
  }
  if (o.sample > o.sites) throw new Error(`--sample (${o.sample}) cannot exceed --sites (${o.sites})`);
  const pop = o.partition === 'heart' ? heartPopulation(o.seed, o.dataDir) : syntheticNonIid(o.seed, o.features);
  const model = new LogisticRegression(pop.features);
  const strategy = createStrategy(o.strategy, {
    fraction: o.sample / o.sites, minSites: o.sample, seed: deriveSeed(o.seed, 'sampling'),
    lr: o.lr, localSteps: o.localSteps, batchSize: o.batchSize,
  });
  const w0 = model.init(createRng(o.seed, 'init'));
  const width = String(o.sites - 1).length;
  const ids = Array.from({ length: o.sites }, (_, i) => `site-${pad(i, width)}`);
  // The only per-site memory: where each site's batch stream stands (epoch, offset).
  const epoch = new Int32Array(o.sites), offset = new Int32Array(o.sites);
  const seen = new Uint8Array(o.sites);
  const clientStates = new Map<number, ClientState>();
  const indexOf = (id: string) => Number(id.slice(5));
  const initial = model.evaluate(w0, pop.test);
  const t0 = performance.now();
  const rounds: SimRound[] = [];
  const final = runFederation({
    model, strategy, initial: w0, rounds: o.rounds,
    sites: {
      ids,
      get(id: string): LocalSite {
        const i = indexOf(id);
        const data = pop.siteData(i);
        const stream = BatchStream.restore({ n: data.n, batchSize: o.batchSize, seed: deriveSeed(o.seed, 'stream', i), epoch: epoch[i]!, offset: offset[i]! });
        const cs = clientStates.get(i);
        return { id, data, stream, ...(cs ? { clientState: cs } : {}) };
      },
      release(site: LocalSite): void {
        const i = indexOf(site.id);
        const st = site.stream.state();
        epoch[i] = st.epoch;
        offset[i] = st.offset;
        seen[i] = 1;
        if (site.clientState) clientStates.set(i, site.clientState);
      },
    },
    onRound: (r) => {
      const ev = model.evaluate(r.weights, pop.test);
      const row: SimRound = {
        round: r.round, sites: r.sites, trainLoss: r.metrics['trainLoss'] ?? NaN,
        testAccuracy: ev.accuracy!, testLoss: ev.loss, rssMiB: process.memoryUsage().rss / 2 ** 20,
      };
      rounds.push(row);
      onRound?.(row);
    },
  });
  const ev = model.evaluate(final, pop.test);
  let sitesSeen = 0;
  for (let i = 0; i < o.sites; i++) sitesSeen += seen[i]!;
  return {
    options: o, rounds, sitesSeen,
    initial: { accuracy: initial.accuracy!, loss: initial.loss },
    final: { accuracy: ev.accuracy!, loss: ev.loss, auc: ev.auc! },
    seconds: (performance.now() - t0) / 1000,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  };
}

const USAGE = 'usage: setu sim --sites N --sample K --rounds R [--partition synthetic-noniid|heart] [--strategy FedAvg] [--lr 0.05] [--local-steps 10] [--batch-size 8] [--features 20] [--seed 42] [--data-dir DIR] [--json]';

export function parseSimArgs(argv: string[]): SimOptions & { json: boolean } {
  const o: SimOptions & { json: boolean } = {
    sites: 10000, sample: 100, rounds: 20, partition: 'synthetic-noniid', strategy: 'FedAvg',
    lr: 0.05, localSteps: 10, batchSize: 8, features: 20, seed: 42, json: false,
  };
  const { values: v } = parse(argv, {
    sites: { type: 'string' }, sample: { type: 'string' }, rounds: { type: 'string' }, 'local-steps': { type: 'string' },
    'batch-size': { type: 'string' }, features: { type: 'string' }, seed: { type: 'string' }, lr: { type: 'string' },
    strategy: { type: 'string' }, 'data-dir': { type: 'string' }, partition: { type: 'string' }, json: { type: 'boolean' },
  });
  o.sites = numFlag(v.sites, 'sites', true) ?? o.sites;
  o.sample = numFlag(v.sample, 'sample', true) ?? o.sample;
  o.rounds = numFlag(v.rounds, 'rounds', true) ?? o.rounds;
  o.localSteps = numFlag(v['local-steps'], 'local-steps', true) ?? o.localSteps;
  o.batchSize = numFlag(v['batch-size'], 'batch-size', true) ?? o.batchSize;
  o.features = numFlag(v.features, 'features', true) ?? o.features;
  o.seed = numFlag(v.seed, 'seed', true) ?? o.seed;
  o.lr = numFlag(v.lr, 'lr') ?? o.lr;
  if (v.strategy !== undefined) o.strategy = v.strategy;
  if (v['data-dir'] !== undefined) o.dataDir = resolve(v['data-dir']);
  o.json = !!v.json;
  if (v.partition !== undefined) {
    if (v.partition !== 'synthetic-noniid' && v.partition !== 'heart') throw new Error(`--partition must be "synthetic-noniid" or "heart", got "${v.partition}"`);
    o.partition = v.partition;
  }
  return o;
}

export async function main(argv: string[]): Promise<number> {
  let o: ReturnType<typeof parseSimArgs>;
  try {
    o = parseSimArgs(argv);
  } catch (e) {
    process.stderr.write(`setu sim: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { json, ...opts } = o;
  process.stderr.write(`setu sim: ${opts.sites} virtual sites (${opts.partition}), ${opts.sample} per round, ${opts.rounds} rounds, ${opts.strategy}\n`);
  let res: SimResult;
  try {
    res = runSim(opts, (r) => process.stderr.write(
      `round ${String(r.round).padStart(3)}  sites ${r.sites}  train loss ${r.trainLoss.toFixed(4)}  test acc ${r.testAccuracy.toFixed(4)}  test loss ${r.testLoss.toFixed(4)}  rss ${r.rssMiB.toFixed(0)} MiB\n`));
  } catch (e) {
    process.stderr.write(`setu sim: ${(e as Error).message}\n`);
    return 1;
  }
  if (json) {
    process.stdout.write(JSON.stringify(res) + '\n');
    return 0;
  }
  process.stdout.write(
    `\n${opts.sites} sites, ${opts.sample} sampled per round, ${opts.rounds} rounds (${res.sitesSeen} distinct sites took part)\n` +
      `test accuracy ${res.initial.accuracy.toFixed(4)} → ${res.final.accuracy.toFixed(4)}, test loss ${res.initial.loss.toFixed(4)} → ${res.final.loss.toFixed(4)}, AUC ${res.final.auc.toFixed(4)}\n` +
      `${res.seconds.toFixed(2)} s, peak RSS ${res.peakRssMiB.toFixed(0)} MiB\n`,
  );
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((c) => process.exit(c));
}
