/**
 * The asynchronous driver (async-rounds.ts) under the real round engine with an injected clock: results are written
 * into the store the way routes/agent.ts writes them (acceptUpdate), so each test drives only the coordinator.
 * A slow site never holds the others back, every version is the fold of the buffer it names, staleness beyond
 * maxStaleness is refused, what cannot be made safe is refused at creation, and a coordinator that dies between
 * accepting updates and folding them (a new engine on the reopened SQLite file) folds them exactly once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, StoreConflict, type Store } from '../store/store.js';
import { EventBus } from './events.js';
import { RoundEngine, initialWeights } from './engine.js';
import { encodeSafetensors, decodeSafetensors } from '../protocol/safetensors.js';
import { RESULT_META_KEY, StudySpecSchema, checkValue, type ResultMeta, type StudySpec } from '../protocol/api.js';
import { heartStudy } from '../testing/inject.js';
import { generateSigningKeys, importPrivateKey } from '../protocol/signing.js';
import { ASYNC_ROUND, asyncSpecProblems, asyncView } from './async-rounds.js';
import { foldBuffer } from './async-fold.js';
import { startProblems } from './study-checks.js';
import { startCoordinator } from './start.js';
import { createLogger } from '../observability/logger.js';
import { enrolSite, enrolUser, inject } from '../testing/inject.js';
import { waitFor } from '../testing/processes.js';
import { aggregatePart, rulesOf } from './study-model.js';
import type { Weights } from '../protocol/tensors.js';

const T0 = 1_700_000_000_000;
const STUDY = 'st-async';

interface Fixture {
  store: Store;
  clock: { t: number };
  spec: StudySpec;
  dir: string;
  engine(store?: Store): RoundEngine;
}

async function fixture(over: Partial<StudySpec> = {}, nSites = 3, backend: 'memory' | 'sqlite' = 'memory'): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'setu-async-'));
  const store = await openStore(backend === 'memory' ? 'memory:' : join(dir, 'setu.db'));
  const clock = { t: T0 };
  const sites: string[] = [];
  for (let i = 0; i < nSites; i++) {
    await store.createSite({ id: `site${i}`, name: `hospital-${i}`, institution: null, jurisdiction: null, credential_hash: `cred-${i}`, public_key: null, status: 'active', created_at: T0, last_seen_at: null });
    sites.push(`site${i}`);
  }
  const spec: StudySpec = { ...heartStudy('async', sites.map((_, i) => `hospital-${i}`), 3), roundTimeoutSeconds: 60, async: { bufferSize: 2 }, ...over };
  await store.createStudy({ id: STUDY, name: spec.name, spec: JSON.stringify(spec), status: 'created', current_round: 0, participants: null, created_by: 'lead', created_at: T0, updated_at: T0, claimed_by: null, claimed_until: null, error: null });
  const { digest, size } = await store.blobs.put(encodeSafetensors(initialWeights(spec)));
  await store.startStudy(STUDY, sites, { id: `${STUDY}.v0`, study_id: STUDY, round: 0, digest, size, created_at: T0 }, T0);
  const keys = generateSigningKeys();
  const audit = { privateKey: importPrivateKey(keys.privateKeyPem), publicKeyRaw: keys.publicKeyRaw };
  return { store, clock, spec, dir, engine: (s = store) => new RoundEngine(s, new EventBus(), { instanceId: 'coord-a', now: () => clock.t, audit }) };
}

/** The site's open task, answered with its model moved by 0.01·(k+1) per value (k: the site's number). */
async function report(store: Store, clock: { t: number }, siteId: string, numExamples = 10): Promise<{ taskId: string; base: string }> {
  const task = (await store.listTasks(STUDY, ASYNC_ROUND)).find((t) => t.site_id === siteId && (t.status === 'issued' || t.status === 'delivered'));
  assert.ok(task, `${siteId} holds an open task`);
  const meta: ResultMeta = { taskId: task.id, numExamples, trainMetrics: { loss: 0.5 }, evalMetrics: { accuracy: 0.5 } };
  const local = decodeSafetensors(await store.blobs.readAll((await store.getModelVersion(task.model_version_id))!.digest)).weights;
  const k = Number(siteId.replace('site', '')) + 1;
  for (const t of Object.values(local)) for (let i = 0; i < t.data.length; i++) t.data[i] = t.data[i]! + 0.01 * k;
  const blob = await store.blobs.put(encodeSafetensors(local, { [RESULT_META_KEY]: JSON.stringify(meta) }));
  await store.acceptUpdate({ task_id: task.id, study_id: STUDY, round: ASYNC_ROUND, site_id: siteId, digest: blob.digest, size: blob.size, num_examples: numExamples, metrics: JSON.stringify(meta), received_at: clock.t++ });
  return { taskId: task.id, base: task.model_version_id };
}

