/**
 * Governance and compute-federation commands: clients of the coordinator's public API.
 *
 *   setu institution add --id ID --name NAME --kind hospital|university|compute_centre|company --jurisdiction IN
 *   setu institution list | link <institution-id> --site <site-name>
 *   setu study propose <id> | approve <id> --site S --terms "…" [--condition C]… [--expires ISO]
 *   setu study decline <id> --site S --reason "…" | withdraw <id> --site S --reason "…"
 *   setu study governance <id> | policy-check <id>
 *   setu compute list | add --file resource.yaml | queues | usage [--study ID] | ledger [--study ID] [--json]
 */
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { UsageError, operatorClient, operatorFlags, parse, studyId } from './args.js';
import { table } from './table.js';
import { INSTITUTION_KINDS } from '../store/governance.js';
import { hours, renderContribution, renderSummary, renderUsageRecords, usageRecordRows, type ContributionReport, type LedgerSummary, type ListedUsage } from '../compute/ledger.js';
import { csvOf } from '../analytics/export.js';

const out = (s: string) => process.stdout.write(s + '\n');
const enc = encodeURIComponent;

export async function institutionCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub === 'add') {
    const { values: v } = parse(argv, { ...operatorFlags, id: { type: 'string' }, name: { type: 'string' }, kind: { type: 'string' }, jurisdiction: { type: 'string' } });
    for (const k of ['id', 'name', 'kind', 'jurisdiction'] as const) if (!v[k]) throw new UsageError(`setu institution add needs --${k}`);
    if (!(INSTITUTION_KINDS as readonly string[]).includes(v.kind!)) throw new UsageError(`--kind must be one of ${INSTITUTION_KINDS.join(', ')}, got "${v.kind}"`);
    if (!/^[A-Z]{2}$/.test(v.jurisdiction!)) throw new UsageError(`--jurisdiction must be a two-letter country code such as IN or JP, got "${v.jurisdiction}"`);
    const r = await operatorClient(v).json<Record<string, unknown>>('POST', '/v1/institutions', { id: v.id, name: v.name, kind: v.kind, jurisdiction: v.jurisdiction });
    out(v.json ? JSON.stringify(r) : `institution ${v.id} (${v.name}, ${v.kind}, ${v.jurisdiction}) registered`);
    return 0;
  }
  if (sub === 'list') {
    const { values: v } = parse(argv, operatorFlags);
    const list = await operatorClient(v).json<{ id: string; name: string; kind: string; jurisdiction: string; sites: string[]; resources: string[] }[]>('GET', '/v1/institutions');
    if (v.json) out(JSON.stringify(list));
    else out(table(['id', 'name', 'kind', 'country', 'sites', 'compute'], list.map((i) => [i.id, i.name, i.kind, i.jurisdiction, i.sites.join(', ') || '–', i.resources.join(', ') || '–']), ['l', 'l', 'l', 'l', 'l', 'l']));
    return 0;
  }
  if (sub === 'link') {
    const { values: v, positionals } = parse(argv, { ...operatorFlags, site: { type: 'string' } }, true);
    if (!positionals[0] || !v.site) throw new UsageError('setu institution link <institution-id> --site <site-name>');
    const r = await operatorClient(v).json<{ site: string; institution: string; jurisdiction: string }>('POST', `/v1/institutions/${enc(positionals[0])}/sites`, { site: v.site });
    out(v.json ? JSON.stringify(r) : `site ${r.site} belongs to ${r.institution} (${r.jurisdiction})`);
    return 0;
  }
  throw new UsageError(`unknown: setu institution ${sub ?? ''} (add, list, link)`);
}

interface GovernanceView { id: string; state: string; approvals: { site: string; status: string; terms?: { purpose: string; conditions?: string[] }; reason?: string; by?: string; fromRound?: number }[]; eligible: string[]; events?: { kind: string; actor: string; at: number; data: unknown }[] }

function printGovernance(g: GovernanceView): void {
  out(`study ${g.id}: ${g.state}`);
  if (g.approvals.length) {
    out(table(['site', 'decision', 'by', 'terms / reason'], g.approvals.map((a) => [a.site, a.status + (a.fromRound !== undefined ? ` (from round ${a.fromRound})` : ''), a.by ?? '', a.terms ? [a.terms.purpose, ...(a.terms.conditions ?? [])].join('; ') : a.reason ?? '']), ['l', 'l', 'l', 'l']));
  }
  out(`eligible: ${g.eligible.join(', ') || 'none yet'}`);
}

