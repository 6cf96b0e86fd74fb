/**
 * Asynchronous federation (migration 0010_async): what the coordinator decided about each update of an asynchronous
 * study (coordinator/async-rounds.ts). An update is in the buffer while it has no row here; folding a buffer into
 * a new version writes one row per update it took (`folded`, with its staleness and weight) or refused as too stale
 * (`stale`), in the same transaction as the version, so an update is folded at most once and a buffered update is
 * never lost to a crash.
 *
 *   async_contributions   task_id (PK), study_id, site_id, version, base_version, staleness, weight, status, num_examples, at
 */
import { sql, type Kysely, type Migration, type Transaction } from 'kysely';
import type { Dialect } from './migrations.js';
import type { ModelVersionRow, MetricRow, StrategyStateRow, UpdateRow } from './store.js';

export interface AsyncContributionsTable {
  task_id: string;
  study_id: string;
  site_id: string;
  /** The version this update went into (folded), or that was the latest when it was refused (stale). */
  version: number;
  /** The version the site trained from. */
  base_version: number;
  /** version − 1 − base_version for a folded update (versions committed after its base, before its own). */
  staleness: number;
  weight: number;
  status: string; // 'folded' | 'stale'
  num_examples: number;
  at: number;
}

/** What commitVersion writes together (a version of an asynchronous study). */
export interface CommitVersionArgs {
  studyId: string;
  /** The study's asynchronous round (its tasks and updates live there; it stays open). */
  round: number;
  /** The new version: the study's current_round must be version − 1 (else StoreConflict: folded once). */
  version: number;
  now: number;
  model: ModelVersionRow;
  metrics: MetricRow[];
  strategyState?: StrategyStateRow;
  contributions: AsyncContributionsTable[];
  /** The round's new deadline: the next version is due by then. */
  deadlineAt: number;
  inTx?: (tx: import('./store.js').Store) => Promise<void>;
}

export interface AsyncDatabase {
  async_contributions: AsyncContributionsTable;
  updates: UpdateRow;
  rounds: { study_id: string; round: number; status: string; deadline_at: number };
  studies: { id: string; current_round: number; updated_at: number };
}
export type AsyncDb = Kysely<AsyncDatabase> | Transaction<AsyncDatabase>;
// The SQL store's Kysely is typed with the core schema; this table lives beside it in the same database.
export const asyncDb = (db: unknown): AsyncDb => db as AsyncDb;

export function asyncMigration(dialect: Dialect): Migration {
  const ms = dialect === 'postgres' ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('async_contributions')
        .addColumn('task_id', 'text', (c) => c.primaryKey())
        .addColumn('study_id', 'text', (c) => c.notNull())
        .addColumn('site_id', 'text', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('base_version', 'integer', (c) => c.notNull())
        .addColumn('staleness', 'integer', (c) => c.notNull())
        .addColumn('weight', 'double precision', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('num_examples', 'integer', (c) => c.notNull())
        .addColumn('at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('async_contributions_study').on('async_contributions').columns(['study_id', 'version']).execute();
    },
  };
}

const num = (v: unknown) => Number(v);

/** Updates of the round that no fold has taken or refused yet, oldest first (then by task id). */
export async function unfoldedUpdates(db: AsyncDb, studyId: string, round: number): Promise<UpdateRow[]> {
  const rows = await db.selectFrom('updates').selectAll('updates')
    .where('updates.study_id', '=', studyId).where('updates.round', '=', round)
    .where((eb) => eb.not(eb.exists(eb.selectFrom('async_contributions').select('async_contributions.task_id').whereRef('async_contributions.task_id', '=', 'updates.task_id'))))
    .orderBy('updates.received_at').orderBy('updates.task_id').execute();
  return rows.map((r) => ({ ...r, round: num(r.round), num_examples: num(r.num_examples), received_at: num(r.received_at), size: r.size == null ? null : num(r.size) }));
}

export async function listContributions(db: AsyncDb, studyId: string): Promise<AsyncContributionsTable[]> {
  const rows = await db.selectFrom('async_contributions').selectAll().where('study_id', '=', studyId).orderBy('version').orderBy('at').orderBy('task_id').execute();
  // PostgreSQL's bigint comes back as a string.
  return rows.map((r) => ({ ...r, version: num(r.version), base_version: num(r.base_version), staleness: num(r.staleness), weight: num(r.weight), num_examples: num(r.num_examples), at: num(r.at) }));
}

/**
 * The version's own part of commitVersion (the caller inserts the model, metrics and strategy state with the core
 * tables): moves the study from version − 1 to version (compare-and-set), checks the round is open, records the
 * contributions and the round's next deadline.
 */
export async function advanceVersion(db: AsyncDb, a: CommitVersionArgs, conflict: (msg: string) => Error): Promise<void> {
  const r = await db.updateTable('studies').set({ current_round: a.version, updated_at: a.now }).where('id', '=', a.studyId).where('current_round', '=', a.version - 1).executeTakeFirst();
  if (Number(r.numUpdatedRows) !== 1) throw conflict(`study ${a.studyId} is not at version ${a.version - 1}: version ${a.version} was committed already or out of order`);
  const open = await db.updateTable('rounds').set({ deadline_at: a.deadlineAt }).where('study_id', '=', a.studyId).where('round', '=', a.round).where('status', '=', 'open').executeTakeFirst();
  if (Number(open.numUpdatedRows) !== 1) throw conflict(`round ${a.round} of ${a.studyId} is not open`);
  if (a.contributions.length) await db.insertInto('async_contributions').values(a.contributions).execute();
}
