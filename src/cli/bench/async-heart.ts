/**
 * `setu bench async-heart`: synchronous FedAvg rounds against asynchronous FedBuff on the heart federation with one
 * deliberately slow site, measured in the same run: the time each takes to reach the same pooled test accuracy.
 *
 *   setu bench async-heart [--rounds 10] [--versions 40] [--buffer 2] [--slow-ms 3000] [--local-steps 20] [--lr 0.05] [--json]
 *
 * Each mode gets its own coordinator process (`setu coordinator start`, SQLite) and four real heart-disease agents
 * (`setu site start`, centres 0–3, enrolled over the API), centre 3 slowed by site.yaml `testing.fitDelayMs` (a
 * test knob: it waits that long before each fit). The synchronous study runs `rounds` FedAvg rounds; the
 * asynchronous one makes `versions` versions from buffers of `buffer` updates (polynomial staleness weighting).
 * Same model, data, seed and local training. Afterwards every model version is evaluated here on the four centres'
 * test splits pooled (254 rows, each centre normalised with its own training statistics, as its agent sees it), and
 * timed from the moment the study was started to the version's commit. The target is the accuracy of the
 * synchronous study's final model; the result is each mode's time to first reach it and their ratio.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from '../args.js';
import { openStore } from '../../store/store.js';
import { decodeSafetensors } from '../../protocol/safetensors.js';
import { createModel } from '../../learning/models/registry.js';
import { loadHeartCenter } from '../../site/data/heart.js';
import { adminClient, freePort, startCoordinatorProcess, enrolHeartSites, stopAll, studyLeadClient, waitFor } from '../../testing/processes.js';

export interface AsyncHeartOptions {
  rounds: number;
  versions: number;
  buffer: number;
  slowMs: number;
  localSteps: number;
  lr: number;
  log?: (s: string) => void;
}

export interface Point {
  version: number;
  seconds: number;
  accuracy: number;
}

export interface ModeRun {
  mode: 'sync' | 'async';
  /** Start to the study's completion (its final evaluation included). */
  wallSeconds: number;
  points: Point[];
  /** First version at or above the target, and when. */
  reached: Point | null;
}

export interface AsyncHeartResult {
  options: Omit<AsyncHeartOptions, 'log'>;
  target: number;
  sync: ModeRun;
  async: ModeRun;
  /** sync time to the target / async time to the target (null when async never reached it). */
  speedup: number | null;
}

const MODEL = { kind: 'logistic' as const, inputDim: 13 };

/** Pooled test accuracy of a model: correct predictions over the four centres' test rows. */
function pooledAccuracy(weights: Uint8Array): number {
  const model = createModel(MODEL);
  const w = decodeSafetensors(weights).weights;
  let correct = 0, n = 0;
  for (let c = 0; c < 4; c++) {
    const test = loadHeartCenter(undefined, c).test;
    correct += model.evaluate(w, test).accuracy! * test.n;
    n += test.n;
  }
  return correct / n;
}

