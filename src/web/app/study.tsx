/**
 * One study as a report: where it stands (live while it runs, not once it has ended), its charts, the latest model
 * per site, what was refused and why, its governance (approvals and terms per site, the release sign-offs, the
 * history), and the results to take home (the model, the metrics as CSV or JSON).
 */
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { StudyDetail, StreamEvent } from '../../protocol/views.js';
import type { Api } from './api.js';
import { fmtNum, fmtPct, fmtTime, t, type Key } from './i18n.js';
import { BarChart, GLOBAL_COLOR, LineChart, siteColor, type Series } from './charts.js';
import { ActionButton, Dot, Loaded, Progress, Status, saveFile, useApi } from './common.js';
import { AnalyticsResults } from './analytics.js';

const ENDED = ['completed', 'stopped', 'failed'];

/** Charts and tables for one study; the stream triggers a refetch so what is drawn is what the store holds. */
export function StudyPage({ api, id, actions }: { api: Api; id: string; actions: string[] }) {
  const [version, setVersion] = useState(0);
  const [live, setLive] = useState(false);
  const [openCounts, setOpenCounts] = useState<{ round: number; received: number; expected: number } | null>(null);
  const [events, setEvents] = useState(0);
  const detail = useApi<StudyDetail>(api, `/v1/studies/${encodeURIComponent(id)}`, version);
  const ended = detail.state === 'ok' && ENDED.includes(detail.data.status);
  useEffect(() => {
    // An ended study changes no more: nothing to follow.
    if (ended) return;
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
        if (e.type === 'round.committed' || e.type === 'study.status' || e.type === 'update.refused' || e.type === 'round.opened' || e.type === 'task.failed') refresh();
      },
      setLive,
    );
    return () => {
      stop();
      clearTimeout(pending);
      setLive(false);
    };
  }, [api, id, ended]);
  return (
    <section>
      <p>
        <a href="#/studies">← {t('nav.studies')}</a>
      </p>
      <Loaded load={detail} what="nav.studies">
        {(d) => (
          <>
            <StudyView d={d} live={live} events={events} openCounts={openCounts} />
            <AnalyticsResults api={api} id={d.id} version={version} />
            {/* The metrics export and the model are a training's; an analytics study's downloads are per query above. */}
            {!d.spec.analytics && <Results api={api} d={d} actions={actions} />}
            <Governance api={api} id={d.id} version={version} />
          </>
        )}
      </Loaded>
    </section>
  );
}

/** An asynchronous study's progress: versions made, the buffer, who trains from which version, stale refusals. */
function AsyncProgress({ a, ended }: { a: NonNullable<StudyDetail['async']>; ended: boolean }) {
  return (
    <p class="muted" data-testid="async-progress" data-version={a.version} data-versions={a.versions}>
      {t('study.asyncVersions', { version: a.version, versions: a.versions, buffered: a.buffered, bufferSize: a.bufferSize })}
      {!ended && a.inFlight.length > 0 && ` ${t('study.asyncTraining', { sites: a.inFlight.map((f) => t('study.asyncFrom', { site: f.site, version: f.baseVersion })).join(', ') })}`}
      {a.staleness.refused > 0 && ` ${t('study.staleRefused', { n: a.staleness.refused })}`}
    </p>
  );
}

