/**
 * How a command's failure reads at the terminal: one line, naming the cause and what to do, for everything an
 * operator can get wrong (bad flags or files, an unreachable or untrusted coordinator, a refused or unknown key, a
 * failing coordinator). Only an error nobody anticipated (a bug) keeps its stack trace.
 */
import { UsageError } from './args.js';
import { ConfigError } from '../site/config.js';
import { ApiError, CoordinatorUnavailable, TlsTrustError } from '../site/http.js';

/** A condition the operator must fix (the site is not enrolled, its key was revoked): one line, exit 1. */
export class OperatorError extends Error {}

export function describeFailure(e: unknown): { message: string; exitCode: number } {
  if (e instanceof UsageError || e instanceof ConfigError) return { message: e.message, exitCode: 2 };
  if (e instanceof OperatorError || e instanceof TlsTrustError) return { message: e.message, exitCode: 1 };
  if (e instanceof CoordinatorUnavailable) {
    const hint = e.status ? '' : '; is it running, and is --coordinator (or SETU_COORDINATOR) its address?';
    return { message: `${e.message}${hint}`, exitCode: 1 };
  }
  if (e instanceof ApiError) {
    if (e.status === 401) {
      const hint = e.code === 'revoked' ? 'a revoked key stays refused; the consortium admin can issue a new invite' : 'is this key enrolled with this coordinator, and is this machine\'s clock right?';
      return { message: `the coordinator refused the key: ${e.message} (HTTP 401 ${e.code}); ${hint}`, exitCode: 1 };
    }
    return { message: `the coordinator refused: ${e.message} (HTTP ${e.status} ${e.code})`, exitCode: 1 };
  }
  return { message: (e as Error)?.stack ?? String(e), exitCode: 1 };
}
