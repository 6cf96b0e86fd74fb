/**
 * `setu bench reads`: many concurrent signed reads at a coordinator on SQLite and at one on PostgreSQL, measured
 * in the same run, so the PostgreSQL figure is a ratio against SQLite's on the same machine and moment.
 *
 *   setu bench reads [--requests 1000] [--runs 5] [--path /v1/studies] [--as lead|site] [--pg postgres://…] [--timeout-ms 60000] [--json]
 *
 * Each backend gets its own coordinator process (`setu coordinator start`, log level warn), a study lead and a
 * site enrolled over the API, and a few studies. Each run signs `requests` GETs of `path` as the study lead
 * (every one its own nonce, signed before the clock starts, so signing is not measured) and sends them all at
 * once over real HTTP, one connection each (`--as site` signs them as the site instead, e.g. for its task poll
 * `--path '/v1/agent/task?waitMs=0'`); the runs alternate between the backends. Per run it prints p50, p99
 * and max latency (request sent → body received), and the requests that failed (any answer but 2xx) or hung
 * (no answer within --timeout-ms). PostgreSQL runs in a database made for the run and dropped after it.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from '../args.js';
import { generateSigningKeys, signRequest } from '../../protocol/signing.js';
import { readKeyFile } from '../../coordinator/auth.js';
import { HttpClient } from '../../site/http.js';
import { createTempDatabase, PG_BASE } from '../../testing/pg.js';
import { freePort, startCoordinatorProcess } from '../../testing/processes.js';


export interface ReadRun {
  requests: number;
  ok: number;
  /** Answered, but not 2xx: status → count. */
  failed: Record<string, number>;
  /** No answer within the timeout (or the connection broke). */
  hung: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  wallMs: number;
}

export interface Signer {
  keyId: string;
  privateKey: string;
}

const quantile = (sorted: number[], q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]! : NaN);

/** Sends `n` signed GETs of `path` at once to `base`, each on its own connection, and times each. */
export async function concurrentReads(base: string, path: string, signer: Signer, n: number, timeoutMs: number): Promise<ReadRun> {
  const url = new URL(path, base);
  const headers = Array.from({ length: n }, () => signRequest({ method: 'GET', path, keyId: signer.keyId, privateKey: signer.privateKey }));
  // One connection per request, as many separate clients would open; no pooling that would queue them here.
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const failed: Record<string, number> = {};
  let hung = 0;
  const times: number[] = [];
  const one = (h: Record<string, string>) =>
    new Promise<void>((done) => {
      const t0 = performance.now();
      const req = http.request(url, { method: 'GET', headers: h, agent, timeout: timeoutMs }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300) times.push(performance.now() - t0);
          else failed[String(res.statusCode)] = (failed[String(res.statusCode)] ?? 0) + 1;
          done();
        });
        res.on('error', () => {
          hung++;
          done();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        hung++;
        done();
      });
      req.end();
    });
  const start = performance.now();
  await Promise.all(headers.map((h) => one(h as unknown as Record<string, string>)));
  const wallMs = performance.now() - start;
  agent.destroy();
  times.sort((a, b) => a - b);
  return { requests: n, ok: times.length, failed, hung, p50Ms: quantile(times, 0.5), p99Ms: quantile(times, 0.99), maxMs: times[times.length - 1] ?? NaN, wallMs };
}

