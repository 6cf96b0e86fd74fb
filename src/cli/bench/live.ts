/**
 * `setu bench live`: a coordinator (or several on one PostgreSQL, behind one address) under N real site agents.
 *
 *   setu bench live [--sites 100] [--procs 4] [--coordinators 1] [--store sqlite|postgres] [--model logistic|mlp]
 *                   [--params P] [--rounds 3] [--prepared] [--agent-state memory|disk] [--max-upload-bytes B] [--cpu-prof DIR] [--json]
 *
 * Real parts only: `setu coordinator start` processes, the agents of site/agent.ts (many per worker process,
 * live-agents.ts), each enrolled with its own invite and signing every request, over HTTP on loopback; with two
 * coordinators, a round-robin TCP balancer (testing/balancer.ts) is the one address. A study lead runs one FedAvg
 * study over every site. With `--prepared` an agent uploads a prepared update (a valid one: the study's tensors,
 * its real example count, the agent's metadata) instead of training, so the coordinator is what is measured.
 *
 * Per round (from the coordinator's own round timestamps, and its /metrics and /proc read when its event stream announces
 * each commit, testing/study-events.ts): wall time, requests/s and per site (with the most frequent routes), coordinator CPU (cores, from /proc/<pid>/stat) and peak RSS (sampled every 100 ms), event-loop
 * delay (prom-client's nodejs_eventloop_lag_* gauges, reset at each scrape: the round's own), answers that were not
 * 2xx by status, SQL statements by kind (setu_store_query_duration_seconds) and per site, and whether the committed model is
 * the exact weighted mean of the round's prepared updates (recomputed here in float64 from their seeds; exact = at
 * most half a float32 ulp from it, i.e. the float64 mean rounded once). Before the agents start, the yardsticks of
 * the same run on the same bytes (one update's upload body): memcpy and sha256 throughput, and a bare HTTP POST of
 * those bytes over loopback to a plain node:http server in its own process; each round's figures are printed as
 * ratios to them.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from '../args.js';
import { HttpClient } from '../../site/http.js';
import { parseSiteConfig } from '../../site/config.js';
import { declaredCohort } from '../../site/datasets.js';
import { initialWeights } from '../../coordinator/engine.js';
import { decodeSafetensors, encodeSafetensors } from '../../protocol/safetensors.js';
import { RESULT_META_KEY, type StudySpec } from '../../protocol/api.js';
import type { Weights } from '../../protocol/tensors.js';
import { createTempDatabase, PG_BASE } from '../../testing/pg.js';
import { adminClient, freePort, startCoordinatorProcess, studyLeadClient } from '../../testing/processes.js';
import { balancer } from '../../testing/balancer.js';
import { preparedUpdate, type WorkerCommand, type WorkerReport, type WorkerSite } from './live-agents.js';
import { followStudy } from '../../testing/study-events.js';

/** Where --agent-state memory puts the agents' state directories. */
const SHM = '/dev/shm';
const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'live-agents.js');
/** Heart data has 13 features: a logistic model has 14 parameters, an MLP 15 per hidden unit plus 1. */
const FEATURES = 13;

export interface LiveOptions {
  sites: number;
  procs: number;
  coordinators: number;
  store: 'sqlite' | 'postgres';
  pg: string;
  model: 'logistic' | 'mlp';
  /** MLP only: about this many parameters (one hidden layer). */
  params?: number;
  rounds: number;
  prepared: boolean;
  /** Write each coordinator's and agent process's V8 CPU profile (node --cpu-prof) here. */
  cpuProfDir?: string;
  /**
   * Where the agents keep their state: `memory` (tmpfs, /dev/shm, the default) or `disk` (beside the coordinator's).
   * A thousand sites have a thousand disks; here they would share the coordinator's one, and each agent process's
   * synchronous fsyncs, queued behind everyone's, held its 250 sites' event loop for 80% of a round (--cpu-prof).
   * The coordinator's store is on the disk either way: it is what is measured.
   */
  agentState: 'memory' | 'disk';
  /** The coordinators' --max-upload-bytes (bytes of uploads received at once): what bounds their memory for updates in flight. */
  maxUploadBytes?: number;
  timeoutS: number;
  log?: (s: string) => void;
}

export interface Yardsticks {
  bytes: number;
  memcpyGBps: number;
  sha256GBps: number;
  /** Bare HTTP POSTs of the same bytes over loopback, as many at once as the agents' uploads (up to 64). */
  postPerS: number;
  postConcurrency: number;
}

