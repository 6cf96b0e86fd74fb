/**
 * Schema migrations, applied in order at start. Never edit a shipped migration: add a new one.
 * Column types are chosen per dialect where SQLite and PostgreSQL differ (blob vs bytea,
 * integer vs bigint for millisecond timestamps).
 */
import { Kysely, sql, type Migration, type MigrationProvider } from 'kysely';
import { governanceMigration, lifecycleVersionMigration } from './governance.js';
import { privacyMigration } from './privacy.js';
import { auditBoundsMigration } from './audit-bounds.js';
import { taskErrorsMigration } from './task-errors.js';
import { blobsMigration } from './uploads.js';
import type { BlobStore } from './blobs/blob-store.js';
import { asyncMigration } from './async.js';
import { smallBlobsMigration } from './blobs/tiered-blobs.js';

export type Dialect = 'sqlite' | 'postgres';

function types(dialect: Dialect) {
  return {
    blob: dialect === 'postgres' ? sql`bytea` : sql`blob`,
    ms: dialect === 'postgres' ? sql`bigint` : sql`integer`,
    serial: dialect === 'postgres' ? sql`bigserial` : sql`integer`,
  };
}

function initial(dialect: Dialect): Migration {
  const t = types(dialect);
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('sites')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('institution', 'text')
        .addColumn('jurisdiction', 'text')
        .addColumn('credential_hash', 'text', (c) => c.notNull().unique())
        .addColumn('public_key', 'text')
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('created_at', t.ms, (c) => c.notNull())
        .addColumn('last_seen_at', t.ms)
        .execute();
      await db.schema
        .createTable('invites')
        .addColumn('token_hash', 'text', (c) => c.primaryKey())
        .addColumn('site_name', 'text', (c) => c.notNull())
        .addColumn('institution', 'text')
        .addColumn('jurisdiction', 'text')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', t.ms, (c) => c.notNull())
        .addColumn('expires_at', t.ms, (c) => c.notNull())
        .addColumn('used_at', t.ms)
        .addColumn('site_id', 'text')
        .execute();
      await db.schema
        .createTable('studies')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('current_round', 'integer', (c) => c.notNull())
        .addColumn('participants', 'text')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', t.ms, (c) => c.notNull())
        .addColumn('updated_at', t.ms, (c) => c.notNull())
        .addColumn('claimed_by', 'text')
        .addColumn('claimed_until', t.ms)
        .addColumn('error', 'text')
        .execute();
      await db.schema
        .createTable('rounds')
        .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
        .addColumn('round', 'integer', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('opened_at', t.ms, (c) => c.notNull())
        .addColumn('deadline_at', t.ms, (c) => c.notNull())
        .addColumn('committed_at', t.ms)
        .addColumn('model_version_id', 'text')
        .addPrimaryKeyConstraint('rounds_pk', ['study_id', 'round'])
        .execute();
      await db.schema
        .createTable('tasks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
        .addColumn('round', 'integer', (c) => c.notNull())
        .addColumn('site_id', 'text', (c) => c.notNull().references('sites.id'))
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('model_version_id', 'text', (c) => c.notNull())
        .addColumn('config', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('created_at', t.ms, (c) => c.notNull())
        .addColumn('deadline_at', t.ms, (c) => c.notNull())
        .addColumn('delivered_at', t.ms)
        .addColumn('done_at', t.ms)
        .execute();
      await db.schema.createIndex('tasks_site_status').on('tasks').columns(['site_id', 'status']).execute();
      await db.schema.createIndex('tasks_study_round').on('tasks').columns(['study_id', 'round']).execute();
      await db.schema
        .createTable('model_versions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
        .addColumn('round', 'integer', (c) => c.notNull())
        .addColumn('weights', t.blob, (c) => c.notNull())
        .addColumn('digest', 'text', (c) => c.notNull())
        .addColumn('created_at', t.ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('model_versions_study').on('model_versions').columns(['study_id', 'round']).execute();
      await db.schema
        .createTable('updates')
        .addColumn('task_id', 'text', (c) => c.primaryKey().references('tasks.id'))
        .addColumn('study_id', 'text', (c) => c.notNull())
        .addColumn('round', 'integer', (c) => c.notNull())
        .addColumn('site_id', 'text', (c) => c.notNull())
        .addColumn('weights', t.blob)
        .addColumn('digest', 'text')
        .addColumn('num_examples', 'integer', (c) => c.notNull())
        .addColumn('metrics', 'text', (c) => c.notNull())
        .addColumn('received_at', t.ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('updates_study_round').on('updates').columns(['study_id', 'round']).execute();
      await db.schema
        .createTable('metrics')
        .addColumn('id', t.serial, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
        .addColumn('study_id', 'text', (c) => c.notNull())
        .addColumn('round', 'integer', (c) => c.notNull())
        .addColumn('site_id', 'text')
        .addColumn('phase', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('value', 'double precision', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('metrics_study').on('metrics').columns(['study_id', 'round']).execute();
      await db.schema
        .createTable('refusals')
        .addColumn('id', t.serial, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
        .addColumn('study_id', 'text')
        .addColumn('round', 'integer')
        .addColumn('site_id', 'text')
        .addColumn('task_id', 'text')
        .addColumn('reason', 'text', (c) => c.notNull())
        .addColumn('at', t.ms, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('strategy_state')
        .addColumn('study_id', 'text', (c) => c.notNull())
        .addColumn('round', 'integer', (c) => c.notNull())
        .addColumn('json', 'text', (c) => c.notNull())
        .addColumn('tensors', t.blob)
        .addPrimaryKeyConstraint('strategy_state_pk', ['study_id', 'round'])
        .execute();
      await db.schema
        .createTable('kv')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
    },
  };
}

/**
 * 0002_trust: user identities and their one-time invites, seen request nonces (replay defence), the
 * cohort size each site declares per dataset (plausibility of example counts), and the audit chain
 * with a one-row head that appends lock so concurrent coordinators cannot fork it.
 */
function trust(dialect: Dialect): Migration {
  const t = types(dialect);
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('institution', 'text')
        .addColumn('public_key', 'text')
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', t.ms, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('user_invites')
        .addColumn('token_hash', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
        .addColumn('created_at', t.ms, (c) => c.notNull())
        .addColumn('expires_at', t.ms, (c) => c.notNull())
        .addColumn('used_at', t.ms)
        .execute();
      await db.schema
        .createTable('request_nonces')
        .addColumn('key_id', 'text', (c) => c.notNull())
        .addColumn('nonce', 'text', (c) => c.notNull())
        .addColumn('ts', t.ms, (c) => c.notNull())
        .addPrimaryKeyConstraint('request_nonces_pk', ['key_id', 'nonce'])
        .execute();
      await db.schema.createIndex('request_nonces_ts').on('request_nonces').column('ts').execute();
      await db.schema
        .createTable('site_cohorts')
        .addColumn('site_id', 'text', (c) => c.notNull().references('sites.id'))
        .addColumn('dataset', 'text', (c) => c.notNull())
        .addColumn('size', 'integer', (c) => c.notNull())
        .addColumn('declared_at', t.ms, (c) => c.notNull())
        .addPrimaryKeyConstraint('site_cohorts_pk', ['site_id', 'dataset'])
        .execute();
      await db.schema
        .createTable('audit_log')
        .addColumn('seq', t.ms, (c) => c.primaryKey())
        .addColumn('ts', t.ms, (c) => c.notNull())
        .addColumn('actor', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('data', 'text', (c) => c.notNull())
        .addColumn('prev_hash', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addColumn('sig', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('audit_head')
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('seq', t.ms, (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .execute();
      await db.insertInto('audit_head').values({ id: 1, seq: 0, hash: '0'.repeat(64) }).execute();
    },
  };
}

/** The long-polls' wake-up (Store.issuedTasksSince) reads the newly issued tasks once a second, by this index. */
const tasksIssuedMigration: Migration = {
  async up(db) {
    await db.schema.createIndex('tasks_status_created').on('tasks').columns(['status', 'created_at']).execute();
  },
};

/**
 * Applied in name order; on a database that already has a later one (0011 came after 0014 shipped) the missing
 * ones run too (sql-store.ts allows unordered migrations), so each must not depend on those numbered after it.
 * `blobsOn(db)`: where 0009_blobs moves the bytes of existing rows (the store's blob store, on the migration's
 * connection; on SQLite its files, since 0011's table for small blobs does not exist yet).
 */
export function migrationProvider(dialect: Dialect, blobsOn: (db: Kysely<any>) => BlobStore): MigrationProvider {
  return {
    async getMigrations() {
      return {
        '0001_initial': initial(dialect), '0002_trust': trust(dialect), '0003_governance': governanceMigration(dialect), '0005_privacy': privacyMigration(dialect),
        '0006_audit_bounds': auditBoundsMigration(dialect), '0007_task_errors': taskErrorsMigration(dialect), '0008_lifecycle_version': lifecycleVersionMigration,
        '0009_blobs': blobsMigration(dialect, blobsOn),
        '0010_async': asyncMigration(dialect),
        '0011_small_blobs': smallBlobsMigration(dialect),
        '0014_tasks_issued': tasksIssuedMigration,
      };
    },
  };
}
