/** The dashboard's consortium pages: the overview by country, the studies, the privacy ledger. */
import { useEffect, useState } from 'preact/hooks';
import type { SiteView, StudySummary } from '../../protocol/views.js';
import type { Api } from './api.js';
import { fmtAgo, fmtNum, fmtTime, t, type Key } from './i18n.js';
import { Dot, Loaded, Progress, Status, useApi } from './common.js';

export { StudyPage } from './study.js';
export { Audit, Compute, ModelCards } from './reports.js';

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
                {/* India and Japan always; other countries only when some site is there. */}
                {[...groups].filter(([country, items]) => country !== 'other' || items.length > 0).map(([country, items]) => (
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