export interface RoundFigures {
  round: number;
  kind: string;
  wallS: number;
  requests: number;
  requestsPerS: number;
  /** Requests per enrolled site in the round: what one tiny site costs the coordinator in round trips. */
  requestsPerSite: number;
  /** SQL statements per enrolled site in the round. */
  statementsPerSite: number;
  /** The most frequent requests: ['METHOD route', count]. */
  topRequests: [string, number][];
  /** Coordinator CPU-seconds over the round's wall time (all coordinators together). */
  cpuCores: number;
  cpuS: number;
  /** The agents' worker processes' CPU over the same time: they share the machine with the coordinator. */
  agentsCpuCores: number;
  /** PostgreSQL's CPU over the same time (0 on SQLite, or a server elsewhere). */
  postgresCpuCores: number;
  /** This process's: the runner, and the balancer in front of several coordinators. */
  runnerCpuCores: number;
  /** The whole machine's busy cores over the same time, against `cores` it has: 1 is every core busy. */
  machineBusyCores: number;
  peakRssMiB: number;
  loopMaxMs: number;
  loopP99Ms: number;
  /** Answers that were not 2xx, by status. */
  errors: Record<string, number>;
  statements: number;
  /** The most frequent statement kinds: [kind, count, seconds]. */
  topStatements: [string, number, number][];
  /** Fit rounds with prepared updates: the committed model's largest distance from the weighted mean, in float32 ulps. */
  maxUlp?: number;
  exact?: boolean;
  /** Updates accepted per second, from the first to the last of the round (their audit entries' timestamps). */
  intakePerS?: number;
  /** That intake against bare POSTs of the same bytes per second (1 = as fast as a bare POST). */
  intakeVsPost?: number;
  /** Coordinator CPU per update against sha256 of the update's bytes. */
  cpuPerUpdateVsSha256?: number;
}

export interface LiveBench {
  sites: number;
  coordinators: number;
  store: string;
  model: StudySpec['model'];
  params: number;
  prepared: boolean;
  yardsticks: Yardsticks;
  rounds: RoundFigures[];
  /** 1-minute load average at the start and at the end (the machine is shared). */
  loadavg: [number, number];
  /** The machine's cores (what machineBusyCores is out of). */
  cores: number;
  /** Where the agents' state was (LiveOptions.agentState, after the fallback to disk where there is no tmpfs). */
  agentState: 'memory' | 'disk';
  coordinatorPeakRssMiB: number;
  /** Why the study did not complete within --timeout-s (the rounds it committed are reported all the same). */
  unfinished?: string;
}

/** Result requests answered 2xx, as the coordinators' request counters hold them. */
function resultsAnswered(metrics: Map<string, number>): number {
  let n = 0;
  for (const [key, v] of metrics) {
    if (key.startsWith('setu_http_requests_total{') && /route="\/v1\/agent\/(tasks\/:id\/result|uploads\/:id\/complete)"/.test(key) && /status="2\d\d"/.test(key)) n += v;
  }
  return n;
}

const parseMetrics = (text: string): Map<string, number> => {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
};

/** A process's /proc/<pid>/stat: its command name, and its fields from the third on (state, ppid, …), 0-based. */
function procStat(pid: number | string): { comm: string; f: string[] } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), f: stat.slice(stat.lastIndexOf(')') + 2).split(' ') };
}

function cpuSecondsOf(pid: number): number {
  const { f } = procStat(pid);
  // utime and stime are fields 14 and 15 of the file, in clock ticks (100 per second on Linux).
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** CPU-seconds the machine spent busy (every core; /proc/stat's first line, less idle and iowait). */
function machineBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - f[3]! - f[4]!) / 100;
}

/**
 * CPU-seconds of the PostgreSQL servers on this machine, exited backends included: each postmaster's own time and
 * its reaped children's (cutime, cstime), plus its live children's. 0 where none runs here (a remote server).
 */
function postgresCpuSeconds(): number {
  const procs = new Map<number, { comm: string; ppid: number; f: string[] }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const { comm, f } = procStat(d);
      procs.set(Number(d), { comm, ppid: Number(f[1]), f });
    } catch {
      // gone meanwhile
    }
  }
  let ticks = 0;
  for (const p of procs.values()) {
    if (p.comm !== 'postgres') continue;
    // utime and stime; for a postmaster also cutime and cstime (fields 16 and 17: its reaped children's).
    ticks += Number(p.f[11]) + Number(p.f[12]);
    if (procs.get(p.ppid)?.comm !== 'postgres') ticks += Number(p.f[13]) + Number(p.f[14]);
  }
  return ticks / 100;
}

