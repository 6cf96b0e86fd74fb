/**
 * SecAgg+ and differential privacy in the running federation, end to end: an embedded coordinator and four
 * real agent processes on the heart data.
 *  1. SecAgg+ with sample-level DP-SGD. One agent is killed (SIGKILL) right after it sent its masked input in
 *     round 1: the round still commits, its input recovered from its neighbours' shares; restarted, the agent
 *     rejoins. While the round runs, the coordinator's memory holds no float vector (only the masked sum), and
 *     afterwards no `updates` row holds weights. Every site's spend is in the ledger, audited, and served.
 *  2. A site whose budget cannot afford the study reports a task error (budget_exhausted) with the numbers; the
 *     round goes on with minSites, nothing is charged to that site; and bad privacy settings are refused at creation.
 *  3. A withdrawal that leaves a SecAgg+ study with two participants stops it with an audited, human reason (not
 *     "degree must be an integer in [2, 1]"); the rounds committed before it stand.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { LIVE, storeDigest } from '../store/digest.js';
import { adminOf, SETU_MAIN, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';
import { ApiError, HttpClient } from '../site/http.js';
import { SiteState } from '../site/state.js';
import type { StudyPrivacyReport } from './routes/privacy.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { listAudit } from '../governance/audit-store.js';
import type { UserInviteResponse } from '../protocol/api.js';

const run = promisify(execFile);
const NAMES = ['cleveland', 'hungarian', 'switzerland', 'va'];

interface Agent { name: string; dir: string; child: ChildProcess; lines: string[] }

function siteConfig(dir: string, url: string, center: number, extra: Record<string, unknown> = {}): string {
  mkdirSync(dir, { recursive: true });
  const cfg = join(dir, 'site.yaml');
  writeFileSync(cfg, YAML.stringify({ coordinator: url, stateDir: 'state', pollWaitMs: 2000, datasets: { heart: { format: 'fed-heart-disease', center } }, ...extra }));
  return cfg;
}

function startAgent(name: string, dir: string, args: string[], onLine?: (a: Agent, line: string) => void, env: Record<string, string> = {}): Agent {
  const child = spawn(process.execPath, [SETU_MAIN, 'site', 'start', '--config', join(dir, 'site.yaml'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const a: Agent = { name, dir, child, lines: [] };
  let buf = '';
  const feed = (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      a.lines.push(line);
      onLine?.(a, line);
    }
  };
  child.stdout!.on('data', feed);
  child.stderr!.on('data', feed);
  return a;
}

async function enrolAll(c: RunningCoordinator, admin: HttpClient, root: string, extra: (name: string) => Record<string, unknown>, onLine?: (a: Agent, line: string) => void, env: (k: number) => Record<string, string> = () => ({})): Promise<Agent[]> {
  const agents: Agent[] = [];
  for (let k = 0; k < 4; k++) {
    const name = NAMES[k]!;
    const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: name });
    const dir = join(root, name);
    siteConfig(dir, c.url, k, extra(name));
    agents.push(startAgent(name, dir, ['--token', inv.token], onLine, env(k)));
  }
  await waitFor('4 sites', async () => ((await admin.json<unknown[]>('GET', '/v1/sites')).length === 4 ? true : undefined), 30_000);
  return agents;
}

type Detail = { status: string; error: string | null; metrics: { round: number; site: string | null; phase: string; name: string; value: number }[]; refusals: { round: number; site: string | null; reason: string }[]; taskErrors?: { round: number; site: string; code: string; message: string }[] };
const finished = (admin: HttpClient, id: string, ms = 80_000) =>
  waitFor(`study ${id} to end`, async () => {
    const s = await admin.json<Detail>('GET', `/v1/studies/${id}`);
    return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
  }, ms);

/** Every typed array reachable from `root` (objects, arrays, Maps, Sets, class instances). */
function typedArrays(root: unknown): ArrayBufferView[] {
  const seen = new Set<unknown>();
  const out: ArrayBufferView[] = [];
  const stack = [root];
  while (stack.length) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object' || seen.has(v)) continue;
    seen.add(v);
    if (ArrayBuffer.isView(v)) {
      out.push(v);
      continue;
    }
    if (v instanceof Map) for (const [k, x] of v) stack.push(k, x);
    else if (v instanceof Set) for (const x of v) stack.push(x);
    else for (const x of Object.values(v as object)) stack.push(x);
  }
  return out;
}

