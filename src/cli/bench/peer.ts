/**
 * `setu bench peer`: the full Fed-Heart-Disease table in Setu against the independent
 * PyTorch peer (../shared/peer/run_peer.py), same machine, same run, same methods and seeds:
 * Pooled, Local0–3, FedAvg, FedProx, FedAdam, FedYogi, FedAdagrad, Scaffold.
 *
 *   setu bench peer [--seeds 42,43,44] [--peer ../shared/peer/run_peer.py] [--python /usr/bin/python3] [--json]
 *
 * Two ratios (goal ≥ 50×):
 *  - process: wall time of `python3 run_peer.py …` against `node …/flamby-heart.js …`
 *    (each includes interpreter start, imports and data loading);
 *  - compute: the peer's own "total wall time" (training + evaluation, imports excluded)
 *    against Setu's in-process time for the same runs.
 * Without torch/sklearn/pandas it prints how to install them and skips (exit 0).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSeeds, runHeartBenchmark, summarize } from './flamby-heart.js';
import { parse } from '../args.js';

const HERE = dirname(fileURLToPath(import.meta.url));
/** Repository root from src/cli/bench or dist/cli/bench. */
const ROOT = resolve(HERE, '..', '..', '..');
const PEER_METHODS = ['Pooled', 'Local0', 'Local1', 'Local2', 'Local3', 'FedAvg', 'FedProx', 'FedAdam', 'FedYogi', 'FedAdagrad', 'Scaffold'];
export const INSTALL_HINT = 'apt-get install -y python3-torch python3-sklearn python3-pandas';

export interface PeerBenchResult {
  seeds: number[];
  methods: string[];
  peerProcessSeconds: number;
  peerComputeSeconds: number;
  setuProcessSeconds: number;
  setuComputeSeconds: number;
  processRatio: number;
  computeRatio: number;
  /** Pooled-test mean per method, for a glance at agreement (seeds differ in meaning). */
  setuMeans: Record<string, number>;
}

export async function main(argv: string[]): Promise<number> {
  let seeds = [42, 43, 44], peer = resolve(ROOT, '..', 'shared', 'peer', 'run_peer.py'), python = '/usr/bin/python3', json = false;
  try {
    const { values: v } = parse(argv, { seeds: { type: 'string' }, peer: { type: 'string' }, python: { type: 'string' }, json: { type: 'boolean' } });
    if (v.seeds !== undefined) seeds = parseSeeds(v.seeds);
    if (v.peer !== undefined) peer = resolve(v.peer);
    if (v.python !== undefined) python = v.python;
    json = !!v.json;
  } catch (e) {
    process.stderr.write(`setu bench peer: ${(e as Error).message}\nusage: setu bench peer [--seeds 42,43,44] [--peer PATH] [--python PATH] [--json]\n`);
    return 2;
  }
  if (!existsSync(peer)) {
    process.stderr.write(`setu bench peer: peer script not found at ${peer} (use --peer PATH); skipped\n`);
    return 0;
  }
  const probe = spawnSync(python, ['-c', 'import torch, sklearn, pandas'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    process.stdout.write(`The PyTorch peer needs torch, scikit-learn and pandas for ${python}. Install them with:\n  ${INSTALL_HINT}\nSkipped.\n`);
    return 0;
  }
  const heartDir = join(ROOT, 'data', 'fed-heart-disease');
  const seedArg = seeds.join(',');

  process.stderr.write(`peer: ${python} ${peer} --dataset heart --methods all --seeds ${seedArg} …\n`);
  let t = performance.now();
  const py = spawnSync(python, [peer, '--dataset', 'heart', '--methods', 'all', '--seeds', seedArg, '--heart-dir', heartDir, '--data-dir', heartDir], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const peerProcessSeconds = (performance.now() - t) / 1000;
  if (py.status !== 0) {
    process.stderr.write(`setu bench peer: the peer failed (exit ${py.status}):\n${py.stderr || py.stdout}\n`);
    return 1;
  }
  const m = /total wall time ([\d.]+)s/.exec(py.stdout);
  if (!m) {
    process.stderr.write('setu bench peer: could not find "total wall time" in the peer output\n');
    return 1;
  }
  const peerComputeSeconds = Number(m[1]);

  process.stderr.write(`setu: node flamby-heart.js --seeds ${seedArg} (same methods, separate process) …\n`);
  const script = join(HERE, 'flamby-heart.js');
  t = performance.now();
  const node = spawnSync(process.execPath, [script, '--seeds', seedArg, '--methods', PEER_METHODS.join(','), '--json', '--out', mkdtempSync(join(tmpdir(), 'setu-peer-'))], { encoding: 'utf8' });
  const setuProcessSeconds = (performance.now() - t) / 1000;
  if (node.status !== 0) {
    process.stderr.write(`setu bench peer: the Setu run failed:\n${node.stderr}\n`);
    return 1;
  }
  // Compute time in this process: the same runs, data loading included.
  t = performance.now();
  const runs = runHeartBenchmark({ seeds, methods: PEER_METHODS });
  const setuComputeSeconds = (performance.now() - t) / 1000;
  const setuMeans = Object.fromEntries(Object.entries(summarize(runs)).map(([k, v]) => [k, v.mean]));

  const r: PeerBenchResult = {
    seeds, methods: PEER_METHODS, peerProcessSeconds, peerComputeSeconds, setuProcessSeconds, setuComputeSeconds,
    processRatio: peerProcessSeconds / setuProcessSeconds, computeRatio: peerComputeSeconds / setuComputeSeconds, setuMeans,
  };
  if (json) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  }
  process.stdout.write(
    `Fed-Heart-Disease, ${PEER_METHODS.length} methods × ${seeds.length} seeds (${seedArg})\n` +
      `                       PyTorch peer      Setu       ratio\n` +
      `whole process          ${peerProcessSeconds.toFixed(2).padStart(8)} s  ${setuProcessSeconds.toFixed(3).padStart(8)} s  ${r.processRatio.toFixed(1).padStart(6)}×\n` +
      `training + evaluation  ${peerComputeSeconds.toFixed(2).padStart(8)} s  ${setuComputeSeconds.toFixed(3).padStart(8)} s  ${r.computeRatio.toFixed(1).padStart(6)}×\n` +
      `goal ≥ 50×: ${r.processRatio >= 50 ? 'met' : 'not met'} (process), ${r.computeRatio >= 50 ? 'met' : 'not met'} (compute)\n`,
  );
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((c) => process.exit(c));
}