/** This process's CPU-seconds: the runner, and the balancer in front of several coordinators (testing/balancer.ts). */
const runnerCpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

function rssMiBOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** memcpy and sha256 of `bytes`, repeated for about 200 ms each. */
function memoryYardsticks(bytes: Uint8Array): { memcpyGBps: number; sha256GBps: number } {
  const src = Buffer.from(bytes), dst = Buffer.allocUnsafe(src.length);
  const rate = (fn: () => void) => {
    let n = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < 200) {
      fn();
      n++;
    }
    return (n * src.length) / ((performance.now() - t0) / 1000) / 1e9;
  };
  return { memcpyGBps: rate(() => src.copy(dst)), sha256GBps: rate(() => createHash('sha256').update(src).digest()) };
}

/** Bare POSTs of `body` to a sink on `port`, `concurrency` at a time, for about a second (at least 2 per lane). */
async function postRate(port: number, body: Uint8Array, concurrency: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const post = () =>
    new Promise<void>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/sink', agent, headers: { 'content-type': 'application/octet-stream', 'content-length': body.length } }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`sink answered ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
  let n = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let k = 0; k < 2 || performance.now() - t0 < 1000; k++) {
      await post();
      n++;
    }
  }));
  const rate = n / ((performance.now() - t0) / 1000);
  agent.destroy();
  return rate;
}

function forkWorker(cpuProfDir?: string): { child: ChildProcess; next: () => Promise<WorkerReport> } {
  const child = fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...(cpuProfDir ? { execArgv: ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] } : {}) });
  const inbox: WorkerReport[] = [];
  const waiting: ((r: WorkerReport) => void)[] = [];
  child.on('message', (r: WorkerReport) => (waiting.length ? waiting.shift()!(r) : inbox.push(r)));
  child.once('exit', (code) => {
    for (const w of waiting.splice(0)) w({ kind: 'failed', message: `worker exited with ${code}` });
  });
  return { child, next: () => (inbox.length ? Promise.resolve(inbox.shift()!) : new Promise((r) => waiting.push(r))) };
}

async function expectReport<K extends WorkerReport['kind']>(w: ReturnType<typeof forkWorker>, kind: K): Promise<Extract<WorkerReport, { kind: K }>> {
  const r = await w.next();
  if (r.kind === 'failed') throw new Error(`bench worker failed: ${r.message}`);
  if (r.kind !== kind) throw new Error(`bench worker said ${r.kind}, expected ${kind}`);
  return r as Extract<WorkerReport, { kind: K }>;
}

const exited = (c: ChildProcess) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r())));

/** The study's model: logistic over the 13 heart features, or a one-hidden-layer MLP of about `params` parameters. */
export function modelOf(o: Pick<LiveOptions, 'model' | 'params'>): StudySpec['model'] {
  if (o.model === 'logistic') return { kind: 'logistic', inputDim: FEATURES };
  const hidden = Math.max(1, Math.round(((o.params ?? 10_000) - 1) / (FEATURES + 2)));
  return { kind: 'mlp', inputDim: FEATURES, hidden: [hidden], activation: 'relu' };
}

/** Σ n_i u_i / Σ n_i of the prepared updates of every site for `round`, in float64. */
function expectedMean(like: Weights, examples: number[], round: number): Map<string, Float64Array> {
  const acc = new Map(Object.keys(like).map((k) => [k, new Float64Array(like[k]!.data.length)]));
  let total = 0;
  for (const [i, n] of examples.entries()) {
    const u = preparedUpdate(like, i, round);
    for (const [k, a] of acc) {
      const d = u[k]!.data;
      for (let j = 0; j < a.length; j++) a[j] = a[j]! + n * d[j]!;
    }
    total += n;
  }
  for (const a of acc.values()) for (let j = 0; j < a.length; j++) a[j] = a[j]! / total;
  return acc;
}

/** The largest distance of `got` from `want`, in float32 ulps of `want`. */
function maxUlps(got: Weights, want: Map<string, Float64Array>): number {
  let worst = 0;
  for (const [k, w] of want) {
    const g = got[k]?.data;
    if (!g || g.length !== w.length) return Infinity;
    for (let j = 0; j < w.length; j++) {
      const x = Math.abs(w[j]!);
      const ulp = x === 0 ? 1.4e-45 : 2 ** (Math.floor(Math.log2(x)) - 23);
      worst = Math.max(worst, Math.abs(g[j]! - w[j]!) / ulp);
    }
  }
  return worst;
}

