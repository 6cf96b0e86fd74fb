/** The dashboard's pages. Each reads the public API with the logged-in user's credential. */
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { ComponentChildren } from 'preact';
import type { SiteView, StudyDetail, StudySummary, StreamEvent } from '../../protocol/views.js';
import { Api, ApiError } from './api.js';
import { fmtAgo, fmtNum, fmtTime, t, type Key } from './i18n.js';
import { BarChart, GLOBAL_COLOR, GroupedBarChart, LineChart, siteColor, type Series } from './charts.js';

type Load<T> = { state: 'loading' } | { state: 'ok'; data: T } | { state: 'error'; error: ApiError | Error };

/** Fetches `path` now, again whenever `version` changes, and every `everyMs` if given. */
function useApi<T>(api: Api, path: string | null, version = 0, everyMs?: number): Load<T> {
  const [v, setV] = useState<Load<T>>({ state: 'loading' });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!everyMs) return;
    const h = setInterval(() => setTick((n) => n + 1), everyMs);
    return () => clearInterval(h);
  }, [everyMs]);
  useEffect(() => {
    if (path === null) return;
    let live = true;
    api.get<T>(path).then(
      (data) => live && setV({ state: 'ok', data }),
      (error: Error) => live && setV({ state: 'error', error }),
    );
    return () => {
      live = false;
    };
  }, [api, path, version, tick]);
  return v;
}

/** What a failed load says: 403 names the page the role does not cover, 404 says the API is not there yet. */
function Failure({ error, what }: { error: Error; what: Key }) {
  if (error instanceof ApiError && error.status === 403)
    return (
      <div class="notice forbidden" data-testid="forbidden">
        <strong>{t('error.forbidden', { what: t(what) })}</strong>
        <p class="muted">{error.message}</p>
      </div>
    );
  if (error instanceof ApiError && error.status === 404)
    return (
      <div class="notice empty" data-testid="not-available">
        {t('error.notAvailable', { what: t(what) })}
      </div>
    );
  return (
    <div class="notice error">
      {t('error.failed')}: {error.message}
    </div>
  );
}

function Loaded<T>({ load, what, children }: { load: Load<T>; what: Key; children: (data: T) => ComponentChildren }) {
  if (load.state === 'loading') return <p class="muted">{t('common.loading')}</p>;
  if (load.state === 'error') return <Failure error={load.error} what={what} />;
  return <>{children(load.data)}</>;
}

function Dot({ on }: { on: boolean }) {
  return <span class={`dot ${on ? 'on' : 'off'}`} aria-hidden="true" />;
}

// ---------------------------------------------------------------- overview

const COUNTRY_GROUPS = ['IN', 'JP'] as const;
const countryOf = (j: string | null | undefined) => (COUNTRY_GROUPS.includes(j as 'IN') ? j! : 'other');

/** GET /v1/institutions (governance); the overview still works from the sites alone without it. */
interface InstitutionView {
  id: string;
  name: string;
  kind: string;
  jurisdiction: string;
  sites: string[];
  resources?: string[];
}