test('SecAgg+ with DP-SGD over HTTP: a site killed after masking is recovered, the coordinator never holds an update, the spend is in the ledger', { timeout: 90_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-secagg-'));
  let c: RunningCoordinator | undefined;
  let agents: Agent[] = [];
  const restarted: ChildProcess[] = [];
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port: 0, tickMs: 50, log: (m) => process.env['SETU_TEST_LOG'] && console.log(Date.now() % 100000, m) });
    const coord = c;
    const admin = adminOf(c);
    let killed: Agent | undefined;
    let killedRound = 0;
    let memory: ArrayBufferView[] | undefined;
    let vectorLength = 0;
    // Two of the four sites send their masked input as a chunked upload (as a large model's would), two inline.
    agents = await enrolAll(c, admin, root, () => ({}), undefined, (k): Record<string, string> => (k % 2 ? { SETU_SECAGG_INLINE_MASKED_BYTES: '0' } : {}));
    const spec = {
      name: 'secagg dp heart',
      dataset: 'heart',
      model: { kind: 'logistic', inputDim: 13 },
      strategy: { name: 'FedAvg' },
      rounds: 4,
      fit: { localSteps: 30, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } },
      minSites: 3,
      roundTimeoutSeconds: 30,
      seed: 7,
      privacy: { dp: { level: 'sample', epsilon: 2, delta: 1e-3, clipNorm: 1 }, secagg: { stageTimeoutSeconds: 5 } },
    };
    const lead = await studyLeadClient(admin, c.url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    const bySiteId = new Map((await admin.json<{ id: string; name: string }[]>('GET', '/v1/sites')).map((x) => [x.id, agents.find((a) => a.name === x.name)!]));
    // The first agent whose masked input the coordinator accepts dies (SIGKILL) inside that same request, before
    // the answer reaches it: it has sent its masked input and can answer nothing after (this process runs the
    // coordinator, so the event is seen synchronously).
    coord.bus.on((e) => {
      if (killed || e.type !== 'update.accepted' || e.studyId !== id || e.round < 1 || e.round > 4) return;
      killed = bySiteId.get(e.siteId)!;
      killedRound = e.round;
      killed.child.kill('SIGKILL');
      const sessions = coord.engine.secagg.all();
      vectorLength = sessions[0]?.vectorLength ?? 0;
      memory = typedArrays(sessions);
    });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    // Once that round has committed, the killed agent comes back (its credential and account are on its disk).
    await waitFor('an agent to be killed after masking', async () => (killed ? true : undefined), 40_000);
    await waitFor(`round ${killedRound} to commit`, async () => ((await c!.store.getRound(id, killedRound))?.status === 'committed' ? true : undefined), 40_000);
    const dead = killed!;
    restarted.push(startAgent(dead.name, dead.dir, []).child);
    const done = await finished(lead, id);
    assert.equal(done.status, 'completed', done.error ?? '');

    // Of each kind (odd: chunked, even: inline) one agent is not the one killed; the killed one may have died
    // before it could log any masked input (the first accepted in round 1).
    const ofKind = (odd: boolean) => agents.filter((a, k) => k % 2 === (odd ? 1 : 0) && a !== dead);
    assert.ok(ofKind(true).some((a) => a.lines.some((l) => /masked input sent in chunks/.test(l))), 'a site sent its masked input as a chunked upload');
    assert.ok(ofKind(false).some((a) => a.lines.some((l) => /masked input sent \(session/.test(l))), 'a site sent its masked input inline');
    const m = (round: number, name: string) => done.metrics.find((x) => x.round === round && x.site === null && x.phase === 'secagg' && x.name === name)?.value;
    assert.equal(m(killedRound, 'survivors'), 4, "the killed site's masked input is in its round's sum");
    assert.equal(m(killedRound, 'recovered'), 1, 'its self-mask was removed with its neighbours\' shares (it never answered the unmask stage)');
    if (killedRound < 4) assert.equal(m(4, 'survivors'), 4, 'the restarted agent rejoined');
    const acc = done.metrics.find((x) => x.round === 4 && x.site === null && x.phase === 'evaluate' && x.name === 'accuracy')?.value;
    assert.ok(acc !== undefined && acc > 0.6, `the model trained under SecAgg+ and DP learns (accuracy ${acc})`);

    // Memory at the moment of the kill: the session holds no vector (the masked inputs are blobs, summed block by
    // block at commit, stream-secagg.ts), and no float vector at all.
    assert.ok(memory && vectorLength === 14, 'the round-1 session was inspected');
    const big = memory!.filter((v) => (v as unknown as { length: number }).length >= vectorLength);
    assert.equal(big.length, 0, `no masked sum nor input held in the session (${big.map((v) => v.constructor.name).join(', ')})`);
    // SQL: no fit-round row holds weights; each holds the digest of a masked vector and the site's metadata.
    const fitRows = (await Promise.all([1, 2, 3, 4].map((r) => c!.store.listUpdates(id, r)))).flat();
    assert.equal(fitRows.length, 16);
    for (const r of fitRows) {
      assert.equal(r.size, null, 'the coordinator stored no update');
      assert.match(String(r.digest), /^[0-9a-f]{64}$/);
      // The masked input's blob went once its round committed.
      assert.equal(await c.store.blobs.size(r.digest!), undefined, `masked blob of ${r.site_id} round ${r.round} removed`);
    }

    // The ledger: every site, three releases, within the study's ε; audited as privacy.spent; served.
    const rep = await lead.json<StudyPrivacyReport>('GET', `/v1/studies/${id}/privacy`);
    assert.deepEqual(rep.sites.map((s) => s.site).sort(), [...NAMES].sort());
    for (const s of rep.sites) {
      assert.equal(s.releases, 4, s.site);
      assert.equal(s.steps, 120);
      assert.equal(s.mechanism, 'dp-sgd');
      assert.ok(s.spent.epsilon > 1 && s.spent.epsilon <= 2, `${s.site} spent ε=${s.spent.epsilon} of its target 2`);
      assert.deepEqual(s.budget, { epsilon: 2, delta: 1e-3 });
    }
    const audited = (await c.store.listAuditRows()).filter((e) => e.kind === 'privacy.spent');
    assert.equal(audited.length, 16, 'one privacy.spent audit entry per release');
  } finally {
    for (const a of agents) restarted.push(a.child);
    await stopAll(restarted);
    await c?.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('a site refuses a DP task its budget cannot afford; the round goes on without it; bad privacy settings are refused at creation', { timeout: 90_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-dpbudget-'));
  let c: RunningCoordinator | undefined;
  let agents: Agent[] = [];
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port: 0, tickMs: 50 });
    const admin = adminOf(c);
    agents = await enrolAll(c, admin, root, (name) => (name === 'va' ? { privacy: { budget: { epsilon: 0.2, delta: 1e-3 } } } : {}));
    const lead = await studyLeadClient(admin, c.url);
    const base = {
      name: 'dp budget',
      dataset: 'heart',
      model: { kind: 'logistic', inputDim: 13 },
      strategy: { name: 'FedAvg' },
      rounds: 2,
      fit: { localSteps: 20, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } },
      minSites: 3,
      roundTimeoutSeconds: 6,
      seed: 5,
    };
    // Refused at creation, naming the field: distributed noise without SecAgg+, client-level DP under another strategy.
    const refused = async (privacy: unknown, strategy = 'FedAvg') => {
      const before = (await c!.store.listStudies()).length;
      const e = await lead.json('POST', '/v1/studies', { ...base, strategy: { name: strategy }, privacy }).then(() => undefined, (x: unknown) => x);
      assert.ok(e instanceof ApiError && e.status === 400, `refused: ${String(e)}`);
      assert.equal((await c!.store.listStudies()).length, before, 'nothing was created');
      return e.message;
    };
    assert.match(await refused({ dp: { level: 'client', epsilon: 1, delta: 1e-3, clipNorm: 0.1, mode: 'distributed' } }), /privacy\/dp\/mode.*secure aggregation/);
    assert.match(await refused({ dp: { level: 'client', epsilon: 1, delta: 1e-3, clipNorm: 0.1 } }, 'Median'), /strategy\/name/);
    assert.match(await refused({ dp: { level: 'sample', epsilon: 0, delta: 1e-3, clipNorm: 1 } }), /epsilon/);
    assert.match(await refused({ secagg: { degree: 3, threshold: 1 } }), /threshold/);

    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', { ...base, privacy: { dp: { level: 'sample', epsilon: 1, delta: 1e-3, clipNorm: 1 } } });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const done = await finished(lead, id);
    assert.equal(done.status, 'completed', done.error ?? '');
    // An exhausted budget is a task error (budget_exhausted), reported once per fit round, not again on every poll.
    const vaErrors = (done.taskErrors ?? []).filter((r) => r.site === 'va');
    assert.deepEqual(vaErrors.map((e) => [e.round, e.code]), [[1, 'budget_exhausted'], [2, 'budget_exhausted']], 'va reported each fit round once');
    assert.match(vaErrors[0]!.message, /privacy budget: .* would bring the study's ε to [0-9.]+, over this site's budget ε=0\.2/);
    assert.equal(done.refusals.filter((r) => r.site === 'va').length, 0, 'an error, not a refusal');
    const rep = await lead.json<StudyPrivacyReport>('GET', `/v1/studies/${id}/privacy`);
    assert.deepEqual(rep.sites.map((s) => s.site).sort(), ['cleveland', 'hungarian', 'switzerland'], 'nothing is charged to the site that refused');
    assert.equal(rep.dp?.epsilon, 1);
    for (const s of rep.sites) assert.ok(s.spent.epsilon <= 1 && s.releases === 2, `${s.site}: ε=${s.spent.epsilon}, ${s.releases} releases`);
    assert.ok(!existsSync(join(root, 'va', 'state', 'studies', id, 'privacy-budget.json')), 'va spent nothing');
    // The CLI shows the same ledger (signed with the admin key from the coordinator's data directory).
    const cli = (...args: string[]) => run(process.execPath, [SETU_MAIN, 'study', 'privacy', id, '--coordinator', c!.url, '--data-dir', join(root, 'coord'), ...args], { timeout: 30_000 });
    const table = (await cli()).stdout;
    assert.match(table, /sample-level DP-SGD, target ε=1, δ=0\.001/);
    for (const s of rep.sites) assert.ok(table.includes(s.site) && table.includes(s.spent.epsilon.toFixed(4)), `the table lists ${s.site}'s spend`);
    assert.doesNotMatch(table, /\bva\b/);
    const json = JSON.parse((await cli('--json', '--entries')).stdout) as StudyPrivacyReport;
    assert.deepEqual(json.sites, rep.sites);
    assert.equal(json.entries?.length, 6, 'one ledger entry per release');
    // Plain (non-SecAgg) DP rounds store the privatised update itself.
    const rows = await c.store.listUpdates(id, 1);
    assert.equal(rows.length, 3);
  } finally {
    await stopAll(agents.map((a) => a.child));
    await c?.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('client-level DP-FedAvg with distributed noise under SecAgg+: sites clip and noise, the coordinator only sees the noised sum', { timeout: 90_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-dpfedavg-'));
  let c: RunningCoordinator | undefined;
  let agents: Agent[] = [];
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port: 0, tickMs: 50 });
    const admin = adminOf(c);
    agents = await enrolAll(c, admin, root, () => ({}));
    const lead = await studyLeadClient(admin, c.url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'dp-fedavg distributed', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 3,
      fit: { localSteps: 30, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.05 } }, roundTimeoutSeconds: 30, seed: 11,
      privacy: { dp: { level: 'client', epsilon: 8, delta: 1e-3, clipNorm: 0.5, mode: 'distributed' }, secagg: { stageTimeoutSeconds: 2 } },
    });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const done = await finished(lead, id);
    assert.equal(done.status, 'completed', done.error ?? '');
    for (let r = 1; r <= 3; r++) assert.equal(done.metrics.find((x) => x.round === r && x.site === null && x.phase === 'secagg' && x.name === 'survivors')?.value, 4);
    const rep = await lead.json<StudyPrivacyReport>('GET', `/v1/studies/${id}/privacy`);
    assert.equal(rep.sites.length, 4);
    for (const s of rep.sites) {
      assert.equal(s.mechanism, 'dp-fedavg');
      assert.equal(s.releases, 3);
      assert.equal(s.sampleRate, 1);
      assert.ok(s.spent.epsilon > 7 && s.spent.epsilon <= 8, `${s.site}: ε=${s.spent.epsilon} (σ planned for the whole study)`);
    }
    // Each round's step is Σ clip(Δ)/m plus noise: bounded by the clip norm (noise aside), so the model moved, but not far.
    const versions = await c.store.listModelVersions(id);
    assert.equal(versions.length, 4);
    const rows = (await Promise.all([1, 2, 3].map((r) => c!.store.listUpdates(id, r)))).flat();
    assert.ok(rows.length === 12 && rows.every((r) => r.size === null), 'no update stored');
  } finally {
    await stopAll(agents.map((a) => a.child));
    await c?.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('a coordinator that dies mid SecAgg+ round restarts the round cleanly; agents re-mask the update they hold (no second spend)', { timeout: 90_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-secagg-restart-'));
  let c: RunningCoordinator | undefined;
  let agents: Agent[] = [];
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port: 0, tickMs: 50, maxWaitMs: 2000 });
    const port = Number(new URL(c.url).port);
    const admin = adminOf(c);
    agents = await enrolAll(c, admin, root, () => ({}));
    const lead = await studyLeadClient(admin, c.url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'secagg restart', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 2,
      fit: { localSteps: 20, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, roundTimeoutSeconds: 60, seed: 13,
      privacy: { dp: { level: 'sample', epsilon: 2, delta: 1e-3, clipNorm: 1 }, secagg: { stageTimeoutSeconds: 3 } },
    });
    // The coordinator dies (connections cut, nothing flushed beyond what SQL committed) as soon as it has accepted
    // the first masked input of round 1.
    let crashed: Promise<void> | undefined;
    const first = c;
    first.bus.on((e) => {
      if (crashed || e.type !== 'update.accepted' || e.studyId !== id || e.round !== 1) return;
      crashed = (async () => {
        await first.engine.stop();
        first.app.server.closeAllConnections();
        await first.app.close();
        await first.store.close();
      })();
    });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    await waitFor('the coordinator to die mid-round', async () => (crashed ? true : undefined), 40_000);
    await crashed;
    const logs: string[] = [];
    c = await startCoordinator({ dataDir: join(root, 'coord'), port, tickMs: 50, maxWaitMs: 2000, log: (m) => logs.push(m) });
    const done = await finished(lead, id); // same address: the restarted coordinator took the same port
    if (done.status !== 'completed') for (const a of agents) console.log(a.name, a.lines.join('\n'), logs.join('\n'));
    assert.equal(done.status, 'completed', done.error ?? '');
    assert.ok(logs.some((l) => /round 1 had no SecAgg\+ session in this process \(coordinator restarted\); restarted it/.test(l)), logs.join('\n'));
    const rep = await lead.json<StudyPrivacyReport>('GET', `/v1/studies/${id}/privacy`);
    for (const s of rep.sites) assert.equal(s.releases, 2, `${s.site} released once per round: the re-masked update was not trained (or spent) again`);
    for (const a of agents) {
      const account = JSON.parse(readFileSync(join(a.dir, 'state', 'studies', id, 'privacy-budget.json'), 'utf8')) as { history: unknown[] };
      assert.equal(account.history.length, 2, `${a.name}'s own account shows two releases`);
    }
    const audited = (await c.store.listAuditRows()).filter((e) => e.kind === 'privacy.spent');
    assert.equal(audited.length, 8, 'one privacy.spent entry per release, none for a re-sent one');
  } finally {
    await stopAll(agents.map((a) => a.child));
    await c?.close().catch(() => {});
    rmSync(root, { recursive: true, force: true });
  }
});