async function openTasks(store: Store): Promise<Record<string, string>> {
  return Object.fromEntries((await store.listTasks(STUDY, ASYNC_ROUND)).filter((t) => t.status === 'issued' || t.status === 'delivered').map((t) => [t.site_id, t.model_version_id]));
}

const model = async (store: Store, v: number): Promise<Weights> => decodeSafetensors(await store.blobs.readAll((await store.getModelVersion(`${STUDY}.v${v}`))!.digest)).weights;

test('a slow site never holds the others back: every two updates make a version, the slow one folds later, weighted by its staleness', async () => {
  const f = await fixture();
  const { store, clock } = f;
  try {
    const engine = f.engine();
    await engine.tick();
    assert.deepEqual(await openTasks(store), { site0: `${STUDY}.v0`, site1: `${STUDY}.v0`, site2: `${STUDY}.v0` }, 'every site trains from version 0');
    // site2 is slow: sites 0 and 1 answer twice before it answers once.
    await report(store, clock, 'site0');
    await engine.tick();
    assert.equal((await store.getStudy(STUDY))!.current_round, 0, 'one update is not a buffer of two');
    assert.equal((await openTasks(store)).site0, undefined, 'site0 already trained from version 0: its next task waits for version 1');
    await report(store, clock, 'site1');
    await engine.tick();
    assert.equal((await store.getStudy(STUDY))!.current_round, 1);
    assert.deepEqual(await openTasks(store), { site0: `${STUDY}.v1`, site1: `${STUDY}.v1`, site2: `${STUDY}.v0` });
    await report(store, clock, 'site0');
    await report(store, clock, 'site2'); // from version 0, folded against version 1: staleness 1
    await engine.tick();
    assert.equal((await store.getStudy(STUDY))!.current_round, 2);
    // Version 2 by hand: v1 + Σ n·g(s)·Δ / Σ n with Δ_site0 = 0.01, Δ_site2 = 0.03 (from v0), g(1) = 2^-0.5.
    const v1 = await model(store, 1), v2 = await model(store, 2);
    const g = Math.pow(2, -0.5);
    for (const k of Object.keys(v1)) {
      v2[k]!.data.forEach((x, i) => {
        const want = Math.fround(v1[k]!.data[i]! + (10 * 0.01 + 10 * g * 0.03) / 20);
        assert.ok(Math.abs(x - want) < 2e-6, `${k}[${i}]: ${x} vs ${want}`);
      });
    }
    const rows = (await store.listContributions(STUDY)).map((c) => [c.site_id, c.version, c.base_version, c.staleness, c.status]);
    assert.deepEqual(rows, [['site0', 1, 0, 0, 'folded'], ['site1', 1, 0, 0, 'folded'], ['site0', 2, 1, 0, 'folded'], ['site2', 2, 0, 1, 'folded']]);
    const view = (await asyncView(store, (await store.getStudy(STUDY))!, (id) => id))!;
    assert.deepEqual(view.staleness.histogram, [{ staleness: 0, count: 3 }, { staleness: 1, count: 1 }]);
    assert.equal(view.version, 2);
    const audit = (await store.listAuditRows()).filter((r) => r.kind === 'aggregate.committed').map((r) => JSON.parse(r.data) as { round: number; updates: { staleness: number; weight: number }[] });
    assert.deepEqual(audit.map((a) => [a.round, a.updates.map((u) => u.staleness)]), [[1, [0, 0]], [2, [0, 1]]]);
    // The last version closes the round (tasks out expire); the engine then evaluates the final model and completes.
    await engine.tick();
    await report(store, clock, 'site1');
    await report(store, clock, 'site2');
    await engine.tick();
    assert.equal((await store.getStudy(STUDY))!.current_round, 3);
    assert.equal((await store.getRound(STUDY, ASYNC_ROUND))!.status, 'committed');
    assert.deepEqual(await openTasks(store), {}, 'no fit task stays out after the last version');
    await engine.tick();
    const evaluate = (await store.openRoundOf(STUDY))!;
    assert.deepEqual([evaluate.round, evaluate.kind, evaluate.model_version_id], [4, 'evaluate', `${STUDY}.v3`]);
  } finally {
    await f.store.close();
    rmSync(f.dir, { recursive: true, force: true });
  }
});

