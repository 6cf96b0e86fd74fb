/**
 * Pages that read as reports: model cards (the very Markdown `setu model card` prints), compute by country and
 * institution in hours and minutes, and the audit log, paged and filtered, each entry in words.
 */
import { useEffect, useState } from 'preact/hooks';
import type { StudySummary } from '../../protocol/views.js';
import { ApiError, type Api } from './api.js';
import { fmtDuration, fmtNum, fmtTime, t } from './i18n.js';
import { GroupedBarChart } from './charts.js';
import { Loaded, useApi, type Load } from './common.js';
import { Markdown } from './markdown.js';
import { describeData, eventLabel, useNames } from './study.js';

// ---------------------------------------------------------------- model cards

/** Model cards exist per completed study (GET /v1/studies/:id/model-card); one card per completed study. */
export function ModelCards({ api }: { api: Api }) {
  const studies = useApi<StudySummary[]>(api, '/v1/studies', 0, 15_000);
  return (
    <section>
      <h1>{t('models.title')}</h1>
      <p class="muted">{t('models.intro')}</p>
      <Loaded load={studies} what="nav.models">
        {(list) => {
          const done = list.filter((s) => s.status === 'completed');
          if (done.length === 0) return <p class="notice empty">{t('models.none')}</p>;
          return (
            <>
              {done.map((s, i) => (
                <details class="card model-card" open={i === 0} data-study={s.id}>
                  <summary>
                    <strong>{s.name}</strong> <span class="muted small">{s.id}</span>
                  </summary>
                  <ModelCard api={api} id={s.id} />
                </details>
              ))}
            </>
          );
        }}
      </Loaded>
    </section>
  );
}

/** The card as the coordinator wrote it in Markdown (the same text `setu model card` prints), rendered. */
function ModelCard({ api, id }: { api: Api; id: string }) {
  const [load, setLoad] = useState<Load<string>>({ state: 'loading' });
  useEffect(() => {
    let live = true;
    api.fetchFile(`/v1/studies/${encodeURIComponent(id)}/model-card?format=markdown`).then(
      async (f) => {
        const text = await f.blob.text();
        if (live) setLoad({ state: 'ok', data: text });
      },
      (error: Error) => live && setLoad({ state: 'error', error }),
    );
    return () => {
      live = false;
    };
  }, [api, id]);
  return (
    <Loaded load={load} what="nav.models">
      {(md) => <Markdown text={md} testId="model-card" />}
    </Loaded>
  );
}

// ---------------------------------------------------------------- compute

/** GET /v1/compute/ledger (compute/ledger.ts): the usage summary and the contribution report. */
interface Totals {
  cpuSeconds: number;
  gpuSeconds: number;
  wallSeconds: number;
  tasks: number;
}
interface PartyRow {
  key: string;
  contributed: Totals;
  consumed: Totals;
}
interface Ledger {
  summary: { total: Totals; byStudy: { key: string; usage: Totals }[] };
  contribution: { countries: PartyRow[]; institutions: PartyRow[]; otherCountries: PartyRow[] };
}
interface Resource {
  id: string;
  name: string;
  institution: string;
  jurisdiction: string;
  scheduler: string;
  status: string;
  capacity: { cpus: number; gpus: { model: string; memoryGiB: number; count: number }[]; ramGiB: number };
  free: { cpus: number; gpus: number; ramGiB: number } | null;
  activeTasks: number;
}

