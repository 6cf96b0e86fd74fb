/**
 * No input gets a 5xx. Generated requests (src/testing/fuzz.ts) walk every route of `/openapi.json` and
 * every route in Fastify's table that the OpenAPI does not describe yet, against a populated coordinator
 * (users of every role, sites, an institution, a started study with open tasks, so valid requests reach the
 * routes' own code), on SQLite and on PostgreSQL. Any 5xx fails the test, listing each distinct cause with
 * the request, the answer and the error the coordinator logged under the request id. Every 4xx answer must
 * be `{error, message}`.
 *
 * Size: the quick mode (`npm test`, CI) sends up to 1,500 requests per backend within 25 s; `npm run fuzz` sends
 * SETU_FUZZ_REQUESTS=10000 per backend with no time bound. SETU_FUZZ_SEED replays a run (the seed is printed).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { createLogger } from '../observability/logger.js';
import { SQL_BACKENDS } from '../testing/backends.js';
import { enrolSite, enrolUser, heartStudy, inject, type Identity } from '../testing/inject.js';
import { API_PATH, fuzzRequests, fuzzRoutes, type FuzzPools, type FuzzRequest, type FuzzRoute } from '../testing/fuzz.js';
import { waitFor } from '../testing/processes.js';

const FULL = process.env['SETU_FUZZ_REQUESTS'] !== undefined;
const REQUESTS = FULL ? Number(process.env['SETU_FUZZ_REQUESTS']) : 1500;
/** The quick mode's time bound per backend; the full mode has none. */
const BOUND_MS = FULL ? Infinity : 25_000;
const SEED = Number(process.env['SETU_FUZZ_SEED'] ?? Date.now() % 2 ** 31);
const BATCH = 250;
/** The dashboard's files are fuzzed too, but only the API must be in the OpenAPI. */
const isApi = (r: FuzzRoute) => API_PATH.test(r.url);

/** A coordinator with something of everything, and the ids and identities the generator uses. */
async function populate(c: RunningCoordinator): Promise<FuzzPools> {
  const admin: Identity = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
  const must = async (what: string, p: Promise<{ status: number; body: string; json: any }>) => {
    const r = await p;
    if (r.status < 200 || r.status > 299) throw new Error(`${what}: ${r.status} ${r.body}`);
    return r.json;
  };
  await must('institution', inject(c.app, 'POST', '/v1/institutions', { as: admin, json: { id: 'inst-fuzz', name: 'Fuzz Hospital', kind: 'hospital', jurisdiction: 'IN' } }));
  const lead = await enrolUser(c.app, admin, 'fuzz-lead', 'study_lead');
  const auditor = await enrolUser(c.app, admin, 'fuzz-auditor', 'auditor');
  const siteAdminInv = await must('site admin', inject(c.app, 'POST', '/v1/users', { as: admin, json: { name: 'fuzz-site-admin', role: 'site_admin', institution: 'inst-fuzz' } }));
  const a = await enrolSite(c.app, admin, 'fuzz-a');
  const b = await enrolSite(c.app, admin, 'fuzz-b');
  const study = await must('study', inject(c.app, 'POST', '/v1/studies', { as: lead, json: heartStudy('fuzz', ['fuzz-a', 'fuzz-b'], 3) }));
  const draft = await must('draft study', inject(c.app, 'POST', '/v1/studies', { as: lead, json: heartStudy('fuzz-draft', ['fuzz-a']) }));
  await must('start', inject(c.app, 'POST', `/v1/studies/${study.id}/start`, { as: lead }));
  const task = await waitFor('a task for site a', async () => {
    const r = await inject(c.app, 'GET', '/v1/agent/task?waitMs=0', { as: a });
    return r.status === 200 && r.json?.taskId ? r.json : undefined;
  }, 30_000, 100);
  const sacrificial: Identity[] = [];
  for (let i = 0; i < 12; i++) sacrificial.push(await enrolUser(c.app, admin, `fuzz-spare-${i}`, i % 2 ? 'auditor' : 'study_lead'));
  for (let i = 0; i < 4; i++) sacrificial.push(await enrolSite(c.app, admin, `fuzz-spare-site-${i}`));
  const ids = [study.id, draft.id, a.keyId, b.keyId, 'fuzz-a', 'fuzz-b', lead.keyId, auditor.keyId, siteAdminInv.userId, 'fuzz-lead', 'inst-fuzz', task.taskId, task.modelVersionId, 'user-admin', 'IN', 'JP', 'heart'];
  return { ids: ids.filter((x): x is string => typeof x === 'string'), signers: [admin, lead, auditor, a, b], sacrificial };
}

