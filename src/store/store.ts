/**
 * The coordinator's state store: one small interface, one SQL implementation that serves both
 * SQLite (libsql driver, the default) and PostgreSQL (pg). Every multi-row change that must be
 * all-or-nothing (opening a round, accepting an update, committing an aggregate) is one transaction,
 * so a crash leaves the store at the last committed step.
 */
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type Transaction } from 'kysely';
import type { Database as Schema, SitesTable, StudiesTable, TasksTable, RoundsTable, InvitesTable, UpdatesTable, ModelVersionsTable, MetricsTable, RefusalsTable, StrategyStateTable } from './schema.js';
import { migrationProvider, type Dialect } from './migrations.js';

export type SiteRow = SitesTable;
export type StudyRow = StudiesTable;
export type TaskRow = TasksTable;
export type RoundRow = RoundsTable;
export type InviteRow = InvitesTable;

// Rows as the store hands them out: the table shapes of schema.ts, without generated ids.
export type UpdateRow = UpdatesTable;
export type ModelVersionRow = ModelVersionsTable;
export type MetricRow = Omit<MetricsTable, 'id'>;
export type RefusalRow = Omit<RefusalsTable, 'id'>;
export type StrategyStateRow = StrategyStateTable;

/** Thrown when a state change is refused because the row is not in the state the caller expected. */
export class StoreConflict extends Error {}

/** The store cannot answer now (connection lost, timeout, disk full): transient; the API answers 503 with Retry-After. */
export class StoreUnavailable extends Error {}

type Db = Kysely<Schema> | Transaction<Schema>;

/** Drivers hand blobs back as Buffer (pg) or ArrayBuffer (libsql); the rest of Setu sees Uint8Array. */
function bytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new Error(`expected a blob, got ${typeof v}`);
}
const maybeBytes = (v: unknown) => (v == null ? null : bytes(v));
/** libsql adds a _metadata field to rows returned by some statements; strip anything not in the schema. */
function num(v: unknown): number {
  return typeof v === 'number' ? v : Number(v);
}

export class Store {
  private constructor(
    readonly db: Kysely<Schema>,
    readonly dialect: Dialect,
  ) {}

  /**
   * Opens a store. `url` is `postgres://…` / `postgresql://…`, `sqlite:<path>`, or a plain file path
   * (SQLite). Migrations are applied before it returns.
   */
  static async open(url: string): Promise<Store> {
    let db: Kysely<Schema>;
    let dialect: Dialect;
    if (/^postgres(ql)?:\/\//.test(url)) {
      const pg = (await import('pg')).default;
      // int8 (COUNT, bigint ms timestamps) arrives as string by default; every value we keep fits a double.
      pg.types.setTypeParser(20, (v: string) => Number(v));
      const pool = new pg.Pool({ connectionString: url, max: 8 });
      // An idle connection the server drops (restart, failover) must not crash the coordinator: the pool
      // discards it and the next query opens a fresh one.
      pool.on('error', (e) => process.stderr.write(`setu store: PostgreSQL connection lost (${e.message}); reconnecting on next use\n`));
      db = new Kysely<Schema>({ dialect: new PostgresDialect({ pool }) });
      dialect = 'postgres';
    } else {
      const path = url.replace(/^sqlite:/, '');
      const Database = (await import('libsql')).default;
      const raw = new Database(path);
      // WAL: readers never block the writer; synchronous=NORMAL in WAL is durable across process crashes
      // (SIGKILL), which is the failure the coordinator must survive; busy_timeout covers a second process.
      raw.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;');
      db = new Kysely<Schema>({ dialect: new SqliteDialect({ database: raw as never }) });
      dialect = 'sqlite';
    }
    const store = new Store(db, dialect);
    await store.migrate();
    return store;
  }

