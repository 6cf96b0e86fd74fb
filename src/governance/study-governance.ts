/**
 * The study lifecycle (lifecycle.ts) and the jurisdiction policy (policy.ts) applied to studies in the store.
 * Every transition reads the study's lifecycle (row-locked on PostgreSQL, so concurrent decisions queue), applies
 * the pure transition, writes it back with a compare-and-set on the version it read, records the governance
 * event and appends the signed audit entry, in ONE transaction: a transition is never recorded without its audit
 * entry, nor audited without having happened, and a decision never overwrites one it did not see.
 *
 * The coordinator calls these from its routes (propose, approve, decline, withdraw, start, stop) and its round
 * engine (eligible sites per round, completion).
 */
import type { Store } from '../store/store.js';
import type { StudySpec } from '../protocol/api.js';
import type { JsonValue } from '../protocol/canonical-json.js';
import type { SiteMembership } from '../store/governance.js';
import { appendAudit, type AuditKey } from './audit-store.js';
import * as lc from './lifecycle.js';
import { checkStudy, effectivePolicy, type JurisdictionPolicy, type ParticipatingSite, type StudyPlan, type Violation } from './policy.js';
import { place } from '../compute/placement.js';
import type { ComputeResource } from '../compute/types.js';

export class GovernanceError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly details?: unknown) {
    super(message);
  }
}

export interface GovernanceDeps {
  store: Store;
  /** The coordinator's audit key; every transition appends a signed entry with it (absent only in engine unit tests). */
  audit: AuditKey | undefined;
}

/**
 * The version each loaded lifecycle was read at: commitTransitions writes with a compare-and-set on it, so a
 * decision never overwrites one it did not see. Kept beside the object (not in it) so the lifecycle JSON stays
 * what lifecycle.ts defines.
 */
const versionRead = new WeakMap<lc.LifecycleStudy, number>();

/**
 * The study's lifecycle. Inside a transaction it is read with a row lock (PostgreSQL; SQLite and the memory
 * store run transactions one at a time), so two decisions on one study are applied one after the other.
 */
export async function loadLifecycle(store: Store, studyId: string): Promise<lc.LifecycleStudy | undefined> {
  const row = await store.getLifecycleRow(studyId, { forUpdate: true });
  if (!row) return undefined;
  const study = JSON.parse(row.lifecycle) as lc.LifecycleStudy;
  versionRead.set(study, row.version);
  return study;
}

const CONFLICT = 'conflict';

/** Writes one transition (and any further ones) with their events and audit entries inside `tx`. */
export async function commitTransitions(tx: Store, deps: GovernanceDeps, before: lc.LifecycleStudy | undefined, steps: lc.Transition[]): Promise<lc.LifecycleStudy> {
  const last = steps[steps.length - 1]!.study;
  const at = steps[steps.length - 1]!.audit.ts;
  if (before) {
    const version = versionRead.get(before);
    if (version === undefined) throw new Error(`the lifecycle of study ${last.id} was not read with loadLifecycle; its version is unknown`);
    if (!(await tx.putLifecycle(last.id, last.state, last, at, version))) {
      throw new GovernanceError(409, CONFLICT, `study ${last.id} changed while this request was running; retry`);
    }
  } else await tx.putLifecycle(last.id, last.state, last, at);
  for (const s of steps) {
    await tx.addEvent({ studyId: last.id, kind: s.audit.kind, actor: s.audit.actor, data: s.audit.data, at: s.audit.ts });
    if (deps.audit) await appendAudit(tx, deps.audit, { ts: s.audit.ts, actor: s.audit.actor, kind: s.audit.kind, subject: s.audit.subject, data: s.audit.data });
  }
  return last;
}

/**
 * A decision transaction, run again (a few times) when its compare-and-set found the lifecycle moved: only
 * possible where no row lock serialised it (a second process on one SQLite file). The retry reads the new
 * state, so the decision is applied on top of the other one or refused by the lifecycle with a reason.
 */
async function decide<T>(store: Store, fn: (tx: Store) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await store.transaction(fn);
    } catch (e) {
      if (!(e instanceof GovernanceError && e.code === CONFLICT) || attempt >= 5) throw e;
    }
  }
}

/** Runs a lifecycle function; its LifecycleError becomes a 409 naming the current state. */
export function step<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof lc.LifecycleError) throw new GovernanceError(409, 'lifecycle', e.message);
    throw e;
  }
}

/** The sites a study invites: those its spec names (every one must be enrolled and active), else every active site. */
export async function invitedSites(store: Store, spec: StudySpec): Promise<SiteMembership[]> {
  const active = (await store.listMemberships()).filter((s) => s.status === 'active');
  if (!spec.sites) return active;
  const byName = new Map(active.map((s) => [s.name, s]));
  const missing = spec.sites.filter((n) => !byName.has(n));
  if (missing.length) throw new GovernanceError(409, 'sites_missing', `these sites are not enrolled and active: ${missing.join(', ')}`);
  return spec.sites.map((n) => byName.get(n)!);
}

