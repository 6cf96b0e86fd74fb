/**
 * OMOP CDM v5.4 on SQLite (libsql) and on the machine's PostgreSQL (a throw-away database): the heart
 * hospitals converted to the CDM give the heart loader's numbers bit for bit; a missing table and a
 * concept outside the mapping are reported and counted, never a crash.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'libsql';
import pg from 'pg';
import { HEART_CENTERS, loadHeartCenter, type HeartCenter } from '../../site/data/heart.js';
import { loadTabular, normaliseTabular } from '../../site/data/tabular.js';
import { HEART_DATA_SCHEMA } from '../../tools/heart-csv.js';
import { heartOmopEnrolment, heartOmopSql } from '../../tools/heart-omop.js';
import { asCsvTable, extract } from '../extract.js';
import { loadMapping } from '../mapping.js';
import { omopQueries } from './sql.js';
import { createTempDatabase, pgSkipReason } from '../../testing/pg.js';
import type { OmopDataset } from '../config.js';

function assertHeart(ex: Awaited<ReturnType<typeof extract>>, c: HeartCenter): void {
  const want = loadHeartCenter(undefined, c);
  const got = normaliseTabular(loadTabular(asCsvTable(ex.table, 'x'), HEART_DATA_SCHEMA), HEART_DATA_SCHEMA);
  for (const part of ['train', 'test'] as const) {
    assert.deepEqual(Array.from(got[part].x), Array.from(want[part].x), `${HEART_CENTERS[c]} ${part}`);
    assert.deepEqual(Array.from(got[part].y), Array.from(want[part].y));
  }
}

function sqliteDb(file: string, sql: string): void {
  const db = new Database(file);
  db.exec(sql);
  db.close();
}

const dataset = (database: OmopDataset['database'], enrolment: string): OmopDataset => ({ format: 'omop', database, mapping: 'setu:heart-omop', licences: ['snomed-ct'], enrolment: { file: enrolment, patient: 'person_id' } });

test('OMOP on SQLite: every heart hospital bit for bit; the SQL is printed per domain and reads only the CDM', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-omop-'));
  try {
    for (let c = 0; c < 4; c++) {
      const file = join(dir, `${c}.db`), enr = join(dir, `${c}.csv`);
      sqliteDb(file, heartOmopSql(c as HeartCenter));
      writeFileSync(enr, heartOmopEnrolment(c as HeartCenter));
      const ex = await extract(dataset({ sqlite: file }, enr), { configDir: dir });
      assert.deepEqual(ex.issues.list, []);
      assertHeart(ex, c as HeartCenter);
    }
    const queries = omopQueries(loadMapping('setu:heart-omop', dir));
    assert.deepEqual(queries.map((q) => q.table), ['person', 'visit_occurrence', 'observation', 'measurement']);
    assert.match(queries[3]!.sql, /c\.concept_code = '2093-3' AND c\.vocabulary_id = 'LOINC'/);
    for (const q of queries) assert.doesNotMatch(q.sql, /\b(insert|update|delete|drop|create)\b/i);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('OMOP: a missing table and an unmapped concept are reported and counted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-omop-messy-'));
  try {
    const file = join(dir, 'messy.db'), enr = join(dir, 'enr.csv');
    // No measurement table at all; one chest-pain value concept outside the mapping.
    sqliteDb(file, heartOmopSql(2).split('\n').filter((l) => !/measurement/.test(l)).join('\n') + "\nINSERT INTO concept VALUES (2000000099, 'Myocardial infarction', 'Condition', 'SNOMED', 'Clinical Finding', 'S', '22298006', '1970-01-01', '2099-12-31');\nUPDATE observation SET value_as_concept_id = 2000000099 WHERE observation_id = (SELECT MIN(observation_id) FROM observation WHERE value_as_concept_id IS NOT NULL);\n");
    writeFileSync(enr, heartOmopEnrolment(2));
    const ex = await extract(dataset({ sqlite: file }, enr), { configDir: dir });
    assert.deepEqual(ex.issues.counts(), [{ reason: 'unmapped-code', count: 1 }, { reason: 'missing-table', count: 1 }]);
    const miss = ex.issues.list.find((i) => i.reason === 'missing-table')!;
    assert.match(miss.ref, /messy\.db:measurement$/);
    assert.equal(miss.field, 'measurement');
    const un = ex.issues.list.find((i) => i.reason === 'unmapped-code')!;
    assert.match(un.ref, /^observation:\d+$/);
    assert.equal(un.field, 'cp');
    assert.equal(ex.table.rows.length, 123, 'every person is still a row; their measurement columns are missing');
    assert.ok(ex.table.rows.every((r) => r[ex.table.header.indexOf('chol')] === null));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('OMOP on PostgreSQL: the same SQL in a read-only transaction, in the CDM schema, bit for bit', async (t) => {
  const skip = await pgSkipReason();
  if (skip) return t.skip(skip);
  const db = await createTempDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'setu-omop-pg-'));
  try {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    await c.query(`CREATE SCHEMA cdm; SET search_path TO cdm; ${heartOmopSql(1)}`);
    await c.end();
    const enr = join(dir, 'enr.csv');
    writeFileSync(enr, heartOmopEnrolment(1));
    const ex = await extract(dataset({ postgres: db.url, schema: 'cdm' }, enr), { configDir: dir });
    assert.deepEqual(ex.issues.list, []);
    assertHeart(ex, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await db.drop();
  }
});