export const STUDY_GOVERNANCE_COMMANDS = ['propose', 'approve', 'decline', 'withdraw', 'governance', 'policy-check'];

export async function studyGovernanceCommand(sub: string, argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, { ...operatorFlags, site: { type: 'string' }, terms: { type: 'string' }, condition: { type: 'string', multiple: true }, expires: { type: 'string' }, reason: { type: 'string' } }, true);
  const ref = positionals[0];
  if (!ref) throw new UsageError(`setu study ${sub} <study-id or name>`);
  const api = operatorClient(v);
  const id = await studyId(api, ref);
  let g: GovernanceView;
  switch (sub) {
    case 'propose':
      g = await api.json('POST', `/v1/studies/${enc(id)}/propose`, {});
      break;
    case 'approve': {
      if (!v.site || !v.terms) throw new UsageError('setu study approve <id> --site <site> --terms "<purpose the data may serve>" [--condition "…"]… [--expires 2027-01-01]');
      let expiresAt: number | undefined;
      if (v.expires) {
        expiresAt = Date.parse(v.expires);
        if (!Number.isFinite(expiresAt)) throw new UsageError(`--expires must be a date (ISO 8601), got "${v.expires}"`);
      }
      g = await api.json('POST', `/v1/studies/${enc(id)}/approve`, { site: v.site, terms: { purpose: v.terms, ...(v.condition?.length ? { conditions: v.condition } : {}), ...(expiresAt !== undefined ? { expiresAt } : {}) } });
      break;
    }
    case 'decline':
    case 'withdraw':
      if (!v.site || !v.reason) throw new UsageError(`setu study ${sub} <id> --site <site> --reason "…"`);
      g = await api.json('POST', `/v1/studies/${enc(id)}/${sub}`, { site: v.site, reason: v.reason });
      break;
    case 'governance':
      g = await api.json('GET', `/v1/studies/${enc(id)}/governance`);
      break;
    case 'policy-check': {
      const r = await api.json<PolicyCheck>('GET', `/v1/studies/${enc(id)}/policy-check`);
      out(v.json ? JSON.stringify(r) : renderPolicyCheck(id, r));
      return r.ok ? 0 : 1;
    }
    default:
      throw new UsageError(`unknown: setu study ${sub}`);
  }
  if (v.json) out(JSON.stringify(g));
  else printGovernance(g);
  return 0;
}

interface PolicyCheck {
  ok: boolean;
  violations: { jurisdiction: string; site: string | null; rule: string; source: string; message: string }[];
  remaining: { site: string | null; what: string }[];
  approvals: { site: string; status: string }[];
  unchecked?: string[];
}

