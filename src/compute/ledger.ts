// Usage ledger: pure aggregation of UsageRecords. Compute is *contributed* by the institution/country owning the
// resource and *consumed* by the institution/country of the data-owning site; the two differ when, say, a Japanese
// hospital trains on a Japanese HPC centre's nodes. Storage is not here: the coordinator persists records in SQL.
import type { UsageRecord } from './types.js';

export interface Totals { cpuSeconds: number; gpuSeconds: number; wallSeconds: number; tasks: number }

export interface PartyRow {
  key: string;
  contributed: Totals;
  consumed: Totals;
  /** contributed − consumed: positive means this party gave more compute than its data used. */
  netCpuSeconds: number;
  netGpuSeconds: number;
}

export interface LedgerSummary {
  total: Totals;
  byStudy: { key: string; usage: Totals }[];
  byInstitution: PartyRow[];
  byCountry: PartyRow[];
}

const zero = (): Totals => ({ cpuSeconds: 0, gpuSeconds: 0, wallSeconds: 0, tasks: 0 });

function add(t: Totals, r: UsageRecord): void {
  t.cpuSeconds += r.cpuSeconds;
  t.gpuSeconds += r.gpuSeconds;
  t.wallSeconds += r.wallSeconds;
  t.tasks += 1;
}

function checkRecord(r: UsageRecord, i: number): void {
  for (const k of ['cpuSeconds', 'gpuSeconds', 'wallSeconds'] as const) {
    if (!Number.isFinite(r[k]) || r[k] < 0) throw new RangeError(`usage record ${i} (task ${r.taskId}): ${k} is ${r[k]}`);
  }
}

const byKey = <T extends { key: string }>(a: T, b: T) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

function parties(records: readonly UsageRecord[], giver: (r: UsageRecord) => string,
  taker: (r: UsageRecord) => string, only?: readonly string[]): PartyRow[] {
  const rows = new Map<string, { contributed: Totals; consumed: Totals }>();
  const row = (k: string) => rows.get(k) ?? rows.set(k, { contributed: zero(), consumed: zero() }).get(k)!;
  for (const k of only ?? []) row(k);
  for (const r of records) {
    add(row(giver(r)).contributed, r);
    add(row(taker(r)).consumed, r);
  }
  return [...rows].filter(([k]) => !only || only.includes(k)).map(([key, v]) => ({
    key, ...v,
    netCpuSeconds: v.contributed.cpuSeconds - v.consumed.cpuSeconds,
    netGpuSeconds: v.contributed.gpuSeconds - v.consumed.gpuSeconds,
  })).sort(byKey);
}

export function summarize(records: readonly UsageRecord[]): LedgerSummary {
  records.forEach(checkRecord);
  const total = zero();
  const studies = new Map<string, Totals>();
  for (const r of records) {
    add(total, r);
    add(studies.get(r.studyId) ?? studies.set(r.studyId, zero()).get(r.studyId)!, r);
  }
  return {
    total,
    byStudy: [...studies].map(([key, usage]) => ({ key, usage })).sort(byKey),
    byInstitution: parties(records, (r) => r.institution, (r) => r.siteInstitution),
    byCountry: parties(records, (r) => r.country, (r) => r.siteCountry),
  };
}

export interface ContributionReport {
  /** One row per country asked for (IN and JP by default), present even with no usage. */
  countries: PartyRow[];
  institutions: PartyRow[];
  /** Usage whose resource or site lies outside the countries asked for. */
  otherCountries: PartyRow[];
}

export function contributionReport(records: readonly UsageRecord[], countries: readonly string[] = ['IN', 'JP']):
  ContributionReport {
  records.forEach(checkRecord);
  const all = parties(records, (r) => r.country, (r) => r.siteCountry);
  return {
    countries: parties(records, (r) => r.country, (r) => r.siteCountry, countries),
    institutions: parties(records, (r) => r.institution, (r) => r.siteInstitution),
    otherCountries: all.filter((p) => !countries.includes(p.key)),
  };
}

// ---- rendering ------------------------------------------------------------------------------------------------

/** Seconds as hours with two decimals, the unit compute centres account in. */
export function hours(s: number): string { return (s / 3600).toFixed(2); }

/** A fixed-width table: by default the first column left-aligned, the rest right-aligned (they are numbers). */
export function renderTable(header: string[], rows: string[][], align: ('l' | 'r')[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const left = (i: number) => (align[i] ?? (i === 0 ? 'l' : 'r')) === 'l';
  const line = (cells: string[]) => cells.map((c, i) => (left(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
    .join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function partyTable(title: string, label: string, rows: PartyRow[]): string {
  const body = rows.map((p) => [p.key, hours(p.contributed.cpuSeconds), hours(p.contributed.gpuSeconds),
    hours(p.consumed.cpuSeconds), hours(p.consumed.gpuSeconds), hours(p.netCpuSeconds), hours(p.netGpuSeconds)]);
  return `${title}\n` + renderTable([label, 'given CPU-h', 'given GPU-h', 'used CPU-h',
    'used GPU-h', 'net CPU-h', 'net GPU-h'], body);
}

export function renderSummary(s: LedgerSummary): string {
  const studies = renderTable(['study', 'tasks', 'CPU-h', 'GPU-h', 'wall-h'],
    s.byStudy.map((x) => [x.key, String(x.usage.tasks), hours(x.usage.cpuSeconds), hours(x.usage.gpuSeconds),
      hours(x.usage.wallSeconds)]));
  return [`Studies\n${studies}`, partyTable('Institution usage', 'institution', s.byInstitution),
    partyTable('Country usage', 'country', s.byCountry),
    `Total: ${s.total.tasks} tasks, ${hours(s.total.cpuSeconds)} CPU-h, ${hours(s.total.gpuSeconds)} GPU-h`].join('\n\n');
}

export function renderContribution(c: ContributionReport): string {
  const parts = [partyTable('Country contribution (given = compute contributed, used = compute consumed)', 'country', c.countries),
    partyTable('Institution contribution', 'institution', c.institutions)];
  if (c.otherCountries.length) parts.push(partyTable('Other countries', 'country', c.otherCountries));
  return parts.join('\n\n');
}

/** A usage record as the coordinator lists it: the ledger's fields and how the task ran. */
export type ListedUsage = UsageRecord & { scheduler?: string; cpuBasis?: string; jobId?: string | null };

/**
 * One row per task, in seconds (GPU-seconds of short jobs vanish in hours): the per-task view of `setu compute
 * usage`, as a table and as CSV (the same header and cells).
 */
export function usageRecordRows(records: readonly ListedUsage[]): { header: string[]; rows: string[][] } {
  const s = (x: number) => x.toFixed(1);
  return {
    header: ['study', 'task', 'site', 'resource', 'scheduler', 'job', 'CPU-s', 'CPU basis', 'GPU-s', 'wall-s'],
    rows: records.map((r) => [r.studyId, r.taskId, r.siteId, r.resourceId, r.scheduler ?? '', r.jobId ?? '', s(r.cpuSeconds),
      r.cpuBasis ?? '', s(r.gpuSeconds), s(r.wallSeconds)]),
  };
}

export function renderUsageRecords(records: readonly ListedUsage[]): string {
  const { header, rows } = usageRecordRows(records);
  return `Tasks\n${renderTable(header, rows, ['l', 'l', 'l', 'l', 'l', 'l', 'r', 'l', 'r', 'r'])}`;
}