export function Overview({ api }: { api: Api }) {
  const sites = useApi<SiteView[]>(api, '/v1/sites', 0, 10_000);
  const insts = useApi<InstitutionView[]>(api, '/v1/institutions', 0, 30_000);
  return (
    <section>
      <h1>{t('overview.title')}</h1>
      <Loaded load={sites} what="nav.overview">
        {(list) => {
          const institutions = insts.state === 'ok' ? insts.data : [];
          const byName = new Map(list.map((s) => [s.name, s]));
          const claimed = new Set(institutions.flatMap((i) => i.sites));
          // One card per country: its institutions (with their sites), then sites no institution claims, grouped by
          // the institution name the invite gave them.
          const groups = new Map<string, { title: string; kind?: string; sites: SiteView[]; resources?: number }[]>();
          for (const g of [...COUNTRY_GROUPS, 'other']) groups.set(g, []);
          for (const i of institutions) {
            groups.get(countryOf(i.jurisdiction))!.push({ title: i.name, kind: i.kind, sites: i.sites.map((n) => byName.get(n)).filter((x): x is SiteView => !!x), resources: i.resources?.length ?? 0 });
          }
          for (const [inst, ss] of byInstitution(list.filter((s) => !claimed.has(s.name)))) {
            for (const c of new Set(ss.map((s) => countryOf(s.jurisdiction)))) groups.get(c)!.push({ title: inst ?? t('overview.noInstitution'), sites: ss.filter((s) => countryOf(s.jurisdiction) === c) });
          }
          const online = list.filter((s) => s.online).length;
          const instCount = institutions.length || new Set(list.map((s) => s.institution).filter((x) => x !== null)).size;
          return (
            <>
              <p class="summary" data-testid="site-summary">
                {t('overview.summary', { sites: list.length, online, institutions: instCount })}
              </p>
              <div class="countries">
                {[...groups].map(([country, items]) => (
                  <div class="country card" data-country={country}>
                    <h2>
                      {t(`country.${country}` as Key)} <span class="muted">({items.reduce((n, i) => n + i.sites.length, 0)})</span>
                    </h2>
                    {items.length === 0 ? (
                      <p class="muted">{t('overview.noSites')}</p>
                    ) : (
                      items.map((it) => (
                        <div class="institution">
                          <h3>
                            {it.title} {it.kind && <span class="muted small">· {t(`kind.${it.kind}` as Key)}{it.resources ? ` · ${t('overview.resources', { n: it.resources })}` : ''}</span>}
                          </h3>
                          {it.sites.length === 0 ? (
                            <p class="muted small">{t('overview.noSitesHere')}</p>
                          ) : (
                            <table>
                              <thead>
                                <tr>
                                  <th>{t('sites.name')}</th>
                                  <th>{t('sites.state')}</th>
                                  <th>{t('sites.lastSeen')}</th>
                                </tr>
                              </thead>
                              <tbody>
                                {it.sites.map((s) => (
                                  <tr data-site={s.name}>
                                    <td>{s.name}</td>
                                    <td>
                                      <Dot on={s.online} /> {s.status !== 'active' ? t('sites.revoked') : s.online ? t('sites.online') : t('sites.offline')}
                                    </td>
                                    <td title={fmtTime(s.lastSeenAt)}>{fmtAgo(s.lastSeenAt)}</td>
                                  </tr>
                                ))}
                              </tbody>
                            </table>
                          )}
                        </div>
                      ))
                    )}
                  </div>
                ))}
              </div>
            </>
          );
        }}
      </Loaded>
    </section>
  );
}

function byInstitution(sites: SiteView[]): [string | null, SiteView[]][] {
  const m = new Map<string | null, SiteView[]>();
  for (const s of sites) m.set(s.institution, [...(m.get(s.institution) ?? []), s]);
  return [...m];
}

// ---------------------------------------------------------------- studies

