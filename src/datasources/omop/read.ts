/**
 * Runs the mapping's OMOP queries (sql.ts) on the hospital's database, read-only: SQLite through libsql,
 * PostgreSQL through pg (a maintained driver, no ORM), and turns the rows into facts. A table the
 * mapping needs but the database lacks is reported (`missing-table`) and its facts are absent.
 */
import Database from 'libsql';
import pg from 'pg';
import type { Fact, Issues } from '../facts.js';
import type { Mapping } from '../mapping.js';
import type { SourceFacts } from '../extract.js';
import { omopBlock, omopQueries, type OmopQuery } from './sql.js';

type Row = Record<string, string | null>;

export type OmopDatabase = { sqlite: string } | { postgres: string; schema?: string };

function missingTable(e: Error): string | null {
  return /no such table: (\w+)/.exec(e.message)?.[1] ?? /relation "(?:\w+\.)?(\w+)" does not exist/.exec(e.message)?.[1] ?? null;
}

async function runAll(db: OmopDatabase, queries: OmopQuery[], run: (q: OmopQuery, rows: Row[] | Error) => void): Promise<void> {
  if ('sqlite' in db) {
    const conn = new Database(db.sqlite, { readonly: true, fileMustExist: true } as never);
    try {
      for (const q of queries) {
        let rows: Row[] | Error;
        try {
          rows = conn.prepare(q.sql).all() as Row[];
        } catch (e) {
          rows = e as Error;
        }
        run(q, rows);
      }
    } finally {
      conn.close();
    }
    return;
  }
  const c = new pg.Client({ connectionString: db.postgres });
  await c.connect();
  try {
    // Read-only, in the CDM's schema: nothing here can change the hospital's database.
    await c.query('BEGIN READ ONLY');
    if (db.schema) await c.query(`SET LOCAL search_path TO ${db.schema}`);
    for (const q of queries) {
      let rows: Row[] | Error;
      try {
        await c.query('SAVEPOINT q');
        rows = (await c.query<Row>(q.sql)).rows;
        await c.query('RELEASE SAVEPOINT q');
      } catch (e) {
        await c.query('ROLLBACK TO SAVEPOINT q');
        rows = e as Error;
      }
      run(q, rows);
    }
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }
}

export async function readOmop(db: OmopDatabase, m: Mapping, issues: Issues, log: (s: string) => void): Promise<SourceFacts> {
  const b = omopBlock(m);
  const systems = b.vocabularies;
  const facts: Fact[] = [];
  let records = 0;
  const where = 'sqlite' in db ? db.sqlite : new URL(db.postgres).pathname.slice(1);
  await runAll(db, omopQueries(m), (q, rows) => {
    if (rows instanceof Error) {
      const t = missingTable(rows);
      if (t) return issues.add('missing-table', `${where}:${t}`, q.kind, `the mapping reads ${q.table} (for ${q.kind}) but the database has no table ${t}`);
      throw new Error(`omop: the ${q.kind} query failed on ${where}: ${rows.message}`);
    }
    log(`omop: ${q.table}: ${rows.length} row(s)`);
    for (const r of rows) {
      records++;
      const ref = `${q.table}:${r.id ?? r.patient}`;
      if (q.kind === 'patient') {
        if (r.gender) facts.push({ patient: r.patient!, kind: 'patient', code: 'gender', value: r.gender, ref });
        if (r.y) facts.push({ patient: r.patient!, kind: 'patient', code: 'birthDate', value: `${r.y.padStart(4, '0')}-${(r.m ?? '1').padStart(2, '0')}-${(r.d ?? '1').padStart(2, '0')}`, ref });
        else facts.push({ patient: r.patient!, kind: 'patient', code: 'person', value: r.patient!, ref });
        continue;
      }
      const system = systems[r.vocabulary ?? ''];
      if (!system) {
        issues.add('unmapped-code', ref, q.kind, `vocabulary ${JSON.stringify(r.vocabulary)} is not in the mapping's vocabularies`);
        continue;
      }
      const f: Fact = { patient: r.patient!, kind: q.kind, system, code: r.code!, ref };
      if (r.date) f.date = r.date.slice(0, 10);
      if (r.value_code) {
        f.value = r.value_code;
        const vs = systems[r.value_vocabulary ?? ''];
        if (vs) f.valueSystem = vs;
      } else if (r.value !== null && r.value !== undefined) f.value = r.value;
      if (r.unit) f.unit = r.unit;
      facts.push(f);
    }
  });
  return { facts, records };
}