async function runMode(mode: 'sync' | 'async', o: AsyncHeartOptions): Promise<ModeRun> {
  const dir = mkdtempSync(join(tmpdir(), `setu-bench-async-${mode}-`));
  const children: ChildProcess[] = [];
  let coord: ChildProcess | undefined;
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const dataDir = join(dir, 'coordinator');
    coord = await startCoordinatorProcess(dataDir, port, join(dir, 'coordinator.log'));
    const admin = adminClient(dataDir, url);
    // hospital-3 is the slow site.
    await enrolHeartSites(admin, url, dir, 4, children, (c) => ({ pollWaitMs: 2000, ...(c === 3 ? { testing: { fitDelayMs: o.slowMs } } : {}) }), 60_000);
    const lead = await studyLeadClient(admin, url);
    const spec = {
      name: `bench-${mode}`, dataset: 'heart', model: MODEL, strategy: { name: 'FedAvg' }, seed: 42, roundTimeoutSeconds: 600,
      fit: { localSteps: o.localSteps, batchSize: 8, optimizer: { kind: 'sgd', lr: o.lr } },
      ...(mode === 'sync' ? { rounds: o.rounds } : { rounds: o.versions, async: { bufferSize: o.buffer } }),
    };
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const t0 = Date.now();
    const final = await waitFor(`the ${mode} study to finish`, async () => {
      const s = await admin.json<{ status: string; error: string | null }>('GET', `/v1/studies/${id}`);
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 30 * 60_000, 200);
    const wallSeconds = (Date.now() - t0) / 1000;
    if (final.status !== 'completed') throw new Error(`the ${mode} study ${final.status}: ${final.error}`);
    await stopAll([...children, coord]);
    const store = await openStore(join(dataDir, 'setu.db'));
    const points: Point[] = [];
    try {
      for (const v of await store.listModelVersions(id)) {
        points.push({ version: v.round, seconds: v.round === 0 ? 0 : (v.created_at - t0) / 1000, accuracy: pooledAccuracy(await store.blobs.readAll(v.digest)) });
      }
    } finally {
      await store.close();
    }
    o.log?.(`${mode}: ${points.length - 1} versions in ${wallSeconds.toFixed(1)} s, final pooled accuracy ${points.at(-1)!.accuracy.toFixed(4)}`);
    return { mode, wallSeconds, points, reached: null };
  } finally {
    await stopAll([...children, ...(coord ? [coord] : [])]);
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runAsyncHeartBench(o: AsyncHeartOptions): Promise<AsyncHeartResult> {
  const sync = await runMode('sync', o);
  const asyncRun = await runMode('async', o);
  const target = sync.points.at(-1)!.accuracy;
  // The same accuracy, up to float noise in the division.
  const first = (r: ModeRun) => r.points.find((p) => p.version > 0 && p.accuracy >= target - 1e-9) ?? null;
  sync.reached = first(sync);
  asyncRun.reached = first(asyncRun);
  const { log: _log, ...options } = o;
  return { options, target, sync, async: asyncRun, speedup: asyncRun.reached && sync.reached ? sync.reached.seconds / asyncRun.reached.seconds : null };
}

export function formatResult(r: AsyncHeartResult): string {
  const o = r.options;
  const row = (name: string, m: ModeRun, made: string) => [name, made, m.reached ? `${m.reached.seconds.toFixed(1)} s (version ${m.reached.version})` : 'not reached', `${Math.max(...m.points.map((p) => p.accuracy)).toFixed(4)}`, m.points.at(-1)!.accuracy.toFixed(4), `${m.wallSeconds.toFixed(1)} s`];
  const rows = [
    ['mode', 'versions', `time to pooled accuracy ${r.target.toFixed(4)}`, 'best accuracy', 'final accuracy', 'wall (with final evaluation)'],
    row('synchronous FedAvg', r.sync, `${o.rounds} rounds`),
    row(`asynchronous FedBuff (K=${o.buffer})`, r.async, `${o.versions} versions`),
  ];
  const widths = rows[0]!.map((_, j) => Math.max(...rows.map((x) => x[j]!.length)));
  const lines = rows.map((x) => x.map((c, j) => c.padEnd(widths[j]!)).join('  '));
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return [
    `heart federation, 4 sites, hospital-3 slowed by ${o.slowMs} ms per fit (site.yaml testing.fitDelayMs); logistic, ${o.localSteps} local steps, SGD lr ${o.lr}`,
    `target: the synchronous study's final pooled test accuracy (254 test rows)`,
    ...lines,
    r.speedup !== null ? `asynchronous reaches it ${r.speedup.toFixed(2)}× sooner` : 'asynchronous did not reach it (raise --versions)',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const o: AsyncHeartOptions = { rounds: 10, versions: 40, buffer: 2, slowMs: 3000, localSteps: 20, lr: 0.05, log: (s) => process.stderr.write(s + '\n') };
  let json = false;
  try {
    const { values: v } = parse(argv, { rounds: { type: 'string' }, versions: { type: 'string' }, buffer: { type: 'string' }, 'slow-ms': { type: 'string' }, 'local-steps': { type: 'string' }, lr: { type: 'string' }, json: { type: 'boolean' } });
    const int = (s: string | undefined, name: string, d: number, min = 1) => {
      if (s === undefined) return d;
      if (!/^[0-9]{1,7}$/.test(s) || Number(s) < min) throw new Error(`--${name} must be an integer ≥ ${min}, got "${s}"`);
      return Number(s);
    };
    o.rounds = int(v.rounds, 'rounds', o.rounds);
    o.versions = int(v.versions, 'versions', o.versions);
    o.buffer = int(v.buffer, 'buffer', o.buffer);
    if (o.buffer > 4) throw new Error(`--buffer must be at most 4 (the federation's sites), got ${o.buffer}`);
    o.slowMs = int(v['slow-ms'], 'slow-ms', o.slowMs, 0);
    o.localSteps = int(v['local-steps'], 'local-steps', o.localSteps);
    if (v.lr !== undefined) {
      const lr = Number(v.lr);
      if (!(lr > 0 && lr <= 10)) throw new Error(`--lr must be a number in (0, 10], got "${v.lr}"`);
      o.lr = lr;
    }
    json = !!v.json;
  } catch (e) {
    process.stderr.write(`setu bench async-heart: ${(e as Error).message}\nusage: setu bench async-heart [--rounds 10] [--versions 40] [--buffer 2] [--slow-ms 3000] [--local-steps 20] [--lr 0.05] [--json]\n`);
    return 2;
  }
  const r = await runAsyncHeartBench(o);
  process.stdout.write((json ? JSON.stringify(r) : formatResult(r)) + '\n');
  return 0;
}
