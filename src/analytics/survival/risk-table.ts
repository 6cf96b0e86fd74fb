/**
 * A site's risk table, the one message behind Kaplan–Meier curves and log-rank tests: at each of
 * its distinct follow-up times t (ascending), the number at risk n(t) (follow-up ≥ t), the events
 * d(t) and the censorings c(t) at t, per group.
 *
 * The guard: a site releases its table only while n(t) ≥ minCellCount. At the first time where
 * fewer remain, it stops; the coordinator treats the subjects still at risk after the last released
 * time τ as censored at τ (`truncated`), so a pooled curve is exact up to the earliest τ of the
 * truncated sites and is the pooled curve of those censored data beyond it. A group with fewer than
 * minCellCount subjects sends no table (null).
 *
 * Rows missing the time, the event or the group are left out (as R's na.omit).
 */
import { Type, type Static } from '@sinclair/typebox';
import { QueryRefused, type SiteTable } from '../columns.js';
import { checkReleased, releaseRiskSet, type ReleasedCount } from '../release.js';
import type { AnalyticsPolicy } from '../spec.js';

const strict = { additionalProperties: false } as const;
const Released = Type.Unsafe<ReleasedCount>(Type.Integer({ minimum: 1 }));
const Count = Type.Integer({ minimum: 0 });

export const RiskTableSchema = Type.Object(
  {
    times: Type.Array(Type.Number({ minimum: 0 })),
    atRisk: Type.Array(Released),
    events: Type.Array(Count),
    censored: Type.Array(Count),
    /** The site stopped because fewer than minCellCount remained at risk after the last time. */
    truncated: Type.Boolean(),
  },
  strict,
);
export const RiskTablesAnswerSchema = Type.Object(
  {
    kind: Type.Literal('risk-tables'),
    minCellCount: Type.Integer({ minimum: 1 }),
    group: Type.Union([Type.String(), Type.Null()]),
    levels: Type.Array(Type.String()),
    tables: Type.Array(Type.Union([RiskTableSchema, Type.Null()])),
  },
  strict,
);
export type RiskTable = Static<typeof RiskTableSchema>;
export type RiskTablesAnswer = Static<typeof RiskTablesAnswerSchema>;

/** Per-subject data of one group, before anything is released. */
export interface Subjects {
  time: number[];
  event: number[];
}

/** The full (unguarded) risk table of some subjects; never leaves the site. */
export function fullRiskTable(s: Subjects): { times: number[]; atRisk: number[]; events: number[]; censored: number[] } {
  const order = s.time.map((_, i) => i).sort((a, b) => s.time[a]! - s.time[b]!);
  const times: number[] = [], atRisk: number[] = [], events: number[] = [], censored: number[] = [];
  let left = s.time.length;
  for (let k = 0; k < order.length; ) {
    const t = s.time[order[k]!]!;
    let d = 0, c = 0;
    while (k < order.length && s.time[order[k]!] === t) {
      if (s.event[order[k]!] === 1) d++;
      else c++;
      k++;
    }
    times.push(t);
    atRisk.push(left);
    events.push(d);
    censored.push(c);
    left -= d + c;
  }
  return { times, atRisk, events, censored };
}

/** The guarded table: entries while n(t) ≥ minCellCount; null when the group is too small to release at all. */
export function guardedRiskTable(s: Subjects, minCellCount: number): RiskTable | null {
  const full = fullRiskTable(s);
  const out: RiskTable = { times: [], atRisk: [], events: [], censored: [], truncated: false };
  for (let k = 0; k < full.times.length; k++) {
    const n = releaseRiskSet(full.atRisk[k]!, minCellCount);
    if (n === null) {
      out.truncated = true;
      break;
    }
    out.times.push(full.times[k]!);
    out.atRisk.push(n);
    out.events.push(full.events[k]!);
    out.censored.push(full.censored[k]!);
  }
  return out.times.length ? out : null;
}

