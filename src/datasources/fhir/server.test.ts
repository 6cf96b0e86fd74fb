/**
 * The FHIR server path against a real FHIR R4 server over HTTP (Medplum's router, see test-server.ts):
 * search with paging, the Bulk Data kick-off/poll/download flow, and SMART Backend Services with RS384
 * and ES384 client assertions. Each gives the heart loader's numbers bit for bit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Resource } from '@medplum/fhirtypes';
import { loadHeartCenter } from '../../site/data/heart.js';
import { loadTabular, normaliseTabular } from '../../site/data/tabular.js';
import { HEART_DATA_SCHEMA } from '../../tools/heart-csv.js';
import { heartNdjson } from '../../tools/heart-fhir.js';
import { asCsvTable, extract } from '../extract.js';
import { startTestFhirServer } from './test-server.js';
import { FhirServerError } from './server.js';

const resources = (): Resource[] => Object.values(heartNdjson(2, 'jpcore')).flatMap((t) => t.trim().split('\n').map((l) => JSON.parse(l) as Resource));

function assertSwitzerland(ex: Awaited<ReturnType<typeof extract>>): void {
  const want = loadHeartCenter(undefined, 2);
  const got = normaliseTabular(loadTabular(asCsvTable(ex.table, 'x'), HEART_DATA_SCHEMA), HEART_DATA_SCHEMA);
  assert.deepEqual(Array.from(got.train.x), Array.from(want.train.x));
  assert.deepEqual(Array.from(got.test.x), Array.from(want.test.x));
  assert.deepEqual(Array.from(got.train.y), Array.from(want.train.y));
}

test('FHIR server: search follows the next links page by page; Bulk Data kick-off, polls and downloads', { timeout: 120_000 }, async () => {
  const s = await startTestFhirServer(resources(), { pollsBeforeReady: 2 });
  try {
    const logs: string[] = [];
    const ex = await extract({ format: 'fhir', source: { kind: 'server', url: s.url, mode: 'search', pageSize: 50 }, mapping: 'setu:heart-fhir-jpcore' }, { configDir: '/', log: (m) => logs.push(m) });
    assert.deepEqual(ex.issues.list, []);
    assertSwitzerland(ex);
    // 123 patients in pages of 50: three pages, the 2nd and 3rd reached by the server's next links.
    assert.deepEqual(s.seen.filter((r) => r.startsWith('GET /Patient')), ['GET /Patient?_count=50', 'GET /Patient?_count=50&_offset=50', 'GET /Patient?_count=50&_offset=100']);
    s.seen.length = 0;
    const bulk = await extract({ format: 'fhir', source: { kind: 'server', url: s.url, mode: 'bulk' }, mapping: 'setu:heart-fhir-jpcore' }, { configDir: '/', log: (m) => logs.push(m) });
    assertSwitzerland(bulk);
    assert.deepEqual(bulk.table, ex.table, 'search and Bulk Data give the same table');
    assert.ok(s.seen[0]!.startsWith('GET /$export?_type=Patient,Encounter,Observation,ResearchSubject'), s.seen[0]);
    assert.equal(s.seen.filter((r) => r.startsWith('GET /bulk-status/')).length, 3, 'two 202 polls, then the manifest');
    assert.ok(s.seen.some((r) => r.startsWith('GET /bulk-files/') && r.endsWith('/Observation.ndjson')));
    assert.ok(s.seen.some((r) => r.startsWith('DELETE /bulk-status/')), 'the export is released');
    assert.ok(logs.some((l) => /bulk export exporting \(1\)/.test(l)), logs.join('\n'));
  } finally {
    await s.close();
  }
});

test('FHIR server with SMART Backend Services: RS384 and ES384 client assertions; no or a wrong key is refused with a clear error', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-smart-'));
  try {
    for (const [alg, kp] of [['RS384', generateKeyPairSync('rsa', { modulusLength: 2048 })], ['ES384', generateKeyPairSync('ec', { namedCurve: 'P-384' })]] as const) {
      const s = await startTestFhirServer(resources(), { client: { id: 'site-zurich', publicKey: kp.publicKey, alg } });
      try {
        const keyFile = join(dir, `${alg}.pem`);
        writeFileSync(keyFile, kp.privateKey.export({ type: 'pkcs8', format: 'pem' }));
        for (const mode of ['search', 'bulk'] as const) {
          const ex = await extract({ format: 'fhir', source: { kind: 'server', url: s.url, mode, auth: { clientId: 'site-zurich', privateKeyFile: keyFile, alg } }, mapping: 'setu:heart-fhir-jpcore' }, { configDir: dir });
          assertSwitzerland(ex);
        }
        assert.ok(s.seen.includes('GET /.well-known/smart-configuration') && s.seen.includes('POST /auth/token'));
        await assert.rejects(extract({ format: 'fhir', source: { kind: 'server', url: s.url, mode: 'search' }, mapping: 'setu:heart-fhir-jpcore' }, { configDir: dir }), (e: unknown) => e instanceof FhirServerError && /asks for authorisation \(401\); configure auth/.test((e as Error).message));
        const other = generateKeyPairSync('ec', { namedCurve: 'P-384' });
        const wrong = join(dir, 'wrong.pem');
        writeFileSync(wrong, other.privateKey.export({ type: 'pkcs8', format: 'pem' }));
        await assert.rejects(extract({ format: 'fhir', source: { kind: 'server', url: s.url, mode: 'search', auth: { clientId: 'site-zurich', privateKeyFile: wrong, alg: 'ES384' } }, mapping: 'setu:heart-fhir-jpcore' }, { configDir: dir }), /refused the client assertion: 400 invalid_client/);
      } finally {
        await s.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
