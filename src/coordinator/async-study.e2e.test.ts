/**
 * An asynchronous (FedBuff) study end to end with real processes: a coordinator and four heart-disease site agents,
 * one of them deliberately slow (site.yaml `testing.fitDelayMs`). The coordinator is SIGKILLed mid-study and started
 * again on the same data directory: the study completes with every version committed exactly once, nothing
 * committed before the crash changes, every update folded at most once, the slow site's updates folded late (with
 * staleness) instead of holding the others back, and `setu study status`'s rendering shows the versions and the
 * staleness histogram.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { openStore } from '../store/store.js';
import { adminClient, studyLeadClient, freePort, startCoordinatorProcess, enrolHeartSites, stopAll, waitFor } from '../testing/processes.js';
import { renderStudy, type StudyDetail } from '../cli/operator.js';

const VERSIONS = 12;
const SLOW_MS = 1500;

test('an asynchronous study with a slow site survives a coordinator SIGKILL and folds every update once', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-async-e2e-'));
  const children: ChildProcess[] = [];
  let coord: ChildProcess | undefined;
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const dataDir = join(dir, 'coordinator');
    coord = await startCoordinatorProcess(dataDir, port, join(dir, 'coordinator.log'));
    const admin = adminClient(dataDir, url);
    // hospital-3 is the slow site.
    await enrolHeartSites(admin, url, dir, 4, children, (c) => ({ pollWaitMs: 2000, ...(c === 3 ? { testing: { fitDelayMs: SLOW_MS } } : {}) }));
    const lead = await studyLeadClient(admin, url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'async-restart', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: VERSIONS,
      fit: { localSteps: 20, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.01 } }, seed: 7, roundTimeoutSeconds: 120,
      async: { bufferSize: 2, maxStaleness: 8 },
    });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const detail = () => admin.json<StudyDetail & { async: NonNullable<StudyDetail['async']> }>('GET', `/v1/studies/${id}`);

    const killedAt = await waitFor('a few versions', async () => {
      const d = await detail();
      return d.async?.version >= 4 ? d.async.version : undefined;
    }, 120_000, 20);
    coord.kill('SIGKILL');
    await new Promise((r) => coord!.once('exit', r));
    let store = await openStore(join(dataDir, 'setu.db'));
    const beforeKill = new Map((await store.listModelVersions(id)).map((v) => [v.round, v.digest]));
    await store.close();
    assert.ok(beforeKill.size >= 5, 'the committed versions are on disk');
    coord = await startCoordinatorProcess(dataDir, port, join(dir, 'coordinator.log'));

    const final = await waitFor('the study to finish', async () => {
      const d = await detail();
      return ['completed', 'failed', 'stopped'].includes(d.status) ? d : undefined;
    }, 180_000, 100);
    assert.equal(final.status, 'completed', final.error ?? '');
    assert.ok(killedAt < VERSIONS, `killed mid-study (at version ${killedAt})`);
    assert.equal(final.async.version, VERSIONS);
    const text = renderStudy(final);
    assert.match(text, new RegExp(`asynchronous \\(FedBuff\\): version ${VERSIONS}/${VERSIONS}`));
    assert.match(text, /staleness of folded updates: 0: \d+/);
    await stopAll([...children, coord]);

    store = await openStore(join(dataDir, 'setu.db'));
    const versions = await store.listModelVersions(id);
    const contributions = await store.listContributions(id);
    const sites = new Map((await store.listSites()).map((s) => [s.id, s.name]));
    await store.close();
    assert.deepEqual(versions.map((v) => v.round), Array.from({ length: VERSIONS + 1 }, (_, i) => i), 'one model version per version number, none lost, none duplicated');
    for (const [v, digest] of beforeKill) assert.equal(versions.find((x) => x.round === v)?.digest, digest, `version ${v} was committed before the crash and must be unchanged`);
    const folded = contributions.filter((c) => c.status === 'folded');
    assert.equal(new Set(folded.map((c) => c.task_id)).size, folded.length, 'no update folded twice');
    for (let v = 1; v <= VERSIONS; v++) assert.equal(folded.filter((c) => c.version === v).length, 2, `version ${v} folds a buffer of 2`);
    const per = (name: string) => folded.filter((c) => sites.get(c.site_id) === name);
    const fast = Math.min(...[0, 1, 2].map((c) => per(`hospital-${c}`).length));
    // The slow site does not set the pace: the others contribute more, and whatever it sends arrives late.
    assert.ok(per('hospital-3').length < fast, `slow site ${per('hospital-3').length} contributions vs the fast ones' ${fast}`);
    assert.ok(per('hospital-3').every((c) => c.staleness >= 1), 'the slow site\'s updates were folded stale');
    assert.deepEqual(final.async.staleness.histogram.reduce((n, b) => n + b.count, 0), folded.length);
  } finally {
    await stopAll([...children, ...(coord ? [coord] : [])]);
    rmSync(dir, { recursive: true, force: true });
  }
});