test('updates staler than maxStaleness are refused with the reason, and a task that far behind is expired and issued again', async () => {
  const f = await fixture({ rounds: 5, async: { bufferSize: 2, maxStaleness: 1 } });
  const { store, clock } = f;
  try {
    const engine = f.engine();
    await engine.tick();
    for (let v = 0; v < 2; v++) {
      await report(store, clock, 'site0');
      await report(store, clock, 'site1');
      await engine.tick();
    }
    // site2 still trains from version 0, two behind: its task is expired and it starts again from version 2.
    assert.equal((await store.getStudy(STUDY))!.current_round, 2);
    assert.equal((await store.getTask(`${STUDY}.r1.site2.v0`))!.status, 'expired');
    assert.equal((await openTasks(store)).site2, `${STUDY}.v2`);
    // An update that arrived before the expiry (accepted by the route) is refused at the fold, with a refusal row.
    const lateTask = `${STUDY}.r1.site1.v2`;
    await report(store, clock, 'site1');
    await engine.tick();
    await report(store, clock, 'site0');
    await report(store, clock, 'site2');
    assert.equal((await store.getStudy(STUDY))!.current_round, 2, 'site1 alone is not a buffer; site0 and site2 arrive after');
    await engine.tick();
    assert.equal((await store.getStudy(STUDY))!.current_round, 3);
    assert.ok((await store.listContributions(STUDY)).some((c) => c.task_id === lateTask && c.status === 'folded'));
    // Now make one stale by hand: an update trained from version 1 while version 3 is the latest.
    const t = (await store.listTasks(STUDY, ASYNC_ROUND)).find((x) => x.site_id === 'site1' && x.status === 'issued')!;
    await store.expireTask(t.id, clock.t);
    const old = { ...t, id: `${STUDY}.r1.site1.old`, model_version_id: `${STUDY}.v1`, status: 'issued' };
    await store.issueTasks(STUDY, ASYNC_ROUND, [old]);
    await report(store, clock, 'site1');
    await report(store, clock, 'site0');
    await engine.tick();
    // The buffer held site2's update (from version 2, staleness 1), the stale one and site0's: version 4 folds the two usable.
    assert.equal((await store.getStudy(STUDY))!.current_round, 4);
    assert.deepEqual((await store.listContributions(STUDY)).filter((c) => c.version === 4).map((c) => [c.site_id, c.staleness]), [['site0', 0], ['site2', 1]]);
    const stale = (await store.listContributions(STUDY)).find((c) => c.task_id === old.id)!;
    assert.deepEqual([stale.status, stale.staleness, stale.weight], ['stale', 2, 0]);
    const refusal = (await store.listRefusals(STUDY)).find((r) => r.task_id === old.id)!;
    assert.equal(refusal.code, 'stale_update');
    assert.match(refusal.reason, /trained from version 1, 2 versions behind version 3; maxStaleness is 1/);
  } finally {
    await f.store.close();
    rmSync(f.dir, { recursive: true, force: true });
  }
});

