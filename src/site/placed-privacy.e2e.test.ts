/**
 * Placed training under SecAgg+ and client-level DP, with real processes: three hospitals without compute of their
 * own train as jobs the coordinator places on in-jurisdiction compute (the local process executor), and each job's
 * result comes back to its agent, which clips it, charges its account and masks it, as for any trainer. The study
 * completes with every round through SecAgg+ and every site's spend in its account and the coordinator's ledger.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { HttpClient } from './http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import type { InviteResponse, UserInviteResponse } from '../protocol/api.js';
import { adminOf, runSetu, stopAll, waitFor } from '../testing/processes.js';

const SITES = ['cleveland', 'hungarian', 'switzerland'];
const ROUNDS = 2;

test('placed jobs under SecAgg+ and client-level DP: the agent clips, charges and masks each job\'s result', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-placed-private-'));
  const children: ChildProcess[] = [];
  let c: RunningCoordinator | undefined;
  try {
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 50 });
    const admin = adminOf(c);
    const user = async (name: string, role: string, institution?: string) => {
      const inv = await admin.json<UserInviteResponse>('POST', '/v1/users', { name, role, ...(institution ? { institution } : {}), ttlHours: 1 });
      const keys = generateSigningKeys();
      await new HttpClient({ baseUrl: c!.url, giveUpAfterMs: 10_000 }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: keys.publicKeyRaw });
      return new HttpClient({ baseUrl: c!.url, signer: { keyId: inv.userId, privateKey: keys.privateKey }, giveUpAfterMs: 20_000 });
    };
    await admin.json('POST', '/v1/institutions', { id: 'riken', name: 'RIKEN R-CCS', kind: 'compute_centre', jurisdiction: 'JP' });
    await admin.json('POST', '/v1/compute/resources', { id: 'jp-local', name: 'workstation pool', institution: 'riken', jurisdiction: 'JP', scheduler: 'local', capacity: { cpus: 16, gpus: [], ramGiB: 64 } });
    for (const [center, name] of SITES.entries()) {
      await admin.json('POST', '/v1/institutions', { id: `${name}-h`, name: `${name} hospital`, kind: 'hospital', jurisdiction: 'JP' });
      const inv = await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: name, institution: `${name}-h`, jurisdiction: 'JP', ttlHours: 1 });
      const siteDir = join(dir, name);
      mkdirSync(siteDir, { recursive: true });
      writeFileSync(join(siteDir, 'site.yaml'), YAML.stringify({ coordinator: c.url, stateDir: 'state', pollWaitMs: 2000, jurisdiction: 'JP', compute: { mode: 'placed', cpus: 1, ramGiB: 1 }, datasets: { heart: { format: 'fed-heart-disease', center } } }));
      children.push(runSetu(['site', 'start', '--config', join(siteDir, 'site.yaml'), '--token', inv.token], join(siteDir, 'agent.log')));
    }
    const lead = await user('lead', 'study_lead');
    const approvers = await Promise.all(SITES.map((s) => user(`admin-${s}`, 'site_admin', `${s}-h`)));
    await waitFor('three placed sites declared', async () =>
      (await admin.json<{ trainer?: { kind: string; features: string[] } | null }[]>('GET', '/v1/sites')).filter((s) => s.trainer?.kind === 'placed' && s.trainer.features.includes('dp-client')).length === 3 ? true : undefined, 60_000);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'placed private', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: ROUNDS,
      fit: { localSteps: 30, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, sites: SITES, roundTimeoutSeconds: 180, seed: 7,
      privacy: { secagg: { stageTimeoutSeconds: 20 }, dp: { level: 'client', epsilon: 20, delta: 1e-5, clipNorm: 0.5 } },
    });
    await lead.json('POST', `/v1/studies/${id}/propose`, {});
    for (const [i, s] of SITES.entries()) await approvers[i]!.json('POST', `/v1/studies/${id}/approve`, { site: s, terms: { purpose: 'heart-disease risk research' } });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const done = await waitFor('the study to end', async () => {
      const d = await lead.json<{ status: string; error: string | null; taskErrors?: unknown[]; refusals: unknown[]; metrics: { round: number; phase: string; name: string; value: number }[] }>('GET', `/v1/studies/${id}`);
      return ['completed', 'failed', 'stopped'].includes(d.status) ? d : undefined;
    }, 200_000, 250);
    assert.equal(done.status, 'completed', `${done.error} ${JSON.stringify(done.taskErrors)} ${JSON.stringify(done.refusals)}`);
    for (let r = 1; r <= ROUNDS; r++) assert.ok(done.metrics.some((m) => m.round === r && m.phase === 'secagg' && m.name === 'survivors' && m.value === 3), `round ${r} through SecAgg+ with all three`);
    // Every fit ran as a placed job, and its result was clipped and charged by the agent.
    const placements = (await c.store.listPlacements()).filter((p) => p.studyId === id);
    assert.equal(placements.length, 3 * ROUNDS);
    assert.ok(placements.every((p) => p.resourceId === 'jp-local'));
    for (const s of SITES) {
      const log = readFileSync(join(dir, s, 'agent.log'), 'utf8');
      assert.equal((log.match(/client-level DP: update norm [\d.e+-]+ (clipped to|within) C=0\.5/g) ?? []).length, ROUNDS, `${s} privatised each placed job's result`);
      const b = JSON.parse(readFileSync(join(dir, s, 'state', 'status.json'), 'utf8')).budgets[id];
      assert.equal(b.charges, ROUNDS);
      assert.ok(b.spent > 0 && b.spent <= 20, `${s} spent ε = ${b.spent}`);
    }
    const ledger = await c.store.studySpend(id);
    assert.deepEqual(ledger.map((l) => l.releases), [ROUNDS, ROUNDS, ROUNDS]);
  } finally {
    await stopAll(children);
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
