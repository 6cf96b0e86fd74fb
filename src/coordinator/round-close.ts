/**
 * When an open round closes, and how a study ends early, decided apart from the engine that acts on it.
 *
 * A round closes as soon as every site has answered: with a result, a refusal (its policy or budget said no) or a
 * task error (it could not run the task). Waiting for the deadline is only for sites that have not answered at
 * all. Once every site has answered, the round commits from the results it has if they reach the study's
 * `minSites` (a prepare round needs every site), and otherwise the study fails at once with a reason that names
 * each site's answer, instead of the lead waiting out the deadline to read "0 of 3 sites reported".
 *
 * SecAgg+ needs three participants: with two, the sum reveals each site's update to the other. Start refuses
 * fewer (study-checks.ts); a withdrawal (or lapsed terms) that leaves fewer stops the study before its next
 * fit round, with an audited reason that says who left and what remains.
 */
import type { StudySpec } from '../protocol/api.js';
import type { RoundProgress, RoundRow, Store, StudyRow, TaskRow } from '../store/store.js';
import { commitTransitions, loadLifecycle } from '../governance/study-governance.js';
import { stop as lifecycleStop } from '../governance/lifecycle.js';
import type { AuditKey } from '../governance/audit-store.js';
import type { EventBus } from './events.js';

export type CloseDecision = { action: 'wait' } | { action: 'commit' } | { action: 'fail'; reason: string };

/** The fewest results a round commits from: every site for a prepare round, else `minSites` (at most the sites asked). */
export function minResultsOf(spec: StudySpec, kind: string, tasks: number): number {
  return kind === 'prepare' ? tasks : Math.min(spec.minSites ?? tasks, tasks);
}

/**
 * What to do with an open (non-SecAgg+) round now, from the round's counts (Store.roundProgress), as the engine
 * decides on every tick: reading every task and update of the round each time made a round of N sites cost N²
 * rows (and every update's weights). The rows are read only for the reason of a failure.
 */
export async function decideFromProgress(deps: RoundCloseDeps, spec: StudySpec, open: RoundRow, p: RoundProgress, now: number): Promise<CloseDecision> {
  const minResults = minResultsOf(spec, open.kind, p.tasks);
  // A refused or failed task has no update (only an open task takes one), so the answered are the sum.
  const allAnswered = p.updates + p.closedWithoutResult >= p.tasks;
  const late = now > open.deadline_at;
  if (p.updates === p.tasks) return { action: 'commit' };
  if (allAnswered || late) {
    if (p.updates >= minResults && p.updates > 0) return { action: 'commit' };
    const need = open.kind === 'prepare' ? 'every site must check its data' : `at least ${minResults} needed${spec.minSites !== undefined ? ` (minSites ${spec.minSites})` : ''}`;
    const head = allAnswered
      ? `round ${open.round}: ${p.updates} of ${p.tasks} sites reported a result; ${need}`
      : `round ${open.round}: ${p.updates} of ${p.tasks} sites reported before the deadline; ${need}`;
    const tasks = await deps.store.listTasks(open.study_id, open.round);
    const reported = new Set((await deps.store.listUpdates(open.study_id, open.round)).map((u) => u.site_id));
    const why = await answersWithoutResult(deps.store, open, tasks, reported);
    return { action: 'fail', reason: why.length ? `${head}: ${why.join('; ')}` : head };
  }
  return { action: 'wait' };
}

export interface RoundCloseDeps {
  store: Store;
  bus: EventBus;
  audit?: AuditKey;
}

/** One phrase per site that gave no result: its refusal or its error, or that it never answered. */
async function answersWithoutResult(store: Store, open: RoundRow, tasks: TaskRow[], reported: Set<string>): Promise<string[]> {
  const names = new Map((await store.listSites()).map((s) => [s.id, s.name]));
  const errors = new Map((await store.listTaskErrors(open.study_id, open.round)).map((e) => [e.site_id, e]));
  const refusals = (await store.listRefusals(open.study_id)).filter((r) => r.round === open.round);
  const out: string[] = [];
  // By site name, as the lead reads them.
  for (const t of [...tasks].sort((x, y) => (names.get(x.site_id) ?? x.site_id).localeCompare(names.get(y.site_id) ?? y.site_id))) {
    if (reported.has(t.site_id)) continue;
    const name = names.get(t.site_id) ?? t.site_id;
    const err = errors.get(t.site_id);
    const refusal = [...refusals].reverse().find((r) => r.site_id === t.site_id && r.task_id === t.id);
    if (err) out.push(`${name} could not run its task (${err.code}): ${err.message}`);
    else if (t.status === 'refused' && refusal) out.push(`${name} refused: ${refusal.reason.replace(`site ${name} refused task ${t.id}: `, '')}`);
    else if (t.status === 'refused') out.push(`${name} refused its task`);
    else out.push(`${name} did not answer`);
  }
  return out;
}

/**
 * Why a SecAgg+ study cannot open its next fit round with these sites, or null when it can. Names the sites that
 * left (withdrew, with their reason, or whose terms lapsed) and those that remain.
 */
export async function secaggShortfall(store: Store, study: StudyRow, spec: StudySpec, eligible: string[], round: number): Promise<string | null> {
  if (!spec.privacy?.secagg || eligible.length >= 3) return null;
  const names = new Map((await store.listSites()).map((s) => [s.id, s.name]));
  const name = (id: string) => names.get(id) ?? id;
  const participants = JSON.parse(study.participants ?? '[]') as string[];
  const lifecycle = await loadLifecycle(store, study.id);
  const left = participants.filter((p) => !eligible.includes(p)).map((p) => {
    const a = lifecycle?.approvals[p];
    return a?.status === 'withdrawn' ? `${name(p)} withdrew${a.reason ? ` ("${a.reason}")` : ''}` : `${name(p)} is no longer eligible (${a?.status === 'approved' ? 'its data-use terms lapsed' : a?.status ?? 'not approved'})`;
  });
  const remain = eligible.length ? `${eligible.length} remain${eligible.length === 1 ? 's' : ''} (${eligible.map(name).join(', ')})` : 'none remains';
  const kept = round > 1 ? `; the model after round ${round - 1} is kept` : '';
  return `SecAgg+ needs at least 3 participants: ${left.join(', ')}, and ${remain}. With fewer than three the masked sum would reveal each site's update to the others, so the study stopped before round ${round}${kept}`;
}

/** Stops a running study for good with `reason`: status stopped (the reason in its error), lifecycle stopped, audited, in one transaction. */
export async function stopStudy(deps: RoundCloseDeps, study: StudyRow, reason: string, now: number): Promise<void> {
  const { store, bus, audit } = deps;
  await store.transaction(async (tx) => {
    await tx.transitionStudy(study.id, ['running'], 'stopped', now, { error: reason });
    const cur = await loadLifecycle(tx, study.id);
    if (cur?.state === 'running') await commitTransitions(tx, { store, audit }, cur, [lifecycleStop(cur, reason, { by: 'coordinator', at: now })]);
  });
  bus.emit({ type: 'study.status', studyId: study.id, status: 'stopped', error: reason });
}