export interface BenchCoordinator {
  url: string;
  dataDir: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** A `setu coordinator start` process on `db` (a PostgreSQL URL, or undefined for SQLite in its data directory). */
export async function startBenchCoordinator(db: string | undefined): Promise<BenchCoordinator> {
  const dataDir = mkdtempSync(join(tmpdir(), 'setu-bench-reads-'));
  const port = await freePort();
  const child = await startCoordinatorProcess(dataDir, port, join(dataDir, 'coordinator.log'), { ...(db ? { db } : {}), args: ['--log-level', 'warn'] });
  return {
    url: `http://127.0.0.1:${port}`,
    dataDir,
    child,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A study lead and a site enrolled over the API, and `studies` studies, so the reads have rows to read. */
export async function populate(c: BenchCoordinator, studies = 5): Promise<{ lead: Signer; site: Signer }> {
  const k = readKeyFile(join(c.dataDir, 'admin.key'));
  const admin = new HttpClient({ baseUrl: c.url, signer: { keyId: k.keyId, privateKey: k.privateKey }, giveUpAfterMs: 20_000 });
  const anon = new HttpClient({ baseUrl: c.url, giveUpAfterMs: 20_000 });
  const inv = await admin.json<{ token: string; userId: string }>('POST', '/v1/users', { name: 'bench-lead', role: 'study_lead', ttlHours: 1 });
  const keys = generateSigningKeys();
  await anon.json('POST', '/v1/users/enrol', { token: inv.token, publicKey: keys.publicKeyRaw });
  const lead = { keyId: inv.userId, privateKey: keys.privateKeyPem };
  const siteInv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: 'bench-site', ttlHours: 1 });
  const siteKeys = generateSigningKeys();
  const enrolled = await anon.json<{ siteId: string }>('POST', '/v1/enrol', { token: siteInv.token, publicKey: siteKeys.publicKeyRaw, cohorts: { heart: 100 } });
  const client = new HttpClient({ baseUrl: c.url, signer: lead, giveUpAfterMs: 20_000 });
  for (let i = 0; i < studies; i++) {
    await client.json('POST', '/v1/studies', {
      name: `bench-${i}`, dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 1,
      fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, sites: ['bench-site'], roundTimeoutSeconds: 3600,
    });
  }
  return { lead, site: { keyId: enrolled.siteId, privateKey: siteKeys.privateKeyPem } };
}

export interface ReadsBench {
  requests: number;
  path: string;
  sqlite: ReadRun[];
  postgres: ReadRun[];
  /** PostgreSQL's p50 and p99 over SQLite's, medians over the runs. */
  ratio: { p50: number; p99: number };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
};

export async function runReadsBench(o: { requests: number; runs: number; path: string; as?: 'lead' | 'site'; pg: string; timeoutMs: number; log?: (s: string) => void }): Promise<ReadsBench> {
  const log = o.log ?? (() => {});
  const pgDb = await createTempDatabase(o.pg);
  const coordinators: BenchCoordinator[] = [];
  try {
    const sqlite = await startBenchCoordinator(undefined);
    coordinators.push(sqlite);
    const postgres = await startBenchCoordinator(pgDb.url);
    coordinators.push(postgres);
    const signers = { sqlite: await populate(sqlite), postgres: await populate(postgres) };
    const out: ReadsBench = { requests: o.requests, path: o.path, sqlite: [], postgres: [], ratio: { p50: NaN, p99: NaN } };
    for (let i = 0; i < o.runs; i++) {
      for (const [name, c] of [['sqlite', sqlite], ['postgres', postgres]] as const) {
        const r = await concurrentReads(c.url, o.path, signers[name][o.as ?? 'lead'], o.requests, o.timeoutMs);
        out[name].push(r);
        log(`run ${i + 1} ${name.padEnd(8)} ${show(r)}`);
      }
    }
    out.ratio = { p50: median(out.postgres.map((r) => r.p50Ms)) / median(out.sqlite.map((r) => r.p50Ms)), p99: median(out.postgres.map((r) => r.p99Ms)) / median(out.sqlite.map((r) => r.p99Ms)) };
    return out;
  } finally {
    for (const c of coordinators) await c.stop();
    await pgDb.drop();
  }
}

export const failures = (r: ReadRun) => r.hung + Object.values(r.failed).reduce((a, b) => a + b, 0);

function show(r: ReadRun): string {
  const f = failures(r);
  return `${r.ok}/${r.requests} ok  p50 ${r.p50Ms.toFixed(0).padStart(5)} ms  p99 ${r.p99Ms.toFixed(0).padStart(5)} ms  max ${r.maxMs.toFixed(0).padStart(5)} ms  ` +
    `failed ${f}${f ? ` (${[...Object.entries(r.failed).map(([s, n]) => `${n}× ${s}`), ...(r.hung ? [`${r.hung} hung`] : [])].join(', ')})` : ''}`;
}

export async function main(argv: string[]): Promise<number> {
  let requests = 1000, runs = 5, path = '/v1/studies', as: 'lead' | 'site' = 'lead', pgUrl = PG_BASE, timeoutMs = 60_000, json = false;
  try {
    const { values: v } = parse(argv, { requests: { type: 'string' }, runs: { type: 'string' }, path: { type: 'string' }, as: { type: 'string' }, pg: { type: 'string' }, 'timeout-ms': { type: 'string' }, json: { type: 'boolean' } });
    const int = (s: string | undefined, name: string, d: number) => {
      if (s === undefined) return d;
      if (!/^[1-9][0-9]{0,6}$/.test(s)) throw new Error(`--${name} must be a positive integer, got "${s}"`);
      return Number(s);
    };
    requests = int(v.requests, 'requests', requests);
    runs = int(v.runs, 'runs', runs);
    timeoutMs = int(v['timeout-ms'], 'timeout-ms', timeoutMs);
    if (v.path !== undefined) {
      if (!v.path.startsWith('/v1/')) throw new Error(`--path must be an API path such as /v1/studies, got "${v.path}"`);
      path = v.path;
    }
    if (v.as !== undefined) {
      if (v.as !== 'lead' && v.as !== 'site') throw new Error(`--as must be lead or site, got "${v.as}"`);
      as = v.as;
    }
    if (v.pg !== undefined) pgUrl = v.pg;
    json = !!v.json;
  } catch (e) {
    process.stderr.write(`setu bench reads: ${(e as Error).message}\nusage: setu bench reads [--requests 1000] [--runs 5] [--path /v1/studies] [--as lead|site] [--pg URL] [--timeout-ms 60000] [--json]\n`);
    return 2;
  }
  process.stderr.write(`${requests} concurrent GET ${path} signed as the ${as === 'lead' ? 'study lead' : 'site'}, ${runs} runs per backend, SQLite and PostgreSQL (${pgUrl.replace(/\/\/[^@/]*@/, '//…@')}) alternating\n`);
  let r: ReadsBench;
  try {
    r = await runReadsBench({ requests, runs, path, as, pg: pgUrl, timeoutMs, log: (s) => process.stderr.write(s + '\n') });
  } catch (e) {
    process.stderr.write(`setu bench reads: ${(e as Error).message}\n`);
    return 1;
  }
  if (json) process.stdout.write(JSON.stringify(r) + '\n');
  else {
    const line = (name: string, rs: ReadRun[]) =>
      `${name.padEnd(10)} p50 ${median(rs.map((x) => x.p50Ms)).toFixed(0).padStart(5)} ms  p99 ${median(rs.map((x) => x.p99Ms)).toFixed(0).padStart(5)} ms  (medians of ${rs.length} runs; worst p99 ${Math.max(...rs.map((x) => x.p99Ms)).toFixed(0)} ms)  failed ${rs.reduce((a, x) => a + failures(x), 0)} of ${rs.length * requests}\n`;
    process.stdout.write(
      `${requests} concurrent signed GET ${path}\n` + line('SQLite', r.sqlite) + line('PostgreSQL', r.postgres) +
        `PostgreSQL / SQLite: p50 ${r.ratio.p50.toFixed(2)}×, p99 ${r.ratio.p99.toFixed(2)}× (goal: p99 within 3×, nothing failed)\n`,
    );
  }
  return [...r.sqlite, ...r.postgres].some((x) => failures(x) > 0) ? 1 : 0;
}
