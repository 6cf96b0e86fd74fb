/**
 * The privacy ledger over the API: GET /v1/studies/:id/privacy gives, per site, the (ε, δ) spent on the study
 * against the site's budget, as the sites' accountants reported it with each accepted update (see
 * store/privacy.ts). Readable by admins and auditors, a study lead for their own study, a site admin for the
 * sites of their institution, and a site for itself (governance/roles.ts: privacy.view).
 */
import type { RoutePlugin } from './context.js';
import type { StudySpec } from '../../protocol/api.js';
import { authorize, checkOwnStudy, HttpError } from '../auth.js';
import { IdParams, PrivacyQuery, StudyPrivacySchema } from '../../protocol/replies.js';
import type { SiteSpend } from '../../store/privacy.js';

export interface StudyPrivacyReport {
  studyId: string;
  status: string;
  /** The study's DP settings (null: no DP). */
  dp: NonNullable<StudySpec['privacy']>['dp'] | null;
  /** The study's SecAgg+ settings (null: updates travel unmasked). */
  secagg: NonNullable<StudySpec['privacy']>['secagg'] | null;
  /** The ledger's per-site totals (store/privacy.ts), with the site's name and ε left under its budget. */
  sites: (Omit<SiteSpend, 'epsilon' | 'delta'> & { site: string; spent: { epsilon: number; delta: number }; remaining: number })[];
  entries?: { round: number; site: string; taskId: string; mechanism: string; steps: number; epsilon: number; delta: number; at: number }[];
}

export const privacyRoutes: RoutePlugin = async (app, ctx) => {
  const { store } = ctx;
  app.get<{ Params: { id: string }; Querystring: { entries?: string } }>(
    '/v1/studies/:id/privacy',
    { schema: { params: IdParams, querystring: PrivacyQuery, response: { 200: StudyPrivacySchema } } },
    async (req): Promise<StudyPrivacyReport> => {
      const p = req.principal!;
      const scope = authorize(p, 'privacy.view');
      const s = await store.getStudy(req.params.id);
      if (!s) throw new HttpError(404, 'not_found', `no study ${req.params.id}`);
      checkOwnStudy({ id: p.id, scope }, s);
      const spec = JSON.parse(s.spec) as StudySpec;
      const sites = await store.listSites();
      const byId = new Map(sites.map((x) => [x.id, x]));
      // Which sites' rows this caller may see.
      const visible = (siteId: string): boolean => {
        if (p.kind === 'site') return siteId === p.site.id;
        if (scope === 'own-institution') return p.institution !== null && byId.get(siteId)?.institution === p.institution;
        return true;
      };
      const spend = (await store.studySpend(s.id)).filter((r) => visible(r.siteId));
      const out: StudyPrivacyReport = {
        studyId: s.id,
        status: s.status,
        dp: spec.privacy?.dp ?? null,
        secagg: spec.privacy?.secagg ?? null,
        sites: spend.map((r) => ({
          site: byId.get(r.siteId)?.name ?? r.siteId,
          siteId: r.siteId,
          spent: { epsilon: r.epsilon, delta: r.delta },
          budget: r.budget,
          remaining: Math.max(0, r.budget.epsilon - r.epsilon),
          releases: r.releases,
          steps: r.steps,
          mechanism: r.mechanism,
          noiseMultiplier: r.noiseMultiplier,
          sampleRate: r.sampleRate,
          lastRound: r.lastRound,
          updatedAt: r.updatedAt,
        })),
      };
      if (req.query.entries === '1' || req.query.entries === 'true') {
        out.entries = (await store.ledgerRows(s.id))
          .filter((r) => visible(r.site_id))
          .map((r) => ({ round: r.round, site: byId.get(r.site_id)?.name ?? r.site_id, taskId: r.task_id, mechanism: r.mechanism, steps: r.steps, epsilon: Number(r.epsilon), delta: Number(r.delta), at: r.at }));
      }
      return out;
    },
  );
}
