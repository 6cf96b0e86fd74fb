/**
 * The site's identity against a real in-process coordinator: enrol makes the key pair (private half mode 600 in
 * stateDir, reused if enrolment is retried), registers the cohort sizes of its datasets, and a revoked site's
 * agent stops without dropping a result it has not delivered (the request was refused, not the result).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { parseSiteConfig, type SiteConfig } from './config.js';
import { SiteAgent, enrol } from './agent.js';
import { SiteState } from './state.js';
import { HttpClient } from './http.js';
import type { InviteResponse } from '../protocol/api.js';

describe('site identity', () => {
  let dir: string;
  let c: RunningCoordinator;
  let admin: HttpClient;
  let cfg: SiteConfig;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-identity-'));
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 100 });
    admin = new HttpClient({ baseUrl: c.url, signer: { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey }, giveUpAfterMs: 5000 });
    cfg = parseSiteConfig(YAML.stringify({ coordinator: c.url, stateDir: 'state', pollWaitMs: 500, datasets: { heart: { format: 'fed-heart-disease', center: 1 } } }), join(dir, 'site', 'site.yaml'));
  });
  after(async () => {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('enrols with a key made on the site and the cohort it holds', async () => {
    const state = new SiteState(cfg.stateDirAbs);
    const inv = await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: 'hungary' });
    const cred = await enrol(cfg, inv.token);
    assert.equal(statSync(state.keyFile).mode & 0o777, 0o600);
    const site = (await c.store.getSite(cred.siteId))!;
    assert.equal(site.public_key?.length, 43);
    const cohorts = await c.store.listCohorts(cred.siteId);
    assert.ok(cohorts['heart']! > 100, JSON.stringify(cohorts)); // Hungary's training split
    assert.deepEqual(await enrol(cfg, 'inv_not-needed-any-more'), cred, 'enrolling again is a no-op');
  });

  it('stops on 401 and keeps the undelivered result', async () => {
    const state = new SiteState(cfg.stateDirAbs);
    const agent = new SiteAgent(cfg);
    state.savePending({ taskId: 'study-x.r1.site', studyId: 'study-x', contentType: 'application/json', body: new TextEncoder().encode('{}'), commit: [] });
    await admin.json('POST', `/v1/sites/${agent.cred.siteId}/revoke`, {});
    await assert.rejects((agent as unknown as { flushPending(): Promise<void> }).flushPending(), /revoked/);
    assert.equal(state.pending().length, 1, 'the result is still on disk');
    await assert.rejects(agent.run(), /refused this site's credential/);
  });
});