interface Failure {
  req: FuzzRequest;
  status: number;
  body: string;
  logged: string[];
}

const show = (r: FuzzRequest) => `${r.method} ${r.url.length > 200 ? r.url.slice(0, 200) + '…' : r.url} [${r.auth}; ${r.headers['content-type'] ?? 'no content-type'}; ${r.payload === undefined ? 'no body' : `${r.payload.length} bytes: ${String(r.payload).slice(0, 120)}`}]`;

for (const backend of SQL_BACKENDS) {
  describe(`fuzzing every route (${backend.name})`, async () => {
    const skip = await backend.skip();
    let c: RunningCoordinator;
    let dir: string;
    let cleanup: () => Promise<void>;
    let routes: FuzzRoute[];
    const errorLines: string[] = [];

    before(async () => {
      if (skip) return;
      dir = mkdtempSync(join(tmpdir(), 'setu-fuzz-'));
      const db = await backend.open();
      cleanup = db.cleanup;
      // Errors only: each 5xx's error line, found by its request id.
      const logger = createLogger({ level: 'error', destination: { write: (s: string) => void errorLines.push(s) } });
      c = await startCoordinator({ dataDir: dir, db: db.url, port: 0, tickMs: 200, maxWaitMs: 20, logger, server: { authLimits: { perAddress: 1e9, perIdentity: 1e9 } } });
      const openapi = (await inject(c.app, 'GET', '/openapi.json')).json;
      routes = fuzzRoutes(openapi, c.app.routeTable);
    });
    after(async () => {
      await c?.close();
      await cleanup?.();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    // Each 5xx cause the fuzzer found, replayed as a fixed request (see the report in the closing note).
    it('regressions: fractional times reach integer columns as whole milliseconds (PostgreSQL refused them: 500, or a failed study)', { skip }, async () => {
      const admin: Identity = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
      const ttlHours = 0.00002363758455248261;
      for (const [path, json] of [['/v1/users', { name: 'frac-ttl', role: 'auditor', ttlHours }], ['/v1/invites', { siteName: 'frac-ttl-site', ttlHours }]] as const) {
        const r = await inject(c.app, 'POST', path, { as: admin, json });
        assert.equal(r.status, 200, r.body);
        assert.ok(Number.isInteger(r.json.expiresAt), `expiresAt ${r.json.expiresAt}`);
      }
      const lead = await enrolUser(c.app, admin, 'frac-lead', 'study_lead');
      await enrolSite(c.app, admin, 'frac-site');
      const s = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: { ...heartStudy('frac', ['frac-site']), roundTimeoutSeconds: 3600.0005 } });
      assert.equal(s.status, 200, s.body);
      assert.equal((await inject(c.app, 'POST', `/v1/studies/${s.json.id}/start`, { as: lead })).status, 200);
      const d = await waitFor('round 1 to open', async () => {
        const r = await inject(c.app, 'GET', `/v1/studies/${s.json.id}`, { as: lead });
        return r.json.status === 'failed' || r.json.openRound ? r.json : undefined;
      }, 20_000, 50);
      assert.notEqual(d.status, 'failed', `the study failed: ${d.error}`);
      assert.ok(Number.isInteger(d.openRound.deadlineAt), `deadline ${d.openRound.deadlineAt}`);
    });

    it(`${FULL ? REQUESTS : `up to ${REQUESTS}`} generated requests over every route answer no 5xx, and every 4xx is {error, message}`, { skip, timeout: 30 * 60_000 }, async (t) => {
      const pools = await populate(c);
      t.diagnostic(`seed ${SEED} (SETU_FUZZ_SEED=${SEED} replays it); ${routes.length} routes, ${routes.filter((r) => isApi(r) && !r.documented).length} API routes not in the OpenAPI`);
      const failures: Failure[] = [];
      const badShape: string[] = [];
      const byClass = new Map<string, number>();
      const reached = new Set<string>();
      const arb = fuzzRequests(routes, pools);
      const until = Date.now() + BOUND_MS;
      let sent = 0;
      for (let done = 0; done < REQUESTS && Date.now() < until; done += BATCH) {
        for (const req of fc.sample(arb, { seed: SEED + done, numRuns: Math.min(BATCH, REQUESTS - done) })) {
          if (Date.now() > until) break;
          const r = await Promise.race([
            c.app.inject({ method: req.method as 'GET', url: req.url, headers: req.headers, ...(req.payload !== undefined ? { payload: req.payload } : {}) }),
            new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`no answer within 30 s: ${show(req)}`)), 30_000).unref()),
          ]);
          sent++;
          const cls = `${Math.floor(r.statusCode / 100)}xx`;
          byClass.set(cls, (byClass.get(cls) ?? 0) + 1);
          if (r.statusCode < 400) reached.add(`${req.method} ${req.route.url}`);
          if (r.statusCode >= 500) {
            const id = String(r.headers['x-request-id']);
            failures.push({ req, status: r.statusCode, body: r.body.slice(0, 300), logged: errorLines.filter((l) => l.includes(id)) });
          } else if (r.statusCode >= 400 && String(r.headers['content-type']).startsWith('application/json')) {
            let j: { error?: unknown; message?: unknown } | undefined;
            try {
              j = JSON.parse(r.body) as { error?: unknown; message?: unknown };
            } catch {
              j = undefined;
            }
            if (typeof j?.error !== 'string' || typeof j.message !== 'string' || !j.message) badShape.push(`${r.statusCode} ${show(req)} → ${r.body.slice(0, 200)}`);
          }
        }
      }
      if (FULL) assert.equal(sent, REQUESTS);
      t.diagnostic(`${sent} requests; answers: ${[...byClass].map(([k, v]) => `${k} ${v}`).join(', ')}; ${reached.size} of ${routes.length} routes answered 2xx/3xx at least once`);
      // One line per distinct cause: the route and what the coordinator logged (or answered).
      const causes = new Map<string, Failure[]>();
      for (const f of failures) {
        const err = f.logged.map((l) => (JSON.parse(l) as { err?: { message?: string } }).err?.message).find(Boolean) ?? f.body;
        const key = `${f.req.method} ${f.req.route.url}: ${err}`;
        causes.set(key, [...(causes.get(key) ?? []), f]);
      }
      const report = [...causes].map(([k, fs]) => `${fs.length} × ${k}\n    e.g. ${show(fs[0]!.req)} → ${fs[0]!.status} ${fs[0]!.body}`);
      assert.equal(failures.length, 0, `${failures.length} of ${sent} requests answered 5xx (seed ${SEED}):\n${report.join('\n')}`);
      assert.deepEqual(badShape.slice(0, 10), [], 'every 4xx body is {error, message}');
    });

    it('every API route in Fastify\'s table is in /openapi.json', { skip }, () => {
      const missing = routes.filter((r) => isApi(r) && !r.documented).map((r) => `${r.method} ${r.url}`);
      assert.deepEqual(missing, [], `routes not in /openapi.json: ${missing.join(', ')}`);
    });
  });
}
