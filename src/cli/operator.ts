/**
 * Operator commands: clients of the coordinator's public API, like the dashboard.
 *   setu site invite --name N [--institution I] [--jurisdiction IN]
 *   setu site list | revoke <id>
 *   setu study create --file study.yaml [--weights init.safetensors] | start <id> | status <id> [--watch] | stop <id> | list
 */
import { analyticsStudyDefaults } from '../protocol/analytics.js';
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { HttpClient } from '../site/http.js';
import { StudySpecSchema, checkValue, type InitialWeightsResponse, type InviteResponse, type StudySpec } from '../protocol/api.js';
import { ModelProblem, checkInitialWeights } from '../coordinator/study-model.js';
import { initialWeights } from '../coordinator/engine.js';
import { UsageError, numFlag, operatorClient, operatorFlags, parse, studyId, writeTokenFile } from './args.js';
import { f4, pct, table } from './table.js';
import type { AsyncView } from '../protocol/views.js';

function client(v: Parameters<typeof operatorClient>[0]): HttpClient {
  return operatorClient(v);
}

const out = (s: string) => process.stdout.write(s + '\n');

export async function siteCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub === 'invite') {
    const { values } = parse(argv, { ...operatorFlags, name: { type: 'string' }, institution: { type: 'string' }, jurisdiction: { type: 'string' }, 'ttl-hours': { type: 'string' }, out: { type: 'string' } });
    if (!values.name) throw new UsageError('setu site invite needs --name <site-name>');
    const r = await client(values).json<InviteResponse>('POST', '/v1/invites', {
      siteName: values.name,
      ...(values.institution ? { institution: values.institution } : {}),
      ...(values.jurisdiction ? { jurisdiction: values.jurisdiction } : {}),
      ...(values['ttl-hours'] ? { ttlHours: Number(values['ttl-hours']) } : {}),
    });
    if (values.out) writeTokenFile(values.out, r.token);
    if (values.json) out(JSON.stringify(values.out ? { ...r, token: undefined, tokenFile: values.out } : r));
    else if (values.out) out(`invite for ${r.siteName} (one use, expires ${new Date(r.expiresAt).toISOString()}) written to ${values.out} (mode 600); at the site: setu site enrol --config site.yaml --token-file <that file>`);
    else out(`invite for ${r.siteName} (one use, expires ${new Date(r.expiresAt).toISOString()}):\n${r.token}\n\nat the site: setu site enrol --config site.yaml --token ${r.token}`);
    return 0;
  }
  if (sub === 'list') {
    const { values } = parse(argv, operatorFlags);
    const sites = await client(values).json<{ id: string; name: string; institution: string | null; jurisdiction: string | null; status: string; online: boolean; lastSeenAt: number | null; trainer?: { kind: string } | null }[]>('GET', '/v1/sites');
    if (values.json) out(JSON.stringify(sites));
    else out(table(['site', 'id', 'institution', 'country', 'status', 'online', 'trainer', 'last seen'], sites.map((s) => [s.name, s.id, s.institution ?? '', s.jurisdiction ?? '', s.status, s.online ? 'yes' : 'no', s.trainer?.kind ?? 'undeclared', s.lastSeenAt ? new Date(s.lastSeenAt).toISOString() : 'never']), ['l', 'l', 'l', 'l', 'l', 'l', 'l', 'l']));
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
  // An analytics study file (the one `setu analytics run` reads) needs no training fields.
  spec = analyticsStudyDefaults(spec);
  const problems = checkValue(StudySpecSchema, spec);
  if (problems.length) throw new UsageError(`${file}: ${problems.join('; ')}`);
  return spec;
}

