/** GET /v1/studies/:id/model-card: the transparency report of a completed study (JSON, or Markdown with ?format=markdown). */
import type { RoutePlugin } from './context.js';
import { HttpError, requireUser } from '../auth.js';
import { IdParams, ModelCardQuery, ModelCardSchema, TextReply } from '../../protocol/replies.js';
import { ensureModelCard } from '../../governance/model-card.js';

export const modelCardRoutes: RoutePlugin = async (app, ctx) => {
  const { store, now } = ctx;
  app.get<{ Params: { id: string }; Querystring: { format?: string } }>('/v1/studies/:id/model-card', {
    schema: { params: IdParams, querystring: ModelCardQuery, response: { 200: { content: { 'application/json': { schema: ModelCardSchema }, 'text/markdown': { schema: TextReply('the model card as Markdown') } } } } },
  }, async (req, reply) => {
    requireUser(req.principal!, 'model.card.view');
    const s = await store.getStudy(req.params.id);
    if (!s) throw new HttpError(404, 'not_found', `no study ${req.params.id}`);
    if (s.status !== 'completed') throw new HttpError(409, 'not_completed', `study ${s.id} is ${s.status}; its model card is written when it completes`);
    const card = await ensureModelCard(store, s.id, now());
    if (req.query.format === 'markdown') return reply.type('text/markdown; charset=utf-8').send(card.markdown);
    return card.json;
  });
}
