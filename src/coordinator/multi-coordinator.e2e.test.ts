/**
 * Two coordinator processes on one PostgreSQL, behind a small TCP load balancer that spreads the agents'
 * connections over both (and skips one that refuses them). The study is driven by whichever holds its lease;
 * that one is SIGKILLed mid-study, the other takes the lease over and finishes the study, and the final model
 * is bit-for-bit the one of an uninterrupted run on the same two coordinators.
 *
 * A dashboard may follow either coordinator: each one's event stream carries every commit of the study, whichever
 * coordinator made it.
 *
 * SecAgg+ sessions live in the memory of the coordinator driving the study: the other one answers the stages
 * 503 `secagg_elsewhere`, naming the one that serves them (never a silent 409 or a second session).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { balancer } from '../testing/balancer.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { openStore } from '../store/store.js';
import { decodeSafetensors } from '../protocol/safetensors.js';
import { createTempDatabase, pgSkipReason } from '../testing/pg.js';
import { adminClient, freePort, runSetu, enrolHeartSites, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';
import { INSTANCE_ID_FILE } from './instance.js';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { HttpClient, type Signer } from '../site/http.js';
import { generateSigningKeys, signRequest } from '../protocol/signing.js';
import type { TaskMessage, TrainerDeclaration } from '../protocol/api.js';
import { followStudy, type CommitStream } from '../testing/study-events.js';

const ROUNDS = 8;

/** `setu coordinator start` on PostgreSQL; resolves once it listens. */
async function coordinator(dataDir: string, db: string, port: number, logFile: string): Promise<ChildProcess> {
  const child = runSetu(['coordinator', 'start', '--data-dir', dataDir, '--db', db, '--port', String(port)], logFile);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`coordinator did not listen within 60 s; see ${logFile}`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"event":"listening"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`coordinator exited with ${code}; see ${logFile}`));
    });
  });
  return child;
}

async function weightDigests(db: string, studyId: string): Promise<Map<number, string>> {
  const store = await openStore(db);
  try {
    const out = new Map<number, string>();
    for (const v of await store.listModelVersions(studyId)) {
      const w = decodeSafetensors(await store.blobs.readAll(v.digest)).weights;
      const h = createHash('sha256');
      for (const k of Object.keys(w).sort()) h.update(k).update(new Uint8Array(w[k]!.data.buffer, w[k]!.data.byteOffset, w[k]!.data.byteLength));
      out.set(v.round, h.digest('hex'));
    }
    return out;
  } finally {
    await store.close();
  }
}

/** Every commit of the study one coordinator's event stream carried, in order, until the study completed. */
async function commitsSeen(stream: CommitStream): Promise<number[]> {
  const rounds: number[] = [];
  for (;;) {
    const m = await stream.next(180_000);
    if (!m) throw new Error('the event stream fell silent before the study completed');
    if (m.type === 'round.committed') rounds.push(m.round);
    else if (m.status !== 'running') return rounds;
  }
}