/** Reads a study's initial weights and checks them as the coordinator will (a UsageError saying what is wrong). */
function readWeightsFile(file: string, spec: StudySpec): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(file));
  } catch (e) {
    throw new UsageError(`cannot read the initial weights ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    checkInitialWeights(spec, bytes, spec.model.kind === 'custom' ? undefined : initialWeights(spec));
  } catch (e) {
    if (e instanceof ModelProblem) throw new UsageError(`${file}: ${e.message}`);
    throw e;
  }
  return bytes;
}

export interface StudyDetail {
  id: string;
  name: string;
  status: string;
  error: string | null;
  round: number;
  spec: { rounds: number; strategy: { name: string }; analytics?: { queries: unknown[] } };
  participants: { id: string; name: string }[];
  openRound: { round: number; kind: string; received: number; expected: number; refused?: number; failed?: number; progress?: { site: string; step?: number; of?: number; metrics?: Record<string, number>; message?: string }[] } | null;
  metrics: { round: number; site: string | null; phase: string; name: string; value: number }[];
  refusals: { round: number | null; site: string | null; reason: string }[];
  /** Tasks a site could not run (protocol/task-errors.ts); absent from coordinators before task errors. */
  taskErrors?: { round: number; site: string; code: string; message: string }[];
  /** An asynchronous study's versions, buffer and staleness (protocol/views.ts AsyncViewSchema). */
  async?: AsyncView;
}

/** An asynchronous study in a few lines: versions made, the buffer, who trains from which version, staleness of what was folded. */
function renderAsync(a: AsyncView): string[] {
  const h = a.staleness.histogram;
  const lines = [
    `asynchronous (FedBuff): version ${a.version}/${a.versions} · buffer ${a.buffered}/${a.bufferSize}${a.inFlight.length ? ` · training: ${a.inFlight.map((t) => `${t.site} (from v${t.baseVersion})`).join(', ')}` : ''}`,
    `staleness of folded updates: ${h.length ? `${h.map((b) => `${b.staleness}: ${b.count}`).join(' · ')} (mean ${f4(a.staleness.mean ?? undefined)}, max ${a.staleness.max})` : 'none folded yet'}${a.staleness.refused ? ` · ${a.staleness.refused} refused as too stale` : ''}`,
  ];
  return lines;
}

/** ", 1 failed, 2 refused" for an open round whose sites answered without a result. */
function answeredWithout(o: NonNullable<StudyDetail['openRound']>): string {
  return `${o.failed ? `, ${o.failed} failed` : ''}${o.refused ? `, ${o.refused} refused` : ''}`;
}

export function renderStudy(s: StudyDetail): string {
  // An analytics study runs queries, not training rounds: say how many, and where its results are.
  const what = s.spec.analytics ? `analytics: ${s.spec.analytics.queries.length} quer${s.spec.analytics.queries.length === 1 ? 'y' : 'ies'} · round ${s.round}` : `${s.spec.strategy.name} · round ${s.round}/${s.spec.rounds}`;
  const lines = [`${s.name} (${s.id}) · ${s.status} · ${what} · ${s.participants.length} sites`];
  if (s.error) lines.push(`error: ${s.error}`);
  if (s.spec.analytics) lines.push(`results (tables, CSV, plots): setu study results ${s.id}`);
  if (s.async) lines.push(...renderAsync(s.async));
  if (s.openRound) lines.push(`open: round ${s.openRound.round} (${s.openRound.kind}), ${s.openRound.received}/${s.openRound.expected} sites reported${answeredWithout(s.openRound)}`);
  // A site that cannot run its task says why at once: the open round's errors come first, by site.
  for (const e of (s.taskErrors ?? []).filter((x) => x.round === s.openRound?.round)) lines.push(`  ${e.site}: cannot run its task (${e.code}): ${e.message}`);
  // What each site's trainer last said (its progress lines, forwarded by the agent).
  for (const p of s.openRound?.progress ?? []) {
    const parts = [p.step !== undefined ? `step ${p.step}${p.of !== undefined ? `/${p.of}` : ''}` : '', ...Object.entries(p.metrics ?? {}).map(([k, v]) => `${k} ${f4(v)}`), p.message ?? ''];
    lines.push(`  ${p.site}: ${parts.filter(Boolean).join(' · ')}`);
  }
  const rounds = [...new Set(s.metrics.filter((m) => m.phase === 'fit' || m.phase === 'evaluate').map((m) => m.round))].sort((a, b) => a - b);
  const get = (r: number, site: string | null, phase: string, name: string) => s.metrics.find((m) => m.round === r && m.site === site && m.phase === phase && m.name === name)?.value;
  // Any other metric a site's own trainer reports (evaluation by the trainer) gets a column too.
  const own = [...new Set(s.metrics.filter((m) => m.site === null && m.phase === 'evaluate' && !['loss', 'accuracy', 'auc'].includes(m.name)).map((m) => m.name))].sort();
  const rows = rounds.map((r) => [r, f4(get(r, null, 'fit', 'loss')), f4(get(r, null, 'evaluate', 'loss')), pct(get(r, null, 'evaluate', 'accuracy')), f4(get(r, null, 'evaluate', 'auc')), ...own.map((n) => f4(get(r, null, 'evaluate', n))), get(r, null, 'fit', 'sites') ?? '–']);
  if (rows.length) {
    lines.push('', 'Per round, all sites together (example-weighted means of what each site measured on its own split):',
      'train loss = local training in round r; test = the global model after round r (round 0: the initial model)',
      table(['round', 'train loss', 'test loss', 'test acc', 'test AUC', ...own.map((n) => `test ${n}`), 'sites'], rows));
    // Per site, the latest model every site has measured: where the federation helps and where it does not.
    const last = [...rounds].reverse().find((r) => s.metrics.some((m) => m.round === r && m.site !== null && m.phase === 'evaluate'));
    if (last !== undefined) {
      const sites = [...new Set(s.metrics.filter((m) => m.site !== null).map((m) => m.site!))].sort();
      lines.push('', `Per site, the model after round ${last} on each site's own test split:`,
        table(['site', 'test loss', 'test acc', 'test AUC', `train loss (round ${last})`], sites.map((n) => [n, f4(get(last, n, 'evaluate', 'loss')), pct(get(last, n, 'evaluate', 'accuracy')), f4(get(last, n, 'evaluate', 'auc')), f4(get(last, n, 'fit', 'loss'))]), ['l']));
    }
  }
  if (s.refusals.length) lines.push('', 'refused updates:', ...s.refusals.map((r) => `  round ${r.round ?? '–'} ${r.site ?? '?'}: ${r.reason}`));
  if (s.taskErrors?.length) lines.push('', 'task errors (the site could not run its task):', ...s.taskErrors.map((e) => `  round ${e.round} ${e.site} (${e.code}): ${e.message}`));
  return lines.join('\n');
}

