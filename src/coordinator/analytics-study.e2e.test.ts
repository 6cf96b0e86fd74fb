/**
 * An analytics study end to end: a real coordinator and three real agent processes, each holding the rows of R's
 * `lung` (NCCTG lung cancer trial) of its institutions, under its own analytics policy in site.yaml. The study is
 * proposed, approved by each site's admin and checked against the jurisdiction policy like a training study; its
 * queries (a count by sex, a summary of age by sex, a histogram one site's policy forbids, Kaplan–Meier curves by sex,
 * a stratified log-rank test, a Cox fit stratified by site) run as rounds (the Cox fit one round per Newton step). The committed results equal `runQuery` on the same
 * tables and policies exactly; what the coordinator received holds no count under any site's minimum; every
 * analytics round has its audit entry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { SETU_MAIN, adminOf, runSetu, stopAll, waitFor } from '../testing/processes.js';
import { rSkipReason } from '../testing/oracles.js';
import { HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { parseCsv } from '../site/data/csv.js';
import { LUNG_SCHEMA, lungCsvText } from '../analytics/testing.js';
import { SiteTable } from '../analytics/columns.js';
import { answerProblems, runQuery } from '../analytics/query.js';
import type { AnalyticsPolicy, QuerySpec, StudyResults } from '../protocol/analytics.js';
import type { ResultMeta, StudySpec } from '../protocol/api.js';
import { CryptoNormal } from '../privacy/noise.js';
import { listAudit } from '../governance/audit-store.js';

const exec = promisify(execFile);
const SITES = ['north', 'south', 'west'] as const;
const POLICY: Record<string, AnalyticsPolicy> = {
  north: { minCellCount: 10, suppressZeros: true },
  south: { minCellCount: 8, suppressZeros: true },
  // west answers no histogram: the query goes on without it, and its reason is shown.
  west: { minCellCount: 10, suppressZeros: true, allow: ['count', 'summary', 'cox'] },
};
const QUERIES: Array<QuerySpec & { name: string }> = [
  { name: 'patients by sex', kind: 'count', by: ['sex'] },
  { name: 'age by sex', kind: 'summary', column: 'age', by: 'sex', statistics: ['mean', 'variance', 'sd'] },
  { name: 'age histogram', kind: 'histogram', column: 'age', range: [30, 90], bins: 12 },
  { name: 'survival by sex', kind: 'kaplan-meier', by: 'sex' },
  { name: 'logrank sex', kind: 'log-rank', group: 'sex', strata: 'site' },
  { name: 'cox', kind: 'cox', covariates: ['age', 'sex', 'ph.ecog'], ties: 'efron', strata: 'site' },
];

/** lung's rows split by institution into three sites (inst mod 3), each as its own CSV text. */
function lungSites(): Record<string, string> {
  const text = lungCsvText();
  const lines = text.trimEnd().split('\n');
  const table = parseCsv(text, 'lung.csv');
  const inst = table.header.indexOf('inst');
  const out: Record<string, string[]> = { north: [lines[0]!], south: [lines[0]!], west: [lines[0]!] };
  table.rows.forEach((r, k) => out[SITES[Number(r[inst]) % 3]!]!.push(lines[k + 1]!));
  return Object.fromEntries(Object.entries(out).map(([s, l]) => [s, `${l.join('\n')}\n`]));
}

/** Every count an answer releases under the minimum rule (counts, n, total, missing, present; survival risk sets). */
function releasedCounts(v: unknown, key = ''): Array<number | null> {
  if (Array.isArray(v)) return v.flatMap((x) => releasedCounts(x, key));
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => releasedCounts(x, k));
  return ['counts', 'n', 'total', 'missing', 'present', 'atRisk'].includes(key) && (v === null || typeof v === 'number') ? [v as number | null] : [];
}

/** Risk tables that stop early because their risk set fell under the site's minimum. */
function truncatedTables(v: unknown): number {
  if (Array.isArray(v)) return v.reduce((a: number, x) => a + truncatedTables(x), 0);
  if (v && typeof v === 'object') return ((v as { truncated?: unknown }).truncated === true ? 1 : 0) + Object.values(v).reduce((a: number, x) => a + truncatedTables(x), 0);
  return 0;
}

