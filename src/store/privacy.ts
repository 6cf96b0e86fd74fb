/**
 * The privacy ledger (migration 0005_privacy): one row per released DP update, per study and site, with the
 * mechanism of that release and the site's total (ε, δ) for the study after it, as the site's accountant
 * reported it. Written in the same transaction as the accepted update (or, under SecAgg+, as the accepted
 * masked input), so the ledger never disagrees with what the coordinator holds.
 *
 *   privacy_ledger   task_id (one release per task), study_id, site_id, round, mechanism, sample_rate,
 *                    noise_multiplier, steps (of this release), epsilon (site total after it), delta,
 *                    budget_epsilon, budget_delta, at
 */
import { sql, type Kysely, type Migration, type Transaction } from 'kysely';
import type { Dialect } from './migrations.js';
import type { PrivacySpend } from '../protocol/api.js';

export interface PrivacyLedgerTable {
  task_id: string;
  study_id: string;
  site_id: string;
  round: number;
  mechanism: string;
  sample_rate: number;
  noise_multiplier: number;
  steps: number;
  epsilon: number;
  delta: number;
  budget_epsilon: number;
  budget_delta: number;
  at: number;
}

export interface PrivacyDatabase {
  privacy_ledger: PrivacyLedgerTable;
}
export type PrivacyDb = Kysely<PrivacyDatabase> | Transaction<PrivacyDatabase>;
// The Store's Kysely is typed with the core schema; this table lives beside it in the same database.
export const priv = (db: unknown): PrivacyDb => db as PrivacyDb;

export function privacyMigration(dialect: Dialect): Migration {
  const ms = dialect === 'postgres' ? sql`bigint` : sql`integer`;
  const real = dialect === 'postgres' ? sql`double precision` : sql`real`;
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('privacy_ledger')
        .addColumn('task_id', 'text', (c) => c.primaryKey())
        .addColumn('study_id', 'text', (c) => c.notNull())
        .addColumn('site_id', 'text', (c) => c.notNull())
        .addColumn('round', 'integer', (c) => c.notNull())
        .addColumn('mechanism', 'text', (c) => c.notNull())
        .addColumn('sample_rate', real, (c) => c.notNull())
        .addColumn('noise_multiplier', real, (c) => c.notNull())
        .addColumn('steps', 'integer', (c) => c.notNull())
        .addColumn('epsilon', real, (c) => c.notNull())
        .addColumn('delta', real, (c) => c.notNull())
        .addColumn('budget_epsilon', real, (c) => c.notNull())
        .addColumn('budget_delta', real, (c) => c.notNull())
        .addColumn('at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('privacy_ledger_study').on('privacy_ledger').columns(['study_id', 'site_id', 'round']).execute();
    },
  };
}

/**
 * Records one release; returns false for a repeat. A task releases once: a repeat (the same masked update resent
 * to a restarted SecAgg+ session) keeps the first row.
 */
/** One DP release as the accepting transaction records it. */
export interface SpendEntry { taskId: string; studyId: string; siteId: string; round: number; spend: PrivacySpend; at: number }

export async function recordSpend(db: PrivacyDb, e: SpendEntry): Promise<boolean> {
  const s = e.spend;
  const r = await db
    .insertInto('privacy_ledger')
    .values({
      task_id: e.taskId, study_id: e.studyId, site_id: e.siteId, round: e.round, mechanism: s.mechanism, sample_rate: s.sampleRate,
      noise_multiplier: s.noiseMultiplier, steps: s.steps, epsilon: s.epsilon, delta: s.delta, budget_epsilon: s.budgetEpsilon, budget_delta: s.budgetDelta, at: e.at,
    })
    .onConflict((oc) => oc.column('task_id').doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0) > 0;
}

export interface SiteSpend {
  siteId: string;
  /** ε spent so far (the site's latest reported total), at `delta`. */
  epsilon: number;
  delta: number;
  budget: { epsilon: number; delta: number };
  /** Releases recorded and their DP steps in total. */
  releases: number;
  steps: number;
  mechanism: string;
  noiseMultiplier: number;
  sampleRate: number;
  lastRound: number;
  updatedAt: number;
}

/** Per site of a study: its latest total and budget, with the count of releases and steps behind it. */
export async function studySpend(db: PrivacyDb, studyId: string): Promise<SiteSpend[]> {
  return spendOf(await db.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).orderBy('site_id').orderBy('round').orderBy('at').execute());
}

/** Each site's latest total from its ledger rows, ordered by site, round and time (shared by both stores). */
export function spendOf(rows: PrivacyLedgerTable[]): SiteSpend[] {
  const out = new Map<string, SiteSpend>();
  for (const r of rows) {
    const prev = out.get(r.site_id);
    out.set(r.site_id, {
      siteId: r.site_id,
      epsilon: Number(r.epsilon),
      delta: Number(r.delta),
      budget: { epsilon: Number(r.budget_epsilon), delta: Number(r.budget_delta) },
      releases: (prev?.releases ?? 0) + 1,
      steps: (prev?.steps ?? 0) + Number(r.steps),
      mechanism: r.mechanism,
      noiseMultiplier: Number(r.noise_multiplier),
      sampleRate: Number(r.sample_rate),
      lastRound: Number(r.round),
      updatedAt: Number(r.at),
    });
  }
  return [...out.values()];
}

/** Every ledger row of a study, oldest first (for the audit view and the CLI's --entries). */
export async function ledgerRows(db: PrivacyDb, studyId: string): Promise<PrivacyLedgerTable[]> {
  const rows = await db.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).orderBy('round').orderBy('site_id').execute();
  return rows.map((r) => ({ ...r, round: Number(r.round), steps: Number(r.steps), at: Number(r.at) }));
}
