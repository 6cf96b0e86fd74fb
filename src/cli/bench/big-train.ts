/**
 * `setu bench big-train`: one fit round of a large custom model with real parts only: a `setu coordinator start`
 * process (SQLite, loopback), N `setu site start` agent processes, each running the external trainer
 * examples/big-train/trainer.py (the Python SDK, NumPy) for its task.
 *
 *   setu bench big-train [--params 250000000] [--sites 4] [--kill-agent] [--kill-coordinator] [--python P] [--json]
 *
 * The study lead creates the study over the API (a custom model defined by its initial weights: P float32 values in
 * four tensors, PUT as safetensors) and starts it; each trainer adds a small deterministic delta (trainer.py), so
 * the committed global model is checked against the exact weighted mean (float64, rounded once to float32), a slice
 * at a time from the downloaded file, never the whole model in memory.
 *
 * Figures: the round's wall time (start → round 1 committed), the coordinator's peak RSS in the round (VmHWM of a
 * coordinator restarted on the same data directory after the setup, so the initial weights' upload is counted
 * apart, as setup), each agent's peak RSS (VmHWM) and each trainer's (ru_maxrss, reported by the trainer at exit),
 * against the goal 2 × model + 300 MB for the coordinator.
 *
 * `--kill-agent`: agent 0 uploads slowly (site.yaml testing.chunkDelayMs) and is SIGKILLed once the coordinator
 * holds part of its update (its log's "uploaded R of S bytes"), then started again on the same state directory: it
 * says where it resumed ("resuming the upload of S bytes at R"), so the bytes sent again are S − R, not S.
 * `--kill-coordinator`: the coordinator is SIGKILLed once a site's upload is under way (after at least one update is
 * accepted where the timing allows), the updates and partial uploads it holds are read from its store, and it is
 * started again on the same data directory: the round must commit with every site, with each update accepted before
 * the kill unchanged (same digest) and the agents resuming their partial uploads.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { parse, UsageError } from '../args.js';
import type { StudySpec } from '../../protocol/api.js';
import { encodeSafetensorsHeader, readSafetensorsHeaderOf, safetensorsHeaderBytes } from '../../protocol/safetensors.js';
import { openStore } from '../../store/store.js';
import type { HttpClient } from '../../site/http.js';
import { adminClient, freePort, runSetu, startCoordinatorProcess, studyLeadClient, waitFor } from '../../testing/processes.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const TRAINER = join(ROOT, 'examples', 'big-train', 'trainer.py');
const SDK = join(ROOT, 'python', 'setu_trainer');
const MB = 1e6;
const TENSORS = 4;
/** Values generated, written and checked this many at a time: the bench holds no whole model either. */
const SLICE = 1 << 22;

export interface BigTrainOptions {
  params: number;
  sites: number;
  killAgent?: boolean;
  killCoordinator?: boolean;
  python?: string;
  log?: (s: string) => void;
}

export interface ProcessPeak {
  name: string;
  peakRssBytes: number;
}

export interface BigTrainResult {
  params: number;
  sites: number;
  modelBytes: number;
  loadAverage: number[];
  setupMs: number;
  roundMs: number;
  setupPeakRssBytes: number;
  coordinatorPeakRssBytes: number;
  rssGoalBytes: number;
  pass: boolean;
  agents: ProcessPeak[];
  /** Each agent's release path, from its log (site/release-file.ts): file for this plain study, else memory. */
  releasePaths: string[];
  trainers: ProcessPeak[];
  exact: boolean;
  /** The committed model's largest distance from the weighted mean, in float32 ulps (≤ 0.5: rounded once). */
  maxUlp: number;
  killAgent?: { site: string; killedAtBytes: number; resumedAtBytes: number; sizeBytes: number; resentBytes: number };
  killCoordinator?: { acceptedBeforeKill: number; acceptedKept: boolean; partialBytesBeforeKill: number; resumedAt: { site: string; resumedAtBytes: number; sizeBytes: number }[]; sitesInRound: number };
}

/** The tensors of a P-parameter model: four float32 vectors, the last taking the remainder. */
function layout(params: number): { name: string; n: number }[] {
  const per = Math.floor(params / TENSORS);
  return Array.from({ length: TENSORS }, (_, i) => ({ name: `layer${i}.weight`, n: i === TENSORS - 1 ? params - per * (TENSORS - 1) : per }));
}

