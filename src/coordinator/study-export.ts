/**
 * A study's metrics as a table people and programs take home: one row per round and site (and one for all sites
 * together), `train_*` columns for that round's local training and `test_*` for the model after that round on each
 * site's own test split. Served by GET /v1/studies/:id/export (CSV or JSON), which `setu study export` and the
 * dashboard's export button use.
 */
import type { StudyDetail } from '../protocol/views.js';

/** One row of an export: a round, and a site or (site null) every site together. */
export interface ExportRow {
  round: number;
  /** The site's name, or null for the example-weighted mean over the sites that reported. */
  site: string | null;
  /** Metric columns: train_<name> (local training in this round), test_<name> (the model after this round on the sites' test splits). */
  values: Record<string, number>;
}

/** What `study export --format json` prints, and the CSV's content. */
export interface StudyExport {
  study: { id: string; name: string; status: string; rounds: number; strategy: string; sites: string[] };
  /** What each column means, so a file read months later still says it. */
  columns: Record<string, string>;
  rows: ExportRow[];
}

const PHASE_PREFIX: Record<string, string> = { fit: 'train', evaluate: 'test', secagg: 'secagg', prepare: 'prepare' };

/**
 * Metrics of a study as rows per round and site. `test_*` of round r are the model after round r as each site
 * measured it on its own test split (round 0: the initial model); `train_*` of round r are that round's local
 * training. The row without a site is the example-weighted mean over the sites that reported, not a pooled test.
 */
export function studyExport(d: StudyDetail): StudyExport {
  const rows = new Map<string, ExportRow>();
  const columns = new Set<string>();
  for (const m of d.metrics) {
    const col = `${PHASE_PREFIX[m.phase] ?? m.phase}_${m.name}`;
    columns.add(col);
    const key = `${m.round}\u0000${m.site ?? ''}`;
    const row = rows.get(key) ?? { round: m.round, site: m.site, values: {} };
    row.values[col] = m.value;
    rows.set(key, row);
  }
  const sorted = [...rows.values()].sort((a, b) => a.round - b.round || (a.site === null ? 1 : b.site === null ? -1 : a.site.localeCompare(b.site)));
  const describe = (c: string) => {
    const [prefix, ...rest] = c.split('_');
    const name = rest.join('_');
    if (prefix === 'train') return `${name} of this round's local training at the site (all sites: weighted by training examples)`;
    if (prefix === 'test') return `${name} of the global model after this round on the site's own test split (all sites: weighted by test examples)`;
    return `${name} (${prefix})`;
  };
  const cols = [...columns].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
  return {
    study: { id: d.id, name: d.name, status: d.status, rounds: d.spec.rounds, strategy: d.spec.strategy.name, sites: d.participants.map((p) => p.name) },
    columns: { round: 'round (0 = the initial model)', site: 'site name; empty = all sites together (an example-weighted mean of what each site measured)', ...Object.fromEntries(cols.map((c) => [c, describe(c)])) },
    rows: sorted.map((r) => ({ round: r.round, site: r.site, values: Object.fromEntries(cols.filter((c) => c in r.values).map((c) => [c, r.values[c]!])) })),
  };
}

const order = (c: string) => ['train_loss', 'test_loss', 'test_accuracy', 'test_auc'].indexOf(c) + 1 || 99;

/** RFC 4180: quote a field holding a comma, a quote or a line break. */
const csvField = (v: string) => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

export function exportCsv(e: StudyExport): string {
  const cols = Object.keys(e.columns).filter((c) => c !== 'round' && c !== 'site');
  const lines = [['round', 'site', ...cols].join(',')];
  for (const r of e.rows) lines.push([String(r.round), csvField(r.site ?? ''), ...cols.map((c) => (r.values[c] === undefined ? '' : String(r.values[c])))].join(','));
  return lines.join('\n') + '\n';
}

