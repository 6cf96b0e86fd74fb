/**
 * Operator commands: clients of the coordinator's public API, like the dashboard.
 *   setu site invite --name N [--institution I] [--jurisdiction IN]
 *   setu site list | revoke <id>
 *   setu study create --file study.yaml | start <id> | status <id> [--watch] | stop <id> | list
 */
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { HttpClient } from '../site/http.js';
import { StudySpecSchema, checkValue, type InviteResponse } from '../protocol/api.js';
import { UsageError, operatorClient, operatorFlags, parse } from './args.js';
import { f4, pct, table } from './table.js';

function client(v: Parameters<typeof operatorClient>[0]): HttpClient {
  return operatorClient(v);
}

const out = (s: string) => process.stdout.write(s + '\n');

export async function siteCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub === 'invite') {
    const { values } = parse(argv, { ...operatorFlags, name: { type: 'string' }, institution: { type: 'string' }, jurisdiction: { type: 'string' }, 'ttl-hours': { type: 'string' } });
    if (!values.name) throw new UsageError('setu site invite needs --name <site-name>');
    const r = await client(values).json<InviteResponse>('POST', '/v1/invites', {
      siteName: values.name,
      ...(values.institution ? { institution: values.institution } : {}),
      ...(values.jurisdiction ? { jurisdiction: values.jurisdiction } : {}),
      ...(values['ttl-hours'] ? { ttlHours: Number(values['ttl-hours']) } : {}),
    });
    if (values.json) out(JSON.stringify(r));
    else out(`invite for ${r.siteName} (one use, expires ${new Date(r.expiresAt).toISOString()}):\n${r.token}\n\nat the site: setu site enrol --config site.yaml --token ${r.token}`);
    return 0;
  }
  if (sub === 'list') {
    const { values } = parse(argv, operatorFlags);
    const sites = await client(values).json<{ id: string; name: string; institution: string | null; jurisdiction: string | null; status: string; online: boolean; lastSeenAt: number | null }[]>('GET', '/v1/sites');
    if (values.json) out(JSON.stringify(sites));
    else out(table(['site', 'id', 'institution', 'country', 'status', 'online', 'last seen'], sites.map((s) => [s.name, s.id, s.institution ?? '', s.jurisdiction ?? '', s.status, s.online ? 'yes' : 'no', s.lastSeenAt ? new Date(s.lastSeenAt).toISOString() : 'never']), ['l', 'l', 'l', 'l', 'l', 'l', 'l']));
    return 0;
  }
  if (sub === 'revoke') {
    const { values, positionals } = parse(argv, operatorFlags, true);
    if (!positionals[0]) throw new UsageError('setu site revoke <site-id or name>');
    const r = await client(values).json<{ id: string; name: string }>('POST', `/v1/sites/${encodeURIComponent(positionals[0])}/revoke`, {});
    out(values.json ? JSON.stringify(r) : `revoked site ${r.name} (${r.id}); its requests are refused from now on`);
    return 0;
  }
  throw new UsageError(`unknown: setu site ${sub ?? ''} (invite, enrol, start, list, revoke)`);
}

export function readStudyFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read study file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let spec: unknown;
  try {
    spec = YAML.parse(text);
  } catch (e) {
    throw new UsageError(`${file}: not valid YAML/JSON: ${(e as Error).message}`);
  }
  const problems = checkValue(StudySpecSchema, spec);
  if (problems.length) throw new UsageError(`${file}: ${problems.join('; ')}`);
  return spec;
}

interface StudyDetail {
  id: string;
  name: string;
  status: string;
  error: string | null;
  round: number;
  spec: { rounds: number; strategy: { name: string } };
  participants: { id: string; name: string }[];
  openRound: { round: number; kind: string; received: number; expected: number } | null;
  metrics: { round: number; site: string | null; phase: string; name: string; value: number }[];
  refusals: { round: number | null; site: string | null; reason: string }[];
}

export function renderStudy(s: StudyDetail): string {
  const lines = [`${s.name} (${s.id}) · ${s.status} · ${s.spec.strategy.name} · round ${s.round}/${s.spec.rounds} · ${s.participants.length} sites`];
  if (s.error) lines.push(`error: ${s.error}`);
  if (s.openRound) lines.push(`open: round ${s.openRound.round} (${s.openRound.kind}), ${s.openRound.received}/${s.openRound.expected} sites reported`);
  const rounds = [...new Set(s.metrics.map((m) => m.round))].sort((a, b) => a - b);
  const get = (r: number, phase: string, name: string) => s.metrics.find((m) => m.round === r && m.site === null && m.phase === phase && m.name === name)?.value;
  const rows = rounds.map((r) => [r, f4(get(r, 'fit', 'loss')), f4(get(r, 'evaluate', 'loss')), pct(get(r, 'evaluate', 'accuracy')), f4(get(r, 'evaluate', 'auc')), get(r, 'fit', 'sites') ?? '–']);
  if (rows.length) lines.push('', 'model version r: train loss of round r; test metrics of the model after round r (weighted over sites)', table(['round', 'train loss', 'test loss', 'test acc', 'test AUC', 'sites'], rows));
  if (s.refusals.length) lines.push('', 'refused updates:', ...s.refusals.map((r) => `  round ${r.round ?? '–'} ${r.site ?? '?'}: ${r.reason}`));
  return lines.join('\n');
}

export async function studyCommand(sub: string | undefined, argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...operatorFlags, file: { type: 'string' }, watch: { type: 'boolean' } }, true);
  const api = () => client(values);
  if (sub === 'create') {
    if (!values.file) throw new UsageError('setu study create --file study.yaml');
    const spec = readStudyFile(values.file);
    const r = await api().json<{ id: string }>('POST', '/v1/studies', spec);
    out(values.json ? JSON.stringify(r) : `created study ${r.id}; start it with: setu study start ${r.id}`);
    return 0;
  }
  if (sub === 'list') {
    const rows = await api().json<{ id: string; name: string; status: string; round: number; rounds: number; strategy: string }[]>('GET', '/v1/studies');
    out(values.json ? JSON.stringify(rows) : table(['id', 'name', 'status', 'strategy', 'round'], rows.map((r) => [r.id, r.name, r.status, r.strategy, `${r.round}/${r.rounds}`]), ['l', 'l', 'l', 'l', 'r']));
    return 0;
  }
  const id = positionals[0];
  if (!id) throw new UsageError(`setu study ${sub ?? '<create|list|start|status|stop>'} <study-id>`);
  if (sub === 'start' || sub === 'stop') {
    const r = await api().json<Record<string, unknown>>('POST', `/v1/studies/${encodeURIComponent(id)}/${sub}`, {});
    out(values.json ? JSON.stringify(r) : `study ${id}: ${r['status']}`);
    return 0;
  }
  if (sub === 'status') {
    for (;;) {
      const s = await api().json<StudyDetail>('GET', `/v1/studies/${encodeURIComponent(id)}`);
      if (values.json) out(JSON.stringify(s));
      else out(renderStudy(s) + '\n');
      if (!values.watch || ['completed', 'stopped', 'failed'].includes(s.status)) return s.status === 'failed' ? 1 : 0;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  throw new UsageError(`unknown: setu study ${sub}`);
}