const skip = rSkipReason();

test('an analytics study through governance and three real agents equals runQuery, and no small cell leaves a site', { timeout: 240_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const dir = mkdtempSync(join(tmpdir(), 'setu-analytics-'));
  const children: ChildProcess[] = [];
  let c: RunningCoordinator | undefined;
  try {
    // The coordinator runs in India with the hospitals (IN's policy: domestic answers need no SecAgg+ or DP).
    process.env.SETU_JURISDICTION = 'IN';
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 50 });
    const admin = adminOf(c);
    const url = c.url;
    const store = c.store;
    const user = async (name: string, role: string, institution?: string): Promise<HttpClient> => {
      const inv = await admin.json<{ token: string; userId: string }>('POST', '/v1/users', { name, role, ...(institution ? { institution } : {}), ttlHours: 1 });
      const keys = generateSigningKeys();
      await new HttpClient({ baseUrl: url, giveUpAfterMs: 10_000 }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: keys.publicKeyRaw });
      return new HttpClient({ baseUrl: url, signer: { keyId: inv.userId, privateKey: keys.privateKey }, giveUpAfterMs: 20_000 });
    };
    const csv = lungSites();
    for (const s of SITES) {
      await admin.json('POST', '/v1/institutions', { id: `${s}-hospital`, name: `${s} hospital`, kind: 'hospital', jurisdiction: 'IN' });
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: s, institution: `${s}-hospital`, jurisdiction: 'IN', ttlHours: 1 });
      const siteDir = join(dir, s);
      mkdirSync(siteDir, { recursive: true });
      writeFileSync(join(siteDir, 'lung.csv'), csv[s]!);
      writeFileSync(join(siteDir, 'site.yaml'), YAML.stringify({ coordinator: url, pollWaitMs: 2000, jurisdiction: 'IN', datasets: { lung: { format: 'csv', path: 'lung.csv' } }, analytics: POLICY[s] }));
      children.push(runSetu(['site', 'start', '--config', join(siteDir, 'site.yaml'), '--token', inv.token], join(siteDir, 'agent.log')));
    }
    await waitFor('3 sites', async () => ((await admin.json<unknown[]>('GET', '/v1/sites')).length === 3 ? true : undefined), 30_000);
    const lead = await user('lead', 'study_lead');
    // An analytics study names no model, strategy or rounds: its queries are what it runs.
    const spec: Pick<StudySpec, 'name' | 'dataset' | 'dataSchema' | 'sites' | 'roundTimeoutSeconds' | 'analytics'> = {
      name: 'lung analytics', dataset: 'lung', dataSchema: LUNG_SCHEMA, sites: [...SITES], roundTimeoutSeconds: 60, analytics: { queries: QUERIES },
    };
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    await lead.json('POST', `/v1/studies/${id}/propose`, {});
    for (const s of SITES) await (await user(`admin-${s}`, 'site_admin', `${s}-hospital`)).json('POST', `/v1/studies/${id}/approve`, { site: s, terms: { purpose: 'lung cancer survival statistics' } });
    await waitFor('every site to declare itself', async () => {
      const r = await lead.json<{ violations: { message: string }[] }>('GET', `/v1/studies/${id}/policy-check`).catch(() => undefined);
      return r && !r.violations.some((v) => /not declared/.test(v.message)) ? r : undefined;
    }, 30_000, 200);
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const done = await waitFor('the study to end', async () => {
      const s = await lead.json<{ status: string; error: string | null }>('GET', `/v1/studies/${id}`);
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 180_000, 200);
    assert.equal(done.status, 'completed', done.error ?? '');
    const results = await lead.json<StudyResults>('GET', `/v1/studies/${id}/results`);

    // The CLI shows the same results: text, JSON, one query's CSV, and the Cox fit's forest plot.
    const cli = async (...args: string[]) => (await exec(process.execPath, [SETU_MAIN, 'study', 'results', id, '--coordinator', url, '--data-dir', join(dir, 'coord'), ...args], { timeout: 30_000 })).stdout;
    assert.deepEqual(JSON.parse(await cli('--json')), results);
    const status = (await exec(process.execPath, [SETU_MAIN, 'study', 'status', id, '--coordinator', url, '--data-dir', join(dir, 'coord')], { timeout: 30_000 })).stdout;
    assert.match(status, /completed · analytics: 6 queries · round \d+ · 3 sites\n.*setu study results/);
    const text = await cli();
    assert.match(text, /cox \(cox\) · done · rounds \d+–\d+/);
    assert.match(text, /site west did not answer: .*does not allow histogram/);
    assert.match(await cli('--csv', '--query', '1'), /^sex,count,noise_sd,suppressed_at\n/);
    await cli('--query', 'cox', '--plot', join(dir, 'cox.svg'));
    await cli('--query', 'survival by sex', '--plot', join(dir, 'km.svg'));
    assert.match(readFileSync(join(dir, 'km.svg'), 'utf8'), /^<svg[^>]*>[\s\S]*sex=2/);
    assert.match(readFileSync(join(dir, 'cox.svg'), 'utf8'), /^<svg[^>]*>[\s\S]*ph\.ecog/);

    // The same queries in one process, over the same tables under the same policies.
    const inputs = Object.fromEntries(SITES.map((s) => [s, { table: new SiteTable(parseCsv(csv[s]!, `${s}.csv`), LUNG_SCHEMA, s), policy: POLICY[s]!, noise: new CryptoNormal() }]));
    QUERIES.forEach(({ name, ...q }, i) => {
      const entry = results.queries[i]!;
      assert.equal(entry.status, 'done', `${name}: ${entry.error ?? ''}`);
      const run = runQuery(q as QuerySpec, inputs);
      assert.deepEqual(entry.result, JSON.parse(JSON.stringify(run.result)), `${name}: the federation's result is runQuery's exactly`);
      assert.deepEqual(Object.keys(entry.refusals).sort(), Object.keys(run.refusals).sort(), `${name}: the same sites refused`);
      assert.equal(entry.rounds.length, run.rounds.length, `${name}: one round per runQuery round`);
    });
    assert.match(results.queries[2]!.refusals.west!, /site west refuses the histogram query "age histogram".*does not allow histogram/);
    assert.ok(results.queries[5]!.rounds.length >= 3, 'the Cox fit took a round per Newton step');

    // What the coordinator received: every answer passes the count rule at the minimum of the site that sent it,
    // and no released count is under that minimum (small cells arrived as null, never as a number).
    const sites = new Map((await store.listSites()).map((s) => [s.id, s.name]));
    let suppressed = 0, released = 0, truncated = 0;
    const rounds = (await store.listRounds(id)).filter((r) => r.kind === 'analytics');
    assert.equal(rounds.length, results.queries.reduce((a, e) => a + e.rounds.length, 0));
    for (const r of rounds) {
      for (const u of await store.listUpdates(id, r.round)) {
        const site = sites.get(u.site_id)!;
        const answer = (JSON.parse(u.metrics) as ResultMeta).analytics!.answer as { minCellCount?: number };
        const task = (await store.getTask(u.task_id))!;
        assert.deepEqual(answerProblems((JSON.parse(task.config) as { query: QuerySpec }).query, answer), []);
        if (answer.minCellCount !== undefined) assert.equal(answer.minCellCount, POLICY[site]!.minCellCount, `${site} states its own minimum`);
        truncated += truncatedTables(answer);
        for (const n of releasedCounts(answer)) {
          if (n === null) suppressed++;
          else {
            released++;
            assert.ok(n >= POLICY[site]!.minCellCount, `${site} released a count ${n} under its minimum ${POLICY[site]!.minCellCount}`);
          }
        }
      }
    }
    assert.ok(suppressed > 0 && released > 0, `small cells were suppressed (${suppressed}) and others released (${released})`);
    assert.ok(truncated > 0, 'survival risk tables stop where the risk set falls under the minimum');

    // Audited: one analytics.committed entry per analytics round, with the result's digest when it completed a query.
    const audit = (await listAudit(store, { limit: 10_000 })).filter((e) => e.kind === 'analytics.committed');
    assert.equal(audit.length, rounds.length);
    for (const e of results.queries) assert.ok(audit.some((a) => (a.data as { resultDigest?: string }).resultDigest === e.digest), `${e.name}'s digest is audited`);
  } finally {
    await stopAll(children);
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
