/** The consortium: institutions (hospital, university, compute centre, company) with their jurisdiction, and which sites belong to them. */
import { Type, type Static } from '@sinclair/typebox';
import type { RoutePlugin } from './context.js';
import { HttpError, requireUser } from '../auth.js';
import { IdParams, InstitutionViewSchema, LinkSiteBody, NoQuery, SiteLinkedReply } from '../../protocol/replies.js';
import { INSTITUTION_KINDS } from '../../store/governance.js';

export const InstitutionSchema = Type.Object({
  id: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' }),
  name: Type.String({ minLength: 1, maxLength: 200 }),
  kind: Type.Union(INSTITUTION_KINDS.map((k) => Type.Literal(k))),
  jurisdiction: Type.String({ pattern: '^[A-Z]{2}$', description: 'ISO 3166-1 alpha-2 country code' }),
}, { additionalProperties: false });
export type InstitutionBody = Static<typeof InstitutionSchema>;

export const institutionRoutes: RoutePlugin = async (app, ctx) => {
  const { store, now } = ctx;

  app.post<{ Body: InstitutionBody }>('/v1/institutions', { schema: { querystring: NoQuery, body: InstitutionSchema, response: { 201: InstitutionViewSchema } } }, async (req, reply) => {
    const user = requireUser(req.principal!, 'institution.create');
    const b = req.body;
    if (await store.getInstitution(b.id)) throw new HttpError(409, 'conflict', `institution ${b.id} already exists`);
    const t = now();
    await store.transaction(async (tx) => {
      await tx.createInstitution({ ...b, createdAt: t });
      await tx.addEvent({ studyId: null, kind: 'institution.registered', actor: user.id, data: b, at: t });
    });
    return reply.status(201).send({ ...b, createdAt: t });
  });

  app.get('/v1/institutions', { schema: { querystring: NoQuery, response: { 200: Type.Array(InstitutionViewSchema) } } }, async (req) => {
    requireUser(req.principal!, 'consortium.view');
    const [insts, members, resources] = await Promise.all([store.listInstitutions(), store.listMemberships(), store.listResources()]);
    return insts.map((i) => ({
      ...i,
      sites: members.filter((m) => m.institutionId === i.id).map((m) => m.name),
      resources: resources.filter((r) => r.institutionId === i.id).map((r) => r.id),
    }));
  });

  /** Links an enrolled site to its institution; the site's data is then held in the institution's jurisdiction. */
  app.post<{ Params: { id: string }; Body: Static<typeof LinkSiteBody> }>('/v1/institutions/:id/sites', { schema: { params: IdParams, querystring: NoQuery, body: LinkSiteBody, response: { 200: SiteLinkedReply } } }, async (req) => {
    const user = requireUser(req.principal!, 'institution.create');
    const inst = await store.getInstitution(req.params.id);
    if (!inst) throw new HttpError(404, 'not_found', `no institution ${req.params.id}`);
    const site = await store.getSiteByName(req.body.site);
    if (!site) throw new HttpError(404, 'not_found', `no site named ${req.body.site}`);
    const t = now();
    await store.transaction(async (tx) => {
      await tx.linkSite(site.id, inst);
      await tx.addEvent({ studyId: null, kind: 'site.linked', actor: user.id, data: { site: site.name, institution: inst.id, jurisdiction: inst.jurisdiction }, at: t });
    });
    // The site's remembered row (auth.ts) now names another institution: it is read again at its next request.
    ctx.bus.emit({ type: 'identity.changed', id: site.id });
    return { site: site.name, institution: inst.id, jurisdiction: inst.jurisdiction };
  });
}
