/**
 * Rate limits on failed authentication, per caller address and per registered identity (key id).
 *
 * Every 401 the coordinator answers (a bad, stale or replayed signature, a revoked key, an unknown invite
 * token at enrolment) counts against the address it came from and, when the request named a registered key,
 * against that key. Past the limit within the window, further failures are answered 429 with Retry-After
 * instead of 401 and are not logged one by one, so a well-behaved client backs off and a hostile one cannot
 * flood the log. A request that authenticates is never counted, refused or delayed: counting only failures
 * means nobody can lock a site or a user out by forging requests under its key id, and several callers
 * behind one NAT address are not slowed by one broken client among them.
 *
 * (@fastify/rate-limit counts every request before the outcome is known, which would slow successful
 * traffic; what is needed here is a counter of failures, which is this small fixed-window table.)
 */
import { setBounded } from '../bounded-map.js';

export interface AuthLimitOptions {
  /** Failures allowed per address within a window (default 200). */
  perAddress?: number;
  /** Failures allowed per registered key id within a window (default 60). */
  perIdentity?: number;
  /** Window length, ms (default 60 s). */
  windowMs?: number;
  now?: () => number;
}

interface Window {
  start: number;
  failures: number;
}

/** At most this many addresses and identities are tracked; the oldest windows go first. */
const MAX_TRACKED = 10_000;

export class AuthFailureLimiter {
  private readonly windows = new Map<string, Window>();
  private readonly perAddress: number;
  private readonly perIdentity: number;
  private readonly windowMs: number;
  private readonly now: () => number;

  constructor(o: AuthLimitOptions = {}) {
    this.perAddress = o.perAddress ?? 200;
    this.perIdentity = o.perIdentity ?? 60;
    this.windowMs = o.windowMs ?? 60_000;
    this.now = o.now ?? Date.now;
  }

  /**
   * Records one failed authentication. Returns `undefined` while within the limits, else how long (seconds)
   * until the caller's window ends, and which limit it crossed.
   */
  fail(address: string, identity?: string): { retryAfterS: number; limit: 'address' | 'key' } | undefined {
    const t = this.now();
    const byAddress = this.count(`a:${address}`, t);
    const byKey = identity === undefined ? undefined : this.count(`k:${identity}`, t);
    const retry = (w: Window) => Math.max(1, Math.ceil((w.start + this.windowMs - t) / 1000));
    if (byKey && byKey.failures > this.perIdentity) return { retryAfterS: retry(byKey), limit: 'key' };
    if (byAddress.failures > this.perAddress) return { retryAfterS: retry(byAddress), limit: 'address' };
    return undefined;
  }

  private count(key: string, t: number): Window {
    let w = this.windows.get(key);
    if (!w || t - w.start >= this.windowMs) {
      this.windows.delete(key);
      w = { start: t, failures: 0 };
      setBounded(this.windows, key, w, MAX_TRACKED);
    }
    w.failures++;
    return w;
  }
}
