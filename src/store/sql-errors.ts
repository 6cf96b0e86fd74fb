/**
 * Driver errors → the store's two errors callers can act on, decided by the drivers' codes (PostgreSQL's
 * SQLSTATE, SQLite's extended result codes, Node's socket errors), never by the wording of a message:
 *
 *   StoreConflict     a unique or primary key is taken (23505; SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY)
 *   StoreUnavailable  the database cannot answer now: connection lost or refused, server shutting down or
 *                     restarting, statement or lock timeout, deadlock / serialisation failure (retry), disk full,
 *                     I/O error, SQLite busy or locked
 *
 * Anything else (a bug, a schema mismatch, bad input the schema refuses) is passed through unchanged.
 *
 * The mapping is applied by wrapping the Kysely dialect's driver (`mappedDialect`), so every statement, every
 * BEGIN/COMMIT/ROLLBACK and every connection checkout of the SQL store goes through it.
 */
import type { DatabaseConnection, Dialect as KyselyDialect, Driver, QueryResult, TransactionSettings } from 'kysely';
import { StoreConflict, StoreUnavailable } from './store.js';

const PG_UNIQUE = '23505';
/** SQLSTATE classes and codes that are the server's condition, not the statement's: the same statement can succeed later. */
const PG_TRANSIENT_CLASSES = ['08', '53', '58']; // connection exception, insufficient resources (53100 disk full), system/I-O error
const PG_TRANSIENT_CODES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available (lock_timeout)
  '57014', // query_canceled (statement_timeout)
  '57P01', // admin_shutdown (pg_terminate_backend, fast shutdown)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, recovery)
  '57P05', // idle_session_timeout
  '25P03', // idle_in_transaction_session_timeout
]);
const SQLITE_UNIQUE = new Set(['SQLITE_CONSTRAINT_UNIQUE', 'SQLITE_CONSTRAINT_PRIMARYKEY']);
const SQLITE_TRANSIENT_PREFIXES = ['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_FULL', 'SQLITE_IOERR', 'SQLITE_CANTOPEN', 'SQLITE_NOMEM', 'SQLITE_PROTOCOL'];
/** Node's system errors: the socket to the server, or the disk under SQLite. */
const NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ECONNABORTED', 'ENOSPC', 'EIO']);

function codeOf(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** A PostgreSQL server error (pg's DatabaseError): it carries a five-character SQLSTATE and a severity. */
function isPgServerError(e: unknown): boolean {
  const c = codeOf(e);
  return c !== undefined && /^[0-9A-Z]{5}$/.test(c) && typeof (e as { severity?: unknown }).severity === 'string';
}

export type Backend = 'sqlite' | 'postgres';

/** The store error for a driver error, or the error itself when it is neither a conflict nor transient. */
export function classifySqlError(e: unknown, backend: Backend): unknown {
  if (e instanceof StoreConflict || e instanceof StoreUnavailable) return e;
  if (!(e instanceof Error)) return e;
  const code = codeOf(e);
  if (backend === 'postgres') {
    if (isPgServerError(e)) {
      if (code === PG_UNIQUE) {
        const detail = (e as { detail?: unknown }).detail;
        return new StoreConflict(`already exists: ${typeof detail === 'string' ? detail : e.message}`, { cause: e });
      }
      if (PG_TRANSIENT_CODES.has(code!) || PG_TRANSIENT_CLASSES.includes(code!.slice(0, 2))) {
        return new StoreUnavailable(`PostgreSQL ${code}: ${e.message}`, { cause: e });
      }
      return e;
    }
    if (code && NET_CODES.has(code)) return new StoreUnavailable(`PostgreSQL unreachable (${code}): ${e.message}`, { cause: e });
    // pg's own client-side failures (connection terminated, not queryable, connect timeout) carry no code at
    // all; a programming error surfaces as a TypeError/RangeError and stays what it is.
    if (code === undefined && !(e instanceof TypeError) && !(e instanceof RangeError) && !(e instanceof SyntaxError)) {
      return new StoreUnavailable(`PostgreSQL connection failed: ${e.message}`, { cause: e });
    }
    return e;
  }
  if (code && SQLITE_UNIQUE.has(code)) return new StoreConflict(`already exists: ${e.message}`, { cause: e });
  if (code && (SQLITE_TRANSIENT_PREFIXES.some((p) => code.startsWith(p)) || NET_CODES.has(code))) {
    return new StoreUnavailable(`SQLite ${code}: ${e.message}`, { cause: e });
  }
  return e;
}

/** Runs `p`, classifying what it throws (synchronously too: libsql's statements throw before any promise exists). */
async function mapped<T>(backend: Backend, p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (e) {
    throw classifySqlError(e, backend);
  }
}

/** Looked at before each statement (disk-guard.ts); throws to refuse it. */
export interface StatementGuard {
  check(queryKind: string): void;
}

class MappedConnection implements DatabaseConnection {
  constructor(readonly inner: DatabaseConnection, private readonly backend: Backend, private readonly guard?: StatementGuard) {}
  executeQuery<R>(q: Parameters<DatabaseConnection['executeQuery']>[0]): Promise<QueryResult<R>> {
    return mapped(this.backend, async () => {
      this.guard?.check(q.query.kind);
      return this.inner.executeQuery<R>(q);
    });
  }
  async *streamQuery<R>(q: Parameters<DatabaseConnection['streamQuery']>[0], chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    try {
      yield* this.inner.streamQuery<R>(q, chunkSize);
    } catch (e) {
      throw classifySqlError(e, this.backend);
    }
  }
}

const un = (c: DatabaseConnection) => (c instanceof MappedConnection ? c.inner : c);

class MappedDriver implements Driver {
  constructor(private readonly inner: Driver, private readonly backend: Backend, private readonly guard?: StatementGuard) {}
  init(): Promise<void> {
    return mapped(this.backend, () => this.inner.init());
  }
  async acquireConnection(): Promise<DatabaseConnection> {
    return new MappedConnection(await mapped(this.backend, () => this.inner.acquireConnection()), this.backend, this.guard);
  }
  beginTransaction(c: DatabaseConnection, s: TransactionSettings): Promise<void> {
    return mapped(this.backend, () => this.inner.beginTransaction(un(c), s));
  }
  commitTransaction(c: DatabaseConnection): Promise<void> {
    return mapped(this.backend, () => this.inner.commitTransaction(un(c)));
  }
  rollbackTransaction(c: DatabaseConnection): Promise<void> {
    return mapped(this.backend, () => this.inner.rollbackTransaction(un(c)));
  }
  releaseConnection(c: DatabaseConnection): Promise<void> {
    return this.inner.releaseConnection(un(c));
  }
  destroy(): Promise<void> {
    return this.inner.destroy();
  }
}

/** The same dialect, with every driver error classified (see above) and each statement shown to `guard` first. */
export function mappedDialect(inner: KyselyDialect, backend: Backend, guard?: StatementGuard): KyselyDialect {
  return {
    createAdapter: () => inner.createAdapter(),
    createDriver: () => new MappedDriver(inner.createDriver(), backend, guard),
    createIntrospector: (db) => inner.createIntrospector(db),
    createQueryCompiler: () => inner.createQueryCompiler(),
  };
}