/** The initial weights' values, in file order, a slice at a time (xorshift32: cheap, and regenerated for the check). */
function initialValues(): (out: Float32Array) => void {
  let x = 2654435761 >>> 0;
  return (out) => {
    for (let i = 0; i < out.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = ((x >>> 0) / 4294967296 - 0.5) * 0.1;
    }
  };
}

/** Writes the initial weights file a slice at a time; returns its size. */
function writeInitialWeights(file: string, params: number): number {
  const tensors = layout(params);
  const h = encodeSafetensorsHeader(tensors.map((t) => ({ name: t.name, dtype: 'F32', shape: [t.n] })));
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, h.bytes);
    const next = initialValues();
    const buf = new Float32Array(SLICE);
    for (const t of tensors) {
      for (let done = 0; done < t.n; done += SLICE) {
        const part = buf.subarray(0, Math.min(SLICE, t.n - done));
        next(part);
        writeSync(fd, new Uint8Array(part.buffer, 0, part.byteLength));
      }
    }
  } finally {
    closeSync(fd);
  }
  return h.bytes.length + params * 4;
}

/** The site's delta at index i of a tensor (trainer.py): n · 2⁻¹² · ((i mod 7) − 3), exact in float32. */
const delta = (n: number, i: number) => n * 2 ** -12 * ((i % 7) - 3);

/**
 * Compares the committed model in `file` with the weighted mean of the sites' updates, slice by slice: the initial
 * values regenerated, each site's float32(w + delta) in float64, the mean against the stored float32.
 */
function checkModel(file: string, params: number, examples: number[]): { exact: boolean; maxUlp: number } {
  const fd = openSync(file, 'r');
  try {
    const first = Buffer.alloc(8);
    readSync(fd, first, 0, 8, 0);
    const prefix = Buffer.alloc(safetensorsHeaderBytes(first));
    readSync(fd, prefix, 0, prefix.length, 0);
    const size = statSync(file).size;
    const h = readSafetensorsHeaderOf(prefix, size);
    const total = examples.reduce((a, b) => a + b, 0);
    const next = initialValues();
    const init = new Float32Array(SLICE);
    const got = new Float32Array(SLICE);
    let maxUlp = 0;
    for (const t of layout(params)) {
      const e = h.tensors.find((x) => x.name === t.name);
      if (!e || e.dtype !== 'F32' || e.end - e.begin !== t.n * 4) throw new Error(`the committed model's tensor ${t.name} is ${e ? `${e.dtype}[${e.shape}]` : 'missing'}, not F32[${t.n}]`);
      for (let done = 0; done < t.n; done += SLICE) {
        const m = Math.min(SLICE, t.n - done);
        next(init.subarray(0, m));
        const view = new Uint8Array(got.buffer, 0, m * 4);
        for (let r = 0; r < view.length;) r += readSync(fd, view, r, view.length - r, h.dataStart + e.begin + done * 4 + r);
        for (let j = 0; j < m; j++) {
          let sum = 0;
          for (const n of examples) sum += n * Math.fround(init[j]! + delta(n, done + j));
          const want = sum / total;
          const a = Math.abs(want);
          const ulp = a === 0 ? 1.4e-45 : 2 ** (Math.floor(Math.log2(a)) - 23);
          maxUlp = Math.max(maxUlp, Math.abs(got[j]! - want) / ulp);
        }
      }
    }
    return { exact: maxUlp <= 0.5 + 1e-9, maxUlp };
  } finally {
    closeSync(fd);
  }
}

/** Lines a child writes to stderr (the agent's log), each offered to every watcher until one matches. */
function lineWatcher(child: ChildProcess) {
  const watchers = new Set<(line: string) => boolean>();
  let rest = '';
  child.stderr!.on('data', (d: Buffer) => {
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop()!;
    for (const line of lines) for (const w of [...watchers]) if (w(line)) watchers.delete(w);
  });
  return {
    /** Resolves with the first line matching `re` for which `accept` holds (or rejects when the child exits first). */
    next(re: RegExp, accept: (m: RegExpExecArray) => boolean = () => true): Promise<RegExpExecArray> {
      return new Promise((resolve, reject) => {
        const onExit = (code: number | null, sig: string | null) => reject(new Error(`the process exited (${sig ?? code}) before logging ${re}`));
        child.once('exit', onExit);
        watchers.add((line) => {
          const m = re.exec(line);
          if (!m || !accept(m)) return false;
          child.off('exit', onExit);
          resolve(m);
          return true;
        });
      });
    },
  };
}

