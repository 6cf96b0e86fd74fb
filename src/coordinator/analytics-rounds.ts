/**
 * The rounds of an analytics study (StudySpec.analytics): its queries run in order, each as one round
 * (statistics, Kaplan–Meier, log-rank) or one round per Newton step (Cox, until CoxNewton converges), through the
 * same tasks, approvals, refusals and audit as training. The round engine calls `openAnalyticsRound` when the study
 * has no open round (after its prepare round) and `driveAnalyticsRound` while one is open.
 *
 * Everything the engine must not lose is in the store: each round's task carries its query (and a Cox step's β), and
 * the progress (every query's entry, and a Cox fit's Newton state between rounds) is one KV value written in the
 * same transaction as the round's commit, so a restarted coordinator resumes at the last committed round. A query's
 * combined result commits with an `analytics.committed` audit entry naming each site's answer digest and the
 * result's digest; the privacy ledger moves when each answer is accepted (routes/agent.ts), as for training.
 *
 * Site answers are keyed by site name (the name is what results and refusals show), and combined in name order,
 * so the federation's result is exactly `runQuery` over the same tables keyed the same way.
 */
import type { Store, StudyRow, RoundRow, TaskRow } from '../store/store.js';
import type { AnalyticsSpec, QueryResultEntry, QuerySpec, StudyResults, AnalyticsTask } from '../protocol/analytics.js';
import type { ResultMeta, StudySpec } from '../protocol/api.js';
import { answerProblems, combineAnswers, type SiteAnswer } from '../analytics/query.js';
import { declaredColumns } from '../analytics/columns.js';
import { CoxNewton, combineCox, type CoxAnswer, type CoxNewtonState } from '../analytics/survival/cox.js';
import { appendAudit } from '../governance/audit-store.js';
import { commitTransitions, eligibleParticipants, loadLifecycle } from '../governance/study-governance.js';
import { complete as lifecycleComplete } from '../governance/lifecycle.js';
import { createHash } from 'node:crypto';
import type { DriverContext } from './driver-context.js';

const digestHex = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');


/** Where an analytics study's progress and results are kept (one JSON value, written with each round's commit). */
export const analyticsStateKey = (studyId: string) => `study:${studyId}:analytics`;

interface AnalyticsState {
  entries: QueryResultEntry[];
  /** A Cox fit between rounds: the Newton state, the design's column names, and the sites (ids) still answering. */
  cox?: { index: number; newton: CoxNewtonState; names: string[]; sites: string[] };
}

/** Task states that may still bring a result. */
const LIVE_TASK = ['issued', 'delivered', 'done'];

function freshState(spec: StudySpec): AnalyticsState {
  return { entries: spec.analytics!.queries.map((q, index) => ({ index, ...(q.name ? { name: q.name } : {}), kind: q.kind, status: 'pending', rounds: [], refusals: {} })) };
}

async function loadState(store: Store, study: StudyRow, spec: StudySpec): Promise<AnalyticsState> {
  const raw = await store.getKv(analyticsStateKey(study.id));
  return raw ? (JSON.parse(raw) as AnalyticsState) : freshState(spec);
}

/** The study's results as GET /v1/studies/:id/results serves them. */
export async function studyResults(store: Store, study: StudyRow): Promise<StudyResults> {
  const spec = JSON.parse(study.spec) as StudySpec;
  if (!spec.analytics) return { id: study.id, name: study.name, status: study.status, queries: [] };
  const state = await loadState(store, study, spec);
  const open = await store.openRoundOf(study.id);
  const running = open?.kind === 'analytics' ? state.entries.find((e) => e.status === 'pending') : undefined;
  return { id: study.id, name: study.name, status: study.status, queries: state.entries.map((e) => (e === running ? { ...e, status: 'running' as const } : e)) };
}