export async function studyCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub === 'create') {
    const { values } = parse(argv, { ...operatorFlags, file: { type: 'string' }, weights: { type: 'string' } });
    if (!values.file) throw new UsageError('setu study create --file study.yaml [--weights init.safetensors]');
    const spec = readStudyFile(values.file) as StudySpec;
    // The initial weights are checked here with the coordinator's own checks, so a bad file is refused before the
    // draft study exists (the upload itself is PUT /v1/studies/:id/initial-weights).
    const weights = values.weights ? readWeightsFile(values.weights, spec) : undefined;
    if (!weights && spec.model.kind === 'custom') throw new UsageError(`${values.file}: a custom model is defined by its initial weights: add --weights init.safetensors`);
    const api = client(values);
    const r = await api.json<{ id: string }>('POST', '/v1/studies', spec);
    let w: InitialWeightsResponse | undefined;
    if (weights) {
      try {
        w = (await api.request('PUT', `/v1/studies/${encodeURIComponent(r.id)}/initial-weights`, { type: 'application/octet-stream', data: weights })).json<InitialWeightsResponse>();
      } catch (e) {
        throw new UsageError(`created study ${r.id}, but the coordinator refused its initial weights: ${(e as Error).message}`);
      }
    }
    out(values.json ? JSON.stringify({ ...r, ...(w ? { initialWeights: w } : {}) })
      : `created study ${r.id} (a draft)${w ? ` with initial weights of ${w.tensors} tensors, ${w.parameters} parameters (sha256 ${w.digest.slice(0, 12)}…)` : ''}; next: setu study propose ${r.id} (consortium sites), or setu study start ${r.id}`);
    return 0;
  }
  if (sub === 'list') {
    const { values } = parse(argv, operatorFlags);
    const rows = await client(values).json<{ id: string; name: string; status: string; round: number; rounds: number; strategy: string }[]>('GET', '/v1/studies');
    out(values.json ? JSON.stringify(rows) : table(['id', 'name', 'status', 'strategy', 'round'], rows.map((r) => [r.id, r.name, r.status, r.strategy, `${r.round}/${r.rounds}`]), ['l', 'l', 'l', 'l', 'r']));
    return 0;
  }
  if (sub === 'start') {
    const { values, positionals } = parse(argv, operatorFlags, true);
    const id = positionals[0];
    if (!id) throw new UsageError('setu study start <study-id>');
    const api = client(values);
    const sid = await studyId(api, id);
    const r = await api.json<{ status: string; participants: number; unchecked?: string[] }>('POST', `/v1/studies/${encodeURIComponent(sid)}/start`, {});
    out(values.json ? JSON.stringify(r) : `study ${sid}: ${r.status} with ${r.participants} site(s); watch it with: setu study status ${id} --watch`);
    return 0;
  }
  if (sub === 'stop') {
    const { values, positionals } = parse(argv, { ...operatorFlags, reason: { type: 'string' } }, true);
    const id = positionals[0];
    if (!id) throw new UsageError('setu study stop <study-id> [--reason "…"]');
    const api = client(values);
    const sid = await studyId(api, id);
    const r = await api.json<{ status: string }>('POST', `/v1/studies/${encodeURIComponent(sid)}/stop`, values.reason ? { reason: values.reason } : {});
    out(values.json ? JSON.stringify(r) : `study ${sid}: ${r.status}`);
    return 0;
  }
  if (sub === 'status') {
    const { values, positionals } = parse(argv, { ...operatorFlags, watch: { type: 'boolean' }, interval: { type: 'string' } }, true);
    const id = positionals[0];
    if (!id) throw new UsageError('setu study status <study-id> [--watch]');
    const every = numFlag(values.interval, 'interval') ?? 2;
    if (!(every >= 0.1 && every <= 3600)) throw new UsageError(`--interval must be between 0.1 and 3600 seconds, got ${every}`);
    const api = client(values);
    const sid = await studyId(api, id);
    const view = new StatusView(process.stdout, !values.json && !!values.watch && !!process.stdout.isTTY);
    for (;;) {
      const s = await api.json<StudyDetail>('GET', `/v1/studies/${encodeURIComponent(sid)}`);
      const ended = ['completed', 'stopped', 'failed'].includes(s.status);
      if (values.json) out(JSON.stringify(s));
      else if (!values.watch || ended) view.show(renderStudy(s));
      else view.progress(renderStudy(s), progressLine(s));
      if (!values.watch || ended) return s.status === 'failed' ? 1 : 0;
      await new Promise((r) => setTimeout(r, every * 1000));
    }
  }
  throw new UsageError(`unknown: setu study ${sub ?? ''}`);
}