function StudyView({ d, live, events, openCounts }: { d: StudyDetail; live: boolean; events: number; openCounts: { round: number; received: number; expected: number } | null }) {
  const sites = useMemo(() => [...new Set(d.participants.map((p) => p.name).concat(d.metrics.filter((m) => m.site).map((m) => m.site!)))], [d]);
  const rounds = d.spec.rounds;
  const ended = ENDED.includes(d.status);
  const metric = (phase: string, name: string, site: string | null, from: number) =>
    Array.from({ length: rounds - from + 1 }, (_, i) => d.metrics.find((m) => m.round === i + from && m.site === site && m.phase === phase && m.name === name)?.value ?? null);
  const series = (phase: string, name: string, from: number): Series[] => [
    ...sites.map((s, i) => ({ label: s, data: metric(phase, name, s, from), color: siteColor(i) })),
    { label: t('study.allSites'), data: metric(phase, name, null, from), color: GLOBAL_COLOR, global: true },
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
        {ended ? (
          <span class="live ended" data-testid="live" data-live="ended">
            {t('study.ended')}
          </span>
        ) : (
          <span class={`live ${live ? 'on' : 'off'}`} data-testid="live" data-live={live ? 'connected' : 'disconnected'}>
            <Dot on={live} /> {live ? t('study.live') : t('study.notLive')}
          </span>
        )}
        <span class="muted small">
          {d.spec.analytics ? t('analytics.queriesCount', { n: d.spec.analytics.queries.length }) : `${d.spec.strategy.name} · ${d.spec.model.kind}`} · {t('study.sitesCount', { n: d.participants.length })}
          {!ended && ` · ${t('study.events', { n: events })}`}
          {d.spec.privacy?.secagg && ` · SecAgg+`}
          {d.spec.privacy?.dp && ` · DP ε ${d.spec.privacy.dp.epsilon}`}
        </span>
      </div>
      {d.error && <div class="notice error">{d.error}</div>}
      {/* A site that cannot run its task in the open round says why, at once, above everything else. */}
      {!ended && (d.taskErrors ?? []).filter((e) => e.round === d.openRound?.round).map((e) => (
        <div class="notice error" data-testid="task-error-now" data-site={e.site}>
          {t('study.cannotRun', { site: e.site, code: e.code, message: e.message })}
        </div>
      ))}
      <div class="card progress-card">
        <div data-testid="round-progress" data-round={d.round} data-rounds={rounds}>
          {/* An analytics study has no fixed number of rounds (a Cox fit takes one per Newton step): its progress is its queries'. */}
          {d.spec.analytics ? <span>{t('analytics.roundNow', { n: d.round })}</span> : <Progress value={d.round} max={rounds} />}
        </div>
        {d.async && <AsyncProgress a={d.async} ended={ended} />}
        {open && !ended && !d.async && (
          <p class="muted" data-testid="open-round">
            {t('study.openRound', { round: open.round, kind: open.kind, received: open.received, expected: open.expected })}
            {d.openRound?.failed ? ` ${t('study.failedCount', { n: d.openRound.failed })}` : ''}
            {d.openRound?.refused ? ` ${t('study.refusedCount', { n: d.openRound.refused })}` : ''}
          </p>
        )}
      </div>
      {/* An analytics study trains nothing: its queries (AnalyticsResults) take the place of the training charts. */}
      {!d.spec.analytics && <>
      <div class="charts">
        <LineChart id="chart-loss" title={t('study.lossChart')} labels={fitLabels} series={series('fit', 'loss', 1)} xTitle={t('study.round')} yTitle={t('study.loss')} />
        <LineChart id="chart-accuracy" title={t('study.accuracyChart')} labels={evalLabels} series={series('evaluate', 'accuracy', 0)} xTitle={t('study.modelAfterRound')} yTitle={t('study.accuracy')} yMin={0} yMax={1} />
        {d.async && <BarChart id="chart-staleness" title={t('study.stalenessChart')} labels={d.async.staleness.histogram.map((b) => b.staleness)} values={d.async.staleness.histogram.map((b) => b.count)} xTitle={t('study.staleness')} yTitle={t('study.updates')} label={t('study.updates')} />}
        <BarChart id="chart-participation" title={t('study.participationChart')} labels={fitLabels} values={participation} max={Math.max(1, d.participants.length)} xTitle={t('study.round')} yTitle={t('study.sitesReported')} label={t('study.sitesReported')} />
      </div>
      <p class="muted small">{t('study.allSitesNote')}</p>
      <PerSite d={d} sites={sites} />
      </>}
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
      <TaskErrors d={d} />
    </>
  );
}