export function Studies({ api }: { api: Api }) {
  // Refetched when the stream reports a round or status change; the slow poll covers studies created meanwhile.
  const [version, setVersion] = useState(0);
  useEffect(
    () =>
      api.follow(
        undefined,
        (e) => {
          if (e.type === 'round.committed' || e.type === 'study.status') setVersion((v) => v + 1);
        },
        () => {},
      ),
    [api],
  );
  const studies = useApi<StudySummary[]>(api, '/v1/studies', version, 30_000);
  return (
    <section>
      <h1>{t('studies.title')}</h1>
      <Loaded load={studies} what="nav.studies">
        {(list) =>
          list.length === 0 ? (
            <p class="notice empty">{t('studies.none')}</p>
          ) : (
            <table class="wide" data-testid="studies-table">
              <thead>
                <tr>
                  <th>{t('studies.name')}</th>
                  <th>{t('studies.status')}</th>
                  <th>{t('studies.progress')}</th>
                  <th>{t('studies.strategy')}</th>
                  <th>{t('studies.created')}</th>
                </tr>
              </thead>
              <tbody>
                {list.map((s) => (
                  <tr>
                    <td>
                      <a href={`#/studies/${encodeURIComponent(s.id)}`}>{s.name}</a>
                      <div class="muted small">{s.id}</div>
                    </td>
                    <td>
                      <Status status={s.status} />
                    </td>
                    <td>
                      <Progress value={s.round} max={s.rounds} />
                    </td>
                    <td>{s.strategy}</td>
                    <td>{fmtTime(s.createdAt)}</td>
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

function Status({ status }: { status: string }) {
  const key = `status.${status}` as Key;
  const text = t(key);
  return <span class={`status status-${status}`}>{text === key ? status : text}</span>;
}

function Progress({ value, max }: { value: number; max: number }) {
  return (
    <span class="progress">
      <progress value={value} max={max} /> {t('studies.roundOf', { n: value, of: max })}
    </span>
  );
}

/** Charts and tables for one study; the stream triggers a refetch so what is drawn is what the store holds. */
export function StudyPage({ api, id }: { api: Api; id: string }) {
  const [version, setVersion] = useState(0);
  const [live, setLive] = useState(false);
  const [openCounts, setOpenCounts] = useState<{ round: number; received: number; expected: number } | null>(null);
  const [events, setEvents] = useState(0);
  useEffect(() => {
    let pending: ReturnType<typeof setTimeout> | undefined;
    const refresh = () => {
      // Several events arrive together at the end of a round; one refetch covers them.
      if (!pending) pending = setTimeout(() => ((pending = undefined), setVersion((v) => v + 1)), 150);
    };
    const stop = api.follow(
      id,
      (e: StreamEvent) => {
        if (e.type === 'ready') return;
        setEvents((n) => n + 1);
        if (e.type === 'update.accepted') setOpenCounts({ round: e.round, received: e.received, expected: e.expected });
        if (e.type === 'round.opened') setOpenCounts({ round: e.round, received: 0, expected: e.sites });
        if (e.type === 'round.committed' || e.type === 'study.status' || e.type === 'update.refused' || e.type === 'round.opened') refresh();
      },
      setLive,
    );
    return () => {
      stop();
      clearTimeout(pending);
    };
  }, [api, id]);
  const detail = useApi<StudyDetail>(api, `/v1/studies/${encodeURIComponent(id)}`, version);
  return (
    <section>
      <p>
        <a href="#/studies">← {t('nav.studies')}</a>
      </p>
      <Loaded load={detail} what="nav.studies">
        {(d) => <StudyView d={d} live={live} events={events} openCounts={openCounts} />}
      </Loaded>
    </section>
  );
}

function StudyView({ d, live, events, openCounts }: { d: StudyDetail; live: boolean; events: number; openCounts: { round: number; received: number; expected: number } | null }) {
  const sites = useMemo(() => [...new Set(d.participants.map((p) => p.name).concat(d.metrics.filter((m) => m.site).map((m) => m.site!)))], [d]);
  const rounds = d.spec.rounds;
  const metric = (phase: string, name: string, site: string | null, from: number) =>
    Array.from({ length: rounds - from + 1 }, (_, i) => d.metrics.find((m) => m.round === i + from && m.site === site && m.phase === phase && m.name === name)?.value ?? null);
  const series = (phase: string, name: string, from: number): Series[] => [
    ...sites.map((s, i) => ({ label: s, data: metric(phase, name, s, from), color: siteColor(i) })),
    { label: t('study.global'), data: metric(phase, name, null, from), color: GLOBAL_COLOR, global: true },
  ];
  const fitLabels = Array.from({ length: rounds }, (_, i) => i + 1);
  const evalLabels = Array.from({ length: rounds + 1 }, (_, i) => i);
  const participation = fitLabels.map((r) => new Set(d.metrics.filter((m) => m.round === r && m.phase === 'fit' && m.site !== null).map((m) => m.site)).size);
  // The stream's counts are newer than the last fetch while a round is open.
  const open = d.openRound && openCounts && openCounts.round === d.openRound.round ? { ...d.openRound, ...openCounts } : d.openRound;
  return (
    <>
      <h1>{d.name}</h1>
      <div class="study-head">
        <Status status={d.status} />
        <span class={`live ${live ? 'on' : 'off'}`} data-testid="live" data-live={live ? 'connected' : 'disconnected'}>
          <Dot on={live} /> {live ? t('study.live') : t('study.notLive')}
        </span>
        <span class="muted small">
          {d.spec.strategy.name} · {d.spec.model.kind} · {t('study.sitesCount', { n: d.participants.length })} · {t('study.events', { n: events })}
        </span>
      </div>
      {d.error && <div class="notice error">{d.error}</div>}
      <div class="card progress-card">
        <div data-testid="round-progress" data-round={d.round} data-rounds={rounds}>
          <Progress value={d.round} max={rounds} />
        </div>
        {open && (
          <p class="muted" data-testid="open-round">
            {t('study.openRound', { round: open.round, kind: open.kind, received: open.received, expected: open.expected })}
          </p>
        )}
      </div>
      <div class="charts">
        <LineChart id="chart-loss" title={t('study.lossChart')} labels={fitLabels} series={series('fit', 'loss', 1)} xTitle={t('study.round')} yTitle={t('study.loss')} />
        <LineChart id="chart-accuracy" title={t('study.accuracyChart')} labels={evalLabels} series={series('evaluate', 'accuracy', 0)} xTitle={t('study.modelAfterRound')} yTitle={t('study.accuracy')} yMin={0} yMax={1} />
        <BarChart id="chart-participation" title={t('study.participationChart')} labels={fitLabels} values={participation} max={Math.max(1, d.participants.length)} xTitle={t('study.round')} yTitle={t('study.sitesReported')} label={t('study.sitesReported')} />
      </div>
      <h2>{t('study.refusals')}</h2>
      {d.refusals.length === 0 ? (
        <p class="muted" data-testid="no-refusals">
          {t('study.noRefusals')}
        </p>
      ) : (
        <table class="wide" data-testid="refusals">
          <thead>
            <tr>
              <th>{t('study.round')}</th>
              <th>{t('sites.name')}</th>
              <th>{t('study.reason')}</th>
              <th>{t('study.at')}</th>
            </tr>
          </thead>
          <tbody>
            {d.refusals.map((r) => (
              <tr>
                <td>{r.round ?? '–'}</td>
                <td>{r.site ?? '–'}</td>
                <td>{r.reason}</td>
                <td>{fmtTime(r.at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

// ---------------------------------------------------------------- privacy, compute, model cards, audit

/**
 * Privacy, compute and model-card routes belong to other parts of the coordinator and grow over time, so their
 * records are rendered from whatever JSON the route answers (tables for lists of records) rather than a fixed
 * shape; a 404 says plainly that the coordinator does not offer the route.
 */
function DataView({ data }: { data: unknown }): preact.JSX.Element {
  if (Array.isArray(data)) {
    if (data.length === 0) return <p class="notice empty">{t('common.noEntries')}</p>;
    if (data.every((r) => r && typeof r === 'object' && !Array.isArray(r))) {
      // A field holding a small record of numbers ({cpuSeconds, gpuSeconds}) becomes one column per number.
      const isFlatRecord = (v: unknown) => !!v && typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => x === null || typeof x !== 'object');
      data = data.map((r) =>
        Object.fromEntries(
          Object.entries(r as Record<string, unknown>).flatMap(([k, v]) => (isFlatRecord(v) ? Object.entries(v as object).map(([k2, v2]) => [`${k}.${k2}`, v2]) : [[k, v]])),
        ),
      );
      const cols = [...new Set((data as object[]).flatMap((r) => Object.keys(r)))];
      return (
        <table class="wide data">
          <thead>
            <tr>
              {cols.map((c) => (
                <th>{c}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {(data as object[]).map((r) => (
              <tr>
                {cols.map((c) => (
                  <td>
                    <Cell name={c} value={(r as Record<string, unknown>)[c]} row={r as Record<string, unknown>} />
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      );
    }
    return <Cell name="" value={data} row={{}} />;
  }
  if (data && typeof data === 'object') {
    const entries = Object.entries(data as Record<string, unknown>);
    const flat = entries.filter(([, v]) => v === null || typeof v !== 'object');
    const nested = entries.filter(([, v]) => v !== null && typeof v === 'object');
    return (
      <div class="dataview">
        {flat.length > 0 && (
          <dl>
            {flat.map(([k, v]) => (
              <>
                <dt>{k}</dt>
                <dd>
                  <Cell name={k} value={v} row={data as Record<string, unknown>} />
                </dd>
              </>
            ))}
          </dl>
        )}
        {nested.map(([k, v]) => (
          <div>
            <h2>{k}</h2>
            <DataView data={v} />
          </div>
        ))}
      </div>
    );
  }
  return <span>{String(data)}</span>;
}

/** ε spent beside a budget is drawn as a bar: the one number a data-protection officer looks for. */
function Cell({ name, value, row }: { name: string; value: unknown; row: Record<string, unknown> }) {
  if (typeof value === 'number') {
    const budget = /^(eps|epsilon)(Spent)?$/i.test(name) ? [row['epsilonBudget'], row['budgetEpsilon'], row['budget.epsilon'], row['budget']].find((b) => typeof b === 'number') : undefined;
    if (typeof budget === 'number' && budget > 0)
      return (
        <span class="budget">
          <meter min={0} max={budget} value={value} high={budget * 0.8} /> {fmtNum(value)} / {fmtNum(budget)}
        </span>
      );
    if (/(At|Time|time)$/.test(name) && value > 1e12) return <span>{fmtTime(value)}</span>;
    return <span>{fmtNum(value, 4)}</span>;
  }
  if (typeof value === 'boolean') return <span>{value ? '✓' : '✗'}</span>;
  if (value === null || value === undefined) return <span class="muted">–</span>;
  if (typeof value === 'object') return <code class="small">{JSON.stringify(value)}</code>;
  return <span>{String(value)}</span>;
}

interface AuditEntry {
  seq: number;
  ts: number;
  actor: string;
  kind: string;
  subject: string;
  data: unknown;
  hash?: string;
}

export function Audit({ api }: { api: Api }) {
  const entries = useApi<{ count?: number; head?: string; entries: AuditEntry[] } | AuditEntry[]>(api, '/v1/audit?limit=500', 0, 15_000);
  const verify = useApi<Record<string, unknown>>(api, '/v1/audit/verify', 0, 15_000);
  return (
    <section>
      <h1>{t('audit.title')}</h1>
      {verify.state === 'ok' && (
        <div class={`notice ${verify.data['ok'] ? 'good' : 'error'}`} data-testid="audit-verify">
          {verify.data['ok'] ? t('audit.verified', { n: String(verify.data['count'] ?? '') }) : t('audit.broken', { why: String(verify.data['error'] ?? verify.data['reason'] ?? JSON.stringify(verify.data)) })}
        </div>
      )}
      <Loaded load={entries} what="nav.audit">
        {(data) => {
          const list = Array.isArray(data) ? data : data.entries;
          if (list.length === 0) return <p class="notice empty">{t('common.noEntries')}</p>;
          return (
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
                {[...list].reverse().map((e) => (
                  <tr>
                    <td>{e.seq}</td>
                    <td>{fmtTime(e.ts)}</td>
                    <td>{e.actor}</td>
                    <td>{e.kind}</td>
                    <td>{e.subject}</td>
                    <td>
                      <code class="small">{typeof e.data === 'string' ? e.data : JSON.stringify(e.data)}</code>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          );
        }}
      </Loaded>
    </section>
  );
}

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
                <details class="card model-card" open={i === 0}>
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

function ModelCard({ api, id }: { api: Api; id: string }) {
  const card = useApi<unknown>(api, `/v1/studies/${encodeURIComponent(id)}/model-card`);
  return (
    <Loaded load={card} what="nav.models">
      {(data) => <DataView data={data} />}
    </Loaded>
  );
}

/** GET /v1/compute/ledger (compute/ledger.ts): a usage summary and the contribution report by country and institution. */
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
  contribution?: { countries?: PartyRow[]; institutions?: PartyRow[]; otherCountries?: PartyRow[] };
}

export function Compute({ api }: { api: Api }) {
  const load = useApi<Ledger & Record<string, unknown>>(api, '/v1/compute/ledger', 0, 15_000);
  return (
    <section>
      <h1>{t('compute.title')}</h1>
      <p class="muted">{t('compute.intro')}</p>
      <Loaded load={load} what="nav.compute">
        {(data) => {
          const c = data.contribution;
          const parties = (rows: PartyRow[] | undefined) => rows ?? [];
          const countries = [...parties(c?.countries), ...parties(c?.otherCountries)];
          const chart = (id: string, title: Key, rows: PartyRow[]) =>
            rows.length > 0 && (
              <GroupedBarChart
                id={id}
                title={t(title)}
                labels={rows.map((r) => r.key)}
                yTitle={t('compute.cpuSeconds')}
                datasets={[
                  { label: t('compute.contributed'), data: rows.map((r) => r.contributed.cpuSeconds), color: '#2a9d8f' },
                  { label: t('compute.consumed'), data: rows.map((r) => r.consumed.cpuSeconds), color: '#e76f51' },
                ]}
              />
            );
          return (
            <>
              <div class="charts">
                {chart('chart-compute-country', 'compute.byCountry', countries)}
                {chart('chart-compute-institution', 'compute.byInstitution', parties(c?.institutions))}
              </div>
              <DataView data={data} />
            </>
          );
        }}
      </Loaded>
    </section>
  );
}

/**
 * Privacy spend is kept per study and site (the privacy ledger); the page shows each study's sites with ε spent
 * against their budget, from GET /v1/studies/:id/privacy.
 */
export function Privacy({ api }: { api: Api }) {
  const studies = useApi<StudySummary[]>(api, '/v1/studies', 0, 15_000);
  return (
    <section>
      <h1>{t('privacy.title')}</h1>
      <p class="muted">{t('privacy.intro')}</p>
      <Loaded load={studies} what="nav.privacy">
        {(list) =>
          list.length === 0 ? (
            <p class="notice empty">{t('studies.none')}</p>
          ) : (
            <>
              {list.map((s) => (
                <div class="card privacy-study" data-study={s.id}>
                  <h2>
                    {s.name} <Status status={s.status} />
                  </h2>
                  <StudyPrivacy api={api} id={s.id} />
                </div>
              ))}
            </>
          )
        }
      </Loaded>
    </section>
  );
}

/** GET /v1/studies/:id/privacy (coordinator/routes/privacy.ts), the fields this page shows. */
interface PrivacyReport {
  dp: { level?: string; mode?: string; epsilon?: number; delta?: number } | null;
  secagg: object | null;
  sites: { site: string; spent: { epsilon: number; delta: number }; budget: { epsilon: number; delta: number }; remaining: number; releases: number; mechanism: string; noiseMultiplier: number; lastRound: number }[];
}

function StudyPrivacy({ api, id }: { api: Api; id: string }) {
  const load = useApi<PrivacyReport>(api, `/v1/studies/${encodeURIComponent(id)}/privacy`, 0, 15_000);
  return (
    <Loaded load={load} what="nav.privacy">
      {(r) => (
        <>
          <p class="small">
            {r.dp ? t('privacy.dp', { level: r.dp.level ?? '', epsilon: fmtNum(r.dp.epsilon), delta: String(r.dp.delta ?? '–') }) : t('privacy.noDp')} ·{' '}
            {r.secagg ? t('privacy.secaggOn') : t('privacy.secaggOff')}
          </p>
          {r.sites.length === 0 ? (
            <p class="muted">{t('privacy.noSpend')}</p>
          ) : (
            <table class="wide" data-testid="privacy-table">
              <thead>
                <tr>
                  <th>{t('sites.name')}</th>
                  <th>{t('privacy.spent')}</th>
                  <th>δ</th>
                  <th>{t('privacy.remaining')}</th>
                  <th>{t('privacy.releases')}</th>
                  <th>{t('privacy.mechanism')}</th>
                  <th>σ</th>
                  <th>{t('study.round')}</th>
                </tr>
              </thead>
              <tbody>
                {r.sites.map((x) => (
                  <tr data-site={x.site}>
                    <td>{x.site}</td>
                    <td class="budget">
                      <meter min={0} max={x.budget.epsilon} value={x.spent.epsilon} high={x.budget.epsilon * 0.8} /> ε {fmtNum(x.spent.epsilon)} / {fmtNum(x.budget.epsilon)}
                    </td>
                    <td>
                      {x.spent.delta} / {x.budget.delta}
                    </td>
                    <td>{fmtNum(x.remaining)}</td>
                    <td>{x.releases}</td>
                    <td>{x.mechanism}</td>
                    <td>{fmtNum(x.noiseMultiplier)}</td>
                    <td>{x.lastRound}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </Loaded>
  );
}
