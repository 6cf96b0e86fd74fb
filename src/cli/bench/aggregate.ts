/**
 * `setu bench aggregate`: FedAvg aggregation of K updates of N floats (default 8 × 10M)
 * against a plain Float32Array copy of the same bytes (K `set` calls of N floats), in the
 * same process, interleaved, repeated; medians are compared. The goal is FedAvg at no less
 * than a quarter of copy speed (ratio = copy time / FedAvg time ≥ 0.25).
 *
 *   setu bench aggregate [--floats 10000000] [--updates 8] [--repeats 7] [--json]
 *
 * Both FedAvg paths are timed: `aggregateFit` (all updates in memory, one pass) and the
 * streaming `begin/add/finish` the simulator uses (one pass per update).
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numFlag, parse } from '../args.js';
import type { Weights } from '../../protocol/tensors.js';
import { createRng } from '../../learning/rng.js';
import { createStrategy } from '../../learning/strategies/registry.js';
import type { FitResult } from '../../learning/strategy.js';

export interface AggregateBenchResult {
  floats: number;
  updates: number;
  repeats: number;
  copyMs: number;
  fedavgMs: number;
  streamingMs: number;
  /** copyMs / fedavgMs: fraction of copy speed (goal ≥ 0.25). */
  ratio: number;
  streamingRatio: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

export function runAggregateBench(opts: { floats: number; updates: number; repeats: number; onRep?: (i: number, c: number, f: number, s: number) => void }): AggregateBenchResult {
  const { floats: N, updates: K, repeats } = opts;
  const rng = createRng(1);
  const results: FitResult[] = [];
  for (let k = 0; k < K; k++) {
    const d = new Float32Array(N);
    for (let i = 0; i < N; i += 1024) d.fill(rng.normal(), i, Math.min(N, i + 1024)); // cheap to generate, not constant
    results.push({ siteId: `site${k}`, weights: { w: { shape: [N], data: d } }, numExamples: 100 + 17 * k });
  }
  const global: Weights = { w: { shape: [N], data: new Float32Array(N) } };
  const dst = new Float32Array(N);
  const copyMs: number[] = [], fedMs: number[] = [], strMs: number[] = [];
  let sink = 0;
  for (let r = 0; r < repeats + 1; r++) {
    let t = performance.now();
    for (const res of results) dst.set(res.weights['w']!.data);
    const c = performance.now() - t;
    sink += dst[N - 1]!;

    t = performance.now();
    const out = createStrategy('FedAvg').aggregateFit(1, global, results);
    const f = performance.now() - t;
    sink += out.weights['w']!.data[N - 1]!;

    t = performance.now();
    const agg = createStrategy('FedAvg').begin(1, global);
    for (const res of results) agg.add(res);
    const out2 = agg.finish();
    const s = performance.now() - t;
    sink += out2.weights['w']!.data[N - 1]!;

    if (r === 0) continue; // warm-up: JIT and page faults
    copyMs.push(c);
    fedMs.push(f);
    strMs.push(s);
    opts.onRep?.(r, c, f, s);
  }
  if (Number.isNaN(sink)) throw new Error('unreachable: keeps the results alive');
  const cm = median(copyMs), fm = median(fedMs), sm = median(strMs);
  return { floats: N, updates: K, repeats, copyMs: cm, fedavgMs: fm, streamingMs: sm, ratio: cm / fm, streamingRatio: cm / sm };
}

export async function main(argv: string[]): Promise<number> {
  let floats = 10_000_000, updates = 8, repeats = 7, json = false;
  try {
    const { values: v } = parse(argv, { floats: { type: 'string' }, updates: { type: 'string' }, repeats: { type: 'string' }, json: { type: 'boolean' } });
    const positive = (x: string | undefined, name: string, dflt: number) => {
      const n = numFlag(x, name, true) ?? dflt;
      if (n < 1) throw new Error(`--${name} needs an integer >= 1`);
      return n;
    };
    floats = positive(v.floats, 'floats', floats);
    updates = positive(v.updates, 'updates', updates);
    repeats = positive(v.repeats, 'repeats', repeats);
    json = !!v.json;
  } catch (e) {
    process.stderr.write(`setu bench aggregate: ${(e as Error).message}\nusage: setu bench aggregate [--floats N] [--updates K] [--repeats R] [--json]\n`);
    return 2;
  }
  process.stderr.write(`FedAvg of ${updates} updates × ${floats.toLocaleString('en')} floats vs copying the same bytes; ${repeats} repeats (+1 warm-up)\n`);
  const r = runAggregateBench({
    floats, updates, repeats,
    onRep: (i, c, f, s) => process.stderr.write(`  rep ${i}: copy ${c.toFixed(1)} ms, FedAvg ${f.toFixed(1)} ms, streaming ${s.toFixed(1)} ms\n`),
  });
  if (json) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  }
  const gb = (ms: number) => ((floats * updates * 4) / 1e9 / (ms / 1000)).toFixed(2);
  process.stdout.write(
    `copy (Float32Array.set)     median ${r.copyMs.toFixed(1)} ms  (${gb(r.copyMs)} GB/s of update bytes)\n` +
      `FedAvg aggregateFit         median ${r.fedavgMs.toFixed(1)} ms  (${gb(r.fedavgMs)} GB/s)  ratio ${r.ratio.toFixed(3)} of copy speed  (goal ≥ 0.25: ${r.ratio >= 0.25 ? 'met' : 'NOT met'})\n` +
      `FedAvg streaming add/finish median ${r.streamingMs.toFixed(1)} ms  (${gb(r.streamingMs)} GB/s)  ratio ${r.streamingRatio.toFixed(3)}\n`,
  );
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((c) => process.exit(c));
}
