/**
 * The round engine on a real store with an injected clock: deadlines, minSites, prepare failures, transient
 * faults retried (never failing the study) versus the study's own faults (failing it, audited), downtime given
 * back to the open round, leases re-claimed at once by the same instance and respected between different ones,
 * and a restarted SecAgg+ round that keeps refused and expired tasks closed.
 *
 * Results are written straight into the store the way the agent routes write them (acceptUpdate), so each test
 * drives only the engine. Faults come from a wrapper around the real store that throws chosen errors from
 * chosen methods a given number of times.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, StoreUnavailable, type Store } from '../store/store.js';
import { openRawDatabase } from '../store/raw.js';
import { EventBus } from './events.js';
import { RoundEngine, digestHex, initialWeights, drivenAtKey, type EngineOptions } from './engine.js';
import { encodeSafetensors, decodeSafetensors } from '../protocol/safetensors.js';
import { RESULT_META_KEY, type ResultMeta, type StudySpec } from '../protocol/api.js';
import { heartStudy } from '../testing/inject.js';
import { engineRetries } from '../observability/metrics.js';
import { generateSigningKeys, importPrivateKey } from '../protocol/signing.js';
import { classifyFault, backoffMs } from './faults.js';
import { servedElsewhere } from './secagg.js';
import { createLogger } from '../observability/logger.js';

const T0 = 1_700_000_000_000;

interface Fixture {
  store: Store;
  /** The store the engines see: the real one, with the faults `inject` arms. */
  faulty: Store;
  clock: { t: number };
  sites: string[];
  studyId: string;
  spec: StudySpec;
  engine(o?: EngineOptions): RoundEngine;
  /** The next `times` calls of `method` throw `error`. */
  inject(method: string, error: () => unknown, times: number): void;
  calls: Map<string, number>;
  /** Where the store is (for a raw connection that plays what no store call does). */
  url: string;
  cleanup(): Promise<void>;
}

