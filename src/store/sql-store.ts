/**
 * The SQL Store: one Kysely implementation that serves SQLite (libsql, WAL) and PostgreSQL (pg). The core
 * tables' statements are here; those of the trust layer, governance, the audit chain and the privacy ledger
 * are in trust.ts, governance.ts, audit.ts and privacy.ts, called from here only. Every driver error goes
 * through sql-errors.ts, so callers see StoreConflict / StoreUnavailable, never a driver's error class.
 */
import type { BlobStore } from './blobs/blob-store.js';
import { FileBlobStore } from './blobs/file-blobs.js';
import { PgBlobStore } from './blobs/pg-blobs.js';
import { TieredBlobStore } from './blobs/tiered-blobs.js';
import { closeSync, existsSync, mkdirSync, openSync, chmodSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type LogEvent, type Transaction } from 'kysely';
import { GroupCommit, type Outcome } from './group-commit.js';
import type { Database } from './schema.js';
import { migrationProvider, type Dialect } from './migrations.js';
import { mappedDialect } from './sql-errors.js';
import { DiskGuard, minFreeBytes } from './disk-guard.js';
import * as trust from './trust.js';
import * as g from './governance.js';
import * as audit from './audit.js';
import * as p from './privacy.js';
import * as bounds from './audit-bounds.js';
import * as taskErrors from './task-errors.js';
import * as asyncRows from './async.js';
import * as uploads from './uploads.js';
import { pgPoolMax } from './pg-pool.js';
import { PgPeerSignals, type PeerSignals } from './peer-signals.js';
import {
  StoreConflict, StoreUnavailable, refuseFromInside, runInside, type AuditRow, type CommitRoundArgs, type InviteRow, type MetricRow, type ModelVersionRow, type RefusalRow, type RoundRow, type RoundProgress,
  type SiteRow, type Store, type StrategyStateRow, type StudyRow, type TaskRow, type UpdateRow, type UploadRow, type UserRow,
} from './store.js';

/** Every table of the database, for the handle the store keeps. */
type AllTables = Database & g.GovDatabase & p.PrivacyDatabase;
type Db = Kysely<AllTables> | Transaction<AllTables>;

/** Drivers hand blobs back as Buffer (pg) or ArrayBuffer (libsql); the rest of Setu sees Uint8Array. */
function bytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new Error(`expected a blob, got ${typeof v}`);
}
const maybeBytes = (v: unknown) => (v == null ? null : bytes(v));
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const maybeNum = (v: unknown): number | null => (v == null ? null : num(v));

const normInvite = (r: InviteRow): InviteRow => ({ ...r, created_at: num(r.created_at), expires_at: num(r.expires_at), used_at: maybeNum(r.used_at) });
const normSite = (r: SiteRow): SiteRow => ({ ...r, created_at: num(r.created_at), last_seen_at: maybeNum(r.last_seen_at) });
const normStudy = (r: StudyRow): StudyRow => ({
  ...r, current_round: num(r.current_round), created_at: num(r.created_at), updated_at: num(r.updated_at), claimed_until: maybeNum(r.claimed_until),
});
const normRound = (r: RoundRow): RoundRow => ({
  ...r, round: num(r.round), opened_at: num(r.opened_at), deadline_at: num(r.deadline_at), committed_at: maybeNum(r.committed_at),
});
const normTask = (r: TaskRow): TaskRow => ({
  ...r, round: num(r.round), created_at: num(r.created_at), deadline_at: num(r.deadline_at), delivered_at: maybeNum(r.delivered_at), done_at: maybeNum(r.done_at),
});
const normModel = (r: ModelVersionRow): ModelVersionRow => ({ ...r, round: num(r.round), size: num(r.size), created_at: num(r.created_at) });

export interface SqlStoreOptions {
  /** Told when PostgreSQL drops a connection (idle or in use); the store reconnects on next use either way. */
  onConnectionError?: (e: Error) => void;
  /**
   * Blobs (model versions, updates) as files in this directory instead of the default: `<dir of the SQLite
   * file>/blobs` for SQLite (whose small blobs are rows of its own database either way: blobs/tiered-blobs.ts), the
   * shared chunk table for PostgreSQL (files there suit one coordinator only).
   */
  blobDir?: string;
  /** Told of every statement run, with its kind (`statementKind`) and time: the coordinator's SQL metrics. */
  onQuery?: (kind: string, ms: number) => void;
}

/**
 * A statement's kind for metrics, bounded whatever the values: its verb and the table it reads or writes, e.g.
 * `select tasks`, `insert audit_log`, `update audit_head` (`begin`, `commit`, … stand alone).
 */
export function statementKind(sql: string): string {
  const verb = /^\s*(\w+)/.exec(sql)?.[1]?.toLowerCase() ?? 'other';
  const table = /\b(?:from|into|update)\s+"?(\w+)"?/i.exec(sql)?.[1]?.toLowerCase();
  return table ? `${verb} ${table}` : verb;
}

/** Metric rows per INSERT: 6 columns each stays far under SQLite's 32,766 bind parameters and PostgreSQL's 65,535. */
const METRIC_ROWS_PER_INSERT = 1000;

/** Site ids per batched last-seen UPDATE: far under either driver's bind-parameter limit. */
const SITES_PER_TOUCH = 1000;

/** Prepared SQLite statements kept per connection, by SQL text (the statements are few: the queries are built in code). */
const STATEMENT_CACHE_SIZE = 500;

/**
 * The SQLite connection with its prepared statements kept: Kysely prepares every statement anew, and preparing
 * was the coordinator's largest single cost under load (9% of its CPU with 300 live sites, `setu bench live
 * --cpu-prof`). A statement is reused only after its previous run has finished (the driver runs one at a time).
 */