/** One line for a log: where the study is now. */
export function progressLine(s: StudyDetail): string {
  const open = s.openRound ? ` · round ${s.openRound.round} (${s.openRound.kind}) open, ${s.openRound.received}/${s.openRound.expected} sites reported${answeredWithout(s.openRound)}` : '';
  const errors = s.taskErrors?.length ? ` · ${s.taskErrors.length} task error(s), latest ${s.taskErrors.at(-1)!.site}: ${s.taskErrors.at(-1)!.code}` : '';
  if (s.async) return `${s.id} · ${s.status} · version ${s.async.version}/${s.async.versions} · buffer ${s.async.buffered}/${s.async.bufferSize} · ${s.async.inFlight.length} training${s.async.staleness.mean !== null ? ` · mean staleness ${f4(s.async.staleness.mean)}` : ''}${s.refusals.length ? ` · ${s.refusals.length} refused update(s)` : ''}`;
  return `${s.id} · ${s.status} · round ${s.round}/${s.spec.rounds}${open}${s.refusals.length ? ` · ${s.refusals.length} refused update(s)` : ''}${errors}`;
}

/**
 * `study status --watch`: on a terminal the whole status is redrawn in place (the previous drawing is erased, as
 * `watch` does); into a file or a pipe it prints one line each time the progress changes, then the final status.
 */
export class StatusView {
  private drawn = 0;
  private last = '';
  constructor(private readonly w: NodeJS.WritableStream & { rows?: number }, private readonly tty: boolean) {}

  progress(full: string, line: string): void {
    if (this.tty) return this.redraw(full);
    if (line !== this.last) this.w.write(line + '\n');
    this.last = line;
  }

  show(full: string): void {
    if (this.tty && this.drawn) return this.redraw(full);
    this.w.write(full + '\n');
  }

  private redraw(full: string): void {
    const stamp = `${full}\n\n(updated ${new Date().toLocaleTimeString()}; Ctrl-C stops watching, not the study)`;
    // Up to the first line drawn last time, and erase from there down; a drawing taller than the screen cannot be
    // reached by moving up, so then the screen is cleared instead.
    const erase = this.drawn === 0 ? '' : this.w.rows !== undefined && this.drawn >= this.w.rows ? '\x1b[H\x1b[2J' : `\x1b[${this.drawn}F\x1b[J`;
    this.w.write(erase + stamp + '\n');
    this.drawn = stamp.split('\n').length;
  }
}