const UPLOADED = /uploaded (\d+) of (\d+) bytes/;
const RESUMED = /resuming the upload of (\d+) bytes at (\d+)/;

/** VmHWM (peak resident set) of a live process, in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

interface Site {
  name: string;
  dir: string;
  config: string;
  examples: number;
  child: ChildProcess;
  lines: ReturnType<typeof lineWatcher>;
  /** Peak RSS of its earlier processes (an agent killed and started again). */
  earlierPeak: number;
}

function siteConfig(s: { dir: string }, url: string, python: string, chunkDelayMs: number | undefined): string {
  const file = join(s.dir, 'site.yaml');
  writeFileSync(file, YAML.stringify({
    coordinator: url, stateDir: 'state', pollWaitMs: 2000, datasets: { d: { format: 'csv', path: 'data.csv' } },
    trainer: { kind: 'external', command: [python, TRAINER], env: { PYTHONPATH: SDK, BIG_TRAIN_RSS_FILE: join(s.dir, 'trainer-rss.jsonl') }, timeoutSeconds: 7200 },
    ...(chunkDelayMs ? { testing: { chunkDelayMs } } : {}),
  }));
  return file;
}

function startAgent(s: Pick<Site, 'config' | 'dir'>, token?: string): { child: ChildProcess; lines: ReturnType<typeof lineWatcher> } {
  const child = runSetu(['site', 'start', '--config', s.config, ...(token ? ['--token', token] : [])], join(s.dir, 'agent.log'));
  return { child, lines: lineWatcher(child) };
}