/** Tasks a site could not run, with its reason code and message (POST /v1/agent/tasks/:id/error). */
function TaskErrors({ d }: { d: StudyDetail }) {
  const errors = d.taskErrors ?? [];
  return (
    <>
      <h2>{t('study.taskErrors')}</h2>
      {errors.length === 0 ? (
        <p class="muted" data-testid="no-task-errors">
          {t('study.noTaskErrors')}
        </p>
      ) : (
        <table class="wide" data-testid="task-errors">
          <thead>
            <tr>
              <th>{t('study.round')}</th>
              <th>{t('sites.name')}</th>
              <th>{t('study.code')}</th>
              <th>{t('study.message')}</th>
              <th>{t('study.at')}</th>
            </tr>
          </thead>
          <tbody>
            {errors.map((e) => (
              <tr data-site={e.site}>
                <td>{e.round}</td>
                <td>{e.site}</td>
                <td>
                  <code>{e.code}</code>
                </td>
                <td>{e.message}</td>
                <td>{fmtTime(e.at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

/** The latest model every site has measured, site by site and for all sites together: two accuracies, each named. */
function PerSite({ d, sites }: { d: StudyDetail; sites: string[] }) {
  const evaluated = [...new Set(d.metrics.filter((m) => m.phase === 'evaluate' && m.site !== null).map((m) => m.round))].sort((a, b) => b - a);
  const last = evaluated[0];
  if (last === undefined) return null;
  const get = (site: string | null, phase: string, name: string, round = last) => d.metrics.find((m) => m.round === round && m.site === site && m.phase === phase && m.name === name)?.value;
  const row = (label: string, site: string | null) => (
    <tr data-site={site ?? 'all'} class={site === null ? 'total' : ''}>
      <td>{label}</td>
      <td>{fmtPct(get(site, 'evaluate', 'accuracy'))}</td>
      <td>{fmtNum(get(site, 'evaluate', 'auc'), 3)}</td>
      <td>{fmtNum(get(site, 'evaluate', 'loss'), 4)}</td>
      <td>{fmtNum(get(site, 'fit', 'loss', Math.max(1, last)), 4)}</td>
    </tr>
  );
  return (
    <>
      <h2>{t('study.perSite', { round: last })}</h2>
      <table class="wide" data-testid="per-site">
        <thead>
          <tr>
            <th>{t('sites.name')}</th>
            <th>{t('study.testAccuracy')}</th>
            <th>{t('study.testAuc')}</th>
            <th>{t('study.testLoss')}</th>
            <th>{t('study.trainLoss', { round: Math.max(1, last) })}</th>
          </tr>
        </thead>
        <tbody>
          {sites.map((s) => row(s, s))}
          {row(t('study.allSites'), null)}
        </tbody>
      </table>
    </>
  );
}

/** The results to take home: the global model (safetensors) and the metrics (CSV, JSON), each a signed download. */
function Results({ api, d, actions }: { api: Api; d: StudyDetail; actions: string[] }) {
  const enc = encodeURIComponent(d.id);
  const hasModel = d.rounds.some((r) => r.status === 'committed' && r.kind === 'fit');
  return (
    <div class="card results" data-testid="results">
      <strong>{t('study.results')}</strong>{' '}
      {actions.includes('model.download') && hasModel && (
        <ActionButton testId="download-model" label={t('study.downloadModel')} action={() => saveFile(api, `/v1/studies/${enc}/model`, `${d.id}.safetensors`)} />
      )}{' '}
      <ActionButton testId="export-csv" label={t('study.exportCsv')} action={() => saveFile(api, `/v1/studies/${enc}/export?format=csv`, `${d.id}.metrics.csv`)} />{' '}
      <ActionButton testId="export-json" label={t('study.exportJson')} action={() => saveFile(api, `/v1/studies/${enc}/export?format=json`, `${d.id}.metrics.json`)} />
      {!actions.includes('model.download') && <span class="muted small"> {t('study.noModelForRole')}</span>}
    </div>
  );
}

interface GovernanceView {
  status: string;
  state: string;
  approvals: { site: string; status: string; terms?: { purpose: string; conditions?: string[]; expiresAt?: number }; reason?: string; by?: string; at?: number; fromRound?: number }[];
  eligible: string[];
  events: { kind: string; actor: string; at: number; data: Record<string, unknown> | null }[];
}
interface ReleaseView {
  released: boolean;
  signoffs: { role: string; by: string; jurisdiction: string; site?: string }[];
  missing: { jurisdiction: string; site: string | null; message: string }[];
}

/** Who approved what under which terms, the release's sign-offs and what is missing, and the study's history. */
function Governance({ api, id, version }: { api: Api; id: string; version: number }) {
  const enc = encodeURIComponent(id);
  // Sign-offs come after the study has ended, when no round event arrives any more: these are polled too.
  const gov = useApi<GovernanceView>(api, `/v1/studies/${enc}/governance`, version, 10_000);
  const release = useApi<ReleaseView>(api, `/v1/studies/${enc}/release`, version, 10_000);
  const names = useNames(api);
  const who = (uid: string | undefined) => (uid ? names.get(uid) ?? uid : '–');
  return (
    <section class="governance" data-testid="governance">
      <h2>{t('gov.title')}</h2>
      <Loaded load={gov} what="gov.title">
        {(g) => (
          <>
            <p class="muted small">{t('gov.state', { state: t(`status.${g.state}` as Key) })}</p>
            <table class="wide" data-testid="approvals">
              <thead>
                <tr>
                  <th>{t('sites.name')}</th>
                  <th>{t('gov.decision')}</th>
                  <th>{t('gov.by')}</th>
                  <th>{t('gov.terms')}</th>
                </tr>
              </thead>
              <tbody>
                {g.approvals.map((a) => (
                  <tr data-site={a.site}>
                    <td>{a.site}</td>
                    <td>
                      <Status status={a.status} />
                      {a.fromRound !== undefined && <span class="muted small"> {t('gov.fromRound', { round: a.fromRound })}</span>}
                    </td>
                    <td>
                      {who(a.by)} {a.at && <span class="muted small">{fmtTime(a.at)}</span>}
                    </td>
                    <td>
                      {a.terms ? (
                        <>
                          {a.terms.purpose}
                          {a.terms.conditions?.map((c) => (
                            <div class="small">· {c}</div>
                          ))}
                          {a.terms.expiresAt && <div class="small muted">{t('gov.expires', { at: fmtTime(a.terms.expiresAt) })}</div>}
                        </>
                      ) : (
                        a.reason ?? '–'
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            <h3>{t('gov.release')}</h3>
            <Loaded load={release} what="gov.release">
              {(r) => (
                <div data-testid="release" data-released={r.released ? 'yes' : 'no'}>
                  <p class={`notice ${r.released ? 'good' : 'empty'}`}>{r.released ? t('gov.released') : g.status === 'completed' ? t('gov.notReleased') : t('gov.notCompleted')}</p>
                  {r.signoffs.length > 0 && (
                    <table class="wide" data-testid="signoffs">
                      <thead>
                        <tr>
                          <th>{t('gov.signedBy')}</th>
                          <th>{t('gov.role')}</th>
                          <th>{t('gov.for')}</th>
                        </tr>
                      </thead>
                      <tbody>
                        {r.signoffs.map((s) => (
                          <tr>
                            <td>{who(s.by)}</td>
                            <td>{t(`role.${s.role}` as Key)}</td>
                            <td>{s.site ?? t('gov.consortium')}</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  )}
                  {!r.released && r.missing.length > 0 && g.status === 'completed' && (
                    <ul class="missing">
                      {r.missing.map((m) => (
                        <li>
                          [{m.jurisdiction}] {m.message}
                        </li>
                      ))}
                    </ul>
                  )}
                </div>
              )}
            </Loaded>
            <h3>{t('gov.history')}</h3>
            <table class="wide" data-testid="history">
              <tbody>
                {g.events.map((e) => (
                  <tr>
                    <td class="nowrap">{fmtTime(e.at)}</td>
                    <td>{eventLabel(e.kind)}</td>
                    <td>{who(e.actor)}</td>
                    <td class="small">{describeData(e.data, names)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </Loaded>
    </section>
  );
}

/** An event kind in the reader's language where the catalogue has it (`event.study.approved`), else as recorded. */
export function eventLabel(kind: string): string {
  const key = `event.${kind}` as Key;
  const s = t(key);
  return s === key ? kind : s;
}

/**
 * A record's data as "key: value" phrases, short values only: no raw JSON in a report. Ids the page knows (sites,
 * people) are shown by name; a list of records is counted, a digest shortened.
 */
export function describeData(data: unknown, names: ReadonlyMap<string, string> = new Map()): string {
  if (data === null || data === undefined) return '';
  const value = (v: unknown): string => (typeof v === 'string' ? names.get(v) ?? v : String(v));
  if (typeof data !== 'object') return value(data);
  const parts: string[] = [];
  for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
    if (v === null || v === undefined || v === '') continue;
    if (Array.isArray(v)) parts.push(`${k}: ${v.some((x) => x && typeof x === 'object') ? v.length : v.map(value).join(', ')}`);
    else if (typeof v === 'object') parts.push(`${k}: ${describeData(v, names)}`);
    else if (typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)) parts.push(`${k}: ${v.slice(0, 12)}…`);
    else if (typeof v === 'number' && v > 1e12 && /at$|At$/.test(k)) parts.push(`${k}: ${fmtTime(v)}`);
    else parts.push(`${k}: ${typeof v === 'number' ? fmtNum(v, 4) : value(v)}`);
  }
  return parts.join('; ');
}

/** Names of the sites and people the caller may list, by id, for reports that record ids. */
export function useNames(api: Api): ReadonlyMap<string, string> {
  const sites = useApi<{ id: string; name: string }[]>(api, '/v1/sites');
  const users = useApi<{ id: string; name: string }[]>(api, '/v1/users');
  return useMemo(() => new Map([...(sites.state === 'ok' ? sites.data : []), ...(users.state === 'ok' ? users.data : [])].map((x) => [x.id, x.name])), [sites, users]);
}