/** Opens the round of the next query (or the next Newton step of a Cox fit). */
export async function openAnalyticsRound(ctx: DriverContext, study: StudyRow, spec: StudySpec): Promise<void> {
  const { store } = ctx;
  const now = ctx.now();
  const state = await loadState(store, study, spec);
  const entry = state.entries.find((e) => e.status === 'pending');
  if (!entry) throw new Error('analytics: every query has committed but the study is still running');
  const q = spec.analytics!.queries[entry.index]!;
  const { name, ...rest } = q;
  const query = rest as QuerySpec;
  const global = await store.latestModelVersion(study.id);
  if (!global) throw new Error(`study ${study.id} has no model version`);
  const participants = JSON.parse(study.participants ?? '[]') as string[];
  let sites = await eligibleParticipants(store, study.id, participants, now);
  let beta: number[] | undefined;
  if (state.cox?.index === entry.index) {
    // A later Newton step asks the sites that answered the first one (as runQuery does), at the new β.
    const answering = new Set(state.cox.sites);
    sites = sites.filter((s) => answering.has(s));
    beta = CoxNewton.restore(state.cox.newton).beta();
  }
  if (sites.length === 0) throw new Error(`analytics query ${entry.index}: no participating site is still eligible (every site withdrew or its approval lapsed)`);
  const round = study.current_round + 1;
  const deadline = now + Math.round((spec.roundTimeoutSeconds ?? ctx.defaultTimeoutS) * 1000);
  const config: AnalyticsTask = { index: entry.index, ...(name ? { name } : {}), query, ...(beta ? { beta } : {}) };
  const tasks: TaskRow[] = sites.map((siteId) => ({
    id: `${study.id}.r${round}.${siteId}`, study_id: study.id, round, site_id: siteId, kind: 'analytics', model_version_id: global.id,
    config: JSON.stringify(config), status: 'issued', created_at: now, deadline_at: deadline, delivered_at: null, done_at: null,
  }));
  const audit = ctx.audit;
  await store.openRound(
    { study_id: study.id, round, status: 'open', kind: 'analytics', opened_at: now, deadline_at: deadline, committed_at: null, model_version_id: null },
    tasks,
    audit
      ? async (tx) => {
          for (const t of tasks) await appendAudit(tx, audit, { ts: now, actor: 'coordinator', kind: 'task.issued', subject: t.id, data: { study: study.id, round, kind: 'analytics', site: t.site_id, query: entry.index, queryKind: q.kind, ...(beta ? { beta } : {}) } });
        }
      : undefined,
  );
  ctx.log(`study ${study.id}: round ${round} (analytics: ${q.kind} query ${entry.index}${beta ? ', Newton step' : ''}) opened for ${tasks.length} sites`);
  ctx.bus.emit({ type: 'round.opened', studyId: study.id, round, kind: 'analytics', sites: tasks.length });
  ctx.bus.emit({ type: 'tasks', siteIds: tasks.map((t) => t.site_id), taskIds: tasks.map((t) => t.id), tasks });
}

/**
 * An open analytics round: when every task has answered or closed (refused, expired), or the deadline has passed,
 * combine the answers and commit. Sites that refused are listed with their reasons; a query no site answered fails
 * alone (its entry says why) and the study goes on to the next one.
 */