interface Coordinator {
  url: string;
  dataDir: string;
  child: ChildProcess;
}

export async function runLiveBench(o: LiveOptions): Promise<LiveBench> {
  const log = o.log ?? (() => {});
  if (o.coordinators > 1 && o.store !== 'postgres') throw new Error('--coordinators above 1 needs --store postgres (they share one PostgreSQL)');
  const root = mkdtempSync(join(tmpdir(), 'setu-bench-live-'));
  const agentState = o.agentState === 'memory' && existsSync(SHM) ? 'memory' : 'disk';
  const agentRoot = agentState === 'memory' ? mkdtempSync(join(SHM, 'setu-bench-live-agents-')) : join(root, 'sites');
  const pgDb = o.store === 'postgres' ? await createTempDatabase(o.pg) : undefined;
  const coordinators: Coordinator[] = [];
  const workers: ReturnType<typeof forkWorker>[] = [];
  let lb: Awaited<ReturnType<typeof balancer>> | undefined;
  const load0 = loadavg()[0]!;
  try {
    const model = modelOf(o);
    const like = initialWeights({ model, seed: 42 } as StudySpec);
    const params = Object.values(like).reduce((a, t) => a + t.data.length, 0);
    // Yardsticks first, on one update's upload body, before anything else runs.
    const sample = encodeSafetensors(preparedUpdate(like, 0, 1), { [RESULT_META_KEY]: JSON.stringify({ taskId: 'x'.repeat(40), numExamples: 100, trainMetrics: { loss: 0.5 }, evalMetrics: { loss: 0.5 }, evalExamples: 50, durationMs: 1 }) });
    const sink = forkWorker();
    workers.push(sink);
    sink.child.send({ kind: 'sink' } satisfies WorkerCommand);
    const { port: sinkPort } = await expectReport(sink, 'sink');
    const concurrency = Math.min(o.sites, 64);
    const yardsticks: Yardsticks = { bytes: sample.length, ...memoryYardsticks(sample), postPerS: await postRate(sinkPort, sample, concurrency), postConcurrency: concurrency };
    sink.child.send({ kind: 'stop' } satisfies WorkerCommand);
    log(`yardsticks on ${sample.length} bytes: memcpy ${yardsticks.memcpyGBps.toFixed(2)} GB/s, sha256 ${yardsticks.sha256GBps.toFixed(2)} GB/s, bare POST ${yardsticks.postPerS.toFixed(0)}/s (${concurrency} at once)`);

    // The coordinators: the second gets the first one's coordinator.key (one audit chain), nothing else.
    for (let k = 0; k < o.coordinators; k++) {
      const dataDir = join(root, `coord-${k}`);
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      if (k > 0) copyFileSync(join(coordinators[0]!.dataDir, 'coordinator.key'), join(dataDir, 'coordinator.key'));
      const port = await freePort();
      const child = await startCoordinatorProcess(dataDir, port, join(root, `coord-${k}.log`), {
        ...(pgDb ? { db: pgDb.url } : {}), args: ['--log-level', 'warn', ...(o.maxUploadBytes ? ['--max-upload-bytes', String(o.maxUploadBytes)] : [])], ...(o.cpuProfDir ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] } : {}),
      });
      coordinators.push({ url: `http://127.0.0.1:${port}`, dataDir, child });
    }
    if (coordinators.length > 1) lb = await balancer(coordinators.map((c) => Number(new URL(c.url).port)));
    const url = lb ? `http://127.0.0.1:${lb.port}` : coordinators[0]!.url;
    const admin = adminClient(coordinators[0]!.dataDir, url, 60_000);

    // Invites, then the agents: `procs` worker processes, the sites dealt round-robin, heart centres 0-3 in turn.
    const sites: WorkerSite[] = [];
    const names = Array.from({ length: o.sites }, (_, i) => `site-${String(i).padStart(5, '0')}`);
    for (let i = 0; i < o.sites; i += 16) {
      const batch = names.slice(i, i + 16);
      const tokens = await Promise.all(batch.map((siteName) => admin.json<{ token: string }>('POST', '/v1/invites', { siteName, ttlHours: 4 })));
      for (const [j, t] of tokens.entries()) sites.push({ index: i + j, name: batch[j]!, token: t.token, center: (i + j) % 4, dir: join(agentRoot, batch[j]!) });
    }
    const t0 = performance.now();
    for (let p = 0; p < Math.min(o.procs, o.sites); p++) {
      const w = forkWorker(o.cpuProfDir);
      workers.push(w);
      w.child.send({ kind: 'agents', url, prepared: o.prepared, pollWaitMs: 20_000, sites: sites.filter((s) => s.index % o.procs === p), logFile: join(root, `agents-${p}.log`) } satisfies WorkerCommand);
    }
    for (const w of workers.slice(1)) await expectReport(w, 'enrolled');
    log(`${o.sites} sites enrolled in ${((performance.now() - t0) / 1000).toFixed(1)} s (${Math.min(o.procs, o.sites)} agent processes)`);

    const lead = await studyLeadClient(admin, url);
    const spec = {
      name: 'bench-live', dataset: 'heart', model, strategy: { name: 'FedAvg' }, rounds: o.rounds, seed: 42,
      fit: { localSteps: 1, batchSize: 16, optimizer: { kind: 'sgd', lr: 0.01 } }, roundTimeoutSeconds: 3600,
    };
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);

    // Per-round sampling: CPU and /metrics at each commit, RSS every 100 ms.
    const pids = coordinators.map((c) => c.child.pid!);
    const scrape = async () => {
      const all = new Map<string, number>();
      for (const c of coordinators) {
        const text = await (await fetch(`${c.url}/metrics`)).text();
        for (const [k, v] of parseMetrics(text)) {
          if (k.startsWith('nodejs_eventloop_lag_max') || k.startsWith('nodejs_eventloop_lag_p99')) all.set(k, Math.max(all.get(k) ?? 0, v));
          else all.set(k, (all.get(k) ?? 0) + v);
        }
      }
      return all;
    };
    const cpu = () => pids.reduce((a, p) => a + cpuSecondsOf(p), 0);
    const agentPids = workers.slice(1).map((w) => w.child.pid!);
    const agentsCpu = () => agentPids.reduce((a, p) => a + cpuSecondsOf(p), 0);
    let peak = 0, overallPeak = 0;
    const rssTimer = setInterval(() => {
      const r = Math.max(...pids.map(rssMiBOf));
      peak = Math.max(peak, r);
      overallPeak = Math.max(overallPeak, r);
    }, 100);
    let unfinished: string | undefined;
    const cpus = () => ({ cpu: cpu(), agentsCpu: agentsCpu(), pgCpu: postgresCpuSeconds(), runnerCpu: runnerCpuSeconds(), busy: machineBusySeconds() });
    const samples: ({ round: number; at: number; metrics: Map<string, number>; peak: number } & ReturnType<typeof cpus>)[] = [];
    // Every coordinator's event stream, open before the start, so that each commit is sampled as it is announced.
    const { token } = await lead.json<{ token: string }>('POST', '/v1/events/token', {});
    const commits = await followStudy(coordinators.map((c) => c.url), token, id);
    try {
      samples.push({ round: 0, at: performance.now(), ...cpus(), metrics: await scrape(), peak: 0 });
      await lead.json('POST', `/v1/studies/${id}/start`, {});
      const deadline = Date.now() + o.timeoutS * 1000;
      let seen = 0;
      for (;;) {
        const m = await commits.next(deadline - Date.now());
        if (!m) {
          // The rounds that did commit are still reported (a slow coordinator is what this measures).
          unfinished = `the study did not complete within ${o.timeoutS} s (round ${seen} of ${o.rounds} fit rounds committed)`;
          log(unfinished);
          break;
        }
        if (m.type === 'study.status') {
          if (m.status === 'completed') break;
          if (m.status !== 'running') throw new Error(`the study ended ${m.status}: ${m.error ?? 'no reason given'}`);
          continue;
        }
        // The evaluate round (rounds + 1) is the last: its commit completes the study.
        if (m.round <= seen) continue;
        samples.push({ round: m.round, at: performance.now(), ...cpus(), metrics: await scrape(), peak });
        peak = 0;
        seen = m.round;
        log(`round ${m.round} committed`);
      }
    } finally {
      clearInterval(rssTimer);
      commits.close();
    }

    // The coordinator's own timestamps give each round's wall time.
    const detail = await lead.json<{ rounds: { round: number; kind: string; openedAt: number | null; committedAt: number | null }[] }>('GET', `/v1/studies/${id}`);
    // Each round's accepted updates, by their audit entries' times (the admin reads the log, as an auditor would).
    const accepted = new Map<number, number[]>();
    for (let after = 0; ;) {
      const page = await admin.json<{ entries: { kind: string; ts: number; data: { study?: string; round?: number } }[]; next: number | null }>('GET', `/v1/audit?after=${after}&limit=10000`);
      for (const e of page.entries) if (e.kind === 'update.accepted' && e.data.study === id && e.data.round !== undefined) accepted.set(e.data.round, [...(accepted.get(e.data.round) ?? []), e.ts]);
      if (page.next === null) break;
      after = page.next;
    }
    // The last look came when the study left `running`: a result's request is counted once its answer is sent,
    // which may be after its update committed the round. Look again until every accepted update's request counts.
    const last = samples[samples.length - 1];
    const acceptedTotal = [...accepted.values()].reduce((n, t) => n + t.length, 0);
    if (last && last.round > 0) {
      const until = Date.now() + 10_000;
      while (resultsAnswered(last.metrics) < acceptedTotal && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
        last.metrics = await scrape();
      }
    }
    const examplesByCenter = await Promise.all([0, 1, 2, 3].map((center) => declaredCohort(parseSiteConfig(JSON.stringify({ coordinator: url, datasets: { heart: { format: 'fed-heart-disease', center } } }), join(root, 'probe.yaml')), 'heart')));
    const examples = sites.map((s) => examplesByCenter[s.center]!);
    const rounds: RoundFigures[] = [];
    for (let k = 1; k < samples.length; k++) {
      const a = samples[k - 1]!, b = samples[k]!;
      const r = detail.rounds.find((x) => x.round === b.round);
      const prev = detail.rounds.find((x) => x.round === a.round);
      const wallS = r?.committedAt && (prev?.committedAt ?? r.openedAt) ? (r.committedAt - (a.round > 0 ? prev!.committedAt! : r.openedAt!)) / 1000 : (b.at - a.at) / 1000;
      let requests = 0, statements = 0;
      const errors: Record<string, number> = {};
      const byRoute = new Map<string, number>();
      const stmts = new Map<string, [number, number]>();
      for (const [key, v] of b.metrics) {
        const d = v - (a.metrics.get(key) ?? 0);
        if (!d) continue;
        if (key.startsWith('setu_http_requests_total{') && !key.includes('route="/metrics"')) {
          requests += d;
          const route = `${/method="([^"]*)"/.exec(key)?.[1] ?? '?'} ${/route="([^"]*)"/.exec(key)?.[1] ?? '?'}`;
          byRoute.set(route, (byRoute.get(route) ?? 0) + d);
          const status = /status="(\d+)"/.exec(key)?.[1] ?? '?';
          if (!status.startsWith('2')) errors[status] = (errors[status] ?? 0) + d;
        }
        const op = /^setu_store_query_duration_seconds_(count|sum)\{operation="([^"]*)"\}$/.exec(key);
        if (op) {
          const e = stmts.get(op[2]!) ?? [0, 0];
          if (op[1] === 'count') {
            e[0] += d;
            statements += d;
          } else e[1] += d;
          stmts.set(op[2]!, e);
        }
      }
      const cpuS = b.cpu - a.cpu;
      const over = (b.at - a.at) / 1000;
      const fig: RoundFigures = {
        round: b.round, kind: r?.kind ?? (b.round > o.rounds ? 'evaluate' : 'fit'), wallS, requests, requestsPerS: requests / over,
        requestsPerSite: requests / o.sites, statementsPerSite: statements / o.sites, topRequests: [...byRoute].sort((x, y) => y[1] - x[1]).slice(0, 6),
        cpuS, cpuCores: cpuS / over, agentsCpuCores: (b.agentsCpu - a.agentsCpu) / over,
        postgresCpuCores: (b.pgCpu - a.pgCpu) / over, runnerCpuCores: (b.runnerCpu - a.runnerCpu) / over, machineBusyCores: (b.busy - a.busy) / over, peakRssMiB: b.peak, loopMaxMs: (b.metrics.get('nodejs_eventloop_lag_max_seconds') ?? NaN) * 1000,
        loopP99Ms: (b.metrics.get('nodejs_eventloop_lag_p99_seconds') ?? NaN) * 1000, errors, statements,
        topStatements: [...stmts].sort((x, y) => y[1][0] - x[1][0]).slice(0, 6).map(([kind, [n, s]]) => [kind, n, s]),
      };
      const times = accepted.get(b.round) ?? [];
      if (times.length > 1) {
        // At least a millisecond: the audit's clock resolution (a batch may accept several in one).
        fig.intakePerS = (times.length - 1) / (Math.max(1, Math.max(...times) - Math.min(...times)) / 1000);
        fig.intakeVsPost = fig.intakePerS / yardsticks.postPerS;
      }
      if (fig.kind === 'fit') {
        fig.cpuPerUpdateVsSha256 = cpuS / o.sites / (yardsticks.bytes / (yardsticks.sha256GBps * 1e9));
        if (o.prepared && b.round === a.round + 1) {
          const res = await lead.request('GET', `/v1/studies/${id}/model?round=${b.round}`);
          fig.maxUlp = maxUlps(decodeSafetensors(res.body).weights, expectedMean(like, examples, b.round));
          fig.exact = fig.maxUlp <= 0.5 + 1e-9;
        }
      }
      rounds.push(fig);
    }
    return { ...(unfinished ? { unfinished } : {}), sites: o.sites, coordinators: o.coordinators, store: o.store, model, params, prepared: o.prepared, yardsticks, rounds, loadavg: [load0, loadavg()[0]!], cores: availableParallelism(), agentState, coordinatorPeakRssMiB: overallPeak };
  } finally {
    for (const w of workers) {
      if (w.child.connected) w.child.send({ kind: 'stop' } satisfies WorkerCommand);
    }
    await Promise.all(workers.map((w) => exited(w.child)));
    await lb?.close();
    await Promise.all(coordinators.map(async (c) => {
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGTERM');
      await exited(c.child);
    }));
    await pgDb?.drop();
    rmSync(root, { recursive: true, force: true });
    if (agentState === 'memory') rmSync(agentRoot, { recursive: true, force: true });
  }
}

