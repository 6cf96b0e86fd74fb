/**
 * Store functions that keep self-declared numbers and refusal logs bounded (migration 0006_audit_bounds):
 *
 *   study_cohorts  the cohort each participant had declared for the study's dataset when the study started: an
 *                  update's example count (its FedAvg weight) is never more than this, whatever the site declares
 *                  later (a raised declaration is audited, and counts only for later studies)
 *   refusals       gains `code`, `count` and `last_at` and a unique (task_id, code): a task refused again for the
 *                  same reason increments one row instead of adding a row per attempt
 *
 * SQL functions over a Kysely handle or transaction, called only by the SQL store (sql-store.ts); `auditsRefusal`
 * is the pure rule both stores' callers apply.
 */
import { sql, type Kysely, type Migration, type Transaction } from 'kysely';
import type { Database } from './schema.js';
import type { Dialect } from './migrations.js';

interface StudyCohortsTable { study_id: string; site_id: string; dataset: string; size: number; declared_at: number }
interface RefusalCountsView { id?: number; study_id: string | null; round: number | null; site_id: string | null; task_id: string | null; reason: string; at: number; code: string | null; count: number; last_at: number | null }
type BoundsDatabase = Omit<Database, 'refusals'> & { study_cohorts: StudyCohortsTable; refusals: RefusalCountsView };
type Db = Kysely<BoundsDatabase> | Transaction<BoundsDatabase>;
// The Store's Kysely is typed with the core schema; these columns and the table live beside it.
const bounds = (db: unknown): Db => db as Db;
const num = (v: unknown) => (typeof v === 'number' ? v : Number(v));

export function auditBoundsMigration(dialect: Dialect): Migration {
  const ms = dialect === 'postgres' ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<any>) {
      await db.schema.createTable('study_cohorts')
        .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
        .addColumn('site_id', 'text', (c) => c.notNull().references('sites.id'))
        .addColumn('dataset', 'text', (c) => c.notNull())
        .addColumn('size', 'integer', (c) => c.notNull())
        .addColumn('declared_at', ms, (c) => c.notNull())
        .addPrimaryKeyConstraint('study_cohorts_pk', ['study_id', 'site_id'])
        .execute();
      await db.schema.alterTable('refusals').addColumn('code', 'text').execute();
      await db.schema.alterTable('refusals').addColumn('count', 'integer', (c) => c.notNull().defaultTo(1)).execute();
      await db.schema.alterTable('refusals').addColumn('last_at', ms).execute();
      // NULLs are distinct in a unique index (both dialects): refusals without a task or code stay one row each.
      await db.schema.createIndex('refusals_task_code').on('refusals').columns(['task_id', 'code']).unique().execute();
    },
  };
}

/** Freezes, inside the start transaction, what each participant had declared for `dataset`. */
export async function snapshotStudyCohorts(tx: unknown, studyId: string, dataset: string, siteIds: readonly string[], at: number): Promise<void> {
  const db = bounds(tx);
  if (siteIds.length === 0) return;
  const rows = await db.selectFrom('site_cohorts').select(['site_id', 'size']).where('dataset', '=', dataset).where('site_id', 'in', [...siteIds]).execute();
  for (const r of rows) {
    await db.insertInto('study_cohorts').values({ study_id: studyId, site_id: r.site_id, dataset, size: num(r.size), declared_at: at })
      .onConflict((oc) => oc.columns(['study_id', 'site_id']).doNothing()).execute();
  }
}

/** The cohort a site had declared when the study started (undefined: it declared none then, or the study predates this). */
export async function studyCohortSize(db: unknown, studyId: string, siteId: string): Promise<number | undefined> {
  const r = await bounds(db).selectFrom('study_cohorts').select('size').where('study_id', '=', studyId).where('site_id', '=', siteId).executeTakeFirst();
  return r ? num(r.size) : undefined;
}

export interface CountedRefusal { study_id: string; round: number; site_id: string; task_id: string; code: string; reason: string; at: number }

/**
 * Records a refusal of a task for `code`: the first makes the row (count 1, its reason and time), each later one
 * increments it and sets last_at (the audit entries at 1, 2, 4… keep the later reasons). One statement, so concurrent refusals of one task count exactly. Returns the count.
 */
export async function countRefusal(tx: unknown, r: CountedRefusal): Promise<number> {
  const row = await bounds(tx).insertInto('refusals')
    .values({ study_id: r.study_id, round: r.round, site_id: r.site_id, task_id: r.task_id, code: r.code, reason: r.reason, at: r.at, count: 1, last_at: r.at })
    .onConflict((oc) => oc.columns(['task_id', 'code']).doUpdateSet((eb) => ({ count: eb('refusals.count', '+', 1), last_at: r.at })))
    .returning('count')
    .executeTakeFirstOrThrow();
  return num(row.count);
}

/** An audit entry for a repeated refusal only on the 1st, 2nd, 4th, 8th… one: at most 1 + log2(n) entries per (task, code). */
export const auditsRefusal = (count: number) => (count & (count - 1)) === 0;
