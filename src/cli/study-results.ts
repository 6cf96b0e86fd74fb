/**
 * `setu study results <study> [--json | --csv] [--query NAME|N] [--plot FILE.svg] [--out DIR]`: an analytics study's
 * combined results as the coordinator committed them (GET /v1/studies/:id/results): a table per query with the sites
 * that refused it and why, CSV, and the plot that suits each result (Kaplan–Meier curves, a forest plot of hazard
 * ratios, a histogram: cli/analytics-report.ts, src/plot). The same report `setu analytics` prints locally.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { QueryResultEntry, StudyResults } from '../protocol/analytics.js';
import type { QueryResult } from '../analytics/query.js';
import { UsageError, operatorClient, operatorFlags, parse, studyId } from './args.js';
import { report } from './analytics-report.js';

const out = (s: string) => process.stdout.write(s + '\n');

/** A file-safe name for a query: its name, or kind-N. */
export function queryFileName(e: Pick<QueryResultEntry, 'name' | 'kind' | 'index'>): string {
  return (e.name ?? `${e.kind}-${e.index + 1}`).replace(/[^A-Za-z0-9._-]/g, '_');
}

/** The text of one query's entry: a header line, its refusals, and its table when done. */
export function renderEntry(e: QueryResultEntry): string {
  const lines = [`${queryFileName(e)} (${e.kind}) · ${e.status}${e.rounds.length ? ` · round${e.rounds.length === 1 ? '' : 's'} ${e.rounds.length === 1 ? e.rounds[0] : `${e.rounds[0]}–${e.rounds[e.rounds.length - 1]}`}` : ''}`];
  for (const [site, why] of Object.entries(e.refusals)) lines.push(`  site ${site} did not answer: ${why}`);
  if (e.error) lines.push(`  ${e.error}`);
  if (e.status === 'done' && e.result !== undefined) lines.push(report(queryFileName(e), e.result as QueryResult).text);
  return lines.join('\n');
}

function pick(r: StudyResults, ref: string | undefined): QueryResultEntry[] {
  if (ref === undefined) return r.queries;
  const byIndex = /^[0-9]+$/.test(ref) ? r.queries[Number(ref) - 1] : undefined;
  const e = byIndex ?? r.queries.find((q) => q.name === ref || queryFileName(q) === ref);
  if (!e) throw new UsageError(`--query: study ${r.id} has no query "${ref}" (its queries: ${r.queries.map((q, i) => `${i + 1} ${queryFileName(q)}`).join(', ')})`);
  return [e];
}

export async function studyResultsCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, {
    ...operatorFlags, csv: { type: 'boolean' }, query: { type: 'string' }, plot: { type: 'string' }, out: { type: 'string' },
  }, true);
  const id = positionals[0];
  if (!id) throw new UsageError('setu study results <study-id> [--json | --csv] [--query NAME|N] [--plot FILE.svg] [--out DIR]');
  if (v.json && v.csv) throw new UsageError('--json and --csv: choose one');
  const api = operatorClient(v);
  const r = await api.json<StudyResults>('GET', `/v1/studies/${encodeURIComponent(await studyId(api, id))}/results`);
  if (!r.queries.length) throw new UsageError(`study ${r.id} is not an analytics study (its spec has no analytics: block); see setu study status ${id}`);
  const chosen = pick(r, v.query);
  const done = chosen.filter((e) => e.status === 'done' && e.result !== undefined);
  const reports = new Map(done.map((e) => [e, report(queryFileName(e), e.result as QueryResult)]));
  if (v.json) out(JSON.stringify(v.query ? { ...r, queries: chosen } : r));
  else if (v.csv) {
    const files = [...reports.values()].flatMap((rep) => Object.entries(rep.csv));
    if (files.length !== 1) throw new UsageError(`--csv prints one table; ${files.length ? `these ${files.length} are available: ${files.map(([f]) => f).join(', ')}; choose with --query, or write them all with --out DIR` : 'no chosen query has a result yet'}`);
    process.stdout.write(files[0]![1]);
  } else out([`${r.name} (${r.id}) · ${r.status} · ${r.queries.filter((q) => q.status === 'done').length} of ${r.queries.length} queries done`, ...chosen.map(renderEntry)].join('\n\n'));
  const written: string[] = [];
  if (v.plot) {
    const svgs = [...reports.values()].flatMap((rep) => Object.entries(rep.svg));
    if (svgs.length !== 1) throw new UsageError(`--plot writes one plot; ${svgs.length ? `these ${svgs.length} are available: ${svgs.map(([f]) => f).join(', ')}; choose with --query, or write them all with --out DIR` : 'no chosen query has a plot (counts and summaries are tables)'}`);
    writeFileSync(v.plot, svgs[0]![1]);
    written.push(v.plot);
  }
  if (v.out) {
    const dir = resolve(v.out);
    mkdirSync(dir, { recursive: true });
    for (const rep of reports.values()) for (const [f, body] of Object.entries({ ...rep.csv, ...rep.svg })) {
      writeFileSync(join(dir, f), body);
      written.push(join(dir, f));
    }
  }
  if (written.length) process.stderr.write(`wrote ${written.join(', ')}\n`);
  return chosen.some((e) => e.status === 'failed') ? 1 : 0;
}