  private async migrate(): Promise<void> {
    const migrator = new Migrator({ db: this.db, provider: migrationProvider(this.dialect) });
    const { error, results } = await migrator.migrateToLatest();
    if (error) {
      const failed = results?.find((r) => r.status === 'Error');
      throw new Error(`store migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? error}`);
    }
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  transaction<T>(fn: (tx: Transaction<Schema>) => Promise<T>): Promise<T> {
    return this.db.transaction().execute(fn);
  }

  // ---- key/value (coordinator identity, admin token digest, …) ----
  async getKv(key: string, db: Db = this.db): Promise<string | undefined> {
    const r = await db.selectFrom('kv').select('value').where('key', '=', key).executeTakeFirst();
    return r?.value;
  }
  async setKv(key: string, value: string, db: Db = this.db): Promise<void> {
    await db.insertInto('kv').values({ key, value }).onConflict((oc) => oc.column('key').doUpdateSet({ value })).execute();
  }

  // ---- invites and sites ----
  async createInvite(row: InviteRow): Promise<void> {
    await this.db.insertInto('invites').values(row).execute();
  }

  /** Marks the invite used, atomically: a second enrolment with the same token finds nothing. */
  async consumeInvite(tokenHash: string, now: number, db: Db = this.db): Promise<InviteRow | undefined> {
    const res = await db
      .updateTable('invites')
      .set({ used_at: now })
      .where('token_hash', '=', tokenHash)
      .where('used_at', 'is', null)
      .where('expires_at', '>', now)
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) return undefined;
    return this.normInvite(await db.selectFrom('invites').selectAll().where('token_hash', '=', tokenHash).executeTakeFirstOrThrow());
  }

  async listInvites(): Promise<InviteRow[]> {
    return (await this.db.selectFrom('invites').selectAll().orderBy('created_at').execute()).map((r) => this.normInvite(r));
  }

  private normInvite(r: InviteRow): InviteRow {
    return { ...r, created_at: num(r.created_at), expires_at: num(r.expires_at), used_at: r.used_at == null ? null : num(r.used_at) };
  }

  async createSite(row: SiteRow, db: Db = this.db): Promise<void> {
    await db.insertInto('sites').values(row).execute();
  }

  async attachInviteToSite(tokenHash: string, siteId: string, db: Db = this.db): Promise<void> {
    await db.updateTable('invites').set({ site_id: siteId }).where('token_hash', '=', tokenHash).execute();
  }

  async getSite(id: string): Promise<SiteRow | undefined> {
    const r = await this.db.selectFrom('sites').selectAll().where('id', '=', id).executeTakeFirst();
    return r && this.normSite(r);
  }

  async getSiteByName(name: string): Promise<SiteRow | undefined> {
    const r = await this.db.selectFrom('sites').selectAll().where('name', '=', name).executeTakeFirst();
    return r && this.normSite(r);
  }

  async getSiteByCredential(hash: string): Promise<SiteRow | undefined> {
    const r = await this.db.selectFrom('sites').selectAll().where('credential_hash', '=', hash).executeTakeFirst();
    return r && this.normSite(r);
  }

  async listSites(): Promise<SiteRow[]> {
    return (await this.db.selectFrom('sites').selectAll().orderBy('name').execute()).map((r) => this.normSite(r));
  }

  async touchSite(id: string, now: number): Promise<void> {
    await this.db.updateTable('sites').set({ last_seen_at: now }).where('id', '=', id).execute();
  }

  async setSiteStatus(id: string, status: string): Promise<boolean> {
    const r = await this.db.updateTable('sites').set({ status }).where('id', '=', id).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  private normSite(r: SiteRow): SiteRow {
    return { ...r, created_at: num(r.created_at), last_seen_at: r.last_seen_at == null ? null : num(r.last_seen_at) };
  }

  // ---- studies ----
  async createStudy(row: StudyRow): Promise<void> {
    await this.db.insertInto('studies').values(row).execute();
  }

  async getStudy(id: string, db: Db = this.db): Promise<StudyRow | undefined> {
    const r = await db.selectFrom('studies').selectAll().where('id', '=', id).executeTakeFirst();
    return r && this.normStudy(r);
  }

  async listStudies(): Promise<StudyRow[]> {
    return (await this.db.selectFrom('studies').selectAll().orderBy('created_at').execute()).map((r) => this.normStudy(r));
  }

  async listStudiesByStatus(status: string): Promise<StudyRow[]> {
    return (await this.db.selectFrom('studies').selectAll().where('status', '=', status).orderBy('created_at').execute()).map((r) =>
      this.normStudy(r),
    );
  }

  /** Compare-and-set on the status: refuses (StoreConflict) when the study is not in one of `from`. */
  async transitionStudy(id: string, from: string[], to: string, now: number, extra: { error?: string | null } = {}, db: Db = this.db): Promise<void> {
    const r = await db
      .updateTable('studies')
      .set({ status: to, updated_at: now, ...(extra.error !== undefined ? { error: extra.error } : {}) })
      .where('id', '=', id)
      .where('status', 'in', from)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) {
      const s = await this.getStudy(id, db);
      throw new StoreConflict(s ? `study ${id} is ${s.status}; expected ${from.join(' or ')}` : `no study ${id}`);
    }
    // A study that stops for any reason takes its open tasks with it, so no site keeps receiving them.
    if (to !== 'running') {
      await db.updateTable('tasks').set({ status: 'expired' }).where('study_id', '=', id).where('status', 'in', ['issued', 'delivered']).execute();
    }
  }

