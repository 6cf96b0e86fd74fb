/**
 * Failures visible at once, with real agent processes and the real `setu` CLI, every round deadline 600 s away:
 *  1. A site whose CSV breaks after it enrolled reports a task error (bad_data); the study lead sees it in
 *     `setu study status` at once, and the prepare round fails the study without waiting for the deadline.
 *  2. A site whose trainer crashes every time: each round closes as soon as the others reported (minSites 2),
 *     and the study completes with that site's task errors listed per round.
 *  3. Every site refuses under its own policy: the round closes at once and the study fails, naming each site.
 *  4. A site whose result the coordinator keeps refusing (more examples than it declared) is not re-run in a
 *     tight loop: the agent backs off (1 s, 2 s, …) and after three refusals gives the task up (result_refused).
 * The times are printed (`# …` lines) so the closing note can quote them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { createRng } from '../learning/rng.js';
import { SETU_MAIN, adminOf, runSetu, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';
import type { StudyDetail } from '../protocol/views.js';

const run = promisify(execFile);

function cohortCsv(seed: number, n: number): string {
  const rng = createRng(seed, 'cohort');
  const rows = ['age,bp,smoker,outcome,set'];
  for (let i = 0; i < n; i++) {
    const age = 40 + 15 * rng.normal();
    const bp = 130 + 20 * rng.normal();
    const smoker = rng.next() < 0.3 ? 'yes' : 'no';
    const z = 0.06 * (age - 45) + 0.04 * (bp - 135) + (smoker === 'yes' ? 1.2 : 0) - 0.3;
    rows.push([age.toFixed(1), bp.toFixed(0), smoker, rng.next() < 1 / (1 + Math.exp(-z)) ? 1 : 0, i % 3 === 0 ? 'test' : 'train'].join(','));
  }
  return rows.join('\n') + '\n';
}

const schema = {
  features: [
    { name: 'age', type: 'numeric' },
    { name: 'bp', type: 'numeric' },
    { name: 'smoker', type: 'categorical', levels: ['no', 'yes'], dropFirst: true },
  ],
  task: { kind: 'binary', label: 'outcome' },
  preprocessing: { normalise: 'site', scope: 'numeric' },
  split: { kind: 'column', column: 'set', train: 'train', test: 'test' },
};

const study = (name: string, sites: string[], over: Record<string, unknown> = {}) => ({
  name, dataset: 'cohort', dataSchema: schema, model: { kind: 'logistic', inputDim: 3 }, strategy: { name: 'FedAvg' }, rounds: 2,
  fit: { localSteps: 20, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, sites, minSites: 2, roundTimeoutSeconds: 600, seed: 3, ...over,
});

/** A trainer that dies the way a real one does: a message on stderr, a non-zero exit. */
const CRASHING_TRAINER = [process.execPath, '-e', "process.stderr.write('Segmentation fault in libtorch_cpu.so\\n'); process.exit(139)"];