/** The engine on the in-memory store; `sqlite` where a test must reach under the store (openRawDatabase). */
async function fixture(over: Partial<StudySpec> = {}, nSites = 3, initial?: Uint8Array, backend: 'memory' | 'sqlite' = 'memory'): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'setu-engine-'));
  const store = await openStore(backend === 'memory' ? 'memory:' : join(dir, 'setu.db'));
  const clock = { t: T0 };
  const sites: string[] = [];
  for (let i = 0; i < nSites; i++) {
    const id = `site${i}`;
    await store.createSite({ id, name: `hospital-${i}`, institution: null, jurisdiction: null, credential_hash: `cred-${i}`, public_key: null, status: 'active', created_at: T0, last_seen_at: null });
    sites.push(id);
  }
  const spec: StudySpec = { ...heartStudy('engine', sites.map((_, i) => `hospital-${i}`), 2), roundTimeoutSeconds: 60, ...over };
  const studyId = 'st-engine';
  await store.createStudy({ id: studyId, name: spec.name, spec: JSON.stringify(spec), status: 'created', current_round: 0, participants: null, created_by: 'lead', created_at: T0, updated_at: T0, claimed_by: null, claimed_until: null, error: null });
  const weights = initial ?? encodeSafetensors(initialWeights(spec));
  const blob = await store.blobs.put(weights);
  await store.startStudy(studyId, sites, { id: `${studyId}.v0`, study_id: studyId, round: 0, digest: blob.digest, size: blob.size, created_at: T0 }, T0);

  const armed = new Map<string, { error: () => unknown; times: number }>();
  const calls = new Map<string, number>();
  const faulty = new Proxy(store, {
    get(target, key, recv) {
      const v = Reflect.get(target, key, recv);
      if (typeof v !== 'function' || typeof key !== 'string') return v;
      return (...args: unknown[]) => {
        calls.set(key, (calls.get(key) ?? 0) + 1);
        const a = armed.get(key);
        if (a && a.times > 0) {
          a.times--;
          return Promise.reject(a.error());
        }
        return (v as (...x: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const keys = generateSigningKeys();
  const audit = { privateKey: importPrivateKey(keys.privateKeyPem), publicKeyRaw: keys.publicKeyRaw };
  return {
    store, faulty, clock, sites, studyId, spec, calls, url: join(dir, 'setu.db'),
    engine: (o = {}) => new RoundEngine(faulty, new EventBus(), { instanceId: 'coord-a', now: () => clock.t, tickMs: 500, retry: { random: () => 0.5 }, audit, ...o }),
    inject: (method, error, times) => armed.set(method, { error, times }),
    cleanup: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A site's result for its task of `round`, accepted the way routes/agent.ts accepts it. */
async function report(f: Fixture, round: number, siteId: string, extra: Partial<ResultMeta> = {}): Promise<void> {
  const task = (await f.store.listTasks(f.studyId, round)).find((t) => t.site_id === siteId)!;
  const meta: ResultMeta = { taskId: task.id, numExamples: 10, trainMetrics: { loss: 0.5 }, ...extra };
  let weights: Uint8Array | null = null;
  if (task.kind === 'fit') {
    const global = decodeSafetensors(await f.store.blobs.readAll((await f.store.getModelVersion(task.model_version_id))!.digest)).weights;
    // Each site moves every value by its own small step, so the aggregate is a checkable mean.
    const k = Number(siteId.replace('site', '')) + 1;
    for (const t of Object.values(global)) for (let i = 0; i < t.data.length; i++) t.data[i] = t.data[i]! + 0.01 * k;
    weights = encodeSafetensors(global, { [RESULT_META_KEY]: JSON.stringify(meta) });
  }
  const blob = weights ? await f.store.blobs.put(weights) : null;
  await f.store.acceptUpdate({ task_id: task.id, study_id: f.studyId, round, site_id: siteId, digest: blob?.digest ?? null, size: blob?.size ?? null, num_examples: meta.numExamples, metrics: JSON.stringify(meta), received_at: f.clock.t });
}

async function status(f: Fixture) {
  return (await f.store.getStudy(f.studyId))!;
}

async function auditKinds(f: Fixture): Promise<{ kind: string; data: string }[]> {
  return (await f.store.listAuditRows()).map((r) => ({ kind: r.kind, data: r.data }));
}

test('a round opens with a task per site and the deadline of the spec; all results commit it; the last round completes the study', async () => {
  const f = await fixture();
  try {
    const e = f.engine();
    await e.tick();
    const r1 = (await f.store.openRoundOf(f.studyId))!;
    assert.equal(r1.round, 1);
    assert.equal(r1.deadline_at, T0 + 60_000);
    assert.deepEqual((await f.store.listTasks(f.studyId, 1)).map((t) => [t.site_id, t.status, t.deadline_at]), f.sites.map((s) => [s, 'issued', T0 + 60_000]));
    for (const s of f.sites.slice(0, 2)) await report(f, 1, s);
    f.clock.t += 1000;
    await e.tick();
    assert.equal((await f.store.openRoundOf(f.studyId))?.round, 1, 'two of three results do not commit before the deadline');
    await report(f, 1, f.sites[2]!);
    await e.tick();
    assert.equal((await status(f)).current_round, 1);
    const v1 = decodeSafetensors(await f.store.blobs.readAll((await f.store.latestModelVersion(f.studyId))!.digest)).weights;
    const v0 = initialWeights(f.spec);
    // FedAvg of equal cohorts: the mean step, 0.01·(1+2+3)/3.
    assert.ok(Math.abs(v1['weight']!.data[0]! - v0['weight']!.data[0]! - 0.02) < 1e-6);
    for (const round of [2, 3]) {
      await e.tick();
      for (const s of f.sites) await report(f, round, s);
      await e.tick();
    }
    assert.equal((await status(f)).status, 'completed');
  } finally {
    await f.cleanup();
  }
});

test('minSites: past the deadline the round commits from minSites results, and below it the study fails with the reason audited', async () => {
  const f = await fixture({ minSites: 2 });
  try {
    const e = f.engine({ tickMs: 1000 });
    await e.tick();
    await report(f, 1, f.sites[0]!);
    await report(f, 1, f.sites[1]!);
    // The coordinator is up throughout (a tick each second): the deadline is real.
    for (let s = 0; s < 61; s++) {
      f.clock.t += 1000;
      await e.tick();
    }
    assert.equal((await status(f)).current_round, 1, 'committed from two of three after the deadline');
    assert.equal((await f.store.listTasks(f.studyId, 1)).find((t) => t.site_id === f.sites[2])?.status, 'expired');
    await e.tick();
    assert.equal((await f.store.openRoundOf(f.studyId))?.round, 2);
    await report(f, 2, f.sites[0]!);
    for (let s = 0; s < 61; s++) {
      f.clock.t += 1000;
      await e.tick();
    }
    const st = await status(f);
    assert.equal(st.status, 'failed');
    assert.match(st.error ?? '', /^round 2: 1 of 3 sites reported before the deadline; at least 2 needed \(minSites 2\): hospital-1 did not answer; hospital-2 did not answer$/);
    const stopped = (await auditKinds(f)).filter((a) => a.kind === 'study.stopped');
    assert.equal(stopped.length, 1);
    assert.match(stopped[0]!.data, /failed: round 2: 1 of 3 sites reported/);
  } finally {
    await f.cleanup();
  }
});

test('a prepare round whose sites report schema problems fails the study naming each site and column', async () => {
  const schema = {
    features: [{ name: 'age', type: 'numeric' as const }],
    task: { kind: 'binary' as const, label: 'num', positive: { above: 0 } },
    split: { kind: 'stratified' as const, trainFraction: 0.7, seed: 1 },
  };
  const f = await fixture({ dataset: 'cohort', dataSchema: schema, model: { kind: 'logistic', inputDim: 1 } });
  try {
    const e = f.engine();
    await e.tick();
    const r0 = (await f.store.openRoundOf(f.studyId))!;
    assert.deepEqual([r0.round, r0.kind], [0, 'prepare']);
    await report(f, 0, f.sites[0]!, { prepare: { problems: [] } });
    await report(f, 0, f.sites[1]!, { prepare: { problems: [{ column: 'age', message: 'column age is missing' }] } });
    await e.tick();
    assert.equal((await status(f)).status, 'running', 'a prepare round waits for every site');
    await report(f, 0, f.sites[2]!, { prepare: { problems: [] } });
    await e.tick();
    const st = await status(f);
    assert.equal(st.status, 'failed');
    assert.equal(st.error, "the study cannot start: its data schema does not match every site's file: site hospital-1: column age is missing");
  } finally {
    await f.cleanup();
  }
});

test('transient faults are retried with backoff, counted and never fail the study; the study then goes on', async () => {
  const f = await fixture();
  try {
    const e = f.engine();
    await e.tick();
    for (const s of f.sites) await report(f, 1, s);
    const before = (await engineRetries.get()).values;
    const count = (reason: string, vals = before) => vals.find((v) => v.labels.reason === reason)?.value ?? 0;
    const pgDeadlock = () => Object.assign(new Error('deadlock detected'), { code: '40P01' });
    const dropped = () => new Error('Connection terminated unexpectedly');
    const busy = () => Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    f.inject('listUpdates', () => new StoreUnavailable('connection lost'), 2);
    f.inject('commitRound', pgDeadlock, 1);
    f.inject('latestStrategyState', dropped, 1);
    f.inject('claimStudy', busy, 1);
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({ level: 'info', destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
    const e2 = f.engine({ logger });
    const waits: number[] = [];
    for (let i = 0; i < 400 && (await status(f)).current_round < 1; i++) {
      const calls = f.calls.get('claimStudy') ?? 0;
      await e2.tick();
      if ((f.calls.get('claimStudy') ?? 0) === calls) waits.push(i); // backing off: the study was not touched
      f.clock.t += 100;
      assert.equal((await status(f)).status, 'running');
    }
    assert.equal((await status(f)).current_round, 1, 'the round committed once the faults passed');
    assert.ok(waits.length > 0, 'between retries the engine waited');
    const after = (await engineRetries.get()).values;
    assert.equal(count('store_unavailable', after) - count('store_unavailable'), 2);
    assert.equal(count('pg_40p01', after) - count('pg_40p01'), 1);
    assert.equal(count('connection_lost', after) - count('connection_lost'), 1);
    assert.equal(count('sqlite_busy', after) - count('sqlite_busy'), 1);
    assert.equal((await f.store.listModelVersions(f.studyId)).length, 2, 'committed exactly once');
    // Each retry is a warning naming the study, the attempt and the reason.
    const retries = lines.filter((l) => l['msg'] === 'transient fault while driving a study; retrying');
    assert.equal(retries.length, 5);
    assert.deepEqual(retries.map((l) => [l['study'], l['attempt'], l['reason']]), [
      [f.studyId, 1, 'sqlite_busy'],
      [f.studyId, 2, 'store_unavailable'],
      [f.studyId, 3, 'store_unavailable'],
      [f.studyId, 4, 'connection_lost'],
      [f.studyId, 5, 'pg_40p01'],
    ]);
  } finally {
    await f.cleanup();
  }
});

test("the study's own fault (a model that does not decode) fails it with the reason, audited", async () => {
  const f = await fixture({}, 3, new TextEncoder().encode('not safetensors at all'));
  try {
    const e = f.engine();
    await e.tick();
    assert.equal((await f.store.openRoundOf(f.studyId))?.round, 1);
    for (const s of f.sites) await f.store.acceptUpdate({ task_id: `${f.studyId}.r1.${s}`, study_id: f.studyId, round: 1, site_id: s, digest: (await f.store.blobs.put(new Uint8Array(8))).digest, size: 8, num_examples: 1, metrics: JSON.stringify({ taskId: `${f.studyId}.r1.${s}`, numExamples: 1 }), received_at: T0 });
    await e.tick();
    const st = await status(f);
    assert.equal(st.status, 'failed');
    assert.match(st.error ?? '', /safetensors|header/i);
    assert.ok((await auditKinds(f)).some((a) => a.kind === 'study.stopped' && a.data.includes(st.error!.slice(0, 20))));
  } finally {
    await f.cleanup();
  }
});

test('downtime is not the sites\' fault: a restarted coordinator, or one that was not driving, gives the open round back the time lost', async () => {
  const f = await fixture();
  try {
    const a = f.engine();
    await a.tick();
    assert.equal((await f.store.openRoundOf(f.studyId))!.deadline_at, T0 + 60_000);
    await a.stop();
    // Down for 200 s, past the 60 s deadline; restarted on the same data directory (same instance id). Its
    // first try to give the time back meets a transient fault: nothing is lost, the retry gives it all back.
    f.clock.t = T0 + 200_000;
    const b = f.engine();
    f.inject('transaction', () => new StoreUnavailable('connection lost'), 1);
    await b.tick();
    assert.equal((await status(f)).status, 'running', 'not failed for the coordinator\'s own downtime');
    assert.equal((await f.store.openRoundOf(f.studyId))!.deadline_at, T0 + 60_000);
    f.clock.t = T0 + 201_000;
    await b.tick();
    const r = (await f.store.openRoundOf(f.studyId))!;
    assert.equal(r.deadline_at, T0 + 276_000, 'the deadline moved out by exactly the time nobody drove the study and the 15 s reconnect grace');
    assert.ok((await f.store.listTasks(f.studyId, 1)).every((t) => t.deadline_at === T0 + 276_000), 'so did the tasks\' deadlines');
    assert.equal(Number(await f.store.getKv(drivenAtKey(f.studyId))), T0 + 201_000);
    // Ticking normally gives nothing more back.
    for (let s = 1; s <= 5; s++) {
      f.clock.t = T0 + 201_000 + s * 500;
      await b.tick();
    }
    assert.equal((await f.store.openRoundOf(f.studyId))!.deadline_at, T0 + 276_000);
    // A stall inside one process (the store unreachable, the machine suspended) counts the same way.
    f.clock.t += 30_000;
    await b.tick();
    assert.equal((await f.store.openRoundOf(f.studyId))!.deadline_at, T0 + 321_000);
    for (const s of f.sites) await report(f, 1, s);
    await b.tick();
    assert.equal((await status(f)).current_round, 1);
  } finally {
    await f.cleanup();
  }
});

test('a restarted coordinator re-claims its own lease at once; a different coordinator waits for the lease to lapse', async () => {
  const f = await fixture();
  try {
    const a = f.engine({ instanceId: 'coord-a', leaseMs: 10_000 });
    await a.tick();
    await a.stop();
    for (const s of f.sites) await report(f, 1, s);
    f.clock.t += 1000;
    const other = f.engine({ instanceId: 'coord-b', leaseMs: 10_000 });
    await other.tick();
    assert.equal((await status(f)).current_round, 0, 'coord-b respects coord-a\'s lease');
    assert.equal((await status(f)).claimed_by, 'coord-a');
    const restarted = f.engine({ instanceId: 'coord-a', leaseMs: 10_000 });
    await restarted.tick();
    assert.equal((await status(f)).current_round, 1, 'the same instance drives at once');
    await restarted.stop();
    f.clock.t += 10_001;
    await other.tick();
    const st = await status(f);
    assert.equal(st.claimed_by, 'coord-b', 'once the lease lapsed, another coordinator takes the study');
    assert.equal((await f.store.openRoundOf(f.studyId))?.round, 2);
    // SecAgg+ stages: only the lease holder holds the session; another coordinator says who does.
    const task = (await f.store.listTasks(f.studyId, 2))[0]!;
    assert.equal(await servedElsewhere(f.store, task, 'coord-b', f.clock.t), undefined);
    assert.match((await servedElsewhere(f.store, task, 'coord-a', f.clock.t)) ?? '', /served by coordinator coord-b, which drives the study; this coordinator \(coord-a\) holds no session/);
    assert.equal(await servedElsewhere(f.store, task, 'coord-a', f.clock.t + 10_001), undefined, 'a lapsed lease explains nothing');
  } finally {
    await f.cleanup();
  }
});

test('a restarted SecAgg+ round re-issues only its live tasks: a refused or expired task stays closed', async () => {
  const f = await fixture({ privacy: { secagg: {} }, minSites: 2, roundTimeoutSeconds: 600 }, 4, undefined, 'sqlite');
  try {
    const a = f.engine();
    await a.tick();
    const tasks = await f.store.listTasks(f.studyId, 1);
    assert.equal(tasks.length, 4);
    // site0 refused its task; site1's task expired; site2 had delivered (its agent is mid-round).
    await f.store.countRefusal({ study_id: f.studyId, round: 1, site_id: 'site0', task_id: tasks[0]!.id, code: 'site_refused', reason: 'budget', at: T0 });
    assert.equal(await f.store.refuseTask(tasks[0]!.id, T0), true);
    const raw = await openRawDatabase(f.url); // no store call expires one task: set it as a passed deadline would leave it
    await raw.updateTable('tasks').set({ status: 'expired' }).where('id', '=', tasks[1]!.id).execute();
    await raw.destroy();
    await f.store.markDelivered(tasks[2]!.id, T0);
    await a.stop();
    const lines: string[] = [];
    const b = f.engine({ log: (m) => lines.push(m) });
    f.clock.t += 1000;
    await b.tick();
    assert.ok(lines.some((l) => /restarted it as/.test(l)), lines.join('\n'));
    const after = new Map((await f.store.listTasks(f.studyId, 1)).map((t) => [t.site_id, t.status]));
    assert.deepEqual(Object.fromEntries(after), { site0: 'refused', site1: 'expired', site2: 'issued', site3: 'issued' });
    // The new session expects keys only from the live sites.
    await b.tick();
    const session = b.secagg.get(f.studyId, 1)!;
    assert.ok(session);
    assert.equal(session.stage, 'keys');
    assert.equal((await status(f)).status, 'running');
  } finally {
    await f.cleanup();
  }
});

test('the fault classifier: codes, causes and plain errors', () => {
  assert.deepEqual(classifyFault(new StoreUnavailable('x')), { transient: true, reason: 'store_unavailable' });
  for (const code of ['08006', '08001', '40001', '40P01', '55P03', '57P01', '57P03', '53300']) assert.equal(classifyFault(Object.assign(new Error('pg'), { code })).transient, true, code);
  for (const code of ['ECONNRESET', 'ETIMEDOUT', 'ECONNREFUSED', 'SQLITE_BUSY', 'SQLITE_IOERR_WRITE']) assert.equal(classifyFault(Object.assign(new Error('x'), { code })).transient, true, code);
  assert.equal(classifyFault(new Error('wrapped', { cause: Object.assign(new Error('reset'), { code: 'ECONNRESET' }) })).transient, true);
  // Constraint violations, syntax errors, a bad model: the study's own (or a bug), never waited out.
  for (const code of ['23505', '42601', '22P02', 'SQLITE_CONSTRAINT']) assert.equal(classifyFault(Object.assign(new Error('bad'), { code })).transient, false, code);
  assert.deepEqual(classifyFault(new Error('round 2: strategy refused')), { transient: false, reason: 'round 2: strategy refused' });
  const waits = [1, 2, 3, 4, 20].map((n) => backoffMs(n, { baseMs: 100, capMs: 1000, random: () => 1 - 1e-12 }));
  assert.deepEqual(waits, [100, 200, 400, 800, 1000]);
  assert.equal(backoffMs(3, { baseMs: 100, capMs: 1000, random: () => 0 }), 200, 'jitter keeps at least half the wait');
});