async function federation(kill: boolean): Promise<{ digests: Map<number, string>; killed?: string; finishedBy?: string | null; streamed?: number[][] }> {
  const dir = mkdtempSync(join(tmpdir(), 'setu-multi-'));
  const pg = await createTempDatabase();
  const children: ChildProcess[] = [];
  let lb: Awaited<ReturnType<typeof balancer>> | undefined;
  try {
    const [pa, pb] = [await freePort(), await freePort()];
    const dirs = [join(dir, 'coord-a'), join(dir, 'coord-b')];
    const a = await coordinator(dirs[0]!, pg.url, pa, join(dir, 'coord-a.log'));
    // The second coordinator signs the same audit chain: it gets the first one's coordinator.key (and nothing else).
    mkdirSync(dirs[1]!, { recursive: true });
    copyFileSync(join(dirs[0]!, 'coordinator.key'), join(dirs[1]!, 'coordinator.key'));
    const b = await coordinator(dirs[1]!, pg.url, pb, join(dir, 'coord-b.log'));
    const coords = [a, b];
    children.push(a, b);
    const ids = dirs.map((d) => readFileSync(join(d, INSTANCE_ID_FILE), 'utf8').trim());
    assert.notEqual(ids[0], ids[1], 'two data directories, two instances');
    lb = await balancer([pa, pb]);
    const url = `http://127.0.0.1:${lb.port}`;
    const admin = adminClient(dirs[0]!, url);
    await enrolHeartSites(admin, url, dir, 4, children);
    const lead = await studyLeadClient(admin, url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'two-coordinators',
      dataset: 'heart',
      model: { kind: 'logistic', inputDim: 13 },
      strategy: { name: 'FedAvg' },
      rounds: ROUNDS,
      fit: { localSteps: 100, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.001 } },
      seed: 7,
    });
    // A dashboard may follow either coordinator: each one's stream carries every commit, whichever made it.
    const { token } = await lead.json<{ token: string }>('POST', '/v1/events/token', {});
    const streams = kill ? [] : await Promise.all([pa, pb].map((p) => followStudy([`http://127.0.0.1:${p}`], token, id)));
    const streamed = Promise.all(streams.map(commitsSeen));
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const status = () => admin.json<{ status: string; round: number; error: string | null }>('GET', `/v1/studies/${id}`);
    const holder = async () => {
      const store = await openStore(pg.url);
      try {
        return (await store.getStudy(id))?.claimed_by ?? null;
      } finally {
        await store.close();
      }
    };
    let killed: string | undefined;
    if (kill) {
      await waitFor('two committed rounds', async () => ((await status()).round >= 2 ? true : undefined), 90_000, 50);
      killed = (await holder())!;
      const k = ids.indexOf(killed);
      assert.ok(k >= 0, `the study is driven by one of the two coordinators (${killed})`);
      coords[k]!.kill('SIGKILL');
      await new Promise((r) => coords[k]!.once('exit', r));
    }
    const final = await waitFor('the study to finish', async () => {
      const s = await status();
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 180_000, 200);
    assert.equal(final.status, 'completed', final.error ?? '');
    const seen = kill ? undefined : await streamed;
    for (const st of streams) st.close();
    const finishedBy = await holder();
    await stopAll(children);
    const store = await openStore(pg.url);
    const versions = await store.listModelVersions(id);
    const rounds = await store.listRounds(id);
    await store.close();
    assert.deepEqual(versions.map((v) => v.round), Array.from({ length: ROUNDS + 1 }, (_, i) => i), 'one model version per round, none lost, none duplicated');
    assert.equal(rounds.filter((r) => r.status === 'committed').length, ROUNDS + 1);
    return { digests: await weightDigests(pg.url, id), ...(killed ? { killed, finishedBy } : {}), ...(seen ? { streamed: seen } : {}) };
  } finally {
    await stopAll(children);
    await lb?.close();
    await pg.drop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

test('two coordinators on one PostgreSQL: the one driving a study is SIGKILLed, the other finishes it with the same model', { timeout: 420_000 }, async (t) => {
  const skip = await pgSkipReason();
  if (skip) return t.skip(skip);
  const crashed = await federation(true);
  assert.ok(crashed.finishedBy && crashed.finishedBy !== crashed.killed, `the survivor (${crashed.finishedBy}) took the study over from ${crashed.killed}`);
  const clean = await federation(false);
  assert.deepEqual([...crashed.digests.entries()], [...clean.digests.entries()], 'the interrupted run ends with exactly the model of an uninterrupted one');
  // Each round committed once by whichever drove it, and announced on both coordinators' streams (peer-events.ts).
  const committed = Array.from({ length: ROUNDS + 1 }, (_, i) => i + 1);
  assert.deepEqual(clean.streamed, [committed, committed], 'every commit on the event stream of each coordinator');
});

/** Two coordinators in this process on one fresh PostgreSQL (B with A's coordinator.key), three enrolled sites and a study lead. */
async function inProcessPair(dir: string, db: string, o: { tickMs: number; taskLookMs?: number; sites?: number }) {
  const coords: RunningCoordinator[] = [];
  const a = await startCoordinator({ dataDir: join(dir, 'a'), db, port: 0, tickMs: o.tickMs, ...(o.taskLookMs ? { taskLookMs: o.taskLookMs } : {}) });
  coords.push(a);
  mkdirSync(join(dir, 'b'), { recursive: true });
  copyFileSync(join(dir, 'a', 'coordinator.key'), join(dir, 'b', 'coordinator.key'));
  const b = await startCoordinator({ dataDir: join(dir, 'b'), db, port: 0, tickMs: o.tickMs, ...(o.taskLookMs ? { taskLookMs: o.taskLookMs } : {}) });
  coords.push(b);
  // B's engine does not run: the study is A's (its lease), whatever the timing.
  await b.engine.stop();
  const call = (url: string, key: Signer | undefined, method: string, path: string, json?: unknown) =>
    new HttpClient({ baseUrl: url, ...(key ? { signer: key } : {}), giveUpAfterMs: 1 }).json<any>(method, path, json);
  const admin: Signer = { keyId: a.adminKey!.keyId, privateKey: a.adminKey!.privateKey };
  const builtin: TrainerDeclaration = { kind: 'builtin', description: 'built-in', models: ['logistic', 'mlp', 'cox'], features: ['evaluate', 'fedprox', 'scaffold', 'dp-sgd', 'dp-client', 'secagg', 'tensor-rules'] };
  const sites: Signer[] = [];
  for (let i = 0; i < (o.sites ?? 3); i++) {
    const inv = await call(a.url, admin, 'POST', '/v1/invites', { siteName: `h${i}` });
    const k = generateSigningKeys();
    const e = await call(a.url, undefined, 'POST', '/v1/enrol', { token: inv.token, publicKey: k.publicKeyRaw, cohorts: { heart: 100 } });
    const key = { keyId: e.siteId as string, privateKey: k.privateKeyPem };
    await call(a.url, key, 'PUT', '/v1/agent/trainer', builtin);
    sites.push(key);
  }
  const inv = await call(a.url, admin, 'POST', '/v1/users', { name: 'lead', role: 'study_lead' });
  const lk = generateSigningKeys();
  await call(a.url, undefined, 'POST', '/v1/users/enrol', { token: inv.token, publicKey: lk.publicKeyRaw });
  const lead: Signer = { keyId: inv.userId, privateKey: lk.privateKeyPem };
  return { a, b, coords, call, sites, lead };
}

test('two coordinators tell each other: a task A issued wakes the long-polls waiting at B, answers B took make A commit the round, at once', { timeout: 120_000 }, async (t) => {
  const skip = await pgSkipReason();
  if (skip) return t.skip(skip);
  const dir = mkdtempSync(join(tmpdir(), 'setu-multi-signals-'));
  const pg = await createTempDatabase();
  // Neither process looks on its own within the test: A's engine ticks only when kicked, B's does not run, and
  // neither looks for others' tasks. Only the signals through PostgreSQL (Store.peers) can move the round.
  const HOUR = 3_600_000;
  const { a, b, coords, call, sites, lead } = await inProcessPair(dir, pg.url, { tickMs: HOUR, taskLookMs: HOUR, sites: 2 });
  try {
    const { id } = await call(a.url, lead, 'POST', '/v1/studies', {
      name: 'signals', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 1, minSites: 2,
      fit: { localSteps: 5, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, roundTimeoutSeconds: 600,
    });
    // Both sites wait at B before A opens the round (a 20-s long-poll reads the store when it starts: nothing yet).
    const polls = sites.map((s) => call(b.url, s, 'GET', '/v1/agent/task?waitMs=20000') as Promise<TaskMessage | undefined>);
    await waitFor('both long-polls to wait at B', async () => ((await (await fetch(`${b.url}/metrics`)).text()).match(/^setu_open_longpolls (\d+)/m)?.[1] === '2' ? true : undefined), 10_000, 20);
    const t0 = Date.now();
    await call(a.url, lead, 'POST', `/v1/studies/${id}/start`, {});
    const tasks = await Promise.all(polls);
    const woke = Date.now() - t0;
    assert.deepEqual(tasks.map((m) => m?.round), [1, 1], 'each long-poll at B answered with its round-1 task');
    // Not at the end of their 20-s wait, when a long-poll reads the store again by itself.
    assert.ok(woke < 10_000, `the long-polls at B answered ${woke} ms after the start`);
    t.diagnostic(`tasks issued at A reached the long-polls at B ${woke} ms after the start`);
    // Both refuse at B: every site has answered, and A (which drives the study) closes the round.
    for (const [k, m] of tasks.entries()) await call(b.url, sites[k], 'POST', `/v1/agent/tasks/${encodeURIComponent(m!.taskId)}/refuse`, { reason: 'local policy' });
    const t1 = Date.now();
    const ended = await waitFor('A to close the round', async () => {
      const d = await call(a.url, lead, 'GET', `/v1/studies/${id}`);
      return d.status !== 'running' ? d : undefined;
    }, 20_000, 20);
    assert.equal(ended.status, 'failed');
    assert.match(ended.error, /^round 1: 0 of 2 sites reported a result/);
    t.diagnostic(`A closed the round ${Date.now() - t1} ms after the last answer at B`);
  } finally {
    for (const c of coords.reverse()) await c.close().catch(() => {});
    await pg.drop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SecAgg+ with two coordinators: the one driving the study serves the stages, the other answers 503 naming it', { timeout: 120_000 }, async (t) => {
  const skip = await pgSkipReason();
  if (skip) return t.skip(skip);
  const dir = mkdtempSync(join(tmpdir(), 'setu-multi-secagg-'));
  const pg = await createTempDatabase();
  const { a, b, coords, call, sites, lead } = await inProcessPair(dir, pg.url, { tickMs: 50 });
  try {
    const { id } = await call(a.url, lead, 'POST', '/v1/studies', {
      name: 'secagg-two', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 1,
      fit: { localSteps: 5, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, privacy: { secagg: {} }, roundTimeoutSeconds: 600,
    });
    await call(a.url, lead, 'POST', `/v1/studies/${id}/start`, {});
    const task = await waitFor('a SecAgg+ task', async () => {
      try {
        const m = await call(b.url, sites[0], 'GET', '/v1/agent/task?waitMs=1000');
        return m && (m as TaskMessage).taskId ? (m as TaskMessage) : undefined;
      } catch {
        return undefined;
      }
    }, 30_000);
    // Tasks come from either coordinator (they are rows in the store); the session only from A.
    const setup = await call(a.url, sites[0], 'GET', `/v1/agent/secagg/${task.taskId}/setup`);
    assert.ok(setup.session, 'the driving coordinator serves the setup');
    // Raw, so the 503 is seen as it is (Setu's client would retry it, as an agent does).
    const path = `/v1/agent/secagg/${task.taskId}/setup`;
    const r = await fetch(b.url + path, { headers: signRequest({ method: 'GET', path, keyId: sites[0]!.keyId, privateKey: sites[0]!.privateKey }) });
    const refusal = (await r.json()) as { error: string; message: string };
    assert.equal(r.status, 503);
    assert.equal(refusal.error, 'secagg_elsewhere');
    assert.match(refusal.message, new RegExp(`served by coordinator ${a.engine.instanceId}`));
  } finally {
    for (const c of coords.reverse()) await c.close().catch(() => {});
    await pg.drop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});