export function table(r: LiveBench): string {
  const y = r.yardsticks;
  const lines = [
    `${r.sites} sites, ${r.coordinators} coordinator${r.coordinators > 1 ? 's' : ''} on ${r.store}, ${r.model.kind} (${r.params} parameters, ${y.bytes} bytes per upload), ${r.prepared ? 'prepared updates' : 'agents training'}, agents' state ${r.agentState === 'memory' ? 'on tmpfs' : 'on the coordinator\'s disk'}; load average ${r.loadavg[0].toFixed(2)} → ${r.loadavg[1].toFixed(2)}`,
    `yardsticks (same run, same bytes): memcpy ${y.memcpyGBps.toFixed(2)} GB/s, sha256 ${y.sha256GBps.toFixed(2)} GB/s, bare loopback POST ${y.postPerS.toFixed(0)}/s (${y.postConcurrency} at once)`,
    'round kind      wall s   req/s  req/site  cpu s  cpu cores  agents cpu  peak RSS MiB  loop max ms  p99 ms  errors  SQL stmts  stmts/site  updates/s  intake/POST  cpu/update÷sha256  model',
  ];
  for (const f of r.rounds) {
    const errs = Object.entries(f.errors).map(([s, n]) => `${n}×${s}`).join(',') || '0';
    lines.push(
      `${String(f.round).padStart(5)} ${f.kind.padEnd(8)} ${f.wallS.toFixed(2).padStart(7)} ${f.requestsPerS.toFixed(0).padStart(7)} ${f.requestsPerSite.toFixed(2).padStart(9)} ${f.cpuS.toFixed(2).padStart(6)} ${f.cpuCores.toFixed(2).padStart(10)} ${f.agentsCpuCores.toFixed(2).padStart(11)} ${f.peakRssMiB.toFixed(0).padStart(13)} ${f.loopMaxMs.toFixed(0).padStart(12)} ${f.loopP99Ms.toFixed(0).padStart(7)} ${errs.padStart(7)} ${String(f.statements).padStart(10)} ${f.statementsPerSite.toFixed(1).padStart(11)} ${f.intakePerS === undefined ? '-'.padStart(10) : f.intakePerS.toFixed(0).padStart(10)} ` +
        `${f.intakeVsPost === undefined ? '-'.padStart(12) : f.intakeVsPost.toFixed(3).padStart(12)} ${f.cpuPerUpdateVsSha256 === undefined ? '-'.padStart(18) : f.cpuPerUpdateVsSha256.toFixed(0).padStart(18)}  ${f.exact === undefined ? '-' : f.exact ? 'exact' : `OFF by ${f.maxUlp} ulp`}`,
    );
  }
  lines.push(`CPU by process, cores (of ${r.cores} on this machine): ${r.rounds.map((f) => `round ${f.round}: coordinator${r.coordinators > 1 ? 's' : ''} ${f.cpuCores.toFixed(2)}, agents ${f.agentsCpuCores.toFixed(2)}, PostgreSQL ${f.postgresCpuCores.toFixed(2)}, runner${r.coordinators > 1 ? ' and balancer' : ''} ${f.runnerCpuCores.toFixed(2)}, machine busy ${f.machineBusyCores.toFixed(2)}`).join('; ')}`);
  const first = r.rounds[0];
  if (first) lines.push(`statements in round 1: ${first.topStatements.map(([k, n, s]) => `${k} ${n} (${s.toFixed(2)} s)`).join(', ')}`);
  if (first) lines.push(`requests in round 1: ${first.topRequests.map(([k, n]) => `${k} ${n}`).join(', ')}`);
  lines.push(`coordinator peak RSS ${r.coordinatorPeakRssMiB.toFixed(0)} MiB`);
  if (r.unfinished) lines.push(r.unfinished);
  return lines.join('\n') + '\n';
}

