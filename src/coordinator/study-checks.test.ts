/**
 * Fail fast: a study that cannot work is refused at create (400) or start (409) with every reason, and nothing is
 * written; policy-check says what remains to be approved instead of passing vacuously. Over real HTTP on an
 * in-process coordinator, with sites enrolled through the API as agents do.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import type { InviteResponse, StudySpec, UserInviteResponse } from '../protocol/api.js';
import { adminOf, refused, studyLeadClient } from '../testing/processes.js';
import { createProblems, startProblems, type SiteDeclaration } from './study-checks.js';

const heart: StudySpec = {
  name: 'checks', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 2,
  fit: { localSteps: 10, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } },
};
const csvSchema = {
  features: [{ name: 'age', type: 'numeric' as const }, { name: 'sex', type: 'categorical' as const, levels: ['0', '1'], dropFirst: true }, { name: 'cp', type: 'categorical' as const, levels: ['1', '2', '3', '4'] }],
  task: { kind: 'binary' as const, label: 'num', positive: { above: 0 } },
  split: { kind: 'stratified' as const, trainFraction: 0.7, seed: 1 },
};

describe('the checks themselves (pure)', () => {
  const site = (name: string, datasets: Record<string, number>, extra: Partial<SiteDeclaration> = {}): SiteDeclaration => ({ name, status: 'active', datasets, compute: 'own', ...extra });

  it('the model against the encoded columns of the data schema', () => {
    const p = createProblems({ ...heart, dataset: 'cohort', dataSchema: csvSchema, model: { kind: 'logistic', inputDim: 13 } }, [site('a', { cohort: 100 })]);
    assert.deepEqual(p, ['/model/inputDim: the data schema encodes 6 feature column(s) (age, sex_1, cp_1, cp_2, cp_3, cp_4), so inputDim must be 6, not 13']);
    assert.deepEqual(createProblems({ ...heart, dataset: 'cohort', dataSchema: csvSchema, model: { kind: 'logistic', inputDim: 6 } }, [site('a', { cohort: 100 })]), []);
    assert.match(createProblems({ ...heart, dataset: 'cohort', dataSchema: csvSchema, model: { kind: 'cox', inputDim: 6 } }, [site('a', { cohort: 100 })]).join(), /a binary task needs a logistic or mlp model, not cox/);
  });

  it('DP a site cannot apply: placed compute, or a trainer that declares other levels', () => {
    const dp = { ...heart, privacy: { dp: { level: 'sample' as const, epsilon: 1, delta: 1e-5, clipNorm: 1 } } };
    assert.deepEqual(createProblems(dp, [site('a', { heart: 100 }), site('b', { heart: 100 })]), []);
    assert.match(createProblems(dp, [site('a', { heart: 100 }), site('b', { heart: 100 }, { compute: 'placed' })]).join(), /^\/privacy\/dp\/level: sample-level DP cannot be applied by b \(placed compute/);
    assert.match(createProblems(dp, [site('a', { heart: 100 }, { dp: ['client'] })]).join(), /by a \(its trainer declares client\)/);
    assert.deepEqual(createProblems(dp, [site('a', { heart: 100 }, { compute: 'placed', dp: ['sample'] })]), [], 'a declaration wins over the default');
    // Client level is the agent's, applied to a placed job's result as to any trainer's.
    const client = { ...heart, privacy: { dp: { level: 'client' as const, epsilon: 5, delta: 1e-5, clipNorm: 1 } } };
    assert.deepEqual(createProblems(client, [site('a', { heart: 100 }), site('b', { heart: 100 }, { compute: 'placed' })]), []);
  });

  it('SecAgg+ needs three participants at start', () => {
    const sa = { ...heart, privacy: { secagg: {} } };
    assert.match(startProblems(sa, ['a', 'b']).join(), /SecAgg\+ needs at least 3 participants and 2 site\(s\) approved \(a, b\)/);
    assert.deepEqual(startProblems(sa, ['a', 'b', 'c']), []);
    assert.deepEqual(startProblems(heart, ['a']), []);
  });
});

describe('fail fast over HTTP', () => {
  let dir: string;
  let c: RunningCoordinator;
  let admin: HttpClient;
  let lead: HttpClient;

  async function enrolSite(name: string, cohorts: Record<string, number>, institution?: string, jurisdiction?: string) {
    const inv = await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: name, ...(institution ? { institution } : {}), ...(jurisdiction ? { jurisdiction } : {}) });
    const k = generateSigningKeys();
    const r = await new HttpClient({ baseUrl: c.url }).json<{ siteId: string }>('POST', '/v1/enrol', { token: inv.token, publicKey: k.publicKeyRaw, cohorts });
    return new HttpClient({ baseUrl: c.url, signer: { keyId: r.siteId, privateKey: k.privateKeyPem } });
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-checks-'));
    c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 100 });
    admin = adminOf(c);
    lead = await studyLeadClient(admin, c.url);
    await enrolSite('alpha', { heart: 199 });
    await enrolSite('beta', { heart: 172 });
    await enrolSite('gamma', { cohort: 300 });
    const placed = await enrolSite('delta', { heart: 90 });
    await placed.json('PUT', '/v1/agent/compute', { mode: 'placed', cpus: 1 });
  });
  after(async () => {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Refused at create with a 400 naming `pattern`, and no study was written. */
  async function refusedAtCreate(spec: unknown, pattern: RegExp) {
    const before = await lead.json<unknown[]>('GET', '/v1/studies');
    const e = await refused(lead.json('POST', '/v1/studies', spec));
    assert.equal(e.status, 400, e.message);
    assert.equal(e.code, 'invalid_study');
    assert.match(e.message, pattern);
    assert.deepEqual(await lead.json<unknown[]>('GET', '/v1/studies'), before, 'a refused study changes nothing');
  }

  it('refuses at create: unknown sites, minSites above the sites, localSteps with epochs, an unknown dataset, the model against the schema, DP on placed compute', async () => {
    await refusedAtCreate({ ...heart, sites: ['alpha', 'omega'] }, /\/sites: no enrolled site is named omega \(enrolled: alpha, beta, delta, gamma\)/);
    await refusedAtCreate({ ...heart, sites: ['alpha', 'beta'], minSites: 3 }, /\/minSites: 3 is more than the 2 site\(s\) the study names/);
    await refusedAtCreate({ ...heart, sites: ['alpha'], fit: { ...heart.fit, epochs: 2 } }, /\/fit: give localSteps or epochs, not both/);
    await refusedAtCreate({ ...heart, sites: ['alpha', 'beta'], dataset: 'hearts' }, /\/dataset: no site declares a dataset "hearts" \(the sites declare: heart\)/);
    await refusedAtCreate({ ...heart, sites: ['alpha', 'gamma'] }, /site gamma declares no dataset "heart" \(it has: cohort\)/);
    await refusedAtCreate({ ...heart, sites: ['gamma'], dataset: 'cohort', dataSchema: csvSchema }, /\/model\/inputDim: the data schema encodes 6 feature column\(s\).*inputDim must be 6, not 13/);
    await refusedAtCreate({ ...heart, sites: ['alpha', 'delta'], privacy: { dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 } } }, /sample-level DP cannot be applied by delta \(placed compute/);
    // Several problems are all named at once.
    await refusedAtCreate({ ...heart, sites: ['alpha', 'omega'], minSites: 5, fit: { ...heart.fit, epochs: 1 } }, /localSteps or epochs, not both.*omega.*minSites/);
    // And the same study, fixed, is created.
    assert.match((await lead.json<{ id: string }>('POST', '/v1/studies', { ...heart, sites: ['alpha', 'beta'] })).id, /^checks-/);
  });

  it('refuses a SecAgg+ start with fewer than three participants, saying why', async () => {
    // Named sites: refused at create already (privacy.ts); without names, at start once the participants are known.
    await refusedAtCreate({ ...heart, sites: ['alpha', 'beta'], privacy: { secagg: {} } }, /SecAgg\+ needs at least 3 sites/);
    const c2dir = mkdtempSync(join(tmpdir(), 'setu-checks-2-'));
    const c2 = await startCoordinator({ dataDir: c2dir, port: 0, tickMs: 100 });
    try {
      const adm = adminOf(c2);
      const l2 = await studyLeadClient(adm, c2.url);
      for (const name of ['one', 'two', 'three']) {
        const inv = await adm.json<InviteResponse>('POST', '/v1/invites', { siteName: name });
        await new HttpClient({ baseUrl: c2.url }).json('POST', '/v1/enrol', { token: inv.token, publicKey: generateSigningKeys().publicKeyRaw, cohorts: { heart: 100 } });
      }
      const { id } = await l2.json<{ id: string }>('POST', '/v1/studies', { ...heart, privacy: { secagg: {} } });
      await adm.json('POST', '/v1/sites/three/revoke', {});
      const e = await refused(l2.json('POST', `/v1/studies/${id}/start`, {}));
      assert.equal(e.status, 409);
      assert.equal(e.code, 'cannot_start');
      assert.match(e.message, /SecAgg\+ needs at least 3 participants and 2 site\(s\) approved \(one, two\)/);
      assert.equal((await l2.json<{ status: string }>('GET', `/v1/studies/${id}`)).status, 'created', 'the refused start changed nothing');
      const check = await l2.json<{ ok: boolean; remaining: { what: string }[] }>('GET', `/v1/studies/${id}/policy-check`);
      assert.equal(check.ok, false);
      assert.match(check.remaining.map((r) => r.what).join(), /SecAgg\+ needs at least 3 participants/);
    } finally {
      await c2.close();
      rmSync(c2dir, { recursive: true, force: true });
    }
  });

  it('policy-check of a proposed study lists the approvals still missing; ok only once start would succeed', async () => {
    await admin.json('POST', '/v1/institutions', { id: 'kem', name: 'KEM Mumbai', kind: 'hospital', jurisdiction: 'IN' });
    await admin.json('POST', '/v1/institutions', { id: 'kyoto', name: 'Kyoto UH', kind: 'hospital', jurisdiction: 'JP' });
    await enrolSite('kem-heart', { heart: 199 }, 'kem', 'IN');
    await enrolSite('kyoto-heart', { heart: 172 }, 'kyoto', 'JP');
    const inv = await admin.json<UserInviteResponse>('POST', '/v1/users', { name: 'kem-admin', role: 'site_admin', institution: 'kem' });
    const k = generateSigningKeys();
    await new HttpClient({ baseUrl: c.url }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: k.publicKeyRaw });
    const kemAdmin = new HttpClient({ baseUrl: c.url, signer: { keyId: inv.userId, privateKey: k.privateKeyPem } });
    // DP within both policies' bounds; the coordinator's jurisdiction is undeclared, so JP's rule wants SecAgg+.
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', { ...heart, sites: ['kem-heart', 'kyoto-heart'], privacy: { dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 } } });
    let check = await lead.json<{ ok: boolean; remaining: { site: string | null; what: string }[]; approvals: { site: string; status: string }[]; violations: { site: string; rule: string }[] }>('GET', `/v1/studies/${id}/policy-check`);
    assert.equal(check.ok, false, 'a draft nobody approved does not pass');
    assert.match(check.remaining[0]!.what, /propose the study/);
    assert.deepEqual(check.violations.map((v) => [v.site, v.rule]), [['kyoto-heart', 'update-protection']], 'the rules are checked before any approval');
    await lead.json('POST', `/v1/studies/${id}/propose`, {});
    await kemAdmin.json('POST', `/v1/studies/${id}/approve`, { site: 'kem-heart', terms: { purpose: 'heart research' } });
    check = await lead.json('GET', `/v1/studies/${id}/policy-check`);
    assert.equal(check.ok, false);
    assert.deepEqual(check.approvals, [{ site: 'kem-heart', status: 'approved' }, { site: 'kyoto-heart', status: 'pending' }]);
    assert.deepEqual(check.remaining.map((r) => r.site), ['kyoto-heart']);
    assert.match(check.remaining[0]!.what, /approval by a site admin of Kyoto UH/);
  });
});