export async function driveAnalyticsRound(ctx: DriverContext, study: StudyRow, spec: StudySpec, open: RoundRow): Promise<void> {
  const { store } = ctx;
  const tasks = await store.listTasks(study.id, open.round);
  const updates = await store.listUpdates(study.id, open.round);
  const late = ctx.now() > open.deadline_at;
  const pending = tasks.filter((t) => LIVE_TASK.includes(t.status) && !updates.some((u) => u.task_id === t.id));
  if (pending.length && !late) return;
  const state = await loadState(store, study, spec);
  const config = JSON.parse(tasks[0]!.config) as AnalyticsTask;
  const entry = state.entries[config.index]!;
  const q = config.query;
  const nameOf = new Map<string, string>();
  for (const t of tasks) nameOf.set(t.site_id, (await store.getSite(t.site_id))?.name ?? t.site_id);
  // Who refused, and why (the site's own reason, or the coordinator's refusal of what it sent).
  const reasons = new Map<string, string>();
  for (const r of await store.listRefusals(study.id)) if (r.round === open.round && r.site_id && !reasons.has(r.site_id)) reasons.set(r.site_id, r.reason);
  // A site that could not run its task reports it as a task error (site/task-errors.ts).
  for (const e of await store.listTaskErrors(study.id, open.round)) if (!reasons.has(e.site_id)) reasons.set(e.site_id, `task error (${e.code}): ${e.message}`);
  for (const t of pending) if (!reasons.has(t.site_id)) reasons.set(t.site_id, `no answer before the round's deadline`);
  for (const t of tasks) if (!LIVE_TASK.includes(t.status) && !reasons.has(t.site_id)) reasons.set(t.site_id, `task ${t.status}`);
  // The answers, checked again (the route refused any with problems), in site-name order.
  const answers: Record<string, SiteAnswer> = {};
  const answered: { site: string; id: string; digest: string }[] = [];
  for (const u of [...updates].sort((a, b) => nameOf.get(a.site_id)!.localeCompare(nameOf.get(b.site_id)!))) {
    const answer = (JSON.parse(u.metrics) as ResultMeta).analytics?.answer;
    const problems = answerProblems(q, answer);
    if (problems.length) {
      reasons.set(u.site_id, `its answer was refused: ${problems.join('; ')}`);
      continue;
    }
    const site = nameOf.get(u.site_id)!;
    answers[site] = answer as SiteAnswer;
    answered.push({ site, id: u.site_id, digest: digestHex(Buffer.from(JSON.stringify(answer))) });
  }
  for (const [id, why] of reasons) if (!answered.some((a) => a.id === id)) entry.refusals[nameOf.get(id) ?? id] = why;
  entry.rounds.push(open.round);
  const minSites = Math.min(spec.minSites ?? 1, tasks.length);
  let result: unknown;
  if (answered.length < Math.max(1, minSites)) {
    entry.status = 'failed';
    entry.error = `${answered.length} of ${tasks.length} sites answered; at least ${Math.max(1, minSites)} needed`;
    delete state.cox;
  } else if (q.kind !== 'cox') {
    result = combineAnswers(q, answers);
  } else {
    const ties = q.ties ?? 'efron';
    const cox = state.cox?.index === config.index ? state.cox : undefined;
    const names = cox?.names ?? (Object.values(answers)[0] as CoxAnswer).names;
    const newton = cox ? CoxNewton.restore(cox.newton) : new CoxNewton(names.length, { ...(q.tolerance !== undefined ? { tolerance: q.tolerance } : {}), ...(q.maxIterations !== undefined ? { maxIterations: q.maxIterations } : {}) });
    const combined = combineCox(answers as Record<string, CoxAnswer>, ties, config.beta ?? newton.beta());
    newton.observe(combined);
    if (newton.done) {
      result = newton.result(names, { n: combined.n, events: combined.events, ties, strata: q.strata ?? 'site', ...(q.confLevel !== undefined ? { confLevel: q.confLevel } : {}), excludedSites: combined.excluded, truncatedSites: combined.truncated });
      delete state.cox;
    } else {
      state.cox = { index: config.index, newton: newton.state(), names, sites: answered.map((a) => a.id) };
    }
  }
  if (result !== undefined) {
    // Stored as JSON (NaN and ±Infinity, e.g. an open confidence bound, become null), digested as stored.
    const stored = JSON.parse(JSON.stringify(result)) as unknown;
    entry.result = stored;
    entry.digest = digestHex(Buffer.from(JSON.stringify(stored)));
    entry.status = 'done';
  }
  const last = entry.status !== 'pending' && state.entries.every((e) => e.status === 'done' || e.status === 'failed');
  const now = ctx.now();
  const audit = ctx.audit;
  await store.commitRound({
    studyId: study.id,
    round: open.round,
    now,
    advanceTo: open.round,
    metrics: [{ study_id: study.id, round: open.round, site_id: null, phase: 'analytics', name: 'sites', value: answered.length }],
    ...(last ? { studyStatus: 'completed' } : {}),
    inTx: async (tx) => {
      await tx.setKv(analyticsStateKey(study.id), JSON.stringify(state));
      if (audit) {
        await appendAudit(tx, audit, {
          ts: now, actor: 'coordinator', kind: 'analytics.committed', subject: `${study.id}.r${open.round}`,
          data: { study: study.id, round: open.round, query: config.index, queryKind: q.kind, status: entry.status, answers: answered.map(({ site, digest }) => ({ site, digest })), refusals: entry.refusals, ...(entry.digest ? { resultDigest: entry.digest } : {}), ...(entry.error ? { error: entry.error } : {}) },
        });
      }
      if (last) {
        const cur = await loadLifecycle(tx, study.id);
        if (cur) await commitTransitions(tx, { store, audit }, cur, [lifecycleComplete(cur, { by: 'coordinator', at: now }, { rounds: open.round, metrics: {} })]);
      }
    },
  });
  ctx.log(`study ${study.id}: round ${open.round} (analytics: ${q.kind} query ${config.index}) committed from ${answered.length} sites: ${entry.status}${entry.status === 'pending' ? ' (next Newton step)' : ''}`);
  ctx.bus.emit({ type: 'round.committed', studyId: study.id, round: open.round, kind: 'analytics', metrics: { sites: answered.length } });
  if (last) {
    ctx.bus.emit({ type: 'study.status', studyId: study.id, status: 'completed' });
    ctx.log(`study ${study.id}: completed`);
  }
}