  /**
   * Starts a study: fixes its participants, stores the initial model (version 0) and moves it to
   * running, in one transaction.
   */
  async startStudy(id: string, participants: string[], initial: ModelVersionRow, now: number): Promise<void> {
    await this.transaction(async (tx) => {
      await this.transitionStudy(id, ['created'], 'running', now, {}, tx);
      await tx.updateTable('studies').set({ participants: JSON.stringify(participants) }).where('id', '=', id).execute();
      await tx.insertInto('model_versions').values(initial).execute();
    });
  }

  /**
   * Lease-based claim so that several coordinator processes sharing one PostgreSQL drive each study
   * from exactly one place at a time. The UPDATE is atomic in both dialects.
   */
  async claimStudy(id: string, instance: string, now: number, leaseMs: number): Promise<boolean> {
    const r = await this.db
      .updateTable('studies')
      .set({ claimed_by: instance, claimed_until: now + leaseMs })
      .where('id', '=', id)
      .where((eb) => eb.or([eb('claimed_by', 'is', null), eb('claimed_by', '=', instance), eb('claimed_until', '<', now)]))
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  private normStudy(r: StudyRow): StudyRow {
    return {
      ...r,
      current_round: num(r.current_round),
      created_at: num(r.created_at),
      updated_at: num(r.updated_at),
      claimed_until: r.claimed_until == null ? null : num(r.claimed_until),
    };
  }

  // ---- model versions ----
  async putModelVersion(row: ModelVersionRow, db: Db = this.db): Promise<void> {
    await db.insertInto('model_versions').values(row).execute();
  }

  async getModelVersion(id: string): Promise<ModelVersionRow | undefined> {
    const r = await this.db.selectFrom('model_versions').selectAll().where('id', '=', id).executeTakeFirst();
    return r && { ...r, round: num(r.round), created_at: num(r.created_at), weights: bytes(r.weights) };
  }

  async listModelVersions(studyId: string): Promise<Omit<ModelVersionRow, 'weights'>[]> {
    const rows = await this.db
      .selectFrom('model_versions')
      .select(['id', 'study_id', 'round', 'digest', 'created_at'])
      .where('study_id', '=', studyId)
      .orderBy('round')
      .execute();
    return rows.map((r) => ({ ...r, round: num(r.round), created_at: num(r.created_at) }));
  }

  async latestModelVersion(studyId: string): Promise<ModelVersionRow | undefined> {
    const r = await this.db
      .selectFrom('model_versions')
      .selectAll()
      .where('study_id', '=', studyId)
      .orderBy('round', 'desc')
      .limit(1)
      .executeTakeFirst();
    return r && { ...r, round: num(r.round), created_at: num(r.created_at), weights: bytes(r.weights) };
  }

  // ---- rounds and tasks ----
  /** Opens a round and issues its tasks in one transaction. Refuses if the round already exists. */
  async openRound(round: RoundRow, tasks: TaskRow[], inTx?: (tx: Transaction<Schema>) => Promise<void>): Promise<void> {
    await this.transaction(async (tx) => {
      const exists = await tx
        .selectFrom('rounds')
        .select('round')
        .where('study_id', '=', round.study_id)
        .where('round', '=', round.round)
        .executeTakeFirst();
      if (exists) throw new StoreConflict(`round ${round.round} of study ${round.study_id} already exists`);
      await tx.insertInto('rounds').values(round).execute();
      if (tasks.length) await tx.insertInto('tasks').values(tasks).execute();
      if (inTx) await inTx(tx); // e.g. the audit entries of the issued tasks
    });
  }

  /**
   * Moves an open round's deadline, and its open tasks' deadlines, `byMs` later (the round engine gives back
   * time the coordinator was down). A round that is no longer open is left alone.
   */
  async extendOpenRound(studyId: string, round: number, byMs: number, db: Db = this.db): Promise<void> {
    const ms = Math.round(byMs);
    await db
      .updateTable('rounds')
      .set((eb) => ({ deadline_at: eb('deadline_at', '+', ms) }))
      .where('study_id', '=', studyId)
      .where('round', '=', round)
      .where('status', '=', 'open')
      .execute();
    await db
      .updateTable('tasks')
      .set((eb) => ({ deadline_at: eb('deadline_at', '+', ms) }))
      .where('study_id', '=', studyId)
      .where('round', '=', round)
      .where('status', 'in', ['issued', 'delivered'])
      .execute();
  }

  async getRound(studyId: string, round: number): Promise<RoundRow | undefined> {
    const r = await this.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst();
    return r && this.normRound(r);
  }

  async openRoundOf(studyId: string): Promise<RoundRow | undefined> {
    const r = await this.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('status', '=', 'open').executeTakeFirst();
    return r && this.normRound(r);
  }

  async listRounds(studyId: string): Promise<RoundRow[]> {
    return (await this.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).orderBy('round').execute()).map((r) =>
      this.normRound(r),
    );
  }

