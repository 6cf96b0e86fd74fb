/**
 * The proof with real numbers: the four-hospital heart federation, trained by real agent processes over
 * HTTP, from each form a hospital keeps its records in, gives a final model bit-identical to the run on
 * the CSV files, which is itself bit-identical to the run on the bundled heart loader.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { adminOf, runSetu, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';
import { HEART_CENTERS, type HeartCenter } from '../site/data/heart.js';
import { heartBundles, heartNdjson } from '../tools/heart-fhir.js';
import { heartStudySpec } from '../cli/demo.js';
import { decodeSafetensors } from '../protocol/safetensors.js';
import Database from 'libsql';
import { heartOmopEnrolment, heartOmopSql } from '../tools/heart-omop.js';

const EXAMPLE = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'heart-csv');
const ROUNDS = 3;

type SiteSetup = (dir: string, c: HeartCenter) => Record<string, unknown>;

function files(dir: string, f: Record<string, string>): void {
  mkdirSync(dir, { recursive: true });
  for (const [k, v] of Object.entries(f)) writeFileSync(join(dir, k), v);
}

/** One federation run: a coordinator, four agents configured by `setup`, the study; returns the final model's bytes and the prepare reports. */
async function federation(root: string, label: string, setup: SiteSetup, withSchema: boolean) {
  const dir = join(root, label);
  const children: ChildProcess[] = [];
  let c: RunningCoordinator | undefined;
  try {
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 50 });
    const admin = adminOf(c);
    const lead = await studyLeadClient(admin, c.url);
    for (let k = 0; k < 4; k++) {
      const name = HEART_CENTERS[k]!, siteDir = join(dir, name);
      mkdirSync(siteDir, { recursive: true });
      writeFileSync(join(siteDir, 'site.yaml'), YAML.stringify({ coordinator: c.url, pollWaitMs: 5000, datasets: { heart: setup(siteDir, k as HeartCenter) } }));
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: name });
      children.push(runSetu(['site', 'start', '--config', join(siteDir, 'site.yaml'), '--token', inv.token], join(siteDir, 'agent.log')));
    }
    await waitFor('4 sites', async () => ((await admin.json<unknown[]>('GET', '/v1/sites')).length === 4 ? true : undefined), 60_000);
    const csvStudy = YAML.parse(readFileSync(join(EXAMPLE, 'study.yaml'), 'utf8')) as Record<string, unknown>;
    const spec = withSchema ? { ...csvStudy, rounds: ROUNDS } : heartStudySpec(42, ROUNDS);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const s = await waitFor(`${label} study to end`, async () => {
      const st = await admin.json<{ status: string; error: string | null }>('GET', `/v1/studies/${id}`);
      return ['completed', 'failed', 'stopped'].includes(st.status) ? st : undefined;
    }, 150_000);
    assert.equal(s.status, 'completed', `${label}: ${s.error ?? ''}`);
    // The weights (the file's header also names the study and version, which differ per run).
    const { weights } = decodeSafetensors((await lead.request('GET', `/v1/studies/${id}/model`)).body);
    const model = Buffer.concat(Object.keys(weights).sort().map((k) => Buffer.from(weights[k]!.data.buffer, weights[k]!.data.byteOffset, weights[k]!.data.byteLength)));
    // Per-site evaluations, every round: what each hospital saw, to the last bit.
    const metrics = (await admin.json<{ metrics: Array<{ round: number; site: string | null; phase: string; name: string; value: number }> }>('GET', `/v1/studies/${id}`)).metrics
      .filter((m) => m.site !== null).map((m) => `${m.round} ${m.site} ${m.phase} ${m.name} ${m.value}`).sort();
    const prepare = withSchema ? (await c.store.listUpdates(id, 0)).map((u) => (JSON.parse(u.metrics) as { prepare: unknown }).prepare) : undefined;
    return { model, metrics, prepare };
  } finally {
    await stopAll(children);
    await c?.close();
  }
}

test('the heart federation trains bit-identically from the bundled loader, CSV files, FHIR (NDJSON NRCeS, JP Core, document Bundles) and OMOP', { timeout: 600_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-heart-sources-'));
  try {
    const bundled = await federation(root, 'bundled', (_d, c) => ({ format: 'fed-heart-disease', center: c }), false);
    const csv = await federation(root, 'csv', (_d, c) => ({ format: 'csv', path: join(EXAMPLE, `${HEART_CENTERS[c]}.csv`) }), true);
    assert.ok(csv.model.length === 14 * 4 && csv.model.equals(bundled.model), 'CSV files + the study schema = the bundled loader, bit for bit');
    assert.deepEqual(csv.metrics, bundled.metrics);
    // Two Indian sites (NRCeS: one a Bulk export, one document Bundles), two Japanese (JP Core Bulk exports).
    const fhir = await federation(root, 'fhir', (d, c) => {
      if (c === 1) {
        files(join(d, 'bundles'), heartBundles(c, 'nrces'));
        return { format: 'fhir', source: { kind: 'bundles', dir: 'bundles' }, mapping: 'setu:heart-fhir-nrces', licences: ['snomed-ct'] };
      }
      const profile = c === 0 ? 'nrces' : 'jpcore';
      files(join(d, 'export'), heartNdjson(c, profile));
      return { format: 'fhir', source: { kind: 'ndjson', dir: 'export' }, mapping: `setu:heart-fhir-${profile}`, ...(profile === 'nrces' ? { licences: ['snomed-ct'] } : {}) };
    }, true);
    assert.ok(fhir.model.equals(csv.model), 'FHIR sources = the CSV run, bit for bit');
    assert.deepEqual(fhir.metrics, csv.metrics);
    // OMOP CDM databases (SQLite files) with the study's enrolment lists.
    const omop = await federation(root, 'omop', (d, c) => {
      const db = new Database(join(d, 'omop.db'));
      db.exec(heartOmopSql(c));
      db.close();
      writeFileSync(join(d, 'enrolment.csv'), heartOmopEnrolment(c));
      return { format: 'omop', database: { sqlite: 'omop.db' }, mapping: 'setu:heart-omop', licences: ['snomed-ct'], enrolment: { file: 'enrolment.csv', patient: 'person_id' } };
    }, true);
    assert.ok(omop.model.equals(csv.model), 'OMOP sources = the CSV run, bit for bit');
    assert.deepEqual(omop.metrics, csv.metrics);
    // Each hospital's prepare report counts its table: every UCI row, the complete ones kept, the rest by column.
    const kept = (p: unknown) => (p as { extraction: { kept: number } }).extraction.kept;
    assert.deepEqual(fhir.prepare!.map(kept).sort((a, b) => a - b), [46, 130, 261, 303]);
    // The same rows are left out for the same reasons whether the hospital holds CSV or FHIR.
    const counts = (ps: unknown[]) => ps.map((p) => { const e = (p as { extraction: { rows: number; kept: number; dropped: unknown[] } }).extraction; return { rows: e.rows, kept: e.kept, dropped: e.dropped }; }).sort((a, b) => a.rows - b.rows);
    assert.deepEqual(counts(fhir.prepare!), counts(csv.prepare!));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
