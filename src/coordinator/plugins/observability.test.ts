/**
 * Probes, request ids and metrics, and readiness that tells the truth: `/v1/health` (= `/readyz`) stops
 * answering 200 when the store is gone (a PostgreSQL database renamed away under a running coordinator, then
 * brought back) or the disk is full (a real coordinator process whose files may not grow: the SQLite WAL
 * hits the file-size limit, as on a full disk), or the data directory has less room than the floor.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startCoordinator, type RunningCoordinator } from '../start.js';
import { createLogger } from '../../observability/logger.js';
import { enrolSite, enrolUser, inject, type Identity } from '../../testing/inject.js';
import { PG_BASE, createTempDatabase, pgSkipReason } from '../../testing/pg.js';
import { SETU_MAIN, freePort, waitFor } from '../../testing/processes.js';
import { ApiError, HttpClient } from '../../site/http.js';
import { readKeyFile } from '../auth.js';

const silent = () => createLogger({ level: 'silent' });

/** One metric sample's value from the text exposition, or undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',');
    if (want.every((w) => have.includes(w))) return Number(m[3]);
  }
  return undefined;
}

describe('probes, request ids and metrics', () => {
  let c: RunningCoordinator;
  let dir: string;
  let admin: Identity;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-obs-'));
    c = await startCoordinator({ dataDir: dir, port: 0, logger: silent() });
    admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
  });
  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers liveness and readiness, and names every request in X-Request-Id', async () => {
    const live = await inject(c.app, 'GET', '/healthz');
    assert.deepEqual([live.status, live.json], [200, { ok: true }]);
    for (const path of ['/readyz', '/v1/health']) {
      const r = await inject(c.app, 'GET', path);
      assert.equal(r.status, 200, r.body);
      assert.equal(r.json.ok, true);
      assert.equal(r.json.instance, c.engine.instanceId);
    }
    assert.equal(await c.store.getKv('readiness_probe').then((v) => v?.split(' ')[0]), c.engine.instanceId, 'readiness wrote to the store');
    // A load balancer's id is kept; anything else is replaced by a fresh one.
    assert.equal((await inject(c.app, 'GET', '/healthz', { headers: { 'x-request-id': 'lb-1234abcd' } })).headers['x-request-id'], 'lb-1234abcd');
    for (const bad of ['short', 'has space in it', 'x'.repeat(200)]) assert.match(String((await inject(c.app, 'GET', '/healthz', { headers: { 'x-request-id': bad } })).headers['x-request-id']), /^[0-9a-f-]{36}$/);
    const nf = await inject(c.app, 'GET', '/v1/no-such-thing');
    assert.equal(nf.status, 404);
    assert.deepEqual(Object.keys(nf.json).sort(), ['error', 'message']);
    assert.match(String(nf.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });

  it('serves Prometheus metrics: requests by route and status, latency, auth failures, agent last-seen, rounds from the bus, open streams', async () => {
    const site = await enrolSite(c.app, admin, 'site-metrics');
    assert.equal((await inject(c.app, 'GET', '/v1/agent/task?waitMs=0', { as: site })).status < 500, true);
    assert.equal((await inject(c.app, 'GET', '/v1/sites', { as: admin })).status, 200);
    assert.equal((await inject(c.app, 'GET', '/v1/sites')).status, 401);
    const before = sample((await inject(c.app, 'GET', '/metrics')).body, 'setu_rounds_total', { event: 'opened', kind: 'fit' }) ?? 0;
    c.bus.emit({ type: 'round.opened', studyId: 's-m', round: 1, kind: 'fit', sites: 1 });
    c.bus.emit({ type: 'update.refused', studyId: 's-m', round: 1, siteId: site.keyId, reason: 'test' });

    const lead = await enrolUser(c.app, admin, 'lead-metrics', 'study_lead');
    const tok = await inject(c.app, 'POST', '/v1/events/token', { as: lead, json: {} });
    const ac = new AbortController();
    const stream = await fetch(`${c.url}/v1/events?token=${encodeURIComponent(tok.json.token)}`, { signal: ac.signal });
    assert.equal(stream.status, 200);
    const m = await inject(c.app, 'GET', '/metrics');
    assert.equal(m.status, 200);
    assert.match(String(m.headers['content-type']), /^text\/plain/);
    assert.equal(m.headers['cache-control'], 'no-store');
    const t = m.body;
    assert.ok(sample(t, 'setu_http_requests_total', { method: 'GET', route: '/v1/sites', status: '200' })! >= 1, 'requests by route and status');
    assert.ok(sample(t, 'setu_http_requests_total', { method: 'GET', route: '/v1/sites', status: '401' })! >= 1);
    assert.ok(sample(t, 'setu_http_request_duration_seconds_count', { method: 'GET', route: '/v1/sites' })! >= 2, 'latency histogram');
    assert.ok(sample(t, 'setu_auth_failures_total', { status: '401' })! >= 1);
    const seen = sample(t, 'setu_agent_last_seen_timestamp_seconds', { site: site.keyId });
    assert.ok(seen !== undefined && Math.abs(seen - Date.now() / 1000) < 60, `the site was seen just now (${seen})`);
    assert.equal(sample(t, 'setu_rounds_total', { event: 'opened', kind: 'fit' }), before + 1, 'rounds counted from the bus');
    assert.ok(sample(t, 'setu_refusals_total')! >= 1);
    assert.equal(sample(t, 'setu_event_streams_open'), 1, 'one open stream');
    for (const name of ['setu_engine_retries_total', 'setu_tasks_total', 'setu_store_query_duration_seconds', 'setu_store_ready', 'process_resident_memory_bytes']) assert.match(t, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is exposed`);
    ac.abort();
    await waitFor('the stream to close', async () => (sample((await inject(c.app, 'GET', '/metrics')).body, 'setu_event_streams_open') === 0 ? true : undefined), 10_000, 20);
  });
});

describe('readiness: the data directory below its free-space floor', () => {
  it('answers 503 naming the directory, while liveness stays 200', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'setu-obs-disk-'));
    // A floor above any real disk's free space: statfs is real, the threshold is what makes it "full".
    const c = await startCoordinator({ dataDir: dir, port: 0, logger: silent(), server: { minFreeBytes: Number.MAX_SAFE_INTEGER } });
    try {
      const r = await inject(c.app, 'GET', '/v1/health');
      assert.equal(r.status, 503);
      assert.equal(r.headers['retry-after'], '5');
      assert.equal(r.json.error, 'not_ready');
      assert.match(r.json.message, new RegExp(`the data directory ${dir} has \\d+ KiB free`));
      assert.equal(r.json.requestId, r.headers['x-request-id']);
      assert.equal((await inject(c.app, 'GET', '/healthz')).status, 200);
      assert.equal(sample((await inject(c.app, 'GET', '/metrics')).body, 'setu_store_ready'), 0);
    } finally {
      await c.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('readiness: a PostgreSQL database gone from under a running coordinator, and back', async () => {
  const skip = await pgSkipReason();
  it('answers 503 while the database is gone, every other answer is a 5xx with a request id, and 200 once it is back', { skip }, async () => {
    const db = await createTempDatabase();
    const name = new URL(db.url).pathname.slice(1);
    const dir = mkdtempSync(join(tmpdir(), 'setu-obs-pg-'));
    const admin = new pg.Client({ connectionString: PG_BASE });
    await admin.connect();
    // A long tick keeps the round engine idle: the cut must not land in the middle of its query.
    const c = await startCoordinator({ dataDir: dir, db: db.url, port: 0, tickMs: 3_600_000, logger: silent() });
    let away = false;
    try {
      const me = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
      assert.equal((await inject(c.app, 'GET', '/v1/health')).status, 200);
      await admin.query(`alter database ${name} with allow_connections false`);
      await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1', [name]);
      await admin.query(`alter database ${name} rename to ${name}_away`);
      away = true;
      const down = await inject(c.app, 'GET', '/v1/health');
      assert.equal(down.status, 503, down.body);
      assert.match(down.json.message, /the store failed a write and read: .*does not exist/);
      assert.equal((await inject(c.app, 'GET', '/readyz')).status, 503);
      assert.equal((await inject(c.app, 'GET', '/healthz')).status, 200, 'the process itself is alive');
      const other = await inject(c.app, 'GET', '/v1/sites', { as: me });
      assert.ok(other.status >= 500, `${other.status} ${other.body}`);
      assert.equal(other.json.requestId, other.headers['x-request-id']);
      await admin.query(`alter database ${name}_away rename to ${name}`);
      await admin.query(`alter database ${name} with allow_connections true`);
      away = false;
      await waitFor('readiness to come back', async () => ((await inject(c.app, 'GET', '/v1/health')).status === 200 ? true : undefined), 15_000, 100);
      assert.equal((await inject(c.app, 'GET', '/v1/sites', { as: me })).status, 200);
    } finally {
      await c.close().catch(() => {});
      if (away) await admin.query(`alter database ${name}_away rename to ${name}`).catch(() => {});
      await admin.end();
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('readiness: a full disk (a real process whose files may not grow)', () => {
  it('stops answering 200 once SQLite cannot write, while liveness stays 200', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'setu-obs-full-'));
    const port = await freePort();
    // RLIMIT_FSIZE: the coordinator's files may not grow past 1.5 MB (Node ignores SIGXFSZ, so writes fail
    // with EFBIG as they would with ENOSPC); the SQLite WAL reaches it after a few dozen writes.
    const child = spawn('prlimit', ['--fsize=1500000', process.execPath, SETU_MAIN, 'coordinator', 'start', '--data-dir', dir, '--port', String(port), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor('the coordinator', async () => (await fetch(`${url}/healthz`).then((r) => r.ok).catch(() => false)) || undefined, 20_000, 50);
      assert.equal((await fetch(`${url}/v1/health`)).status, 200);
      const k = readKeyFile(join(dir, 'admin.key'));
      // No retries: each failed write is answered, not waited out.
      const admin = new HttpClient({ baseUrl: url, signer: { keyId: k.keyId, privateKey: k.privateKey }, giveUpAfterMs: 0 });
      let writes = 0;
      let health = 200;
      // Write (user invites with long names) until readiness says the store cannot take a write.
      while (health === 200 && writes < 2000) {
        await admin.json('POST', '/v1/users', { name: `filler-${writes}-${'x'.repeat(80)}`, role: 'auditor' }).catch((e: unknown) => {
          if (!(e instanceof ApiError) && !/HTTP 5\d\d/.test((e as Error).message)) throw e;
        });
        writes++;
        health = (await fetch(`${url}/v1/health`)).status;
      }
      assert.equal(health, 503, `readiness after ${writes} writes; log:\n${out.slice(-2000)}`);
      const r = await fetch(`${url}/readyz`);
      assert.equal(r.status, 503);
      assert.match(((await r.json()) as { message: string }).message, /the store failed a write and read/);
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
    } finally {
      child.kill('SIGTERM');
      await new Promise((res) => (child.exitCode !== null ? res(null) : child.once('exit', res)));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
