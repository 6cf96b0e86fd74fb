/**
 * The study lifecycle as pure transitions:
 *
 *   draft ──propose──▶ proposed ──start──▶ running ──complete──▶ completed
 *                        │  ▲ site by site:   │
 *                        │  approve / decline │ withdraw (from the next round on)
 *                        └──────stop──────────┴──stop──▶ stopped
 *
 * Each function takes a study and returns the next study plus the audit event that records it, so the
 * coordinator can write both in one transaction ("every transition is audited"). An illegal transition
 * throws LifecycleError saying what was attempted, the current state and what would be allowed.
 * The jurisdiction policy check (policy.ts) is the coordinator's step before `start`.
 */
import type { JsonValue } from '../protocol/canonical-json.js';
import type { AuditKind } from './audit-chain.js';

export type StudyState = 'draft' | 'proposed' | 'running' | 'completed' | 'stopped';
export type ApprovalStatus = 'pending' | 'approved' | 'declined' | 'withdrawn';

/** What a site admin agrees to when approving: the conditions under which their data may be used. */
export interface DataUseTerms {
  /** The purpose the data may serve, in the site's words (e.g. "heart-disease risk model, research only"). */
  purpose: string;
  /** After this time (ms) the approval lapses; the study must not use the site's data. */
  expiresAt?: number;
  /** Further conditions, e.g. "no commercial use", "results reviewed by our ethics board before publication". */
  conditions?: string[];
}

export interface SiteApproval {
  status: ApprovalStatus;
  terms?: DataUseTerms;
  reason?: string;
  by?: string;
  at?: number;
  /** For a withdrawal while running: the first round that must not use the site's data. */
  fromRound?: number;
}

export interface LifecycleStudy {
  id: string;
  state: StudyState;
  /** Sites invited to take part. */
  sites: string[];
  /** One entry per invited site, keyed by site id. */
  approvals: Record<string, SiteApproval>;
  /** Why and by whom it ended, when stopped. */
  stopReason?: string;
}

export interface Actor {
  by: string;
  at: number;
}

export interface Transition {
  study: LifecycleStudy;
  audit: { kind: AuditKind; actor: string; subject: string; data: JsonValue; ts: number };
}

export class LifecycleError extends Error {
  override name = 'LifecycleError';
}

export function newStudy(id: string, sites: string[]): LifecycleStudy {
  if (!id) throw new LifecycleError('a study needs an id');
  const unique = new Set(sites);
  if (unique.size !== sites.length) throw new LifecycleError(`study ${id}: a site is listed twice`);
  if (sites.some((s) => typeof s !== 'string' || s === '')) throw new LifecycleError(`study ${id}: site ids must be non-empty strings`);
  const approvals: Record<string, SiteApproval> = {};
  for (const s of sites) Object.defineProperty(approvals, s, { value: { status: 'pending' }, enumerable: true, writable: true, configurable: true });
  return { id, state: 'draft', sites: [...sites], approvals };
}

function requireState(s: LifecycleStudy, verb: string, allowed: StudyState[]): void {
  if (!allowed.includes(s.state)) {
    throw new LifecycleError(`cannot ${verb} study ${s.id}: it is ${s.state}; ${verb} is allowed only when ${allowed.join(' or ')}`);
  }
}

function approvalOf(s: LifecycleStudy, siteId: string): SiteApproval {
  if (!Object.prototype.hasOwnProperty.call(s.approvals, siteId)) {
    throw new LifecycleError(`site ${siteId} is not invited to study ${s.id}`);
  }
  return s.approvals[siteId]!;
}

function withApproval(s: LifecycleStudy, siteId: string, a: SiteApproval): LifecycleStudy {
  const approvals = { ...s.approvals };
  Object.defineProperty(approvals, siteId, { value: a, enumerable: true, writable: true, configurable: true });
  return { ...s, approvals };
}

function event(kind: AuditKind, s: LifecycleStudy, who: Actor, data: JsonValue): Transition['audit'] {
  return { kind, actor: who.by, subject: s.id, data, ts: who.at };
}

function checkTerms(t: DataUseTerms, now: number): void {
  if (!t || typeof t.purpose !== 'string' || t.purpose.trim() === '') throw new LifecycleError('data-use terms need a purpose');
  if (t.expiresAt !== undefined && (!Number.isFinite(t.expiresAt) || t.expiresAt <= now)) throw new LifecycleError('data-use terms expire in the past');
  if (t.conditions !== undefined && (!Array.isArray(t.conditions) || t.conditions.some((c) => typeof c !== 'string'))) {
    throw new LifecycleError('data-use conditions must be a list of strings');
  }
}