  private normRound(r: RoundRow): RoundRow {
    return {
      ...r,
      round: num(r.round),
      opened_at: num(r.opened_at),
      deadline_at: num(r.deadline_at),
      committed_at: r.committed_at == null ? null : num(r.committed_at),
    };
  }

  /** Tasks waiting for a site, oldest first. */
  async pendingTasks(siteId: string): Promise<TaskRow[]> {
    const rows = await this.db
      .selectFrom('tasks')
      .selectAll()
      .where('site_id', '=', siteId)
      .where('status', 'in', ['issued', 'delivered'])
      .orderBy('created_at')
      .execute();
    return rows.map((r) => this.normTask(r));
  }

  async getTask(id: string): Promise<TaskRow | undefined> {
    const r = await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    return r && this.normTask(r);
  }

  async listTasks(studyId: string, round: number): Promise<TaskRow[]> {
    const rows = await this.db.selectFrom('tasks').selectAll().where('study_id', '=', studyId).where('round', '=', round).orderBy('site_id').execute();
    return rows.map((r) => this.normTask(r));
  }

  async markDelivered(taskId: string, now: number): Promise<void> {
    await this.db.updateTable('tasks').set({ status: 'delivered', delivered_at: now }).where('id', '=', taskId).where('status', '=', 'issued').execute();
  }

  /** True when `siteId` holds (or held) a task that references model version `versionId`. */
  async siteMayReadModel(siteId: string, versionId: string): Promise<boolean> {
    const r = await this.db
      .selectFrom('tasks')
      .select('id')
      .where('site_id', '=', siteId)
      .where('model_version_id', '=', versionId)
      .limit(1)
      .executeTakeFirst();
    return !!r;
  }

  private normTask(r: TaskRow): TaskRow {
    return {
      ...r,
      round: num(r.round),
      created_at: num(r.created_at),
      deadline_at: num(r.deadline_at),
      delivered_at: r.delivered_at == null ? null : num(r.delivered_at),
      done_at: r.done_at == null ? null : num(r.done_at),
    };
  }

  /**
   * Accepts a task's result: the task must be open and its round still open. Inserting the update and
   * closing the task happen together, so a result is either fully recorded or not at all.
   */
  async acceptUpdate(update: UpdateRow, inTx?: (tx: Transaction<Schema>) => Promise<void>): Promise<void> {
    await this.transaction(async (tx) => {
      const closed = await tx
        .updateTable('tasks')
        .set({ status: 'done', done_at: update.received_at })
        .where('id', '=', update.task_id)
        .where('site_id', '=', update.site_id)
        .where('status', 'in', ['issued', 'delivered'])
        .executeTakeFirst();
      if (Number(closed.numUpdatedRows) !== 1) throw new StoreConflict(`task ${update.task_id} is not open for this site`);
      const round = await tx
        .selectFrom('rounds')
        .select('status')
        .where('study_id', '=', update.study_id)
        .where('round', '=', update.round)
        .executeTakeFirst();
      if (round?.status !== 'open') throw new StoreConflict(`round ${update.round} is no longer open`);
      await tx.insertInto('updates').values(update).execute();
      if (inTx) await inTx(tx); // e.g. the audit entry of the accepted update
    });
  }

  async listUpdates(studyId: string, round: number): Promise<UpdateRow[]> {
    const rows = await this.db.selectFrom('updates').selectAll().where('study_id', '=', studyId).where('round', '=', round).orderBy('site_id').execute();
    return rows.map((r) => ({ ...r, round: num(r.round), num_examples: num(r.num_examples), received_at: num(r.received_at), weights: maybeBytes(r.weights) }));
  }