export async function runBigTrain(o: BigTrainOptions): Promise<BigTrainResult> {
  const log = o.log ?? (() => {});
  const python = o.python ?? '/usr/bin/python3';
  const modelBytes = o.params * 4;
  const dir = mkdtempSync(join(tmpdir(), 'setu-bench-big-train-'));
  const dataDir = join(dir, 'coordinator');
  const sites: Site[] = [];
  let coord: ChildProcess | undefined;
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    // Room for the initial weights in one body and every site's update in flight and in the round; a killed run
    // uploads in many small chunks, so that a kill lands mid-upload.
    const bodyLimit = modelBytes + 1024 * 1024;
    const killing = o.killAgent || o.killCoordinator;
    const chunk = Math.max(1024 * 1024, Math.ceil(modelBytes / 16));
    const startCoord = () => startCoordinatorProcess(dataDir, port, join(dir, 'coordinator.log'), {
      args: ['--log-level', 'warn', '--body-limit', String(bodyLimit), '--max-upload-bytes', String(o.sites * bodyLimit), '--max-round-bytes', String(o.sites * bodyLimit), ...(killing ? ['--upload-chunk-bytes', String(chunk)] : [])],
    });
    coord = await startCoord();
    const admin = adminClient(dataDir, url);
    const t0 = performance.now();
    for (let k = 0; k < o.sites; k++) {
      const name = `big-site-${k}`;
      const sdir = join(dir, name);
      mkdirSync(sdir, { recursive: true });
      const examples = 100 + 10 * k;
      writeFileSync(join(sdir, 'data.csv'), 'x\n' + Array.from({ length: examples }, (_, i) => `${i}\n`).join(''));
      // A killed run's victims upload slowly (a chunk per 200 ms): the kill then lands mid-upload, not after it.
      const slow = (o.killAgent && k === 0) || (o.killCoordinator && k === 0) ? 200 : undefined;
      const config = siteConfig({ dir: sdir }, url, python, slow);
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: name });
      sites.push({ name, dir: sdir, config, examples, earlierPeak: 0, ...startAgent({ config, dir: sdir }, inv.token) });
    }
    await waitFor(`${o.sites} sites with a declared external trainer`, async () =>
      (await admin.json<{ trainer?: { kind: string } | null }[]>('GET', '/v1/sites')).filter((s) => s.trainer?.kind === 'external').length === o.sites ? true : undefined, 120_000);
    const lead: HttpClient = await studyLeadClient(admin, url);
    const spec = {
      name: 'big-train', dataset: 'd', model: { kind: 'custom', name: 'big-net' }, strategy: { name: 'FedAvg' }, rounds: 1,
      fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, roundTimeoutSeconds: 7200,
    } as StudySpec;
    const study = (await lead.json<{ id: string }>('POST', '/v1/studies', spec)).id;
    const weightsFile = join(dir, 'init.safetensors');
    const fileBytes = writeInitialWeights(weightsFile, o.params);
    log(`setup: ${o.sites} agents enrolled, study ${study}; uploading the ${(fileBytes / MB).toFixed(1)} MB initial weights`);
    await lead.request('PUT', `/v1/studies/${study}/initial-weights`, { type: 'application/octet-stream', data: readFileSync(weightsFile) }, 3_600_000);
    rmSync(weightsFile);
    const setupPeakRssBytes = peakRss(coord.pid!);
    const setupMs = performance.now() - t0;
    // The round's coordinator is a fresh process on the same data directory: its peak is the round's alone.
    await stop(coord);
    coord = await startCoord();
    let coordPeak = 0;

    const r0 = performance.now();
    await lead.json('POST', `/v1/studies/${study}/start`, {});
    const result: Partial<BigTrainResult> = {};
    if (o.killAgent) {
      const v = sites[0]!;
      const m = await v.lines.next(UPLOADED, (x) => Number(x[1]) > 0 && Number(x[1]) < Number(x[2]));
      v.earlierPeak = peakRss(v.child.pid!);
      await killHard(v.child);
      const killedAt = Number(m[1]);
      log(`killed ${v.name} (SIGKILL) with ${killedAt} of ${m[2]} bytes held by the coordinator; starting it again`);
      v.config = siteConfig(v, url, python, undefined);
      Object.assign(v, startAgent(v));
      const r = await v.lines.next(RESUMED);
      const size = Number(r[1]);
      const at = Number(r[2]);
      result.killAgent = { site: v.name, killedAtBytes: killedAt, resumedAtBytes: at, sizeBytes: size, resentBytes: size - at };
    }
    if (o.killCoordinator) {
      const v = sites[0]!;
      // Every agent's last acknowledged byte count before the kill: none may be lost.
      const held = new Map<string, [number, number]>();
      for (const s of sites) void s.lines.next(UPLOADED, (x) => (held.set(s.name, [Number(x[1]), Number(x[2])]), false)).catch(() => {});
      // Kill once the slow site is mid-upload and, if the others finish meanwhile, after their updates went in.
      await v.lines.next(UPLOADED, (x) => Number(x[1]) > 0 && Number(x[1]) < Number(x[2]));
      const others = sites.slice(1).map((s) => s.lines.next(UPLOADED, (x) => x[1] === x[2]).then(() => true, () => false));
      await Promise.race([Promise.all(others), v.lines.next(UPLOADED, (x) => Number(x[2]) - Number(x[1]) <= 4 * chunk)]);
      await v.lines.next(UPLOADED); // one more chunk: an update whose last chunk landed has had 200 ms to complete
      coordPeak = Math.max(coordPeak, peakRss(coord.pid!));
      const heldBefore = new Map(held);
      await killHard(coord);
      const store = await openStore(join(dataDir, 'setu.db'));
      const before = await store.listUpdates(study, 1);
      await store.close();
      log(`killed the coordinator (SIGKILL) with ${before.length} update(s) accepted and ${[...heldBefore].map(([s, [b, n]]) => `${s} ${b} of ${n} bytes`).join(', ')} received; starting it again`);
      // A site mid-upload goes on where the coordinator's answer left it: announced again ("resuming … at R") or its
      // retried chunk accepted at that offset (the count after it is at most a chunk further).
      const resumes = sites.filter((s) => { const h = heldBefore.get(s.name); return h && h[0] < h[1]; }).map((s) => Promise.race([
        s.lines.next(RESUMED).then((r) => ({ site: s.name, resumedAtBytes: Number(r[2]), sizeBytes: Number(r[1]) })),
        // Chunks start at multiples of the chunk size: the one just held started at the last multiple below its count.
        s.lines.next(UPLOADED).then((r) => ({ site: s.name, resumedAtBytes: Math.floor((Number(r[1]) - 1) / chunk) * chunk, sizeBytes: Number(r[2]) })),
      ]));
      coord = await startCoord();
      const resumedAt = await Promise.all(resumes);
      await waitFor('round 1 committed after the restart', async () => {
        const d = await lead.json<{ status: string; error: string | null; rounds: { round: number; status: string }[] }>('GET', `/v1/studies/${study}`);
        if (d.status === 'failed') throw new Error(`the study failed: ${d.error}`);
        return d.rounds.some((r) => r.round === 1 && r.status === 'committed') ? true : undefined;
      }, 3_600_000, 100);
      const store2 = await openStore(join(dataDir, 'setu.db'));
      const after = await store2.listUpdates(study, 1);
      await store2.close();
      const kept = before.every((b) => after.some((a) => a.task_id === b.task_id && a.digest === b.digest));
      result.killCoordinator = { acceptedBeforeKill: before.length, acceptedKept: kept, partialBytesBeforeKill: heldBefore.get(v.name)?.[0] ?? 0, resumedAt, sitesInRound: after.length };
    }
    await waitFor('round 1 committed', async () => {
      const d = await lead.json<{ status: string; error: string | null; rounds: { round: number; status: string }[] }>('GET', `/v1/studies/${study}`);
      if (d.status === 'failed') throw new Error(`the study failed: ${d.error}`);
      return d.rounds.some((r) => r.round === 1 && r.status === 'committed') ? true : undefined;
    }, 3_600_000, 100);
    const roundMs = performance.now() - r0;
    coordPeak = Math.max(coordPeak, peakRss(coord.pid!));
    const agents = sites.map((s) => ({ name: s.name, peakRssBytes: Math.max(s.earlierPeak, peakRss(s.child.pid!)) }));
    // The committed model, downloaded to a file and checked a slice at a time.
    const modelFile = join(dir, 'global.safetensors');
    await lead.download(`/v1/studies/${study}/model`, modelFile, 3_600_000);
    const check = checkModel(modelFile, o.params, sites.map((s) => s.examples));
    rmSync(modelFile);
    const trainers = sites.map((s) => {
      const f = join(s.dir, 'trainer-rss.jsonl');
      const fits = existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { kind: string; maxrssKiB: number }).filter((x) => x.kind === 'fit') : [];
      return { name: s.name, peakRssBytes: Math.max(0, ...fits.map((x) => x.maxrssKiB * 1024)) };
    });
    const releasePaths = sites.map((s) => /release path: (\w+)/.exec(readFileSync(join(s.dir, 'agent.log'), 'utf8'))?.[1] ?? 'not logged');
    const rssGoalBytes = 2 * modelBytes + 300 * MB;
    return {
      params: o.params, sites: o.sites, modelBytes, loadAverage: loadavg().map((x) => Number(x.toFixed(2))), setupMs, roundMs, setupPeakRssBytes,
      coordinatorPeakRssBytes: coordPeak, rssGoalBytes, pass: coordPeak <= rssGoalBytes && check.exact, agents, releasePaths, trainers, exact: check.exact, maxUlp: check.maxUlp, ...result,
    };
  } finally {
    await Promise.all(sites.map((s) => stop(s.child)));
    if (coord) await stop(coord);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The figures as a table for people. */
export function table(r: BigTrainResult): string {
  const mb = (x: number) => `${(x / MB).toFixed(0)} MB`;
  const rows: [string, string, string][] = [
    ['figure', 'this run', 'goal / note'],
    ['round wall time', `${(r.roundMs / 1000).toFixed(1)} s`, `setup (agents, study, initial weights) ${(r.setupMs / 1000).toFixed(1)} s`],
    ['coordinator peak RSS (round)', mb(r.coordinatorPeakRssBytes), `≤ 2 × model + 300 MB = ${mb(r.rssGoalBytes)}: ${r.coordinatorPeakRssBytes <= r.rssGoalBytes ? 'pass' : 'FAIL'} (${(r.coordinatorPeakRssBytes / r.rssGoalBytes).toFixed(2)} of it)`],
    ['coordinator peak RSS (setup)', mb(r.setupPeakRssBytes), 'the PUT of the initial weights (another process)'],
    ...r.agents.map((a): [string, string, string] => [`agent ${a.name} peak RSS`, mb(a.peakRssBytes), `${(a.peakRssBytes / r.modelBytes).toFixed(2)} × model`]),
    ['agents\' release path', [...new Set(r.releasePaths)].join(', '), 'file: model, output and release stay on disk (no DP, SecAgg+, transport dtype or tensor rules)'],
    ...r.trainers.map((a): [string, string, string] => [`trainer ${a.name} peak RSS`, mb(a.peakRssBytes), `${(a.peakRssBytes / r.modelBytes).toFixed(2)} × model`]),
    ['committed model', r.exact ? 'exact weighted mean' : `OFF by ${r.maxUlp} ulp`, `largest distance ${r.maxUlp.toFixed(2)} float32 ulp (≤ 0.5: rounded once)`],
  ];
  if (r.killAgent) {
    const k = r.killAgent;
    rows.push(['agent killed mid-upload', `${k.site} at ${k.killedAtBytes} of ${k.sizeBytes} bytes`, `resumed at byte ${k.resumedAtBytes} of ${k.sizeBytes}: ${k.resentBytes} bytes re-sent (${((100 * k.resentBytes) / k.sizeBytes).toFixed(0)} %), not ${k.sizeBytes}`]);
  }
  if (r.killCoordinator) {
    const k = r.killCoordinator;
    rows.push(['coordinator killed mid-round', `${k.acceptedBeforeKill} update(s) accepted, ${k.partialBytesBeforeKill} bytes of a partial upload held`, `after the restart: ${k.acceptedKept ? 'every accepted update kept (same digest)' : 'an accepted update was LOST'}; ${k.resumedAt.map((x) => `${x.site} resumed at byte ${x.resumedAtBytes} of ${x.sizeBytes}`).join(', ') || 'no partial upload to resume'}; ${k.sitesInRound} sites in the round`]);
  }
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((x) => x[i]!.length)));
  const head = `big-train: FedAvg, ${r.sites} site agents with external trainers (Python SDK) × ${r.params.toLocaleString('en')} float32 parameters (${mb(r.modelBytes)} model); load average ${r.loadAverage.join(' ')}; ${r.pass ? 'PASS' : 'FAIL'}\n`;
  return head + rows.map((x) => x.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

const USAGE = 'usage: setu bench big-train [--params 250000000] [--sites 4] [--kill-agent] [--kill-coordinator] [--python /usr/bin/python3] [--json]';

export async function main(argv: string[]): Promise<number> {
  let o: BigTrainOptions;
  let json = false;
  try {
    const { values: v } = parse(argv, { params: { type: 'string' }, sites: { type: 'string' }, 'kill-agent': { type: 'boolean' }, 'kill-coordinator': { type: 'boolean' }, python: { type: 'string' }, json: { type: 'boolean' } });
    const int = (s: string | undefined, name: string, d: number, min: number, max: number) => {
      if (s === undefined) return d;
      const n = Number(s.replaceAll(',', '').replaceAll('_', ''));
      if (!/^[0-9][0-9,_]*$/.test(s) || n < min || n > max) throw new UsageError(`--${name} must be an integer from ${min.toLocaleString('en')} to ${max.toLocaleString('en')}, got "${s}"`);
      return n;
    };
    o = { params: int(v.params, 'params', 250_000_000, 1000, 500_000_000), sites: int(v.sites, 'sites', 4, 1, 64), ...(v['kill-agent'] ? { killAgent: true } : {}), ...(v['kill-coordinator'] ? { killCoordinator: true } : {}), ...(v.python ? { python: v.python } : {}) };
    // A killed upload needs a chunked one: over the agent's single-body limit (site/upload.ts, 8 MiB).
    if ((o.killAgent || o.killCoordinator) && o.params * 4 <= 8 * 1024 * 1024) throw new UsageError(`--kill-agent and --kill-coordinator need a chunked upload: --params over 2,097,152 (got ${o.params.toLocaleString('en')})`);
    json = !!v.json;
  } catch (e) {
    process.stderr.write(`setu bench big-train: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  let r: BigTrainResult;
  try {
    r = await runBigTrain({ ...o, log: (s) => process.stderr.write(s + '\n') });
  } catch (e) {
    process.stderr.write(`setu bench big-train: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(json ? JSON.stringify(r) + '\n' : table(r));
  return r.pass ? 0 : 1;
}