/** What stands between a study and its start: the rules it breaks, then what is still to be done. */
export function renderPolicyCheck(id: string, r: PolicyCheck): string {
  const lines: string[] = [];
  if (r.violations.length) lines.push(`study ${id} breaks ${r.violations.length} jurisdiction rule(s):`, table(['jurisdiction', 'site', 'rule', 'from', 'why'], r.violations.map((x) => [x.jurisdiction, x.site ?? '', x.rule, x.source, x.message]), ['l', 'l', 'l', 'l', 'l']));
  else lines.push(`study ${id} meets the jurisdiction policy of every site that may take part (${r.approvals.map((a) => a.site).join(', ') || 'none'})`);
  if (r.unchecked?.length) lines.push(`no jurisdiction, so no policy applies: ${r.unchecked.join(', ')}`);
  if (r.remaining.length) lines.push('', 'still to do before it can start:', ...r.remaining.map((x) => `  - ${x.what}`));
  else if (!r.violations.length) lines.push(`nothing remains: setu study start ${id}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------- compute (online)

export const COMPUTE_ONLINE = ['list', 'add', 'queues', 'usage'];

export async function computeOnlineCommand(sub: string, argv: string[]): Promise<number> {
  const { values: v } = parse(argv, { ...operatorFlags, file: { type: 'string' }, study: { type: 'string' }, countries: { type: 'string' }, csv: { type: 'boolean' } });
  const api = operatorClient(v);
  const q = (o: Record<string, string | undefined>) => {
    const s = Object.entries(o).filter(([, x]) => x).map(([k, x]) => `${k}=${enc(x!)}`).join('&');
    return s ? `?${s}` : '';
  };
  if (sub === 'add') {
    if (!v.file) throw new UsageError('setu compute add --file resource.yaml (one resource, or a list)');
    let doc: unknown;
    try {
      doc = YAML.parse(readFileSync(v.file, 'utf8'));
    } catch (e) {
      throw new UsageError(`cannot read ${v.file}: ${(e as Error).message}`);
    }
    const list = Array.isArray(doc) ? doc : (doc as { resources?: unknown[] })?.resources ?? [doc];
    for (const r of list) {
      const res = await api.json<{ id: string; outcome: string }>('POST', '/v1/compute/resources', r);
      out(v.json ? JSON.stringify(res) : `resource ${res.id} ${res.outcome}`);
    }
    return 0;
  }
  if (sub === 'list') {
    const list = await api.json<{ id: string; name: string; institution: string; jurisdiction: string; scheduler: string; capacity: { cpus: number; gpus: { model: string; memoryGiB: number; count: number }[]; ramGiB: number }; free: { cpus: number; gpus: number; ramGiB: number } | null; activeTasks: number }[]>('GET', '/v1/compute/resources');
    if (v.json) out(JSON.stringify(list));
    else out(table(['id', 'institution', 'country', 'scheduler', 'CPUs', 'GPUs', 'RAM GiB', 'free CPU/GPU/RAM', 'active tasks'], list.map((r) => [
      r.id, r.institution, r.jurisdiction, r.scheduler, String(r.capacity.cpus), r.capacity.gpus.map((g) => `${g.count}×${g.model} ${g.memoryGiB}G`).join(', ') || '–',
      String(r.capacity.ramGiB), r.free ? `${r.free.cpus}/${r.free.gpus}/${r.free.ramGiB}` : 'not now', String(r.activeTasks)]), ['l', 'l', 'l', 'l', 'r', 'l', 'r', 'r', 'r']));
    return 0;
  }
  if (sub === 'queues') {
    const qs = await api.json<{ resource: string; scheduler: string; jurisdiction: string; active: { task: string; site: string; state: string; jobId: string | null }[]; finished: number }[]>('GET', '/v1/compute/queues');
    if (v.json) out(JSON.stringify(qs));
    else out(table(['resource', 'scheduler', 'country', 'active', 'finished', 'tasks (site: state job)'], qs.map((r) => [r.resource, r.scheduler, r.jurisdiction, String(r.active.length), String(r.finished),
      r.active.map((a) => `${a.site}: ${a.state}${a.jobId ? ` ${a.jobId}` : ''}`).join('; ') || '–']), ['l', 'l', 'l', 'r', 'r', 'l']));
    return 0;
  }
  if (sub === 'usage') {
    const r = await api.json<{ records: ListedUsage[]; summary: LedgerSummary }>('GET', `/v1/compute/usage${q({ study: v.study })}`);
    if (v.json) out(JSON.stringify(r));
    else if (v.csv) {
      const t = usageRecordRows(r.records);
      out(csvOf(t.header, t.rows).trimEnd());
    } else out(`${renderSummary(r.summary)}${r.records.length ? `\n\n${renderUsageRecords(r.records)}` : ''}`);
    return 0;
  }
  throw new UsageError(`unknown: setu compute ${sub}`);
}

/** `setu compute ledger` without --file: the coordinator's ledger, contributed against consumed, IN against JP. */
export async function computeLedgerCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, { ...operatorFlags, study: { type: 'string' }, countries: { type: 'string' }, file: { type: 'string' } });
  // Offline: the ledger from usage records in a file (compute.ts), no coordinator needed.
  if (v.file) return (await import('./compute.js')).main(['ledger', ...argv]);
  const qs = [v.study ? `study=${enc(v.study)}` : '', v.countries ? `countries=${enc(v.countries)}` : ''].filter(Boolean).join('&');
  const r = await operatorClient(v).json<{ summary: LedgerSummary; contribution: ContributionReport }>('GET', `/v1/compute/ledger${qs ? `?${qs}` : ''}`);
  if (v.json) out(JSON.stringify(r));
  else out(`${renderContribution(r.contribution)}\n\nTotal: ${r.summary.total.tasks} tasks, ${hours(r.summary.total.cpuSeconds)} CPU-h (${r.summary.total.cpuSeconds.toFixed(1)} CPU-s), ${hours(r.summary.total.gpuSeconds)} GPU-h`);
  return 0;
}