export function propose(s: LifecycleStudy, who: Actor): Transition {
  requireState(s, 'propose', ['draft']);
  if (s.sites.length === 0) throw new LifecycleError(`cannot propose study ${s.id}: it invites no sites`);
  const study = { ...s, state: 'proposed' as const };
  return { study, audit: event('study.proposed', study, who, { sites: [...s.sites] }) };
}

/** A site admin approves for their site with data-use terms. A site that declined may change its mind. */
export function approve(s: LifecycleStudy, siteId: string, terms: DataUseTerms, who: Actor): Transition {
  requireState(s, 'approve', ['proposed']);
  const cur = approvalOf(s, siteId);
  if (cur.status === 'approved') throw new LifecycleError(`site ${siteId} has already approved study ${s.id}`);
  if (cur.status === 'withdrawn') throw new LifecycleError(`site ${siteId} withdrew from study ${s.id}; a withdrawal is final`);
  checkTerms(terms, who.at);
  const a: SiteApproval = { status: 'approved', terms: structuredClone(terms), by: who.by, at: who.at };
  const study = withApproval(s, siteId, a);
  return { study, audit: event('study.approved', study, who, { site: siteId, terms: structuredClone(terms) as unknown as JsonValue }) };
}

export function decline(s: LifecycleStudy, siteId: string, reason: string, who: Actor): Transition {
  requireState(s, 'decline', ['proposed']);
  const cur = approvalOf(s, siteId);
  if (cur.status !== 'pending') {
    throw new LifecycleError(`site ${siteId} cannot decline study ${s.id}: it has ${cur.status}${cur.status === 'approved' ? '; withdraw instead' : ''}`);
  }
  if (!reason?.trim()) throw new LifecycleError('a decline needs a reason');
  const study = withApproval(s, siteId, { status: 'declined', reason, by: who.by, at: who.at });
  return { study, audit: event('study.declined', study, who, { site: siteId, reason }) };
}

/**
 * A site that approved withdraws. While running, `nextRound` is the first round that must not use its data
 * (tasks already issued for the current round are the round engine's to discard).
 */
export function withdraw(s: LifecycleStudy, siteId: string, reason: string, who: Actor, nextRound?: number): Transition {
  requireState(s, 'withdraw from', ['proposed', 'running']);
  const cur = approvalOf(s, siteId);
  if (cur.status !== 'approved') throw new LifecycleError(`site ${siteId} cannot withdraw from study ${s.id}: it has not approved (it is ${cur.status})`);
  if (!reason?.trim()) throw new LifecycleError('a withdrawal needs a reason');
  const a: SiteApproval = { ...cur, status: 'withdrawn', reason, by: who.by, at: who.at };
  if (s.state === 'running') {
    if (nextRound === undefined || !Number.isSafeInteger(nextRound) || nextRound < 0) {
      throw new LifecycleError('a withdrawal from a running study needs the next round number');
    }
    a.fromRound = nextRound;
  }
  const study = withApproval(s, siteId, a);
  return { study, audit: event('study.withdrawn', study, who, { site: siteId, reason, fromRound: a.fromRound ?? null }) };
}

/** Sites whose data may be used now: approved, not withdrawn, terms not lapsed at `now` (when given). */
export function eligibleSites(s: LifecycleStudy, now?: number): string[] {
  return s.sites.filter((id) => {
    const a = s.approvals[id];
    if (!a || a.status !== 'approved') return false;
    return !(now !== undefined && a.terms?.expiresAt !== undefined && a.terms.expiresAt <= now);
  });
}

/** Start once at least `minSites` sites approved (and the coordinator's policy check passed). */
export function start(s: LifecycleStudy, who: Actor, minSites = 1): Transition {
  requireState(s, 'start', ['proposed']);
  const sites = eligibleSites(s, who.at);
  if (sites.length < Math.max(1, minSites)) {
    const pending = s.sites.filter((id) => s.approvals[id]?.status === 'pending');
    throw new LifecycleError(`cannot start study ${s.id}: ${sites.length} site(s) approved, ${Math.max(1, minSites)} needed` +
      (pending.length ? ` (awaiting ${pending.join(', ')})` : ''));
  }
  const study = { ...s, state: 'running' as const };
  return { study, audit: event('study.started', study, who, { sites }) };
}

export function complete(s: LifecycleStudy, who: Actor, summary: JsonValue = null): Transition {
  requireState(s, 'complete', ['running']);
  const study = { ...s, state: 'completed' as const };
  return { study, audit: event('study.completed', study, who, { summary }) };
}

export function stop(s: LifecycleStudy, reason: string, who: Actor): Transition {
  requireState(s, 'stop', ['draft', 'proposed', 'running']);
  if (!reason?.trim()) throw new LifecycleError('stopping a study needs a reason');
  const study = { ...s, state: 'stopped' as const, stopReason: reason };
  return { study, audit: event('study.stopped', study, who, { reason, from: s.state }) };
}