/** Proposes a draft study to its sites. */
export async function proposeStudy(deps: GovernanceDeps, studyId: string, spec: StudySpec, actor: string, at: number): Promise<lc.LifecycleStudy> {
  const sites = await invitedSites(deps.store, spec);
  if (sites.length === 0) throw new GovernanceError(409, 'no_sites', 'no active site can be invited');
  return decide(deps.store, async (tx) => {
    const cur = await loadLifecycle(tx, studyId);
    const draft = cur ?? step(() => lc.newStudy(studyId, sites.map((s) => s.id)));
    const t = step(() => lc.propose(draft, { by: actor, at }));
    return commitTransitions(tx, deps, cur, [t]);
  });
}

/** approve / decline / withdraw for one site. `nextRound` is the first round a withdrawal applies to. */
export async function siteDecision(deps: GovernanceDeps, studyId: string, siteId: string, decision:
  | { kind: 'approve'; terms: lc.DataUseTerms }
  | { kind: 'decline'; reason: string }
  | { kind: 'withdraw'; reason: string; nextRound?: number }, actor: string, at: number): Promise<lc.LifecycleStudy> {
  return decide(deps.store, async (tx) => {
    const cur = await loadLifecycle(tx, studyId);
    if (!cur) throw new GovernanceError(409, 'lifecycle', `study ${studyId} is a draft; propose it before sites can ${decision.kind} it`);
    const who = { by: actor, at };
    const t = step(() => decision.kind === 'approve' ? lc.approve(cur, siteId, decision.terms, who)
      : decision.kind === 'decline' ? lc.decline(cur, siteId, decision.reason, who)
        : lc.withdraw(cur, siteId, decision.reason, who, decision.nextRound));
    return commitTransitions(tx, deps, cur, [t]);
  });
}

/**
 * The sites whose data a round may use: the study's participants that are still eligible (approved, not
 * withdrawn, terms not lapsed). A study without a lifecycle row (written before governance existed) keeps its
 * participants.
 */
export async function eligibleParticipants(db: Store, studyId: string, participants: string[], now: number): Promise<string[]> {
  const cur = await loadLifecycle(db, studyId);
  if (!cur) return participants;
  const ok = new Set(lc.eligibleSites(cur, now));
  return participants.filter((p) => ok.has(p));
}

// ---------------------------------------------------------------- the policy check before start

/** What the study records about privacy: SecAgg+ and (ε, δ), read from whichever field the spec carries. */
export function privacyOf(spec: StudySpec): { secagg: boolean; dp: { epsilon: number; delta: number } | null } {
  const s = spec as unknown as Record<string, any>;
  const p = (s.privacy ?? {}) as Record<string, any>;
  const secaggField = p.secagg ?? s.secagg;
  const secagg = secaggField === true || (typeof secaggField === 'object' && secaggField !== null && secaggField.enabled !== false);
  const dpField = p.dp ?? s.dp;
  const eps = Number(dpField?.epsilon ?? dpField?.targetEpsilon);
  const delta = Number(dpField?.delta ?? dpField?.targetDelta);
  const dp = dpField && Number.isFinite(eps) && Number.isFinite(delta) ? { epsilon: eps, delta } : null;
  return { secagg, dp };
}

/** Examples behind one update of a site holding `n`: a fixed number of steps sees at most steps × batch rows. */
export function examplesPerUpdate(spec: StudySpec, n: number): number {
  return spec.fit.localSteps !== undefined ? Math.min(n, spec.fit.localSteps * spec.fit.batchSize) : n;
}

export interface PolicyInputs {
  plan: StudyPlan;
  sites: ParticipatingSite[];
  /** Problems found before the rules could be evaluated (no jurisdiction, undeclared cohort, no placement). */
  extra: Violation[];
  /** Where each placed site would train, from a trial placement. */
  placements: Record<string, { resourceId: string; jurisdiction: string; reason: string }>;
  /** Sites with no jurisdiction (outside the consortium): no policy applies to them. */
  unchecked: string[];
}

export async function activeResources(store: Store): Promise<ComputeResource[]> {
  return (await store.listResources()).filter((r) => r.status === 'active').map((r) => r.spec as ComputeResource);
}