/** Splits the site's complete survival rows by a categorical group (or one group 'all'). */
export function survivalGroups(table: SiteTable, group: string | undefined, resolution?: number): { levels: string[]; subjects: Subjects[] } {
  const { time, event } = table.survival(resolution);
  const g = group !== undefined ? table.categorical(group, 'group column') : undefined;
  const levels = g ? g.levels : ['all'];
  const subjects: Subjects[] = levels.map(() => ({ time: [], event: [] }));
  for (let r = 0; r < table.n; r++) {
    const t = time[r], e = event[r], code = g ? g.codes[r]! : 0;
    if (t === null || t === undefined || e === null || e === undefined || code < 0) continue;
    subjects[code]!.time.push(t);
    subjects[code]!.event.push(e);
  }
  if (subjects.every((s) => s.time.length === 0)) throw new QueryRefused('too-few', 'no row has a complete time, event' + (group ? ` and ${group}` : ''));
  return { levels, subjects };
}

export function siteRiskTables(table: SiteTable, policy: AnalyticsPolicy, group: string | undefined, resolution?: number): RiskTablesAnswer {
  if (policy.dp) throw new QueryRefused('policy', 'this site adds DP noise to every release and survival queries have no DP mechanism here; they need exact risk tables');
  const { levels, subjects } = survivalGroups(table, group, resolution);
  return { kind: 'risk-tables', minCellCount: policy.minCellCount, group: group ?? null, levels, tables: subjects.map((s) => guardedRiskTable(s, policy.minCellCount)) };
}

/** The coordinator's check of an arriving risk table: every released risk set at least the site's minimum, and consistent counts. */
export function riskTableProblems(a: RiskTablesAnswer): string[] {
  const out: string[] = [];
  a.tables.forEach((t, g) => {
    if (!t) return;
    const len = t.times.length;
    if (t.atRisk.length !== len || t.events.length !== len || t.censored.length !== len) out.push(`tables[${g}]: arrays of different lengths`);
    out.push(...checkReleased(t.atRisk, a.minCellCount, `tables[${g}].atRisk`, { zerosAllowed: false, noisy: false }));
    for (let k = 1; k < len; k++) {
      if (!(t.times[k]! > t.times[k - 1]!)) out.push(`tables[${g}].times[${k}]: times must increase`);
      if (t.atRisk[k] !== t.atRisk[k - 1]! - t.events[k - 1]! - t.censored[k - 1]!) out.push(`tables[${g}].atRisk[${k}]: does not follow from the previous time's events and censorings`);
    }
  });
  return out;
}

/** A pooled table over sites: at every time any site released, n = Σ n_s(t), d and c summed. */
export interface PooledTable {
  times: number[];
  atRisk: number[];
  events: number[];
  censored: number[];
  /** The earliest last-released time among sites that truncated (Infinity if none): the pooled table is exact up to here. */
  exactUntil: number;
}

/**
 * Pools site tables. A site's n_s(t) at a time between its own times is n_s at its next time (nobody
 * leaves in between); after its last time it is 0, so the subjects left in a truncated table count as
 * censored at its last time.
 */
export function poolTables(tables: ReadonlyArray<RiskTable | null>): PooledTable {
  const present = tables.filter((t): t is RiskTable => t !== null);
  const times = [...new Set(present.flatMap((t) => t.times))].sort((a, b) => a - b);
  const atRisk = new Array<number>(times.length).fill(0), events = new Array<number>(times.length).fill(0), censored = new Array<number>(times.length).fill(0);
  let exactUntil = Infinity;
  for (const t of present) {
    const last = t.times.length - 1;
    if (t.truncated) exactUntil = Math.min(exactUntil, t.times[last]!);
    let k = 0;
    times.forEach((u, i) => {
      while (k <= last && t.times[k]! < u) k++;
      if (k > last) return;
      atRisk[i]! += t.atRisk[k]!;
      if (t.times[k] === u) {
        events[i]! += t.events[k]!;
        // The rest of a truncated table leaves (censored) at its last time.
        censored[i]! += t.censored[k]! + (k === last && t.truncated ? t.atRisk[k]! - t.events[k]! - t.censored[k]! : 0);
      }
    });
  }
  return { times, atRisk, events, censored, exactUntil };
}