test('task errors reach the study lead at once; rounds close when every site answered; a failing site is not re-run in a loop', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-task-errors-'));
  const children: ChildProcess[] = [];
  let c: RunningCoordinator | undefined;
  try {
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 100 });
    const admin = adminOf(c);
    const lead = await studyLeadClient(admin, c.url);
    const csv: Record<string, string> = {};
    // alpha and beta: ordinary sites whose policy wants 50 examples behind an update; gamma: its file will break;
    // delta: its trainer crashes.
    for (const [name, seed] of [['alpha', 1], ['beta', 2], ['gamma', 3], ['delta', 4]] as const) {
      const siteDir = join(dir, name);
      mkdirSync(siteDir, { recursive: true });
      csv[name] = join(siteDir, 'cohort.csv');
      writeFileSync(csv[name]!, cohortCsv(seed, name === 'gamma' ? 30 : 240));
      if (name !== 'gamma') writeFileSync(join(siteDir, 'policy.yaml'), YAML.stringify({ site: name, rules: { minExamplesPerUpdate: 50 } }));
      writeFileSync(join(siteDir, 'site.yaml'), YAML.stringify({
        coordinator: c.url, pollWaitMs: 5000, datasets: { cohort: { format: 'csv', path: 'cohort.csv' } },
        ...(name !== 'gamma' ? { policy: 'policy.yaml' } : {}),
        ...(name === 'delta' ? { trainer: { kind: 'external', command: CRASHING_TRAINER, timeoutSeconds: 30, models: ['logistic'] } } : {}),
      }));
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: name });
      children.push(runSetu(['site', 'start', '--config', join(siteDir, 'site.yaml'), '--token', inv.token], join(siteDir, 'agent.log')));
    }
    // Every agent has declared its cohort and trainer (the trainer comes last).
    await waitFor('4 declared sites', async () => ((await admin.json<{ trainer?: unknown }[]>('GET', '/v1/sites')).filter((s) => s.trainer).length === 4 ? true : undefined), 60_000);
    const detail = (id: string) => lead.json<StudyDetail>('GET', `/v1/studies/${id}`);
    const ended = (id: string, ms = 60_000) => waitFor(`study ${id} to end`, async () => {
      const s = await detail(id);
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, ms, 50);
    const setu = (...args: string[]) => run(process.execPath, [SETU_MAIN, ...args, '--coordinator', c!.url, '--data-dir', join(dir, 'coord')], { timeout: 30_000 }).catch((e: { stdout?: string; code?: number }) => ({ stdout: e.stdout ?? '', code: e.code }));

    // ---- 1. gamma's file breaks after it enrolled: a quote that never closes ----
    writeFileSync(csv['gamma']!, 'age,bp,smoker,outcome,set\n40.1,120,no,0,train\n"41.2,130,yes,1,train\n');
    const a = await lead.json<{ id: string }>('POST', '/v1/studies', study('broken data', ['alpha', 'beta', 'gamma']));
    const t0 = Date.now();
    await lead.json('POST', `/v1/studies/${a.id}/start`, {});
    // What the study lead runs: `setu study status --json`, until it names gamma's error.
    const seen = await waitFor('gamma\'s error in setu study status', async () => {
      const r = await setu('study', 'status', a.id, '--json');
      const s = JSON.parse(r.stdout || '{}') as StudyDetail;
      return s.taskErrors?.some((e) => e.site === 'gamma') ? s : undefined;
    }, 60_000, 0);
    const visibleMs = Date.now() - t0;
    const gammaId = (await c.store.listSites()).find((x) => x.name === 'gamma')!.id;
    const gammaTask = (await c.store.listTasks(a.id, 0)).find((t) => t.site_id === gammaId)!;
    const recorded = (await c.store.listTaskErrors(a.id))[0]!;
    const latency = recorded.at - gammaTask.delivered_at!;
    console.log(`# broken CSV: gamma received its task and the coordinator held its error ${latency} ms later; \`setu study status\` showed it ${visibleMs} ms after start (deadline 600 s, status --watch polls every 2 s)`);
    assert.ok(latency < 2000, `reported within one 2 s status interval of receiving the task (${latency} ms)`);
    const err = seen.taskErrors!.find((e) => e.site === 'gamma')!;
    assert.equal(err.code, 'bad_data');
    assert.match(err.message, /cohort\.csv, line 3.*unterminated quoted field/);
    assert.ok(!err.message.includes(dir), 'the site\'s directories stay at the site');
    const failedA = await ended(a.id);
    assert.equal(failedA.status, 'failed');
    assert.match(failedA.error!, /^round 0: 2 of 3 sites reported a result; every site must check its data: gamma could not run its task \(bad_data\): cohort\.csv, line 3/);
    assert.ok(Date.now() - t0 < 60_000, 'long before the 600 s deadline');
    const text = (await setu('study', 'status', a.id)).stdout;
    assert.match(text, /task errors \(the site could not run its task\):\n  round 0 gamma \(bad_data\): cohort\.csv, line 3/);
    assert.equal((await c.store.listTasks(a.id, 0)).find((t) => t.id === gammaTask.id)!.status, 'failed', 'closed: not delivered again');

    // ---- 2. delta's trainer crashes in every round: each round closes with alpha and beta (minSites 2) ----
    const b = await lead.json<{ id: string }>('POST', '/v1/studies', study('crashing trainer', ['alpha', 'beta', 'delta']));
    const t1 = Date.now();
    await lead.json('POST', `/v1/studies/${b.id}/start`, {});
    const doneB = await ended(b.id, 120_000);
    const msB = Date.now() - t1;
    console.log(`# crashing trainer: 2 fit rounds and the evaluation closed without delta in ${msB} ms (each round's deadline 600 s)`);
    assert.equal(doneB.status, 'completed', doneB.error ?? '');
    assert.deepEqual(doneB.taskErrors!.map((e) => [e.round, e.site, e.code]), [[1, 'delta', 'trainer_failed'], [2, 'delta', 'trainer_failed'], [3, 'delta', 'trainer_failed']]);
    assert.match(doneB.taskErrors![0]!.message, /failed \(exit\): .*139[\s\S]*Segmentation fault in libtorch_cpu\.so/);
    assert.deepEqual(doneB.metrics.filter((m) => m.site === null && m.phase === 'fit' && m.name === 'sites').map((m) => m.value), [2, 2], 'each round aggregated the two that reported');

    // ---- 3. everyone refuses (one local step of 4 examples is below each site's 50): closes at once ----
    const cs = await lead.json<{ id: string }>('POST', '/v1/studies', study('all refuse', ['alpha', 'beta', 'delta'], { fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } } }));
    await lead.json('POST', `/v1/studies/${cs.id}/start`, {});
    const failedC = await ended(cs.id);
    const r1 = (await c.store.listRounds(cs.id)).find((r) => r.round === 1)!;
    const closedMs = (await c.store.getStudy(cs.id))!.updated_at - r1.opened_at;
    console.log(`# all refuse: round 1 opened and the study failed ${closedMs} ms later (deadline 600 s)`);
    assert.equal(failedC.status, 'failed');
    assert.ok(closedMs < 10_000, `closed in ${closedMs} ms`);
    assert.match(failedC.error!, /^round 1: 0 of 3 sites reported a result; at least 2 needed \(minSites 2\): alpha refused: local policy: min-examples: .*; beta refused: local policy: min-examples: .*; delta refused: local policy: min-examples: /);

    // ---- 4. gamma's file grows past the cohort it declared: its result is refused each time it is redone ----
    writeFileSync(csv['gamma']!, cohortCsv(3, 300));
    const d = await lead.json<{ id: string }>('POST', '/v1/studies', study('refused results', ['alpha', 'gamma']));
    // When each refused upload arrived (the store keeps one counted row per task and code).
    const refusedAt: number[] = [];
    const off = c.bus.on((e) => void (e.type === 'update.refused' && e.studyId === d.id && refusedAt.push(Date.now())));
    await lead.json('POST', `/v1/studies/${d.id}/start`, {});
    const failedD = await ended(d.id);
    off();
    const gaps = refusedAt.slice(1).map((at, i) => at - refusedAt[i]!);
    console.log(`# refused results: gamma redid its task ${refusedAt.length} times, ${gaps.join(' ms, ')} ms apart, then gave it up`);
    assert.equal(refusedAt.length, 3, 'three tries, not one per poll');
    assert.ok(gaps[0]! >= 900 && gaps[1]! >= 1900, `the agent backed off (${gaps.join(', ')} ms)`);
    const counted = await c.store.listRefusals(d.id);
    assert.deepEqual(counted.map((r) => [r.code, r.count]), [['implausible_update', 3]]);
    assert.match(counted[0]!.reason, /numExamples \d+ exceeds the 30 examples site gamma declared/);
    assert.deepEqual(failedD.taskErrors!.map((e) => [e.site, e.code]), [['gamma', 'result_refused']]);
    assert.equal(failedD.status, 'failed');
    assert.match(failedD.error!, /gamma could not run its task \(result_refused\): the coordinator refused this site's result 3 times; the last time: numExamples \d+ exceeds/);
  } finally {
    await stopAll(children);
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
