/**
 * The two sides of every query, and an in-process driver.
 *
 * - Site side: `answerQuery(task, input)` — the coordinator's `QueryTask` (the query, and for a Cox fit
 *   the β of this iteration), the site's table, policy and privacy account in; exactly the message that
 *   leaves the site out (plus the privacy spend to report, when it added noise).
 * - Coordinator side: `answerProblems(answer)` checks an arriving answer (its schema, and every count
 *   against the minimum the site states); `combineAnswers(query, answers)` gives the result.
 *   A Cox fit is iterative: `CoxNewton` holds the coordinator's state between rounds.
 * - `runQuery(query, sites)` drives both sides in one process (tests, `setu analytics`, the simulator):
 *   the same code as the federation, with answers passed by value.
 */
import { schemaProblems, CountAnswerSchema, HistogramAnswerSchema, MissingnessAnswerSchema, statisticsCountProblems, SummaryAnswerSchema, type CountAnswer, type HistogramAnswer, type MissingnessAnswer, type SummaryAnswer } from './answers.js';
import { QueryRefused } from './columns.js';
import type { PrivacySpend } from '../protocol/api.js';
import { combineCount, combineHistogram, combineMissingness, combineQuantiles, combineSummary, siteCount, siteHistogram, siteMissingness, siteSummary, type Answered, type CountResult, type HistogramResult, type MissingnessResult, type QuantilesResult, type SiteInput, type SummaryResult } from './statistics.js';
import type { KaplanMeierQuery, LogRankQuery, QuerySpec } from './spec.js';
import { combineCox, coxAnswerProblems, CoxNewton, CoxRiskSetsAnswerSchema, CoxStratumAnswerSchema, siteCox, type CoxAnswer, type CoxResult } from './survival/cox.js';
import { kaplanMeier, type KmCurve } from './survival/km.js';
import { logRank, type LogRankResult } from './survival/logrank.js';
import { poolTables, riskTableProblems, RiskTablesAnswerSchema, siteRiskTables, type RiskTablesAnswer } from './survival/risk-table.js';
import type { KmResult, LogRankQueryResult, QueryResult } from './results.js';
export type { KmResult, LogRankQueryResult, QueryResult } from './results.js';

export type SiteAnswer = CountAnswer | SummaryAnswer | HistogramAnswer | MissingnessAnswer | RiskTablesAnswer | CoxAnswer;

/** What the coordinator sends a site for one query (one round). */
export interface QueryTask {
  query: QuerySpec;
  /** Cox fits: the coefficients at which to evaluate this round's sums (absent: β = 0). */
  beta?: number[];
}

export function answerQuery(task: QueryTask, input: SiteInput): Answered<SiteAnswer> {
  const q = task.query;
  if (input.policy.allow && !input.policy.allow.includes(q.kind)) throw new QueryRefused('policy', `this site's policy does not allow ${q.kind} queries (it allows: ${input.policy.allow.join(', ') || 'none'})`);
  switch (q.kind) {
    case 'count':
      return siteCount(q, input);
    case 'summary':
      return siteSummary(q, input);
    case 'histogram':
    case 'quantiles':
      return siteHistogram(q, input);
    case 'missingness':
      return siteMissingness(q, input);
    case 'kaplan-meier':
      return { answer: siteRiskTables(input.table, input.policy, q.by, q.timeResolution) };
    case 'log-rank':
      return { answer: siteRiskTables(input.table, input.policy, q.group, q.timeResolution) };
    case 'cox':
      return { answer: siteCox(q, input.table, input.policy, task.beta) };
  }
}

const SCHEMAS = {
  count: CountAnswerSchema, summary: SummaryAnswerSchema, histogram: HistogramAnswerSchema, missingness: MissingnessAnswerSchema,
  'risk-tables': RiskTablesAnswerSchema, 'cox-stratum': CoxStratumAnswerSchema, 'cox-risk-sets': CoxRiskSetsAnswerSchema,
} as const;

/** The answer kind each query expects. */
export function answerKindOf(q: QuerySpec): SiteAnswer['kind'][] {
  switch (q.kind) {
    case 'quantiles':
      return ['histogram'];
    case 'kaplan-meier':
    case 'log-rank':
      return ['risk-tables'];
    case 'cox':
      return [(q.strata ?? 'site') === 'site' ? 'cox-stratum' : 'cox-risk-sets'];
    default:
      return [q.kind];
  }
}

/** Problems with an arriving answer to `q` (empty when it may be combined): schema, kind, and the count rule. */
export function answerProblems(q: QuerySpec, answer: unknown): string[] {
  const kind = (answer as { kind?: unknown } | null)?.kind;
  const want = answerKindOf(q);
  if (typeof kind !== 'string' || !(want as string[]).includes(kind)) return [`/kind: a ${q.kind} query expects a ${want.join(' or ')} answer, got ${JSON.stringify(kind)}`];
  const schemaIssues = schemaProblems(SCHEMAS[kind as SiteAnswer['kind']], answer);
  if (schemaIssues.length) return schemaIssues;
  const a = answer as SiteAnswer;
  if (a.kind === 'risk-tables') return riskTableProblems(a);
  if (a.kind === 'cox-stratum' || a.kind === 'cox-risk-sets') return coxAnswerProblems(a);
  return statisticsCountProblems(a);
}