function withStatementCache<D extends { prepare(sql: string): unknown; close(): unknown }>(raw: D): D {
  const cache = new Map<string, unknown>();
  return new Proxy(raw, {
    get(target, prop, receiver) {
      if (prop === 'prepare') {
        return (sqlText: string) => {
          let st = cache.get(sqlText);
          if (st === undefined) {
            st = target.prepare(sqlText);
            if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
            cache.set(sqlText, st);
          }
          return st;
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** SETU_SQL_TRACE=<file>: statements counted by their text (count, ms), written there at exit (profiling only). */
const sqlTrace = (() => {
  const file = process.env.SETU_SQL_TRACE;
  if (!file) return undefined;
  const counts = new Map<string, [number, number]>();
  const dump = () => writeFileSync(file, JSON.stringify([...counts].sort((a, b) => b[1][0] - a[1][0]), null, 1));
  process.on('exit', dump);
  process.on('SIGUSR2', dump);
  return (sql: string, ms: number) => {
    const e = counts.get(sql) ?? [0, 0];
    e[0]++;
    e[1] += ms;
    counts.set(sql, e);
  };
})();

function queryLog(o: SqlStoreOptions): { log?: (e: LogEvent) => void } {
  const on = o.onQuery;
  const trace = sqlTrace;
  if (trace) return { log: (e) => (trace(e.query.sql, e.queryDurationMillis), on?.(statementKind(e.query.sql), e.queryDurationMillis)) };
  return on ? { log: (e) => on(statementKind(e.query.sql), e.queryDurationMillis) } : {};
}

/** Where a SqlStore's blobs are (openSqlStore picks them per dialect). */
interface BlobWiring {
  /** The blob store on `db`: the store's own handle (`root`, the store: calls from inside its transactions are refused), or a transaction's. */
  on: (db: Kysely<any>, root?: object) => BlobStore;
  /** Whether a transaction's `tx` gets blobs on its own handle (SQLite's table tier: a put joins the transaction) or shares the store's. */
  perTx: boolean;
  /** Where migration 0009_blobs moves existing rows' bytes, on the migration's connection. */
  migration: (db: Kysely<any>) => BlobStore;
}

/** Opens (and migrates) the SQL store at `url`: `postgres://…`, `sqlite:<path>` or a file path. */
export async function openSqlStore(url: string, o: SqlStoreOptions = {}): Promise<SqlStore> {
  const onConnectionError = o.onConnectionError ?? ((e: Error) => process.stderr.write(`setu store: PostgreSQL connection lost (${e.message}); reconnecting on next use\n`));
  let db: Kysely<AllTables>;
  let dialect: Dialect;
  let files: string[] = [];
  let guard: DiskGuard | undefined;
  let blobs: BlobWiring;
  let peers: PeerSignals | undefined;
  if (/^postgres(ql)?:\/\//.test(url)) {
    const pg = (await import('pg')).default;
    // int8 (COUNT, bigint ms timestamps) arrives as string by default; every value we keep fits a double.
    pg.types.setTypeParser(20, (v: string) => Number(v));
    const pool = new pg.Pool({
      connectionString: url,
      max: pgPoolMax(), // connections per coordinator: see pg-pool.ts
      // Never wait forever: a server that does not answer is StoreUnavailable (503), not a hung request.
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
      // A statement or an abandoned transaction cannot hold the audit head's lock for long.
      statement_timeout: 30_000,
      idle_in_transaction_session_timeout: 60_000,
    });
    // A connection the server drops (restart, pg_terminate_backend, failover) emits 'error' on its client:
    // while idle the pool's listener takes it, while checked out only the client's own would. Without one,
    // Node treats the event as unhandled and the coordinator exits. The failing query itself rejects
    // (StoreUnavailable) and the pool discards the broken client on release.
    pool.on('error', onConnectionError);
    pool.on('connect', (client) => client.on('error', onConnectionError));
    db = new Kysely<AllTables>({ dialect: mappedDialect(new PostgresDialect({ pool }), 'postgres'), ...queryLog(o) });
    dialect = 'postgres';
    const notifyThrough = db;
    peers = new PgPeerSignals(
      () => new pg.Client({ connectionString: url, keepAlive: true, connectionTimeoutMillis: 10_000 }),
      async (channel, payload) => void (await sql`select pg_notify(${channel}, ${payload})`.execute(notifyThrough)),
      onConnectionError,
    );
    if (o.blobDir) {
      const fileBlobs = new FileBlobStore(resolve(o.blobDir));
      blobs = { on: () => fileBlobs, perTx: false, migration: () => fileBlobs };
    } else {
      blobs = { on: (on) => new PgBlobStore(on), perTx: false, migration: (on) => new PgBlobStore(on) };
    }
  } else {
    const path = resolve(url.replace(/^sqlite:/, ''));
    files = prepareSqliteFiles(path);
    guard = new DiskGuard(dirname(path), minFreeBytes());
    const Database = (await import('libsql')).default;
    let raw: InstanceType<typeof Database>;
    try {
      raw = new Database(path);
      // WAL: readers never block the writer; synchronous=NORMAL in WAL is durable across process crashes
      // (SIGKILL), which is the failure the coordinator must survive; busy_timeout covers a second process.
      raw.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;');
    } catch (e) {
      const { classifySqlError } = await import('./sql-errors.js');
      throw classifySqlError(e, 'sqlite');
    }
    db = new Kysely<AllTables>({ dialect: mappedDialect(new SqliteDialect({ database: withStatementCache(raw) as never }), 'sqlite', guard), ...queryLog(o) });
    dialect = 'sqlite';
    const fileBlobs = new FileBlobStore(resolve(o.blobDir ?? join(dirname(path), 'blobs')));
    // Small blobs are rows of this database (0011_small_blobs), the rest files. On SQLite's one connection a
    // transaction's tx must have blobs on the transaction's handle: one on the store's would wait for it forever.
    // Migration 0009 runs before 0011 makes the table: what it moves out of the rows becomes files (read as before).
    blobs = {
      on: (on, root) => new TieredBlobStore(on, fileBlobs, undefined, root ? () => refuseFromInside(root) : undefined),
      perTx: true,
      migration: () => fileBlobs,
    };
  }
  const store = new SqlStore(db, dialect, false, blobs, undefined, peers);
  try {
    await store.migrate();
  } catch (e) {
    await db.destroy().catch(() => {});
    throw e;
  }
  restrictFiles(files);
  if (guard) guard.armed = true;
  return store;
}

/**
 * The data directory is 700 when we create it, the database file 600 before SQLite opens it: SQLite gives
 * its -wal and -shm files the database file's mode, so all three are the owner's only.
 */
function prepareSqliteFiles(path: string): string[] {
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
  return [path, `${path}-wal`, `${path}-shm`];
}

/** A store made before files were private: tighten what exists (the mode, not the owner). */
function restrictFiles(files: string[]): void {
  for (const f of files) if (existsSync(f)) chmodSync(f, 0o600);
}

/** Results accepted in one transaction at most (group-commit.ts): what one holding of the audit head covers. */
const ACCEPTS_PER_TRANSACTION = 64;
/** Batches of accepted results written at once on PostgreSQL (each holds one of the pool's connections). */
const PARALLEL_ACCEPT_BATCHES = 4;
type AuditBuild = (head: { seq: number; hash: string }) => AuditRow;
interface Acceptance {
  update: UpdateRow;
  inTx?: (tx: Store) => Promise<void>;
}

export class SqlStore implements Store {
  readonly backend: 'sqlite' | 'postgres';
  /**
   * Accepted results, committed in batches (acceptUpdate); on PostgreSQL several batches at once, each on its own
   * connection (they share only the audit head, taken last and briefly: acceptSetwise).
   */
  private readonly accepts: GroupCommit<Acceptance>;
  /** Request nonces, recorded in batches (rememberNonceIfActive). */
  private readonly nonces = new GroupCommit<trust.NonceToRemember, boolean>(
    async (items) => (await trust.rememberNoncesIfActive(this.cdb, items)).map((value) => ({ ok: true, value })),
    trust.NONCES_PER_STATEMENT,
  );
  constructor(
    private readonly handle: Db,
    private readonly dialect: Dialect,
    private readonly inTx: boolean,
    private readonly wiring: BlobWiring,
    /** A transaction's `tx`: the store's own blobs, when they are not on the transaction's handle (`wiring.perTx`). */
    shared?: BlobStore,
    /** PostgreSQL: the signals between the coordinator processes on the database (peer-signals.ts). */
    readonly peers?: PeerSignals,
  ) {
    this.backend = dialect;
    this.accepts = new GroupCommit<Acceptance>((items) => this.acceptAll(items), ACCEPTS_PER_TRANSACTION, dialect === 'postgres' ? PARALLEL_ACCEPT_BATCHES : 1);
    this.blobs = shared ?? wiring.on(handle as Kysely<any>, inTx ? undefined : this);
  }

  /**
   * SQLite: small blobs as rows of its database, the rest as files (blobs/tiered-blobs.ts; a transaction's `tx` has
   * them on its own handle, so a put through it joins the transaction); PostgreSQL: the chunk table (or files with
   * `blobDir`), the same object for a `tx`.
   */
  readonly blobs: BlobStore;

  /** The connection every statement goes through; from inside this store's own transaction, refused (runInside). */
  private get db(): Db {
    if (!this.inTx) refuseFromInside(this);
    return this.handle;
  }

  /** The same handle, typed for the core schema the trust and audit functions are written against. */
  private get cdb(): trust.Db {
    return this.db as unknown as trust.Db;
  }
  private get gdb(): g.GovDb {
    return g.gov(this.db);
  }
  private get pdb(): p.PrivacyDb {
    return p.priv(this.db);
  }

  async migrate(): Promise<void> {
    const migrator = new Migrator({ db: this.db as Kysely<AllTables>, provider: migrationProvider(this.dialect, this.wiring.migration),
      // A migration numbered below one already applied is applied too (0011_small_blobs came after 0014_tasks_issued
      // shipped): each is independent of those numbered after it.
      allowUnorderedMigrations: true });
    const { error, results } = await migrator.migrateToLatest();
    if (error instanceof StoreUnavailable) throw error; // the database is not there: say so, not "migration failed"
    if (error) {
      const failed = results?.find((r) => r.status === 'Error');
      throw new Error(`store migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? error}`);
    }
  }

  async close(): Promise<void> {
    if (this.inTx) return;
    await this.peers?.close();
    await (this.handle as Kysely<AllTables>).destroy();
  }

  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.inTx) return fn(this);
    return (this.db as Kysely<AllTables>).transaction().execute((trx) => runInside(this, () => fn(new SqlStore(trx, this.dialect, true, this.wiring, this.wiring.perTx ? undefined : this.blobs, this.peers))));
  }

  async dumpTables(): Promise<Record<string, Record<string, unknown>[]>> {
    const out: Record<string, Record<string, unknown>[]> = {};
    const tables = await this.db.introspection.getTables();
    for (const t of tables.map((x) => x.name).sort()) {
      const rows = (await this.db.selectFrom(t as never).selectAll().execute()) as Record<string, unknown>[];
      out[t] = rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v instanceof ArrayBuffer || v instanceof Uint8Array ? bytes(v) : v])));
    }
    return out;
  }

  // ---- key/value ----
  async getKv(key: string): Promise<string | undefined> {
    return (await this.db.selectFrom('kv').select('value').where('key', '=', key).executeTakeFirst())?.value;
  }
  async setKv(key: string, value: string): Promise<void> {
    await this.db.insertInto('kv').values({ key, value }).onConflict((oc) => oc.column('key').doUpdateSet({ value })).execute();
  }

  // ---- invites and sites ----
  async createInvite(row: InviteRow): Promise<void> {
    await this.db.insertInto('invites').values(row).execute();
  }
  async consumeInvite(tokenHash: string, now: number): Promise<InviteRow | undefined> {
    const res = await this.db.updateTable('invites').set({ used_at: now })
      .where('token_hash', '=', tokenHash).where('used_at', 'is', null).where('expires_at', '>', now).executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) return undefined;
    return normInvite(await this.db.selectFrom('invites').selectAll().where('token_hash', '=', tokenHash).executeTakeFirstOrThrow());
  }
  async attachInviteToSite(tokenHash: string, siteId: string): Promise<void> {
    await this.db.updateTable('invites').set({ site_id: siteId }).where('token_hash', '=', tokenHash).execute();
  }
  async createSite(row: SiteRow): Promise<void> {
    await this.db.insertInto('sites').values(row).execute();
  }
  async getSite(id: string): Promise<SiteRow | undefined> {
    const r = await this.db.selectFrom('sites').selectAll().where('id', '=', id).executeTakeFirst();
    return r && normSite(r);
  }
  async getSiteByName(name: string): Promise<SiteRow | undefined> {
    const r = await this.db.selectFrom('sites').selectAll().where('name', '=', name).executeTakeFirst();
    return r && normSite(r);
  }
  async listSites(): Promise<SiteRow[]> {
    return (await this.db.selectFrom('sites').selectAll().orderBy('name').execute()).map(normSite);
  }
  async touchSite(id: string, now: number): Promise<void> {
    await this.db.updateTable('sites').set({ last_seen_at: now }).where('id', '=', id).execute();
  }
  async touchSites(ids: readonly string[], now: number): Promise<void> {
    for (let i = 0; i < ids.length; i += SITES_PER_TOUCH) {
      await this.db.updateTable('sites').set({ last_seen_at: now }).where('id', 'in', ids.slice(i, i + SITES_PER_TOUCH)).execute();
    }
  }
  revokeSite(id: string): Promise<boolean> {
    return trust.revokeSite(this.cdb, id);
  }
  setSitePublicKey(id: string, publicKey: string): Promise<void> {
    return trust.setSitePublicKey(this.cdb, id, publicKey);
  }

  // ---- studies ----
  async createStudy(row: StudyRow): Promise<void> {
    await this.db.insertInto('studies').values(row).execute();
  }
  async getStudy(id: string): Promise<StudyRow | undefined> {
    const r = await this.db.selectFrom('studies').selectAll().where('id', '=', id).executeTakeFirst();
    return r && normStudy(r);
  }
  async listStudies(): Promise<StudyRow[]> {
    return (await this.db.selectFrom('studies').selectAll().orderBy('created_at').execute()).map(normStudy);
  }
  async listStudiesByStatus(status: string): Promise<StudyRow[]> {
    return (await this.db.selectFrom('studies').selectAll().where('status', '=', status).orderBy('created_at').execute()).map(normStudy);
  }
  async transitionStudy(id: string, from: string[], to: string, now: number, extra: { error?: string | null } = {}): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      const r = await db.updateTable('studies')
        .set({ status: to, updated_at: now, ...(extra.error !== undefined ? { error: extra.error } : {}) })
        .where('id', '=', id).where('status', 'in', from).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) {
        const s = await tx.getStudy(id);
        throw new StoreConflict(s ? `study ${id} is ${s.status}; expected ${from.join(' or ')}` : `no study ${id}`);
      }
      // A study that stops for any reason takes its open tasks with it, so no site keeps receiving them.
      if (to !== 'running') {
        if (this.dialect === 'postgres') await db.selectFrom('tasks').select('id').where('study_id', '=', id).where('status', 'in', ['issued', 'delivered']).orderBy('id').forUpdate().execute();
        await db.updateTable('tasks').set({ status: 'expired' }).where('study_id', '=', id).where('status', 'in', ['issued', 'delivered']).execute();
      }
    });
  }
  async startStudy(id: string, participants: string[], initial: ModelVersionRow | undefined, now: number): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.transitionStudy(id, ['created'], 'running', now);
      await (tx as SqlStore).db.updateTable('studies').set({ participants: JSON.stringify(participants) }).where('id', '=', id).execute();
      if (initial) await tx.putModelVersion(initial);
    });
  }
  async claimStudy(id: string, instance: string, now: number, leaseMs: number): Promise<boolean> {
    const r = await this.db.updateTable('studies')
      .set({ claimed_by: instance, claimed_until: now + leaseMs })
      .where('id', '=', id)
      .where((eb) => eb.or([eb('claimed_by', 'is', null), eb('claimed_by', '=', instance), eb('claimed_until', '<', now)]))
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  // ---- model versions ----
  async putModelVersion(row: ModelVersionRow): Promise<void> {
    await this.db.insertInto('model_versions').values(row).execute();
  }
  async getModelVersion(id: string): Promise<ModelVersionRow | undefined> {
    const r = await this.db.selectFrom('model_versions').selectAll().where('id', '=', id).executeTakeFirst();
    return r && normModel(r);
  }
  async listModelVersions(studyId: string): Promise<ModelVersionRow[]> {
    return (await this.db.selectFrom('model_versions').selectAll().where('study_id', '=', studyId).orderBy('round').execute()).map(normModel);
  }
  async latestModelVersion(studyId: string): Promise<ModelVersionRow | undefined> {
    const r = await this.db.selectFrom('model_versions').selectAll().where('study_id', '=', studyId).orderBy('round', 'desc').limit(1).executeTakeFirst();
    return r && normModel(r);
  }

  // ---- rounds, tasks, updates ----
  async openRound(round: RoundRow, tasks: TaskRow[], inTx?: (tx: Store) => Promise<void>): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      const exists = await db.selectFrom('rounds').select('round').where('study_id', '=', round.study_id).where('round', '=', round.round).executeTakeFirst();
      if (exists) throw new StoreConflict(`round ${round.round} of study ${round.study_id} already exists`);
      await db.insertInto('rounds').values(round).execute();
      if (tasks.length) await db.insertInto('tasks').values(tasks).execute();
      if (inTx) await inTx(tx); // e.g. the audit entries of the issued tasks
    });
  }
  async getRound(studyId: string, round: number): Promise<RoundRow | undefined> {
    const r = await this.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst();
    return r && normRound(r);
  }
  async openRoundOf(studyId: string): Promise<RoundRow | undefined> {
    const r = await this.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('status', '=', 'open').executeTakeFirst();
    return r && normRound(r);
  }
  async listRounds(studyId: string): Promise<RoundRow[]> {
    return (await this.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).orderBy('round').execute()).map(normRound);
  }
  async extendOpenRound(studyId: string, round: number, byMs: number): Promise<void> {
    const ms = Math.round(byMs);
    await this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      await db.updateTable('rounds').set((eb) => ({ deadline_at: eb('deadline_at', '+', ms) }))
        .where('study_id', '=', studyId).where('round', '=', round).where('status', '=', 'open').execute();
      await db.updateTable('tasks').set((eb) => ({ deadline_at: eb('deadline_at', '+', ms) }))
        .where('study_id', '=', studyId).where('round', '=', round).where('status', 'in', ['issued', 'delivered']).execute();
    });
  }
  async pendingTasks(siteId: string): Promise<TaskRow[]> {
    const rows = await this.db.selectFrom('tasks').selectAll().where('site_id', '=', siteId).where('status', 'in', ['issued', 'delivered']).orderBy('created_at').execute();
    return rows.map(normTask);
  }
  async issuedTasksSince(since: number): Promise<Pick<TaskRow, 'id' | 'site_id' | 'created_at'>[]> {
    const rows = await this.db.selectFrom('tasks').select(['id', 'site_id', 'created_at']).where('status', '=', 'issued').where('created_at', '>=', since).execute();
    return rows.map((r) => ({ id: r.id, site_id: r.site_id, created_at: num(r.created_at) }));
  }
  async getTask(id: string): Promise<TaskRow | undefined> {
    const r = await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    return r && normTask(r);
  }
  async listTasks(studyId: string, round: number): Promise<TaskRow[]> {
    return (await this.db.selectFrom('tasks').selectAll().where('study_id', '=', studyId).where('round', '=', round).orderBy('site_id').execute()).map(normTask);
  }
  async markDelivered(taskId: string, now: number): Promise<boolean> {
    const r = await this.db.updateTable('tasks').set({ status: 'delivered', delivered_at: now }).where('id', '=', taskId).where('status', '=', 'issued').executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }
  async refuseTask(taskId: string, now: number): Promise<boolean> {
    const r = await this.db.updateTable('tasks').set({ status: 'refused', done_at: now }).where('id', '=', taskId).where('status', 'in', ['issued', 'delivered']).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }
  failTask(row: taskErrors.TaskErrorsTable): Promise<boolean> {
    return this.transaction((tx) => taskErrors.failTask(taskErrors.taskErrorsDb((tx as SqlStore).db), row));
  }
  listTaskErrors(studyId: string, round?: number): Promise<taskErrors.TaskErrorsTable[]> {
    return taskErrors.listTaskErrors(taskErrors.taskErrorsDb(this.db), studyId, round);
  }
  async siteMayReadModel(siteId: string, versionId: string): Promise<boolean> {
    const r = await this.db.selectFrom('tasks').select('id').where('site_id', '=', siteId).where('model_version_id', '=', versionId).limit(1).executeTakeFirst();
    return !!r;
  }
  async resetRound(studyId: string, round: number): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      await db.deleteFrom('updates').where('study_id', '=', studyId).where('round', '=', round).execute();
      await db.updateTable('tasks').set({ status: 'issued', delivered_at: null, done_at: null })
        .where('study_id', '=', studyId).where('round', '=', round).where('status', 'in', ['issued', 'delivered', 'done']).execute();
    });
  }
  /**
   * Outside a transaction, group-committed (group-commit.ts): the results accepted while another batch commits go
   * in one transaction. The batch is written set by set (one statement closes its tasks, one inserts its updates,
   * its audit entries are appended last under one take of the chain's head: queueAuditRow), not result by result:
   * 64 results one after another were ~450 statements and 180 ms with the head's lock held from the first, the
   * batches back to back taking half of a 1,000-site round on PostgreSQL. When any result of it is refused (a
   * StoreConflict, a budget its own inTx refuses) that transaction rolls back and the batch goes again result by
   * result, each in its own savepoint, so the refused one rolls back alone and the others commit. On PostgreSQL a
   * batch first locks its tasks' rows in id order, so that it takes task rows before the audit head as a single
   * acceptance does (no lock-order cycle with one).
   */
  acceptUpdate(update: UpdateRow, inTx?: (tx: Store) => Promise<void>): Promise<void> {
    if (this.inTx) return this.acceptOne(update, inTx);
    return this.accepts.add({ update, ...(inTx ? { inTx } : {}) });
  }
  /** One transaction for the batch; the whole batch fails (GroupCommit) when the transaction itself does. */
  private async acceptAll(items: Acceptance[]): Promise<Outcome<void>[]> {
    const outcomes: Outcome<void>[] = items.map(() => ({ ok: true, value: undefined }));
    try {
      await this.transaction((tx) => (tx as SqlStore).acceptSetwise(items));
      return outcomes;
    } catch (e) {
      if (items.length === 1) throw e;
    }
    await this.transaction(async (tx) => {
      const t = tx as SqlStore;
      await t.lockTasks(items);
      for (const [i, it] of items.entries()) {
        await sql`savepoint setu_accept`.execute(t.db);
        try {
          await t.acceptOne(it.update, it.inTx);
        } catch (error) {
          await sql`rollback to savepoint setu_accept`.execute(t.db);
          outcomes[i] = { ok: false, error };
        }
        await sql`release savepoint setu_accept`.execute(t.db);
      }
    });
    return outcomes;
  }

  private async lockTasks(items: Acceptance[]): Promise<void> {
    if (this.dialect === 'postgres') await sql`select id from tasks where id in (${sql.join(items.map((i) => i.update.task_id))}) order by id for update`.execute(this.db);
  }

  /** The batch in a few statements, inside its transaction; any refusal throws (acceptAll then goes result by result). */
  private async acceptSetwise(items: Acceptance[]): Promise<void> {
    const db = this.db;
    await this.lockTasks(items);
    const rounds = new Map(items.map((i) => [`${i.update.study_id}\u0000${i.update.round}`, i.update] as const));
    for (const u of rounds.values()) {
      const round = await db.selectFrom('rounds').select('status').where('study_id', '=', u.study_id).where('round', '=', u.round).executeTakeFirst();
      if (round?.status !== 'open') throw new StoreConflict(`round ${u.round} is no longer open`);
    }
    // Each task closed at its own result's time, only by its own site, only while it is open.
    const doneAt = sql.join(items.map((i) => sql`when ${i.update.task_id} then cast(${i.update.received_at} as bigint)`), sql` `);
    const siteOf = sql.join(items.map((i) => sql`when ${i.update.task_id} then ${i.update.site_id}`), sql` `);
    const closed = await sql<{ id: string }>`update tasks set status = 'done', done_at = case id ${doneAt} end
      where id in (${sql.join(items.map((i) => i.update.task_id))}) and site_id = case id ${siteOf} end and status in ('issued', 'delivered') returning id`.execute(db);
    if (closed.rows.length !== items.length) throw new StoreConflict('a task of the batch is not open for its site');
    await db.insertInto('updates').values(items.map((i) => i.update)).execute();
    const queue: AuditBuild[] = [];
    this.auditQueue = queue;
    try {
      for (const it of items) if (it.inTx) await it.inTx(this);
    } finally {
      this.auditQueue = undefined;
    }
    if (queue.length) {
      await audit.appendAuditRows(this.cdb, (head) => {
        let h = head;
        return queue.map((build) => {
          const row = build(h);
          h = { seq: row.seq, hash: row.hash };
          return row;
        });
      }, this.dialect);
    }
  }

  /** Audit rows of a set-wise batch of accepted results (acceptSetwise), appended at its end; undefined elsewhere. */
  private auditQueue: AuditBuild[] | undefined;

  queueAuditRow(build: AuditBuild): boolean {
    if (!this.auditQueue) return false;
    this.auditQueue.push(build);
    return true;
  }

  private async acceptOne(update: UpdateRow, inTx?: (tx: Store) => Promise<void>): Promise<void> {
    const db = this.db;
    const closed = await db.updateTable('tasks').set({ status: 'done', done_at: update.received_at })
      .where('id', '=', update.task_id).where('site_id', '=', update.site_id).where('status', 'in', ['issued', 'delivered']).executeTakeFirst();
    if (Number(closed.numUpdatedRows) !== 1) throw new StoreConflict(`task ${update.task_id} is not open for this site`);
    const round = await db.selectFrom('rounds').select('status').where('study_id', '=', update.study_id).where('round', '=', update.round).executeTakeFirst();
    if (round?.status !== 'open') throw new StoreConflict(`round ${update.round} is no longer open`);
    await db.insertInto('updates').values(update).execute();
    if (inTx) await inTx(this); // e.g. the audit entry of the accepted update
  }
  async listUpdates(studyId: string, round: number): Promise<UpdateRow[]> {
    const rows = await this.db.selectFrom('updates').selectAll().where('study_id', '=', studyId).where('round', '=', round).orderBy('site_id').execute();
    return rows.map((r) => ({ ...r, round: num(r.round), num_examples: num(r.num_examples), received_at: num(r.received_at), size: maybeNum(r.size) }));
  }
  createUpload(row: UploadRow): Promise<void> {
    return uploads.createUpload(uploads.uploadsDb(this.db), row);
  }
  getUpload(id: string): Promise<UploadRow | undefined> {
    return uploads.getUpload(uploads.uploadsDb(this.db), id);
  }
  findUpload(taskId: string, digest: string): Promise<UploadRow | undefined> {
    return uploads.findUpload(uploads.uploadsDb(this.db), taskId, digest);
  }
  deleteUpload(id: string): Promise<void> {
    return uploads.deleteUpload(uploads.uploadsDb(this.db), id);
  }
  staleUploads(): Promise<UploadRow[]> {
    return uploads.staleUploads(uploads.uploadsDb(this.db));
  }
  async countUpdates(studyId: string, round: number): Promise<number> {
    const r = await this.db.selectFrom('updates').select((eb) => eb.fn.countAll<number>().as('n')).where('study_id', '=', studyId).where('round', '=', round).executeTakeFirstOrThrow();
    return num(r.n);
  }
  async roundProgress(studyId: string, round: number): Promise<RoundProgress> {
    const t = await this.db.selectFrom('tasks')
      .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.sum<number>(eb.case().when('status', 'in', ['refused', 'failed']).then(1).else(0).end()).as('closed')])
      .where('study_id', '=', studyId).where('round', '=', round).executeTakeFirstOrThrow();
    return { tasks: num(t.n), updates: await this.countUpdates(studyId, round), closedWithoutResult: num(t.closed ?? 0) };
  }
  async commitRound(args: CommitRoundArgs): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      const r = await db.updateTable('rounds')
        .set({ status: 'committed', committed_at: args.now, ...(args.model ? { model_version_id: args.model.id } : {}) })
        .where('study_id', '=', args.studyId).where('round', '=', args.round).where('status', '=', 'open').executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) throw new StoreConflict(`round ${args.round} of ${args.studyId} is not open`);
      // Task rows locked in id order, as a batch of accepted results locks them (acceptAll): no lock-order cycle.
      if (this.dialect === 'postgres') {
        await db.selectFrom('tasks').select('id').where('study_id', '=', args.studyId).where('round', '=', args.round).where('status', 'in', ['issued', 'delivered']).orderBy('id').forUpdate().execute();
      }
      await db.updateTable('tasks').set({ status: 'expired' })
        .where('study_id', '=', args.studyId).where('round', '=', args.round).where('status', 'in', ['issued', 'delivered']).execute();
      if (args.model) await db.insertInto('model_versions').values(args.model).execute();
      // In batches: one INSERT of every site's rows passed the drivers' bind-parameter limits (SQLite's at ~1,360 sites).
      for (let i = 0; i < args.metrics.length; i += METRIC_ROWS_PER_INSERT) await db.insertInto('metrics').values(args.metrics.slice(i, i + METRIC_ROWS_PER_INSERT)).execute();
      if (args.strategyState) await db.insertInto('strategy_state').values(args.strategyState).execute();
      await db.updateTable('studies')
        .set({
          updated_at: args.now,
          ...(args.advanceTo !== undefined ? { current_round: args.advanceTo } : {}),
          ...(args.studyStatus ? { status: args.studyStatus } : {}),
        })
        .where('id', '=', args.studyId).execute();
      if (args.inTx) await args.inTx(tx);
    });
  }
  async issueTasks(studyId: string, round: number, tasks: TaskRow[], inTx?: (tx: Store) => Promise<void>): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      const r = await db.selectFrom('rounds').select('status').where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst();
      if (r?.status !== 'open') throw new StoreConflict(`round ${round} of study ${studyId} is not open`);
      if (tasks.length) await db.insertInto('tasks').values(tasks).execute();
      if (inTx) await inTx(tx);
    });
  }
  async expireTask(taskId: string, now: number): Promise<boolean> {
    const r = await this.db.updateTable('tasks').set({ status: 'expired', done_at: now }).where('id', '=', taskId).where('status', 'in', ['issued', 'delivered']).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }
  async asyncTasks(studyId: string, round: number, versionId: string, taskIds: readonly string[]): Promise<TaskRow[]> {
    const rows = await this.db.selectFrom('tasks').selectAll().where('study_id', '=', studyId).where('round', '=', round)
      .where((eb) => eb.or([eb('status', 'in', ['issued', 'delivered']), eb('model_version_id', '=', versionId), ...(taskIds.length ? [eb('id', 'in', [...taskIds])] : [])]))
      .orderBy('site_id').orderBy('created_at').execute();
    return rows.map(normTask);
  }
  unfoldedUpdates(studyId: string, round: number): Promise<UpdateRow[]> {
    return asyncRows.unfoldedUpdates(asyncRows.asyncDb(this.db), studyId, round);
  }
  async commitVersion(a: asyncRows.CommitVersionArgs): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      await asyncRows.advanceVersion(asyncRows.asyncDb(db), a, (m) => new StoreConflict(m));
      await db.insertInto('model_versions').values(a.model).execute();
      if (a.metrics.length) await db.insertInto('metrics').values(a.metrics).execute();
      if (a.strategyState) await db.insertInto('strategy_state').values(a.strategyState).execute();
      if (a.inTx) await a.inTx(tx);
    });
  }
  listContributions(studyId: string): Promise<asyncRows.AsyncContributionsTable[]> {
    return asyncRows.listContributions(asyncRows.asyncDb(this.db), studyId);
  }
  async latestStrategyState(studyId: string): Promise<StrategyStateRow | undefined> {
    const r = await this.db.selectFrom('strategy_state').selectAll().where('study_id', '=', studyId).orderBy('round', 'desc').limit(1).executeTakeFirst();
    return r && { ...r, round: num(r.round), tensors: maybeBytes(r.tensors) };
  }
  async listMetrics(studyId: string): Promise<MetricRow[]> {
    const rows = await this.db.selectFrom('metrics').select(['study_id', 'round', 'site_id', 'phase', 'name', 'value']).where('study_id', '=', studyId).orderBy('round').orderBy('id').execute();
    return rows.map((r) => ({ ...r, round: num(r.round), value: num(r.value) }));
  }
  countRefusal(r: bounds.CountedRefusal): Promise<number> {
    return bounds.countRefusal(this.db, r);
  }
  async listRefusals(studyId?: string): Promise<RefusalRow[]> {
    let q = this.db.selectFrom('refusals').select(['study_id', 'round', 'site_id', 'task_id', 'reason', 'at', 'code', 'count', 'last_at']).orderBy('id');
    if (studyId) q = q.where('study_id', '=', studyId);
    return (await q.execute()).map((r) => ({ ...r, round: maybeNum(r.round), at: num(r.at), count: num(r.count), last_at: maybeNum(r.last_at) }));
  }

  // ---- trust layer ----
  createUser(row: UserRow): Promise<void> {
    return trust.createUser(this.cdb, row);
  }
  getUser(id: string): Promise<UserRow | undefined> {
    return trust.getUser(this.cdb, id);
  }
  getUserByName(name: string): Promise<UserRow | undefined> {
    return trust.getUserByName(this.cdb, name);
  }
  listUsers(): Promise<UserRow[]> {
    return trust.listUsers(this.cdb);
  }
  activateUser(id: string, publicKey: string): Promise<boolean> {
    return trust.activateUser(this.cdb, id, publicKey);
  }
  revokeUser(id: string): Promise<boolean> {
    return trust.revokeUser(this.cdb, id);
  }
  setUserPublicKey(id: string, publicKey: string): Promise<boolean> {
    return trust.setUserPublicKey(this.cdb, id, publicKey);
  }
  createUserInvite(row: { token_hash: string; user_id: string; created_at: number; expires_at: number }): Promise<void> {
    return trust.createUserInvite(this.cdb, row);
  }
  consumeUserInvite(tokenHash: string, now: number): Promise<string | undefined> {
    return trust.consumeUserInvite(this.cdb, tokenHash, now);
  }
  rememberNonce(keyId: string, nonce: string, ts: number): Promise<boolean> {
    return trust.rememberNonce(this.cdb, keyId, nonce, ts);
  }
  /**
   * Outside a transaction, group-committed (group-commit.ts) like accepted results: the requests that reach this
   * while a batch is written are recorded by one statement (trust.ts rememberNoncesIfActive); each still waits for
   * its own answer, and a replay within the batch is refused as one across batches is.
   */
  async rememberNonceIfActive(keyId: string, nonce: string, ts: number, publicKey: string): Promise<boolean> {
    const item = { keyId, nonce, ts, publicKey };
    if (this.inTx) return (await trust.rememberNoncesIfActive(this.cdb, [item]))[0]!;
    return this.nonces.add(item);
  }
  pruneNonces(before: number): Promise<number> {
    return trust.pruneNonces(this.cdb, before);
  }
  declareCohorts(siteId: string, sizes: Record<string, number>, now: number): Promise<void> {
    return this.transaction((tx) => trust.declareCohorts((tx as SqlStore).cdb, siteId, sizes, now));
  }
  cohortSize(siteId: string, dataset: string): Promise<number | undefined> {
    return trust.cohortSize(this.cdb, siteId, dataset);
  }
  listCohorts(siteId: string): Promise<Record<string, number>> {
    return trust.listCohorts(this.cdb, siteId);
  }
  snapshotStudyCohorts(studyId: string, dataset: string, siteIds: readonly string[], at: number): Promise<void> {
    return this.transaction((tx) => bounds.snapshotStudyCohorts((tx as SqlStore).db, studyId, dataset, siteIds, at));
  }
  studyCohortSize(studyId: string, siteId: string): Promise<number | undefined> {
    return bounds.studyCohortSize(this.db, studyId, siteId);
  }

  // ---- governance ----
  createInstitution(i: g.Institution): Promise<void> {
    return g.createInstitution(this.gdb, i);
  }
  getInstitution(id: string): Promise<g.Institution | undefined> {
    return g.getInstitution(this.gdb, id);
  }
  listInstitutions(): Promise<g.Institution[]> {
    return g.listInstitutions(this.gdb);
  }
  linkSite(siteId: string, inst: g.Institution): Promise<void> {
    return g.linkSite(this.gdb, siteId, inst);
  }
  listMemberships(): Promise<g.SiteMembership[]> {
    return g.listMemberships(this.gdb);
  }
  getLifecycleRow(studyId: string, opts: { forUpdate?: boolean } = {}): Promise<g.LifecycleRow | undefined> {
    // SQLite has no row locks: its transactions already run one at a time (one connection, and the file's write lock).
    return g.getLifecycleRow(this.gdb, studyId, !!opts.forUpdate && this.inTx && this.dialect === 'postgres');
  }
  putLifecycle(studyId: string, state: string, lifecycle: unknown, at: number, expectVersion?: number): Promise<boolean> {
    return g.putLifecycle(this.gdb, studyId, state, lifecycle, at, expectVersion);
  }
  addEvent(e: { studyId: string | null; kind: string; actor: string; data: unknown; at: number }): Promise<void> {
    return g.addEvent(this.gdb, e);
  }
  listEvents(studyId?: string): Promise<g.GovernanceEvent[]> {
    return g.listEvents(this.gdb, studyId);
  }
  putSiteProfile(siteId: string, prof: g.SiteProfile): Promise<void> {
    return g.putSiteProfile(this.gdb, siteId, prof);
  }
  getSiteProfile(siteId: string): Promise<g.SiteProfile | undefined> {
    return g.getSiteProfile(this.gdb, siteId);
  }
  putResource(r: { id: string; name: string; institution: string; jurisdiction: string; scheduler: string }, spec: unknown, at: number): Promise<'created' | 'updated'> {
    return this.transaction((tx) => g.putResource((tx as SqlStore).gdb, r, spec, at));
  }
  listResources(): Promise<g.ResourceRow[]> {
    return g.listResources(this.gdb);
  }
  getPlacement(taskId: string): Promise<g.Placement | undefined> {
    return g.getPlacement(this.gdb, taskId);
  }
  putPlacement(pl: g.Placement): Promise<void> {
    return g.putPlacement(this.gdb, pl);
  }
  updatePlacement(taskId: string, set: { jobId?: string | null; state?: string }): Promise<void> {
    return g.updatePlacement(this.gdb, taskId, set);
  }
  listPlacements(opts: { activeOnly?: boolean } = {}): Promise<g.Placement[]> {
    return g.listPlacements(this.gdb, opts);
  }
  addUsage(u: g.UsageRow): Promise<boolean> {
    return g.addUsage(this.gdb, u);
  }
  listUsage(studyId?: string): Promise<g.UsageRow[]> {
    return g.listUsage(this.gdb, studyId);
  }
  putModelCard(c: g.ModelCardRow): Promise<void> {
    return g.putModelCard(this.gdb, c);
  }
  getModelCard(studyId: string): Promise<g.ModelCardRow | undefined> {
    return g.getModelCard(this.gdb, studyId);
  }

  // ---- audit chain ----
  appendAuditRow(build: (head: { seq: number; hash: string }) => AuditRow): Promise<AuditRow> {
    return this.transaction((tx) => audit.appendAuditRow((tx as SqlStore).cdb, build, this.dialect));
  }
  appendAuditRows(build: (head: { seq: number; hash: string }) => AuditRow[]): Promise<AuditRow[]> {
    return this.transaction((tx) => audit.appendAuditRows((tx as SqlStore).cdb, build, this.dialect));
  }
  listAuditRows(opts: { after?: number; limit?: number } = {}): Promise<AuditRow[]> {
    return audit.listAuditRows(this.cdb, opts);
  }
  auditHead(): Promise<{ seq: number; hash: string }> {
    return audit.auditHead(this.cdb);
  }

  // ---- privacy ledger ----
  recordSpend(e: p.SpendEntry): Promise<boolean> {
    return p.recordSpend(this.pdb, e);
  }
  studySpend(studyId: string): Promise<p.SiteSpend[]> {
    return p.studySpend(this.pdb, studyId);
  }
  ledgerRows(studyId: string): Promise<p.PrivacyLedgerTable[]> {
    return p.ledgerRows(this.pdb, studyId);
  }
}
