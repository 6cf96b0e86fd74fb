/**
 * GET /v1/studies/:id/results: an analytics study's queries with their combined results (as committed, round by
 * round: coordinator/analytics-rounds.ts), the sites that refused each and why, and each result's digest as its
 * `analytics.committed` audit entry records it. Readable by whoever may view the study (study.view).
 */
import type { RoutePlugin } from './context.js';
import { IdParams, NoQuery } from '../../protocol/replies.js';
import { StudyResultsSchema, type StudyResults } from '../../protocol/analytics.js';
import { ErrorSchema } from '../../protocol/api.js';
import { HttpError, requireUser } from '../auth.js';
import { studyResults } from '../analytics-rounds.js';

export const analyticsRoutes: RoutePlugin = async (app, ctx) => {
  const { store } = ctx;
  app.get<{ Params: { id: string } }>(
    '/v1/studies/:id/results',
    { schema: { params: IdParams, querystring: NoQuery, response: { 200: StudyResultsSchema, 404: ErrorSchema } } },
    async (req): Promise<StudyResults> => {
      requireUser(req.principal!, 'study.view');
      const s = await store.getStudy(req.params.id);
      if (!s) throw new HttpError(404, 'not_found', `no study ${req.params.id}`);
      return studyResults(store, s);
    },
  );
};