export function Compute({ api }: { api: Api }) {
  const ledger = useApi<Ledger>(api, '/v1/compute/ledger', 0, 15_000);
  const resources = useApi<Resource[]>(api, '/v1/compute/resources', 0, 30_000);
  const institutions = useApi<{ id: string; name: string; jurisdiction: string }[]>(api, '/v1/institutions', 0, 60_000);
  const instName = (id: string) => (institutions.state === 'ok' ? institutions.data.find((i) => i.id === id || i.name === id) : undefined);
  return (
    <section>
      <h1>{t('compute.title')}</h1>
      <p class="muted">{t('compute.intro')}</p>
      <Loaded load={ledger} what="nav.compute">
        {(data) => {
          const c = data.contribution;
          const countries = [...c.countries, ...c.otherCountries];
          const total = data.summary.total;
          // The bars in the unit that suits the largest: 0.00 hours says nothing, 7200 seconds little more.
          const peak = Math.max(0, ...countries.map((r) => Math.max(r.contributed.cpuSeconds, r.consumed.cpuSeconds)));
          const [div, unitLabel] = peak >= 3600 ? [3600, t('compute.cpuHours')] : peak >= 120 ? [60, t('compute.cpuMinutes')] : [1, t('compute.cpuSeconds')];
          const unit = (s: number) => s / div;
          const chart = (id: string, title: string, rows: PartyRow[], label: (k: string) => string) =>
            rows.length > 0 && (
              <GroupedBarChart
                id={id}
                title={title}
                labels={rows.map((r) => label(r.key))}
                yTitle={unitLabel}
                datasets={[
                  { label: t('compute.contributed'), data: rows.map((r) => unit(r.contributed.cpuSeconds)), color: '#2a9d8f' },
                  { label: t('compute.consumed'), data: rows.map((r) => unit(r.consumed.cpuSeconds)), color: '#e76f51' },
                ]}
              />
            );
          const country = (k: string) => (k === 'IN' || k === 'JP' ? t(`country.${k}`) : k);
          const inst = (k: string) => instName(k)?.name ?? k;
          return (
            <>
              <p class="summary" data-testid="compute-total">
                {t('compute.total', { tasks: total.tasks, cpu: fmtDuration(total.cpuSeconds), gpu: fmtDuration(total.gpuSeconds) })}
              </p>
              <div class="charts">
                {chart('chart-compute-country', t('compute.byCountry'), countries, country)}
                {chart('chart-compute-institution', t('compute.byInstitution'), c.institutions, inst)}
              </div>
              <h2>{t('compute.byCountry')}</h2>
              <PartyTable rows={countries} label={country} testId="compute-countries" />
              <h2>{t('compute.byInstitution')}</h2>
              <PartyTable rows={c.institutions} label={(k) => `${inst(k)}${instName(k) ? ` (${instName(k)!.jurisdiction})` : ''}`} testId="compute-institutions" />
            </>
          );
        }}
      </Loaded>
      <h2>{t('compute.resources')}</h2>
      <Loaded load={resources} what="nav.compute">
        {(list) =>
          list.length === 0 ? (
            <p class="notice empty">{t('compute.noResources')}</p>
          ) : (
            <table class="wide" data-testid="compute-resources">
              <thead>
                <tr>
                  <th>{t('compute.resource')}</th>
                  <th>{t('compute.institution')}</th>
                  <th>{t('compute.country')}</th>
                  <th>{t('compute.scheduler')}</th>
                  <th>{t('compute.capacity')}</th>
                  <th>{t('compute.freeNow')}</th>
                  <th>{t('compute.activeTasks')}</th>
                </tr>
              </thead>
              <tbody>
                {list.map((r) => (
                  <tr>
                    <td>
                      {r.name} <div class="muted small">{r.id}</div>
                    </td>
                    <td>{instName(r.institution)?.name ?? r.institution}</td>
                    <td>{r.jurisdiction}</td>
                    <td>{r.scheduler}</td>
                    <td>{t('compute.capacityText', { cpus: r.capacity.cpus, gpus: r.capacity.gpus.map((g) => `${g.count}× ${g.model} ${g.memoryGiB} GiB`).join(', ') || '0', ram: r.capacity.ramGiB })}</td>
                    <td>{r.free ? t('compute.freeText', { cpus: r.free.cpus, gpus: r.free.gpus, ram: r.free.ramGiB }) : t('compute.notNow')}</td>
                    <td>{r.activeTasks}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </section>
  );
}

function PartyTable({ rows, label, testId }: { rows: PartyRow[]; label: (key: string) => string; testId: string }) {
  if (rows.length === 0) return <p class="notice empty">{t('compute.noUsage')}</p>;
  return (
    <table class="wide" data-testid={testId}>
      <thead>
        <tr>
          <th />
          <th>{t('compute.cpuContributed')}</th>
          <th>{t('compute.cpuConsumed')}</th>
          <th>{t('compute.gpuContributed')}</th>
          <th>{t('compute.gpuConsumed')}</th>
          <th>{t('compute.tasks')}</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr data-key={r.key}>
            <td>{label(r.key)}</td>
            <td>{fmtDuration(r.contributed.cpuSeconds)}</td>
            <td>{fmtDuration(r.consumed.cpuSeconds)}</td>
            <td>{fmtDuration(r.contributed.gpuSeconds)}</td>
            <td>{fmtDuration(r.consumed.gpuSeconds)}</td>
            <td>{r.contributed.tasks || r.consumed.tasks}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

// ---------------------------------------------------------------- audit

interface AuditEntry {
  seq: number;
  ts: number;
  actor: string;
  kind: string;
  subject: string;
  data: unknown;
}
/** GET /v1/audit?after=N&limit=M&kind=K&actor=A&study=S (the contract in the team's plan). */
interface AuditPage {
  count: number;
  head: string;
  entries: AuditEntry[];
  next?: number | null;
}

const PAGE = 50;
/** The kinds the audit chain records (governance/audit-chain.ts AUDIT_KINDS). */
const KINDS = ['invite.issued', 'site.enrolled', 'user.enrolled', 'key.changed', 'site.revoked', 'user.revoked', 'study.proposed', 'study.refused', 'study.approved', 'study.declined', 'study.withdrawn', 'study.started', 'study.completed', 'study.stopped', 'task.issued', 'update.accepted', 'update.refused', 'task.failed', 'aggregate.committed', 'privacy.spent', 'compute.registered', 'model.released'];

export function Audit({ api }: { api: Api }) {
  const [filters, setFilters] = useState({ kind: '', actor: '', study: '' });
  const [draft, setDraft] = useState(filters);
  // `after` undefined: the latest page (unfiltered) or the first (filtered); else the seq to page after.
  const [after, setAfter] = useState<number | undefined>(undefined);
  const verify = useApi<{ ok: boolean; count?: number; error?: string; reason?: string }>(api, '/v1/audit/verify', 0, 30_000);
  const probe = useApi<AuditPage>(api, '/v1/audit?limit=1', 0, 15_000);
  const filtered = !!(filters.kind || filters.actor || filters.study);
  const count = probe.state === 'ok' ? probe.data.count : undefined;
  const start = after ?? (filtered || count === undefined ? 0 : Math.max(0, count - PAGE));
  const q = new URLSearchParams({ after: String(start), limit: String(PAGE), ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v)) });
  const page = useApi<AuditPage>(api, count === undefined && !filtered ? null : `/v1/audit?${q}`, 0, 15_000);
  const names = useNames(api);
  const who = (id: string) => names.get(id) ?? id;
  const apply = (e: Event) => {
    e.preventDefault();
    setFilters(draft);
    setAfter(undefined);
  };
  return (
    <section>
      <h1>{t('audit.title')}</h1>
      {verify.state === 'ok' && (
        <div class={`notice ${verify.data.ok ? 'good' : 'error'}`} data-testid="audit-verify">
          {verify.data.ok ? t('audit.verified', { n: String(verify.data.count ?? '') }) : t('audit.broken', { why: String(verify.data.error ?? verify.data.reason ?? '') })}
        </div>
      )}
      <form class="filters card" onSubmit={apply} data-testid="audit-filters">
        <label>
          {t('audit.kind')}
          <select data-testid="audit-kind" value={draft.kind} onChange={(e) => setDraft({ ...draft, kind: (e.target as HTMLSelectElement).value })}>
            <option value="">{t('audit.allKinds')}</option>
            {KINDS.map((k) => (
              <option value={k}>{eventLabel(k)}</option>
            ))}
          </select>
        </label>
        <label>
          {t('audit.actor')}
          <input data-testid="audit-actor" value={draft.actor} onInput={(e) => setDraft({ ...draft, actor: (e.target as HTMLInputElement).value.trim() })} placeholder="user-…" />
        </label>
        <label>
          {t('audit.study')}
          <input data-testid="audit-study" value={draft.study} onInput={(e) => setDraft({ ...draft, study: (e.target as HTMLInputElement).value.trim() })} />
        </label>
        <button type="submit" data-testid="audit-apply">
          {t('audit.apply')}
        </button>
      </form>
      {filtered && page.state === 'error' && page.error instanceof ApiError && page.error.status === 400 ? (
        <p class="notice empty" data-testid="audit-unfiltered">
          {t('audit.filterUnsupported')} <span class="muted small">{page.error.message}</span>
        </p>
      ) : (
      <Loaded load={page.state === 'loading' && probe.state === 'error' ? probe : page} what="nav.audit">
        {(p) => {
          const list = p.entries;
          const first = list[0]?.seq;
          const last = list[list.length - 1]?.seq;
          const next = p.next !== undefined ? p.next : list.length === PAGE ? last ?? null : null;
          return (
            <>
              <div class="pager" data-testid="audit-pager" data-from={first ?? ''} data-to={last ?? ''}>
                <button data-testid="audit-older" disabled={start <= 0} onClick={() => setAfter(Math.max(0, start - PAGE))}>
                  ← {t('audit.older')}
                </button>
                <span class="muted">{list.length ? t('audit.range', { from: first!, to: last!, count: p.count }) : t('audit.noMatch')}</span>
                <button data-testid="audit-newer" disabled={next === null} onClick={() => next !== null && setAfter(next)}>
                  {t('audit.newer')} →
                </button>
              </div>
              {list.length > 0 && (
                <table class="wide" data-testid="audit-table">
                  <thead>
                    <tr>
                      <th>#</th>
                      <th>{t('audit.time')}</th>
                      <th>{t('audit.actor')}</th>
                      <th>{t('audit.kind')}</th>
                      <th>{t('audit.subject')}</th>
                      <th>{t('audit.data')}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {list.map((e) => (
                      <tr data-kind={e.kind}>
                        <td>{e.seq}</td>
                        <td class="nowrap">{fmtTime(e.ts)}</td>
                        <td title={e.actor}>{who(e.actor)}</td>
                        <td>{eventLabel(e.kind)}</td>
                        <td title={e.subject}>{who(e.subject)}</td>
                        <td class="small">{describeData(e.data, names)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
              {filtered && list.some((e) => (filters.kind && e.kind !== filters.kind) || (filters.actor && e.actor !== filters.actor)) && (
                <p class="notice empty" data-testid="audit-unfiltered">
                  {t('audit.filterUnsupported')}
                </p>
              )}
            </>
          );
        }}
      </Loaded>
      )}
      <p class="muted small">{t('audit.perPage', { n: fmtNum(PAGE) })}</p>
    </section>
  );
}