test('bad SecAgg+ messages from a site are refused and change nothing', { timeout: 90_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-secagg-bad-'));
  let c: RunningCoordinator | undefined;
  let agents: Agent[] = [];
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port: 0, tickMs: 50 });
    const coord = c;
    const admin = adminOf(c);
    agents = await enrolAll(c, admin, root, () => ({}));
    // va's agent is frozen, so the round's keys stage stays open while this test speaks with va's own key.
    const va = agents.find((a) => a.name === 'va')!;
    const st = new SiteState(join(va.dir, 'state'));
    const cred = await waitFor('va to save its credential', async () => st.credential(), 10_000);
    va.child.kill('SIGSTOP');
    const asVa = new HttpClient({ baseUrl: c.url, signer: { keyId: cred.siteId, privateKey: st.privateKeyPem()! }, giveUpAfterMs: 5000 });
    const lead = await studyLeadClient(admin, c.url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'secagg bad input', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 1,
      fit: { localSteps: 10, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, roundTimeoutSeconds: 60, seed: 3, privacy: { secagg: { stageTimeoutSeconds: 2 } },
    });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const task = `${id}.r1.${cred.siteId}`;
    // The three running agents have sent their keys; the session waits for va.
    const session = await waitFor('three keys', async () => {
      const s = coord.engine.secagg.get(id, 1);
      return s && (s.server as unknown as { keys: Map<number, unknown> }).keys.size === 3 ? s : undefined;
    }, 30_000);
    const setup = await asVa.json<{ session: string; setup: { clientId: number } }>('GET', `/v1/agent/secagg/${encodeURIComponent(task)}/setup`);
    const me = setup.setup.clientId;
    const counts = () => storeDigest(coord.store, { except: ['request_nonces'], ...LIVE });
    const before = await counts();
    const keysHeld = () => (session.server as unknown as { keys: Map<number, unknown> }).keys.size;
    const refused = async (path: string, body: unknown, status: number, code: RegExp) => {
      const e = await asVa.json('POST', path, body).then(() => undefined, (x: unknown) => x);
      assert.ok(e instanceof ApiError, `${path} refused`);
      assert.equal(e.status, status, `${path}: ${e.message}`);
      assert.match(e.code, code);
    };
    const base = `/v1/agent/secagg/${encodeURIComponent(task)}`;
    const key = Buffer.alloc(32, 7).toString('base64');
    await refused(`${base}/keys`, { session: setup.session, msg: { stage: 'keys', clientId: me, cPk: 'AAAA', sPk: key } }, 400, /malformed_secagg/);
    await refused(`${base}/keys`, { session: setup.session, msg: 'not an object' }, 400, /malformed_secagg/);
    await refused(`${base}/keys`, { session: setup.session, msg: { stage: 'keys', clientId: (me + 1) % 4, cPk: key, sPk: key } }, 403, /forbidden/);
    await refused(`${base}/keys`, { session: 'someone-elses-session', msg: { stage: 'keys', clientId: me, cPk: key, sPk: key } }, 409, /secagg_session/);
    await refused(`${base}/masked`, { session: setup.session, msg: { stage: 'masked-input', clientId: me, masked: Buffer.alloc(16).toString('base64') }, meta: { taskId: task, numExamples: 1 } }, 400, /malformed_secagg/);
    await refused(`${base}/masked`, { session: setup.session, msg: { stage: 'masked-input', clientId: me, masked: Buffer.alloc(15 * 4).toString('base64') }, meta: { taskId: task, numExamples: 1 } }, 409, /secagg_stage/);
    const other = `${id}.r1.${[...session.clientOf.keys()].find((s) => s !== cred.siteId)}`;
    await refused(`/v1/agent/secagg/${encodeURIComponent(other)}/keys`, { session: setup.session, msg: { stage: 'keys', clientId: me, cPk: key, sPk: key } }, 403, /forbidden/);
    assert.equal(session.stage, 'keys');
    assert.equal(keysHeld(), 3, 'no key was taken from a refused message');
    assert.deepEqual(await counts(), before, 'no row changed');
    // Thawed, va's agent joins and the round commits with all four.
    va.child.kill('SIGCONT');
    const done = await finished(lead, id);
    assert.equal(done.status, 'completed', done.error ?? '');
    assert.equal(done.metrics.find((x) => x.round === 1 && x.site === null && x.phase === 'secagg' && x.name === 'survivors')?.value, 4);
  } finally {
    for (const a of agents) a.child.kill('SIGCONT');
    await stopAll(agents.map((a) => a.child));
    await c?.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('a withdrawal that leaves a SecAgg+ study with two participants stops it, saying who left and why; earlier rounds stand', { timeout: 120_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-secagg-withdraw-'));
  let c: RunningCoordinator | undefined;
  const agents: Agent[] = [];
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port: 0, tickMs: 50 });
    const admin = adminOf(c);
    await admin.json('POST', '/v1/institutions', { id: 'osaka', name: 'Osaka UH', kind: 'hospital', jurisdiction: 'JP' });
    const names = NAMES.slice(0, 3);
    for (const [k, name] of names.entries()) {
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: name, institution: 'osaka', jurisdiction: 'JP' });
      const dir = join(root, name);
      siteConfig(dir, c.url, k, { jurisdiction: 'JP' });
      agents.push(startAgent(name, dir, ['--token', inv.token]));
    }
    await waitFor('3 declared sites', async () => ((await admin.json<{ trainer?: unknown }[]>('GET', '/v1/sites')).filter((x) => x.trainer).length === 3 ? true : undefined), 30_000);
    const lead = await studyLeadClient(admin, c.url);
    const inv = await admin.json<UserInviteResponse>('POST', '/v1/users', { name: 'adm-osaka', role: 'site_admin', institution: 'osaka' });
    const k = generateSigningKeys();
    await new HttpClient({ baseUrl: c.url }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: k.publicKeyRaw });
    const siteAdmin = new HttpClient({ baseUrl: c.url, signer: { keyId: inv.userId, privateKey: k.privateKeyPem }, giveUpAfterMs: 5000 });
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'secagg three', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 5,
      fit: { localSteps: 10, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, roundTimeoutSeconds: 60, seed: 3, privacy: { secagg: { stageTimeoutSeconds: 2 } },
    });
    await lead.json('POST', `/v1/studies/${id}/propose`, {});
    for (const n of names) await siteAdmin.json('POST', `/v1/studies/${id}/approve`, { site: n, terms: { purpose: 'heart-disease risk research' } });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    await waitFor('round 1 committed', async () => ((await lead.json<{ round: number }>('GET', `/v1/studies/${id}`)).round >= 1 ? true : undefined), 60_000, 50);
    await siteAdmin.json('POST', `/v1/studies/${id}/withdraw`, { site: 'switzerland', reason: 'our ethics board withdrew consent' });
    const done = await finished(lead, id);
    assert.equal(done.status, 'stopped', done.error ?? '');
    const m = /^SecAgg\+ needs at least 3 participants: switzerland withdrew \("our ethics board withdrew consent"\), and 2 remain \(cleveland, hungarian\)\. With fewer than three the masked sum would reveal each site's update to the others, so the study stopped before round (\d); the model after round (\d) is kept$/.exec(done.error ?? '');
    assert.ok(m, done.error ?? '');
    const [before, kept] = [Number(m[1]), Number(m[2])];
    assert.equal(kept, before - 1);
    assert.ok(before >= 2, 'round 1 ran with all three');
    // The round open when switzerland withdrew finished with it (its data was in that round); none opened after.
    const rounds = await c.store.listRounds(id);
    assert.deepEqual(rounds.map((r) => r.round), Array.from({ length: before - 1 }, (_, i) => i + 1));
    assert.ok(rounds.every((r) => r.status === 'committed'), JSON.stringify(rounds.map((r) => r.status)));
    assert.equal((await c.store.latestModelVersion(id))!.round, kept);
    const stopped = (await listAudit(c.store)).filter((e) => e.kind === 'study.stopped' && e.subject === id);
    assert.equal(stopped.length, 1);
    assert.equal((stopped[0]!.data as { reason: string }).reason, done.error);
  } finally {
    await stopAll(agents.map((a) => a.child));
    await c?.close();
    rmSync(root, { recursive: true, force: true });
  }
});