/** Jurisdictions whose compute may train a site's data, per its effective policy ("same" resolved). */
export function allowedCompute(site: { id: string; jurisdiction: string }, policies: Record<string, JurisdictionPolicy>): string[] {
  const eff = effectivePolicy({ id: site.id, jurisdiction: site.jurisdiction, examplesPerUpdate: 0, computeJurisdiction: site.jurisdiction }, policies);
  const list = eff?.rules.computeJurisdictions ?? ['same'];
  return [...new Set(list.map((j) => (j === 'same' ? site.jurisdiction : j)))];
}

export async function policyInputs(store: Store, spec: StudySpec, studyId: string, siteIds: string[], coordinatorJurisdiction: string | undefined,
  policies: Record<string, JurisdictionPolicy>, cohortOf: (siteId: string, dataset: string) => Promise<number | undefined>): Promise<PolicyInputs> {
  const members = new Map((await store.listMemberships()).map((m) => [m.id, m]));
  const resources = await activeResources(store);
  const { secagg, dp } = privacyOf(spec);
  const plan: StudyPlan = { id: studyId, coordinatorJurisdiction: coordinatorJurisdiction ?? 'an undeclared jurisdiction', secagg, dp };
  const sites: ParticipatingSite[] = [];
  const extra: Violation[] = [];
  const placements: PolicyInputs['placements'] = {};
  const unchecked: string[] = [];
  for (const id of siteIds) {
    const m = members.get(id);
    const name = m?.name ?? id;
    if (!m?.jurisdiction) {
      unchecked.push(name); // outside the consortium: no jurisdiction whose policy could apply
      continue;
    }
    const n = await cohortOf(id, spec.dataset);
    if (n === undefined) {
      extra.push({ jurisdiction: m.jurisdiction, site: name, rule: 'min-examples', source: 'jurisdiction', message: `site ${name} has not declared how many examples it holds for dataset ${spec.dataset}, so the examples behind its updates are unknown` });
    }
    let computeJurisdiction = m.jurisdiction;
    const profile = await store.getSiteProfile(id);
    if (profile?.compute.mode === 'placed') {
      const c = profile.compute;
      const r = place({ siteId: name, dataJurisdiction: m.jurisdiction, cpus: c.cpus ?? 1, gpus: c.gpus ?? 0, ramGiB: c.ramGiB ?? 1,
        ...(c.minGpuMemoryGiB !== undefined ? { minGpuMemoryGiB: c.minGpuMemoryGiB } : {}), ...(c.gpuType !== undefined ? { gpuType: c.gpuType } : {}), allowedJurisdictions: allowedCompute({ id: name, jurisdiction: m.jurisdiction }, policies) }, resources);
      if (r.ok) {
        computeJurisdiction = r.resource.jurisdiction;
        placements[id] = { resourceId: r.resource.id, jurisdiction: r.resource.jurisdiction, reason: r.reason };
      } else {
        // Reported here; the other rules are still checked (with the data's own jurisdiction as compute).
        extra.push({ jurisdiction: m.jurisdiction, site: name, rule: 'compute-location', source: 'jurisdiction', message: `${r.reason}${r.rejected.length ? ` (${r.rejected.map((x) => x.reason).join('; ')})` : ''}` });
      }
    }
    sites.push({ id: name, jurisdiction: m.jurisdiction, examplesPerUpdate: n === undefined ? Number.POSITIVE_INFINITY : examplesPerUpdate(spec, n), computeJurisdiction });
  }
  return { plan, sites, extra, placements, unchecked };
}

/** Every rule the study would break, [] when it may start. */
export async function checkStudyPolicy(store: Store, spec: StudySpec, studyId: string, siteIds: string[], coordinatorJurisdiction: string | undefined,
  policies: Record<string, JurisdictionPolicy>, cohortOf: (siteId: string, dataset: string) => Promise<number | undefined>): Promise<{ violations: Violation[]; inputs: PolicyInputs }> {
  const inputs = await policyInputs(store, spec, studyId, siteIds, coordinatorJurisdiction, policies, cohortOf);
  return { violations: [...inputs.extra, ...checkStudy(inputs.plan, inputs.sites, policies)], inputs };
}

export function describeViolations(v: Violation[]): string {
  return v.map((x) => `[${x.jurisdiction}${x.site ? ` / ${x.site}` : ''}] ${x.rule} (${x.source}): ${x.message}`).join('; ');
}

/** Records a refused start (event + audit) in its own transaction: the refusal is part of the study's history. */
export async function recordRefusal(deps: GovernanceDeps, studyId: string, actor: string, at: number, violations: Violation[]): Promise<void> {
  const data = { violations: violations.map((v) => ({ ...v })) } as unknown as JsonValue;
  await deps.store.transaction(async (tx) => {
    await tx.addEvent({ studyId, kind: 'study.refused', actor, data, at });
    if (deps.audit) await appendAudit(tx, deps.audit, { ts: at, actor, kind: 'study.refused', subject: studyId, data });
  });
}
