/**
 * Migration 0009_blobs: model versions' and updates' bytes leave their SQL rows for the blob store
 * (blobs/blob-store.ts), and chunked uploads get a table.
 *
 *   model_versions   … digest, size           (weights column dropped; bytes in store.blobs under digest)
 *   updates          … digest, size           (weights column dropped; null digest/size: no tensors, e.g. evaluate)
 *   uploads          id (pk), task_id, site_id, digest, size, created_at   unique (task_id, digest)
 *   blobs, blob_chunks, blob_partials, blob_partial_chunks                  (PostgreSQL only: blobs/pg-blobs.ts)
 *
 * An upload row says which task's result a partial blob (same id) is; the same task and digest find the same
 * upload again, so an agent that lost its connection, or talks to a restarted coordinator, resumes.
 * The migration moves the bytes of existing rows into the blob store (digest recomputed as the bytes' sha256)
 * before it drops the columns, in one transaction on both dialects.
 */
import { sql, type Kysely, type Migration, type Transaction } from 'kysely';
import type { Dialect } from './migrations.js';
import type { BlobStore } from './blobs/blob-store.js';

export interface UploadsTable {
  id: string;
  task_id: string;
  site_id: string;
  digest: string;
  size: number;
  created_at: number;
}

export interface UploadsDatabase {
  uploads: UploadsTable;
}
export type UploadsDb = Kysely<UploadsDatabase> | Transaction<UploadsDatabase>;
export const uploadsDb = (db: unknown): UploadsDb => db as UploadsDb;

const num = (v: unknown) => (typeof v === 'number' ? v : Number(v));
const norm = (r: UploadsTable): UploadsTable => ({ ...r, size: num(r.size), created_at: num(r.created_at) });

export async function createUpload(db: UploadsDb, row: UploadsTable): Promise<void> {
  await db.insertInto('uploads').values(row).execute();
}
export async function getUpload(db: UploadsDb, id: string): Promise<UploadsTable | undefined> {
  const r = await db.selectFrom('uploads').selectAll().where('id', '=', id).executeTakeFirst();
  return r && norm(r);
}
export async function findUpload(db: UploadsDb, taskId: string, digest: string): Promise<UploadsTable | undefined> {
  const r = await db.selectFrom('uploads').selectAll().where('task_id', '=', taskId).where('digest', '=', digest).executeTakeFirst();
  return r && norm(r);
}
export async function deleteUpload(db: UploadsDb, id: string): Promise<void> {
  await db.deleteFrom('uploads').where('id', '=', id).execute();
}

/** `blobsFor(db)`: the blob store the moved bytes go to (on PostgreSQL, one on the migration's own transaction). */
export function blobsMigration(dialect: Dialect, blobsFor: (db: Kysely<any>) => BlobStore): Migration {
  const big = dialect === 'postgres' ? sql`bigint` : sql`integer`;
  const bytea = dialect === 'postgres' ? sql`bytea` : sql`blob`;
  return {
    async up(db: Kysely<any>) {
      // Kysely runs SQLite migrations outside a transaction; this one must not stop half-way (columns dropped, bytes not moved).
      const run = async (t: Kysely<any>) => {
        await t.schema.createTable('uploads')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('task_id', 'text', (c) => c.notNull())
          .addColumn('site_id', 'text', (c) => c.notNull())
          .addColumn('digest', 'text', (c) => c.notNull())
          .addColumn('size', big, (c) => c.notNull())
          .addColumn('created_at', big, (c) => c.notNull())
          .addUniqueConstraint('uploads_task_digest', ['task_id', 'digest'])
          .execute();
        if (dialect === 'postgres') {
          await t.schema.createTable('blobs').addColumn('digest', 'text', (c) => c.primaryKey()).addColumn('size', big, (c) => c.notNull()).execute();
          await t.schema.createTable('blob_chunks').addColumn('digest', 'text', (c) => c.notNull()).addColumn('start', big, (c) => c.notNull())
            .addColumn('bytes', bytea, (c) => c.notNull()).addPrimaryKeyConstraint('blob_chunks_pk', ['digest', 'start']).execute();
          await t.schema.createTable('blob_partials').addColumn('id', 'text', (c) => c.primaryKey()).addColumn('received', big, (c) => c.notNull()).execute();
          await t.schema.createTable('blob_partial_chunks').addColumn('id', 'text', (c) => c.notNull()).addColumn('start', big, (c) => c.notNull())
            .addColumn('bytes', bytea, (c) => c.notNull()).addPrimaryKeyConstraint('blob_partial_chunks_pk', ['id', 'start']).execute();
        }
        await t.schema.alterTable('model_versions').addColumn('size', big, (c) => c.notNull().defaultTo(0)).execute();
        await t.schema.alterTable('updates').addColumn('size', big).execute();
        const blobs = blobsFor(t);
        for (const table of ['model_versions', 'updates'] as const) {
          const key = table === 'model_versions' ? 'id' : 'task_id';
          const ids = await t.selectFrom(table).select(key).where('weights', 'is not', null).execute();
          for (const { [key]: id } of ids) {
            const row = await t.selectFrom(table).select('weights').where(key, '=', id).executeTakeFirstOrThrow();
            const bytes = row.weights instanceof Uint8Array ? row.weights : new Uint8Array(row.weights as ArrayBuffer);
            const info = await blobs.put(bytes);
            await t.updateTable(table).set({ digest: info.digest, size: info.size }).where(key, '=', id).execute();
          }
          await t.schema.alterTable(table).dropColumn('weights').execute();
        }
      };
      if (db.isTransaction) await run(db);
      else await db.transaction().execute(run);
    },
  };
}