function combineKm(q: KaplanMeierQuery, answers: Record<string, RiskTablesAnswer>): KmResult {
  const ids = Object.keys(answers).sort();
  const first = answers[ids[0]!]!;
  const conf = [q.confLevel ?? 0.95, q.confType ?? 'log'] as const;
  const curve = (tables: ReadonlyArray<RiskTablesAnswer['tables'][number]>) => {
    const present = tables.filter((t) => t !== null);
    return present.length ? kaplanMeier(poolTables(present), ...conf) : null;
  };
  const all = ids.flatMap((id) => answers[id]!.tables);
  const overall = curve(all);
  if (!overall) throw new Error('no site released a risk table (every group was below its minimum cell count)');
  return {
    kind: 'kaplan-meier', by: first.group, levels: first.levels, overall,
    groups: first.group === null ? [] : first.levels.map((_, g) => curve(ids.map((id) => answers[id]!.tables[g]!)) ?? kaplanMeier(poolTables([]), ...conf)),
    sites: Object.fromEntries(ids.map((id) => [id, { overall: curve(answers[id]!.tables), groups: first.group === null ? [] : answers[id]!.tables.map((t) => curve([t])) }])),
  };
}

function combineLogRank(q: LogRankQuery, answers: Record<string, RiskTablesAnswer>): LogRankQueryResult {
  const ids = Object.keys(answers).sort();
  const levels = answers[ids[0]!]!.levels;
  const strata = q.strata ?? 'none';
  const byGroup = (tables: ReadonlyArray<RiskTablesAnswer['tables'][number]>) => poolTables(tables.filter((t) => t !== null));
  const tables = strata === 'site'
    ? ids.map((id) => answers[id]!.tables.map((t) => byGroup([t])))
    : [levels.map((_, g) => byGroup(ids.map((id) => answers[id]!.tables[g]!)))];
  return { kind: 'log-rank', group: q.group, strata, ...logRank(levels, tables) };
}

/** Combines one round of answers (every kind but Cox, which iterates: see `CoxNewton` and `runQuery`). */
export function combineAnswers(q: QuerySpec, answers: Record<string, SiteAnswer>): QueryResult {
  if (Object.keys(answers).length === 0) throw new Error('no site answered');
  const as = <T>() => answers as Record<string, T>;
  switch (q.kind) {
    case 'count':
      return combineCount(as<CountAnswer>());
    case 'summary':
      return combineSummary(as<SummaryAnswer>());
    case 'histogram':
      return combineHistogram(as<HistogramAnswer>());
    case 'quantiles':
      return combineQuantiles(as<HistogramAnswer>(), q.probs);
    case 'missingness':
      return combineMissingness(as<MissingnessAnswer>());
    case 'kaplan-meier':
      return combineKm(q, as<RiskTablesAnswer>());
    case 'log-rank':
      return combineLogRank(q, as<RiskTablesAnswer>());
    case 'cox':
      throw new Error('combineAnswers: a Cox fit iterates; drive it with CoxNewton (runQuery does)');
  }
}

export class QueryFailed extends Error {
  constructor(readonly refusals: Record<string, string>) {
    super(`no site answered: ${Object.entries(refusals).map(([s, r]) => `site ${s}: ${r}`).join('; ')}`);
    this.name = 'QueryFailed';
  }
}

export interface QueryRun {
  result: QueryResult;
  /** Sites that refused, with their reasons; the result combines the others. */
  refusals: Record<string, string>;
  /** What each site released, per round (Cox: one entry per Newton step). */
  rounds: Array<Record<string, SiteAnswer>>;
  spends: Record<string, PrivacySpend[]>;
}

/** Runs a query over in-process sites: every answer is checked as the coordinator would check it. */
export function runQuery(q: QuerySpec, sites: Record<string, SiteInput>): QueryRun {
  const refusals: Record<string, string> = {};
  const spends: Record<string, PrivacySpend[]> = {};
  const rounds: QueryRun['rounds'] = [];
  let answering = Object.keys(sites).sort();
  const round = (task: QueryTask): Record<string, SiteAnswer> => {
    const out: Record<string, SiteAnswer> = {};
    for (const id of answering) {
      try {
        const a = answerQuery(task, sites[id]!);
        const problems = answerProblems(q, a.answer);
        if (problems.length) throw new Error(`site ${id} sent an answer the coordinator refuses: ${problems.join('; ')}`);
        out[id] = a.answer;
        if (a.spend) (spends[id] ??= []).push(a.spend);
      } catch (e) {
        if (!(e instanceof QueryRefused)) throw e;
        refusals[id] = e.message;
      }
    }
    answering = Object.keys(out).sort();
    if (answering.length === 0) throw new QueryFailed(refusals);
    rounds.push(out);
    return out;
  };
  if (q.kind !== 'cox') return { result: combineAnswers(q, round({ query: q })), refusals, rounds, spends };
  const ties = q.ties ?? 'efron';
  const coxRound = (task: QueryTask) => round(task) as Record<string, CoxAnswer>;
  const first = coxRound({ query: q });
  const names = Object.values(first)[0]!.names;
  const newton = new CoxNewton(names.length, { ...(q.tolerance !== undefined ? { tolerance: q.tolerance } : {}), ...(q.maxIterations !== undefined ? { maxIterations: q.maxIterations } : {}) });
  let answers = first, combined = combineCox(answers, ties, newton.beta());
  for (;;) {
    newton.observe(combined);
    if (newton.done) break;
    const beta = newton.beta();
    answers = coxRound({ query: q, beta });
    combined = combineCox(answers, ties, beta);
  }
  // n, events and the excluded sites do not depend on β.
  const result = newton.result(names, { n: combined.n, events: combined.events, ties, strata: q.strata ?? 'site', ...(q.confLevel !== undefined ? { confLevel: q.confLevel } : {}), excludedSites: combined.excluded, truncatedSites: combined.truncated });
  return { result, refusals, rounds, spends };
}