  async countUpdates(studyId: string, round: number): Promise<number> {
    const r = await this.db
      .selectFrom('updates')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('study_id', '=', studyId)
      .where('round', '=', round)
      .executeTakeFirstOrThrow();
    return num(r.n);
  }

  /**
   * Commits a round: the new model version (for fit rounds), the metrics, the strategy state, the round's
   * status and the study's progress, all in one transaction. Open tasks of the round expire.
   * Refuses (StoreConflict) if the round is not open, so two coordinators cannot both commit it.
   */
  async commitRound(args: {
    studyId: string;
    round: number;
    now: number;
    model?: ModelVersionRow;
    metrics: MetricRow[];
    strategyState?: StrategyStateRow;
    studyStatus?: string;
    advanceTo?: number;
    inTx?: (tx: Transaction<Schema>) => Promise<void>;
  }): Promise<void> {
    await this.transaction(async (tx) => {
      const r = await tx
        .updateTable('rounds')
        .set({ status: 'committed', committed_at: args.now, ...(args.model ? { model_version_id: args.model.id } : {}) })
        .where('study_id', '=', args.studyId)
        .where('round', '=', args.round)
        .where('status', '=', 'open')
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) throw new StoreConflict(`round ${args.round} of ${args.studyId} is not open`);
      await tx
        .updateTable('tasks')
        .set({ status: 'expired' })
        .where('study_id', '=', args.studyId)
        .where('round', '=', args.round)
        .where('status', 'in', ['issued', 'delivered'])
        .execute();
      if (args.model) await tx.insertInto('model_versions').values(args.model).execute();
      if (args.metrics.length) await tx.insertInto('metrics').values(args.metrics).execute();
      if (args.strategyState) await tx.insertInto('strategy_state').values(args.strategyState).execute();
      await tx
        .updateTable('studies')
        .set({
          updated_at: args.now,
          ...(args.advanceTo !== undefined ? { current_round: args.advanceTo } : {}),
          ...(args.studyStatus ? { status: args.studyStatus } : {}),
        })
        .where('id', '=', args.studyId)
        .execute();
      if (args.inTx) await args.inTx(tx);
    });
  }

  async latestStrategyState(studyId: string): Promise<StrategyStateRow | undefined> {
    const r = await this.db
      .selectFrom('strategy_state')
      .selectAll()
      .where('study_id', '=', studyId)
      .orderBy('round', 'desc')
      .limit(1)
      .executeTakeFirst();
    return r && { ...r, round: num(r.round), tensors: maybeBytes(r.tensors) };
  }

  // ---- metrics and refusals ----
  async addMetrics(rows: MetricRow[]): Promise<void> {
    if (rows.length) await this.db.insertInto('metrics').values(rows).execute();
  }

  async listMetrics(studyId: string): Promise<MetricRow[]> {
    const rows = await this.db
      .selectFrom('metrics')
      .select(['study_id', 'round', 'site_id', 'phase', 'name', 'value'])
      .where('study_id', '=', studyId)
      .orderBy('round')
      .orderBy('id')
      .execute();
    return rows.map((r) => ({ ...r, round: num(r.round), value: num(r.value) }));
  }

  async recordRefusal(row: RefusalRow): Promise<void> {
    await this.db.insertInto('refusals').values(row).execute();
  }

  async listRefusals(studyId?: string): Promise<RefusalRow[]> {
    let q = this.db.selectFrom('refusals').select(['study_id', 'round', 'site_id', 'task_id', 'reason', 'at']).orderBy('id');
    if (studyId) q = q.where('study_id', '=', studyId);
    return (await q.execute()).map((r) => ({ ...r, round: r.round == null ? null : num(r.round), at: num(r.at) }));
  }

  /** Row counts of every table: used by tests to prove a refused request changed nothing. */
  async snapshotCounts(): Promise<Record<string, number>> {
    const tables = ['sites', 'invites', 'studies', 'rounds', 'tasks', 'model_versions', 'updates', 'metrics', 'strategy_state'] as const;
    const out: Record<string, number> = {};
    for (const t of tables) {
      const r = await sql<{ n: number }>`select count(*) as n from ${sql.table(t)}`.execute(this.db);
      out[t] = num(r.rows[0]!.n);
    }
    return out;
  }
}