/** The route's check of an arriving analytics answer: undefined when it may be stored. */
export function analyticsAnswerProblem(task: TaskRow, meta: ResultMeta): string | undefined {
  const config = JSON.parse(task.config) as AnalyticsTask;
  if (!meta.analytics) return `an analytics result must carry its answer (analytics.answer) for the ${config.query.kind} query`;
  const problems = answerProblems(config.query, meta.analytics.answer);
  return problems.length ? `the answer to the ${config.query.kind} query is refused: ${problems.join('; ')}` : undefined;
}

/**
 * An analytics study's problems known at creation, each naming the query and the field: it needs a data schema, and
 * every column a query names must be one the schema declares, of the type the query needs (sites would otherwise each
 * refuse it at task time).
 */
export function analyticsSpecProblems(spec: StudySpec): string[] {
  if (!spec.analytics) return [];
  if (!spec.dataSchema) return ["/dataSchema: an analytics study reads each site's table through its data schema; add one"];
  const cols = declaredColumns(spec.dataSchema);
  const out: string[] = [];
  const names = (want?: 'numeric' | 'categorical') => [...cols].filter(([, c]) => !want || c.type === want).map(([n]) => n).join(', ') || '(none)';
  (spec.analytics.queries as AnalyticsSpec['queries']).forEach((q, i) => {
    const at = `/analytics/queries/${i}`;
    const need = (field: string, col: string | undefined, want?: 'numeric' | 'categorical') => {
      if (col === undefined) return;
      const c = cols.get(col);
      if (!c) out.push(`${at}/${field}: the data schema has no column "${col}" (its ${want ? `${want} ` : ''}columns: ${names(want)})`);
      else if (want && c.type !== want) out.push(`${at}/${field}: column "${col}" is ${c.type}; a ${q.kind} query needs a ${want} column here (${names(want)})`);
    };
    switch (q.kind) {
      case 'count': (q.by ?? []).forEach((c, j) => need(`by/${j}`, c, 'categorical')); break;
      case 'summary': need('column', q.column, 'numeric'); need('by', q.by, 'categorical'); break;
      case 'histogram': case 'quantiles': need('column', q.column, 'numeric'); break;
      case 'missingness': (q.columns ?? []).forEach((c, j) => need(`columns/${j}`, c)); break;
      case 'kaplan-meier': need('by', q.by, 'categorical'); break;
      case 'log-rank': need('group', q.group, 'categorical'); break;
      case 'cox': q.covariates.forEach((c, j) => need(`covariates/${j}`, c)); break;
    }
    if ((q.kind === 'kaplan-meier' || q.kind === 'log-rank' || q.kind === 'cox') && spec.dataSchema!.task.kind !== 'survival') {
      out.push(`${at}/kind: a ${q.kind} query needs a survival task in the data schema (its task is ${spec.dataSchema!.task.kind})`);
    }
  });
  return out;
}
