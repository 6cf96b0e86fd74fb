/**
 * Which errors the round engine may wait out, and how long it waits.
 *
 * A fault is *transient* when it says nothing about the study: the store could not answer (connection lost or
 * refused, a timeout, a lock or serialisation conflict, a database restarting, a full disk that an operator
 * will clear). The engine retries those with capped exponential backoff and never fails a study for one. Every
 * other error is the study's own (a model that does not decode, a strategy that refuses its inputs, too few
 * sites): it fails the study with the error's message as the audited reason.
 *
 * Drivers report faults in their own words, so the classifier reads codes, never messages alone: PostgreSQL's
 * SQLSTATE (`code`, five characters), SQLite's result codes (`SQLITE_BUSY`, … as libsql names them), Node's
 * system errors (`ECONNRESET`, …), and the store's own `StoreUnavailable`. It walks `cause` chains, so a
 * transient fault wrapped by a caller is still seen. The few driver messages that come without any code (pg's
 * "Connection terminated unexpectedly") are matched as a last resort.
 */
import { StoreConflict, StoreUnavailable } from '../store/store.js';

export type FaultClass = { transient: true; reason: string } | { transient: false; reason: string };

/** PostgreSQL SQLSTATE classes and codes that mean "try again", not "this is wrong". */
const PG_TRANSIENT_CLASSES = ['08', '53', '58']; // connection exception, insufficient resources (disk full, too many connections), system error (I/O)
const PG_TRANSIENT_CODES = new Set(['40001', '40P01', '55P03', '55006', '25P03', '57014']); // serialisation, deadlock, lock not available, object in use, idle-in-tx timeout, query cancelled
/** 57 is "operator intervention"; within it only these codes are a server going away, not a query's own fault. */
const PG_57_TRANSIENT = new Set(['57000', '57014', '57P01', '57P02', '57P03', '57P04', '57P05']);

const SQLITE_TRANSIENT = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|PROTOCOL|INTERRUPT)(_|$)/;

const NODE_TRANSIENT = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'ENOSPC', 'EBUSY', 'EAGAIN']);

/** Messages some drivers throw with no code at all (pg's pool and client, libsql's closed handle). */
const CODELESS_TRANSIENT = /connection terminated|connection (?:is )?closed|timeout exceeded when trying to connect|client has encountered a connection error|not queryable|database is locked|server closed the connection/i;

function codeOf(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

function one(e: unknown): FaultClass | undefined {
  if (e instanceof StoreUnavailable) return { transient: true, reason: 'store_unavailable' };
  const code = codeOf(e);
  if (code) {
    if (/^[0-9A-Z]{5}$/.test(code) && !code.startsWith('E') && !code.startsWith('SQLITE')) {
      const cls = code.slice(0, 2);
      if (PG_TRANSIENT_CODES.has(code)) return { transient: true, reason: `pg_${code.toLowerCase()}` };
      if (cls === '57') return PG_57_TRANSIENT.has(code) ? { transient: true, reason: `pg_${code.toLowerCase()}` } : undefined;
      if (PG_TRANSIENT_CLASSES.includes(cls)) return { transient: true, reason: `pg_${cls}xxx` };
    }
    if (SQLITE_TRANSIENT.test(code)) return { transient: true, reason: code.toLowerCase().replace(/^(sqlite_[a-z]+).*$/, '$1') };
    if (NODE_TRANSIENT.has(code)) return { transient: true, reason: code.toLowerCase() };
  }
  return undefined;
}

/** Transient (with a short, bounded reason for metrics) or the study's own (with the error's message). */
export function classifyFault(e: unknown): FaultClass {
  const seen = new Set<unknown>();
  for (let cur: unknown = e; cur && !seen.has(cur); cur = (cur as { cause?: unknown }).cause) {
    seen.add(cur);
    const c = one(cur);
    if (c) return c;
    // AggregateError (several connection attempts, IPv4 and IPv6) is transient when any part is.
    if (cur instanceof AggregateError) for (const part of cur.errors) if (one(part)?.transient) return one(part)!;
  }
  const msg = e instanceof Error ? e.message : String(e);
  if (!(e instanceof StoreConflict) && CODELESS_TRANSIENT.test(msg)) return { transient: true, reason: 'connection_lost' };
  return { transient: false, reason: msg };
}

export interface BackoffOptions {
  /** First wait, ms (default 250). */
  baseMs?: number;
  /** Longest wait, ms (default 30 s). */
  capMs?: number;
  /** Uniform [0, 1) source for the jitter (default Math.random; tests pass a fixed one). */
  random?: () => number;
}

/**
 * Wait before retry `attempt` (1, 2, …): base·2^(attempt−1), capped, with "equal jitter" (half fixed, half
 * random) so coordinators that lost the same database do not all come back in the same millisecond.
 */
export function backoffMs(attempt: number, o: BackoffOptions = {}): number {
  const base = o.baseMs ?? 250;
  const cap = o.capMs ?? 30_000;
  const exp = Math.min(cap, base * 2 ** Math.min(30, Math.max(0, attempt - 1)));
  return Math.round(exp / 2 + (o.random ?? Math.random)() * (exp / 2));
}
