/**
 * An analytics task at the site: the study's query answered from this site's own table (its dataset file read
 * through the study's data schema) under this site's own analytics policy (site.yaml `analytics:`), with any DP
 * noise charged to the same privacy account as training (site/privacy.ts BUDGET_FILE). Only the answer that
 * `answerQuery` returns leaves the site: counts below the site's minimum are suppressed before it exists.
 *
 * A query the site will not or cannot answer (its policy forbids the kind, an unknown column, a type mismatch, a
 * budget that cannot afford the noise) becomes a refusal whose reason names the site and the cause.
 */
import type { ResultMeta, TaskMessage } from '../protocol/api.js';
import type { SiteConfig } from './config.js';
import type { SiteState } from './state.js';
import { readCsv } from './data/csv.js';
import { datasetFile } from './datasets.js';
import { BUDGET_FILE } from './privacy.js';
import { QueryRefused, SiteTable } from '../analytics/columns.js';
import { answerQuery } from '../analytics/query.js';
import { parsePolicy, type AnalyticsPolicy } from '../analytics/spec.js';
import type { SiteInput } from '../analytics/statistics.js';
import { PrivacyBudget } from '../privacy/budget.js';
import { CryptoNormal } from '../privacy/noise.js';

/** Without an `analytics:` block a site answers every query kind, suppresses counts below 5 and adds no noise. */
export const DEFAULT_ANALYTICS_POLICY: AnalyticsPolicy = { minCellCount: 5 };

export function analyticsPolicyOf(cfg: SiteConfig): AnalyticsPolicy {
  return cfg.analytics ? parsePolicy(cfg.analytics) : DEFAULT_ANALYTICS_POLICY;
}

/** The site's account for the study, when its site.yaml sets a budget (the same file DP training charges). */
function budgetOf(cfg: SiteConfig, state: SiteState, studyId: string): PrivacyBudget | undefined {
  const cap = cfg.privacy?.studies?.[studyId] ?? cfg.privacy?.budget;
  if (!cap) return undefined;
  const saved = state.readJson<ReturnType<PrivacyBudget['toJSON']>>(studyId, BUDGET_FILE);
  return saved ? PrivacyBudget.fromJSON({ ...saved, epsilon: cap.epsilon, delta: cap.delta }) : new PrivacyBudget(cap.epsilon, cap.delta);
}

export type AnalyticsOutcome = { meta: ResultMeta } | { refusal: string };

/** Answers the task, or says why not. The privacy account is persisted before the answer is returned for queuing. */
export function answerAnalyticsTask(cfg: SiteConfig, state: SiteState, task: TaskMessage, siteName: string, started = Date.now()): AnalyticsOutcome {
  const a = task.analytics;
  if (!a) return { refusal: 'analytics: the task carries no query' };
  if (!task.dataSchema) return { refusal: `analytics: study ${task.studyId} declares no data schema, so site ${siteName} cannot read its table for the query` };
  const policy = analyticsPolicyOf(cfg);
  const budget = budgetOf(cfg, state, task.studyId);
  try {
    const table = new SiteTable(readCsv(datasetFile(cfg, task.dataset, task.studyId)), task.dataSchema, siteName);
    const noise = new CryptoNormal();
    const input: SiteInput = { table, policy, noise, label: task.taskId, ...(budget ? { dp: { budget, noise } } : {}) };
    const out = answerQuery({ query: a.query, ...(a.beta ? { beta: a.beta } : {}) }, input);
    // Counted before the answer is queued: a release that may leave the site is never under-counted.
    if (out.spend && budget) state.write(task.studyId, BUDGET_FILE, JSON.stringify(budget.toJSON()));
    return { meta: { taskId: task.taskId, numExamples: 0, analytics: { answer: out.answer }, ...(out.spend ? { privacy: out.spend } : {}), durationMs: Date.now() - started } };
  } catch (e) {
    if (e instanceof QueryRefused) return { refusal: `analytics (${e.code}): site ${siteName} refuses the ${a.query.kind} query${a.name ? ` "${a.name}"` : ''}: ${e.message}` };
    throw e;
  }
}