const USAGE = 'usage: setu bench live [--sites 100] [--procs 4] [--coordinators 1] [--store sqlite|postgres] [--pg URL] [--model logistic|mlp] [--params P] [--rounds 3] [--prepared] [--agent-state memory|disk] [--max-upload-bytes B] [--cpu-prof DIR] [--timeout-s 1800] [--json]';

export function parseLiveArgs(argv: string[]): LiveOptions & { json: boolean } {
  const { values: v } = parse(argv, {
    sites: { type: 'string' }, procs: { type: 'string' }, coordinators: { type: 'string' }, store: { type: 'string' }, pg: { type: 'string' },
    model: { type: 'string' }, params: { type: 'string' }, rounds: { type: 'string' }, prepared: { type: 'boolean' }, 'cpu-prof': { type: 'string' }, 'agent-state': { type: 'string' }, 'max-upload-bytes': { type: 'string' },
    'timeout-s': { type: 'string' }, json: { type: 'boolean' },
  });
  const int = (s: string | undefined, name: string, d: number, max = 10_000_000) => {
    if (s === undefined) return d;
    if (!/^[1-9][0-9]*$/.test(s) || Number(s) > max) throw new Error(`--${name} must be a whole number from 1 to ${max}, got "${s}"`);
    return Number(s);
  };
  const store = v.store ?? 'sqlite';
  if (store !== 'sqlite' && store !== 'postgres') throw new Error(`--store must be sqlite or postgres, got "${store}"`);
  const model = v.model ?? 'logistic';
  if (model !== 'logistic' && model !== 'mlp') throw new Error(`--model must be logistic or mlp, got "${model}"`);
  const agentState = v['agent-state'] ?? 'memory';
  if (agentState !== 'memory' && agentState !== 'disk') throw new Error(`--agent-state must be memory or disk, got "${agentState}"`);
  if (model === 'logistic' && v.params !== undefined) throw new Error('--params sizes the mlp; a logistic model on the heart data has 14 parameters');
  return {
    sites: int(v.sites, 'sites', 100, 100_000), procs: int(v.procs, 'procs', 4, 64), coordinators: int(v.coordinators, 'coordinators', 1, 16), store, pg: v.pg ?? PG_BASE, model,
    ...(v.params !== undefined ? { params: int(v.params, 'params', 0, 15_000_001) } : {}), rounds: int(v.rounds, 'rounds', 3, 1000), prepared: !!v.prepared, agentState,
    ...(v['max-upload-bytes'] !== undefined ? { maxUploadBytes: int(v['max-upload-bytes'], 'max-upload-bytes', 0, 2 ** 40) } : {}),
    ...(v['cpu-prof'] ? { cpuProfDir: v['cpu-prof'] } : {}), timeoutS: int(v['timeout-s'], 'timeout-s', 1800), json: !!v.json,
  };
}

export async function main(argv: string[]): Promise<number> {
  let o: ReturnType<typeof parseLiveArgs>;
  try {
    o = parseLiveArgs(argv);
  } catch (e) {
    process.stderr.write(`setu bench live: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  let r: LiveBench;
  try {
    r = await runLiveBench({ ...o, log: (s) => process.stderr.write(s + '\n') });
  } catch (e) {
    process.stderr.write(`setu bench live: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(o.json ? JSON.stringify(r) + '\n' : table(r));
  return r.unfinished || r.rounds.some((f) => f.exact === false) ? 1 : 0;
}