test('a coordinator that dies with updates buffered: a new engine on the reopened store folds each exactly once', async () => {
  const f = await fixture({}, 3, 'sqlite');
  const { clock } = f;
  let store = f.store;
  try {
    await f.engine().tick();
    await report(store, clock, 'site0');
    await report(store, clock, 'site2');
    // The coordinator is gone before any tick folds them (nothing in memory survives): reopen the file.
    await store.close();
    store = await openStore(join(f.dir, 'setu.db'));
    const engine = new RoundEngine(store, new EventBus(), { instanceId: 'coord-b', now: () => clock.t });
    clock.t += 20_000; // past coord-a's lease
    await engine.tick();
    assert.equal((await store.getStudy(STUDY))!.current_round, 1, 'the buffered updates were not lost');
    assert.deepEqual((await store.listContributions(STUDY)).map((c) => [c.site_id, c.version]), [['site0', 1], ['site2', 1]]);
    await engine.tick();
    assert.equal((await store.getStudy(STUDY))!.current_round, 1, 'and were folded once');
    // A second fold of the same version (another coordinator that read the same buffer) is refused by the store.
    const v1 = (await store.getModelVersion(`${STUDY}.v1`))!;
    await assert.rejects(store.commitVersion({ studyId: STUDY, round: ASYNC_ROUND, version: 1, now: clock.t, deadlineAt: clock.t, model: { ...v1, id: `${STUDY}.v1-again` }, metrics: [], contributions: [] }), StoreConflict);
    // The fold is the one the buffer names.
    const v0 = await model(store, 0), got = await model(store, 1);
    const rules = rulesOf(f.spec, Object.keys(v0));
    const local = (k: number) => Object.fromEntries(Object.entries(aggregatePart(v0, rules)).map(([n, t]) => [n, { ...t, data: t.data.map((x) => x + 0.01 * k) }]));
    const want = foldBuffer(aggregatePart(v0, rules), [1, 3].map((k) => ({ base: aggregatePart(v0, rules), local: local(k), numExamples: 10, staleness: 0 })), { async: f.spec.async! });
    for (const k of Object.keys(want)) assert.deepEqual([...got[k]!.data], [...want[k]!.data]);
  } finally {
    await store.close();
    rmSync(f.dir, { recursive: true, force: true });
  }
});

test('under client-level DP a buffer takes one update per site (each clipped to C), and a site whose update waits gets no new task', async () => {
  // σ = 0 so the fold can be checked exactly: each delta (0.01·k on all 14 values) clips to norm C = 0.01.
  const f = await fixture({ privacy: { dp: { level: 'client', epsilon: 1, delta: 1e-5, clipNorm: 0.01, noiseMultiplier: 0 } } });
  const { store, clock } = f;
  try {
    const engine = f.engine();
    await engine.tick();
    await report(store, clock, 'site0');
    // A second update of site0 from version 0 (as a coordinator that issued twice would leave it) is in the buffer too.
    const t0 = (await store.getTask(`${STUDY}.r1.site0.v0`))!;
    await store.issueTasks(STUDY, ASYNC_ROUND, [{ ...t0, id: `${STUDY}.r1.site0.extra`, status: 'issued', done_at: null }]);
    await report(store, clock, 'site0');
    await report(store, clock, 'site1');
    await engine.tick();
    assert.equal((await store.getStudy(STUDY))!.current_round, 1);
    assert.deepEqual((await store.listContributions(STUDY)).map((c) => c.task_id), [`${STUDY}.r1.site0.v0`, `${STUDY}.r1.site1.v0`], 'one update per site');
    assert.deepEqual((await store.unfoldedUpdates(STUDY, ASYNC_ROUND)).map((u) => u.task_id), [`${STUDY}.r1.site0.extra`], 'the other waits for a later buffer');
    assert.deepEqual(await openTasks(store), { site1: `${STUDY}.v1`, site2: `${STUDY}.v0` }, 'site0, whose update waits, gets no task yet');
    const v0 = await model(store, 0), v1 = await model(store, 1);
    const step = 0.01 / Math.sqrt(14); // (clip(Δ_0) + clip(Δ_1)) / K, every value alike
    for (const k of Object.keys(v0)) v1[k]!.data.forEach((x, i) => assert.ok(Math.abs(x - (v0[k]!.data[i]! + step)) < 1e-6, `${k}[${i}]`));
  } finally {
    await f.store.close();
    rmSync(f.dir, { recursive: true, force: true });
  }
});

