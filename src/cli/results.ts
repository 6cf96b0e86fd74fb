/**
 * Taking a study's results home:
 *   setu study export <study> [--format csv|json] [--out F]    metrics per round and per site
 *   setu model download <study> [--round R] --out F             the global model, safetensors, digest checked
 *   setu model signoff <study> [--site S]                       a sign-off the jurisdiction policies ask for
 *   setu model release <study> [--status]                       the release, once every sign-off is in
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { decodeSafetensors } from '../protocol/safetensors.js';
import type { StudyDetail } from '../protocol/views.js';
import { UsageError, numFlag, operatorClient, operatorFlags, parse, studyId } from './args.js';
import { table } from './table.js';

const out = (s: string) => process.stdout.write(s + '\n');
const enc = encodeURIComponent;

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

export async function studyExportCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, { ...operatorFlags, format: { type: 'string' }, out: { type: 'string' } }, true);
  const id = positionals[0];
  if (!id) throw new UsageError('setu study export <study-id> [--format csv|json] [--out FILE]');
  const format = v.format ?? (v.json ? 'json' : 'csv');
  if (format !== 'csv' && format !== 'json') throw new UsageError(`--format must be csv or json, got "${format}"`);
  const api = operatorClient(v);
  const d = await api.json<StudyDetail>('GET', `/v1/studies/${enc(await studyId(api, id))}`);
  const e = studyExport(d);
  const text = format === 'json' ? JSON.stringify(e, null, 2) + '\n' : exportCsv(e);
  if (v.out) {
    writeFileSync(v.out, text);
    process.stderr.write(`wrote ${e.rows.length} rows (${e.study.sites.length} sites, rounds 0–${Math.max(0, ...e.rows.map((r) => r.round))}) of study ${e.study.id} to ${v.out}\n`);
  } else process.stdout.write(text);
  return 0;
}

interface ReleaseState {
  released: boolean;
  signoffs: { role: string; by: string; jurisdiction: string; site?: string }[];
  missing: { jurisdiction: string; site: string | null; message: string }[];
}

function describeRelease(id: string, r: ReleaseState): string {
  const lines = [`study ${id}: the model is ${r.released ? 'released' : 'not released'}`];
  if (r.signoffs.length) lines.push(table(['signed off by', 'role', 'for', 'jurisdiction'], r.signoffs.map((s) => [s.by, s.role, s.site ?? 'the consortium', s.jurisdiction || '–']), ['l', 'l', 'l', 'l']));
  else lines.push('no sign-off yet');
  if (!r.released) lines.push(r.missing.length ? `still needed:\n${r.missing.map((m) => `  [${m.jurisdiction}${m.site ? ` / ${m.site}` : ''}] ${m.message}`).join('\n')}` : `every sign-off is in: setu model release ${id}`);
  return lines.join('\n');
}

export async function modelResultsCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub === 'download') {
    const { values: v, positionals } = parse(argv, { ...operatorFlags, round: { type: 'string' }, out: { type: 'string' } }, true);
    const id = positionals[0];
    if (!id || !v.out) throw new UsageError('setu model download <study-id> [--round R] --out model.safetensors');
    const round = numFlag(v.round, 'round', true);
    if (round !== undefined && round < 0) throw new UsageError(`--round must be 0 or more, got ${round}`);
    const api = operatorClient(v);
    const r = await api.request('GET', `/v1/studies/${enc(await studyId(api, id))}/model${round !== undefined ? `?round=${round}` : ''}`);
    const digest = createHash('sha256').update(r.body).digest('hex');
    const claimed = r.headers.get('x-setu-digest');
    if (claimed && claimed !== digest) throw new Error(`the model arrived damaged: sha256 ${digest}, the coordinator says ${claimed}; nothing was written`);
    // Refuse to write what is not a model: the file must decode as the safetensors the study trains.
    const tensors = decodeSafetensors(r.body).weights;
    writeFileSync(v.out, r.body);
    const version = r.headers.get('x-setu-model-version') ?? '?';
    const shapes = Object.entries(tensors).map(([name, t]) => `${name} [${t.shape.join(', ')}]`).join(', ');
    if (v.json) out(JSON.stringify({ file: v.out, study: id, modelVersion: version, sha256: digest, bytes: r.body.byteLength, tensors: Object.fromEntries(Object.entries(tensors).map(([n, t]) => [n, t.shape])) }));
    else out(`wrote ${v.out}: model ${version} of study ${id} (${r.body.byteLength} bytes, sha256 ${digest}); tensors ${shapes}`);
    return 0;
  }
  if (sub === 'signoff') {
    const { values: v, positionals } = parse(argv, { ...operatorFlags, site: { type: 'string' } }, true);
    const id = positionals[0];
    if (!id) throw new UsageError('setu model signoff <study-id> [--site S]');
    const api = operatorClient(v);
    const r = await api.json<{ signoff: ReleaseState['signoffs'][number]; missing: ReleaseState['missing'] }>('POST', `/v1/studies/${enc(await studyId(api, id))}/signoff`, v.site ? { site: v.site } : {});
    if (v.json) out(JSON.stringify(r));
    else out(`signed off the model of study ${id} as ${r.signoff.role}${r.signoff.site ? ` for site ${r.signoff.site}` : ' for the consortium'}; ${r.missing.length ? `still needed: ${r.missing.map((m) => m.message).join('; ')}` : `every sign-off is in: setu model release ${id}`}`);
    return 0;
  }
  if (sub === 'release') {
    const { values: v, positionals } = parse(argv, { ...operatorFlags, status: { type: 'boolean' } }, true);
    const id = positionals[0];
    if (!id) throw new UsageError('setu model release <study-id> [--status]');
    const api = operatorClient(v);
    const sid = await studyId(api, id);
    if (v.status) {
      const r = await api.json<ReleaseState>('GET', `/v1/studies/${enc(sid)}/release`);
      out(v.json ? JSON.stringify(r) : describeRelease(id, r));
      return r.released ? 0 : 1;
    }
    const r = await api.json<{ released: boolean; model: string | null; digest: string | null }>('POST', `/v1/studies/${enc(sid)}/release`, {});
    out(v.json ? JSON.stringify(r) : `released model ${r.model} of study ${id} (sha256 ${r.digest}); the release and its sign-offs are in the audit log`);
    return 0;
  }
  throw new UsageError(`unknown: setu model ${sub ?? ''} (card, download, signoff, release)`);
}
