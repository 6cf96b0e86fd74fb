/**
 * Task errors (migration 0007_task_errors): one row per task that a site could not run, with the site's reason
 * code and message. The primary key on task_id bounds it to one error per task; the row is written in the same
 * transaction that closes the task (status 'failed'), so a task is failed exactly when it has an error row.
 *
 *   task_errors   task_id, study_id, round, site_id, code, message, at
 */
import { sql, type Kysely, type Migration, type Transaction } from 'kysely';
import type { Dialect } from './migrations.js';

export interface TaskErrorsTable {
  task_id: string;
  study_id: string;
  round: number;
  site_id: string;
  code: string;
  message: string;
  at: number;
}

export interface TaskErrorsDatabase {
  task_errors: TaskErrorsTable;
  tasks: { id: string; status: string; done_at: number | null };
}
export type TaskErrorsDb = Kysely<TaskErrorsDatabase> | Transaction<TaskErrorsDatabase>;
// The SQL store's Kysely is typed with the core schema; this table lives beside it in the same database.
export const taskErrorsDb = (db: unknown): TaskErrorsDb => db as TaskErrorsDb;

export function taskErrorsMigration(dialect: Dialect): Migration {
  const ms = dialect === 'postgres' ? sql`bigint` : sql`integer`;
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('task_errors')
        .addColumn('task_id', 'text', (c) => c.primaryKey())
        .addColumn('study_id', 'text', (c) => c.notNull())
        .addColumn('round', 'integer', (c) => c.notNull())
        .addColumn('site_id', 'text', (c) => c.notNull())
        .addColumn('code', 'text', (c) => c.notNull())
        .addColumn('message', 'text', (c) => c.notNull())
        .addColumn('at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('task_errors_study').on('task_errors').columns(['study_id', 'round']).execute();
    },
  };
}

/**
 * Closes an open task as failed and records its error. Returns false (and writes nothing) when the task is no
 * longer open: it already has a result, a refusal or an error, or its round closed.
 */
export async function failTask(db: TaskErrorsDb, row: TaskErrorsTable): Promise<boolean> {
  const r = await db.updateTable('tasks').set({ status: 'failed', done_at: row.at }).where('id', '=', row.task_id).where('status', 'in', ['issued', 'delivered']).executeTakeFirst();
  if (Number(r.numUpdatedRows) !== 1) return false;
  await db.insertInto('task_errors').values(row).execute();
  return true;
}

export async function listTaskErrors(db: TaskErrorsDb, studyId: string, round?: number): Promise<TaskErrorsTable[]> {
  let q = db.selectFrom('task_errors').selectAll().where('study_id', '=', studyId);
  if (round !== undefined) q = q.where('round', '=', round);
  // PostgreSQL's bigint comes back as a string.
  return (await q.orderBy('at').orderBy('task_id').execute()).map((r) => ({ ...r, round: Number(r.round), at: Number(r.at) }));
}