test('asynchronous studies are checked at creation: each problem names its field and what is allowed', () => {
  const base = heartStudy('a', ['h0', 'h1', 'h2'], 3);
  assert.deepEqual(asyncSpecProblems(base), []);
  assert.deepEqual(asyncSpecProblems({ ...base, async: { bufferSize: 2 } }), []);
  const bad = asyncSpecProblems({ ...base, strategy: { name: 'Krum' }, minSites: 2, async: { bufferSize: 4, stalenessWeight: 'constant', stalenessExponent: 1 }, privacy: { secagg: {} } });
  assert.equal(bad.length, 5, bad.join('\n'));
  assert.match(bad[0]!, /^\/strategy\/name: .*fedavg, fedprox \(got Krum\)/);
  assert.match(bad[1]!, /^\/privacy\/secagg: .*staleness weight/);
  assert.match(bad[2]!, /^\/async\/bufferSize: 4 exceeds the 3 sites/);
  assert.match(bad[3]!, /^\/async\/stalenessExponent: only the polynomial/);
  assert.match(bad[4]!, /^\/minSites: /);
  assert.match(startProblems({ ...base, async: { bufferSize: 3 } }, ['a', 'b']).join(), /^\/async\/bufferSize: 3 needs at least that many participants and 2 site\(s\) take part \(a, b\)/);
  assert.deepEqual(checkValue(StudySpecSchema, { ...base, async: { bufferSize: 2, stalenessWeight: 'linear' } }), ['/async/stalenessWeight: must be one of polynomial, constant, hinge, got "linear"']);
  assert.match(checkValue(StudySpecSchema, { ...base, async: { bufferSize: 2, versions: 3 } }).join(), /\/async\/versions: unknown field \(allowed here: bufferSize, stalenessWeight/);
});

test('over HTTP: refusals at create name the field, a started study hands out fit tasks whose DP divides by the buffer, the detail carries the versions', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-async-http-'));
  const c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 50, logger: createLogger({ level: 'silent' }) });
  try {
    const admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
    const lead = await enrolUser(c.app, admin, 'lead', 'study_lead');
    const sites = [await enrolSite(c.app, admin, 'a'), await enrolSite(c.app, admin, 'b'), await enrolSite(c.app, admin, 'c')];
    const base = { ...heartStudy('http-async', ['a', 'b', 'c'], 4), async: { bufferSize: 2 } };
    const secagg = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: { ...base, privacy: { secagg: {} } } });
    assert.equal(secagg.status, 400);
    assert.equal(secagg.json.error, 'invalid_study');
    assert.match(secagg.json.message, /\/privacy\/secagg: SecAgg\+ sums a fixed set of sites/);
    const weighting = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: { ...base, async: { bufferSize: 2, stalenessWeight: 'linear' } } });
    assert.equal(weighting.status, 400);
    // The route's own schema check names the field (the CLI's checkValue, tested above, also lists the values allowed).
    assert.match(weighting.json.message, /async\/stalenessWeight/);
    const created = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: { ...base, privacy: { dp: { level: 'client', epsilon: 8, delta: 1e-5, clipNorm: 1 } } } });
    assert.equal(created.status, 200, created.body);
    const id = created.json.id as string;
    assert.equal((await inject(c.app, 'POST', `/v1/studies/${id}/start`, { as: lead })).status, 200);
    const task = await waitFor('a task for site a', async () => {
      const r = await inject(c.app, 'GET', '/v1/agent/task?waitMs=200', { as: sites[0]! });
      return r.status === 200 ? r.json : undefined;
    });
    assert.deepEqual([task.kind, task.round, task.taskId, task.modelVersionId], ['fit', ASYNC_ROUND, `${id}.r1.${sites[0]!.keyId}.v0`, `${id}.v0`]);
    assert.equal(task.privacy.clientsPerRound, 2, 'client-level DP divides by the buffer, K');
    // The reply is checked against its schema under node --test (plugins/replies.ts): a mismatch would answer 500.
    const d = await inject(c.app, 'GET', `/v1/studies/${id}`, { as: lead });
    assert.equal(d.status, 200, d.body);
    assert.deepEqual({ ...d.json.async, inFlight: d.json.async.inFlight.length }, { version: 0, versions: 4, bufferSize: 2, buffered: 0, inFlight: 3, staleness: { histogram: [], mean: null, max: null, refused: 0 }, versionTimes: [] });
  } finally {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
