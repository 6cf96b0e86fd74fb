/**
 * The study lifecycle over HTTP: propose, site approvals and declines with data-use terms, withdrawal, the
 * jurisdiction policy check, and the governed start and stop that studies.ts delegates to.
 *
 * Policies come from SETU_POLICIES (a directory of <jurisdiction>.yaml files; default the shipped policies/),
 * the coordinator's own jurisdiction from SETU_JURISDICTION (where per-site updates are received; unset means
 * every update counts as leaving its jurisdiction, the strict reading).
 *
 * Direct start: a study that was never proposed may start directly only when none of its sites belongs to the
 * consortium (no institution, no declared jurisdiction), as in the one-host demo. The starter's approval on
 * their behalf is audited as such (`direct: true`). A site that belongs to an institution takes part only after
 * its own site admin approved, with data-use terms. The policy check covers every site with a jurisdiction;
 * sites without one are listed as `unchecked` in the start answer.
 */
import type { FastifyReply } from 'fastify';
import type { RouteContext, RoutePlugin } from './context.js';
import type { Principal } from '../auth.js';
import { HttpError, checkOwnStudy, requireUser } from '../auth.js';
import {
  ApproveBody, GovernanceViewSchema, IdParams, LifecycleViewSchema, NoBody, NoQuery, PoliciesSchema, PolicyCheckSchema, ReasonBody, ReleaseStateSchema, ReleasedReply, SignoffBody, SignoffReply,
  type ApproveRequest, type ReasonRequest, type SignoffRequest,
} from '../../protocol/replies.js';
import type { StudySpec } from '../../protocol/api.js';
import { encodeSafetensors } from '../../protocol/safetensors.js';
import { digestHex, initialWeights } from '../engine.js';
import { trainerProblems } from '../trainer-capabilities.js';
import { declaredTrainer } from './trainer.js';
import type { SiteMembership } from '../../store/governance.js';
import { appendAudit } from '../../governance/audit-store.js';
import { startProblems } from '../study-checks.js';
import * as lc from '../../governance/lifecycle.js';
import { checkRelease, defaultPolicyDir, loadPolicies, type JurisdictionPolicy, type Signoff, type Violation } from '../../governance/policy.js';
import {
  GovernanceError, checkStudyPolicy, commitTransitions, describeViolations, invitedSites, loadLifecycle, proposeStudy, recordRefusal, siteDecision, step,
} from '../../governance/study-governance.js';

export interface GovernanceConfig {
  policiesDir: string;
  coordinatorJurisdiction: string | undefined;
}

export function governanceConfig(env: NodeJS.ProcessEnv = process.env): GovernanceConfig {
  const j = env.SETU_JURISDICTION?.trim();
  if (j && !/^[A-Z]{2}$/.test(j)) throw new Error(`SETU_JURISDICTION must be an ISO country code such as IN or JP, got "${j}"`);
  return { policiesDir: env.SETU_POLICIES?.trim() || defaultPolicyDir(), coordinatorJurisdiction: j || undefined };
}

/** Policies are read at every check, so an edited file applies to the next start without a restart. */
export function policies(cfg: GovernanceConfig): Record<string, JurisdictionPolicy> {
  try {
    return loadPolicies(cfg.policiesDir);
  } catch (e) {
    throw new HttpError(500, 'policy_unreadable', `the coordinator's jurisdiction policies cannot be read: ${(e as Error).message}`);
  }
}

function asHttp(e: unknown): never {
  if (e instanceof GovernanceError) throw new HttpError(e.status, e.code, e.message);
  throw e;
}

async function studyOr404(ctx: RouteContext, id: string) {
  const s = await ctx.store.getStudy(id);
  if (!s) throw new HttpError(404, 'not_found', `no study ${id}`);
  return s;
}

/** A site admin acts only for sites of their own institution (matched by institution id or name). */
async function siteForAdmin(ctx: RouteContext, user: { role: string; institution: string | null; scope: string }, siteName: string): Promise<SiteMembership> {
  const site = (await ctx.store.listMemberships()).find((m) => m.name === siteName);
  if (!site) throw new HttpError(404, 'not_found', `no site named ${siteName}`);
  if (user.scope === 'own-institution') {
    const mine = user.institution !== null && (user.institution === site.institutionId || user.institution === site.institution);
    if (!mine) throw new HttpError(403, 'forbidden', `site ${siteName} belongs to ${site.institution ?? 'no institution'}, not to your institution (${user.institution ?? 'none'})`);
  }
  return site;
}

export const governanceRoutes: RoutePlugin = async (app, ctx) => {
  const { store, now, governance: cfg } = ctx;
  const deps = () => ({ store, audit: ctx.audit.key });

  app.post<{ Params: { id: string } }>('/v1/studies/:id/propose', { schema: { params: IdParams, querystring: NoQuery, body: NoBody, response: { 200: LifecycleViewSchema } } }, async (req) => {
    const user = requireUser(req.principal!, 'study.propose');
    const s = await studyOr404(ctx, req.params.id);
    checkOwnStudy(user, s);
    if (s.status !== 'created') throw new HttpError(409, 'lifecycle', `study ${s.id} is ${s.status}`);
    const l = await proposeStudy(deps(), s.id, JSON.parse(s.spec) as StudySpec, user.id, now()).catch(asHttp);
    return view(l, await store.listMemberships());
  });

  app.post<{ Params: { id: string }; Body: ApproveRequest }>('/v1/studies/:id/approve', { schema: { params: IdParams, querystring: NoQuery, body: ApproveBody, response: { 200: LifecycleViewSchema } } }, async (req) => {
    const user = requireUser(req.principal!, 'study.approve');
    await studyOr404(ctx, req.params.id);
    const site = await siteForAdmin(ctx, user, req.body.site);
    const l = await siteDecision(deps(), req.params.id, site.id, { kind: 'approve', terms: req.body.terms }, user.id, now()).catch(asHttp);
    return view(l, await store.listMemberships());
  });

  app.post<{ Params: { id: string }; Body: ReasonRequest }>('/v1/studies/:id/decline', { schema: { params: IdParams, querystring: NoQuery, body: ReasonBody, response: { 200: LifecycleViewSchema } } }, async (req) => {
    const user = requireUser(req.principal!, 'study.decline');
    await studyOr404(ctx, req.params.id);
    const site = await siteForAdmin(ctx, user, req.body.site);
    const l = await siteDecision(deps(), req.params.id, site.id, { kind: 'decline', reason: req.body.reason }, user.id, now()).catch(asHttp);
    return view(l, await store.listMemberships());
  });

  app.post<{ Params: { id: string }; Body: ReasonRequest }>('/v1/studies/:id/withdraw', { schema: { params: IdParams, querystring: NoQuery, body: ReasonBody, response: { 200: LifecycleViewSchema } } }, async (req) => {
    const user = requireUser(req.principal!, 'study.withdraw');
    const s = await studyOr404(ctx, req.params.id);
    const site = await siteForAdmin(ctx, user, req.body.site);
    // The round open now (if any) was issued before the withdrawal; the site's data is unused from the one after.
    const open = await store.openRoundOf(s.id);
    const nextRound = s.status === 'running' ? (open ? open.round + 1 : s.current_round + 1) : undefined;
    const l = await siteDecision(deps(), s.id, site.id, { kind: 'withdraw', reason: req.body.reason, ...(nextRound !== undefined ? { nextRound } : {}) }, user.id, now()).catch(asHttp);
    ctx.engine.kick();
    return view(l, await store.listMemberships());
  });

  app.get<{ Params: { id: string } }>('/v1/studies/:id/governance', { schema: { params: IdParams, querystring: NoQuery, response: { 200: GovernanceViewSchema } } }, async (req) => {
    requireUser(req.principal!, 'study.view');
    const s = await studyOr404(ctx, req.params.id);
    const l = await loadLifecycle(store, s.id);
    // `status` is the study's own (it can be `failed`, which the lifecycle does not model); `state` the lifecycle's.
    return { status: s.status, ...(l ? view(l, await store.listMemberships()) : { id: s.id, state: 'draft', approvals: [], eligible: [] }),
      events: (await store.listEvents(s.id)).map((e) => ({ kind: e.kind, actor: e.actor, data: e.data, at: e.at })) };
  });

  // ---- release: the sign-offs each participating jurisdiction's policy asks for, then the release ----
  async function releaseState(studyId: string) {
    const s = await studyOr404(ctx, studyId);
    const members = await store.listMemberships();
    const participants = JSON.parse(s.participants ?? '[]') as string[];
    const sites = participants.map((id) => members.find((m) => m.id === id)).filter((m): m is SiteMembership => !!m?.jurisdiction)
      .map((m) => ({ id: m.name, jurisdiction: m.jurisdiction!, examplesPerUpdate: 0, computeJurisdiction: m.jurisdiction! }));
    const events = await store.listEvents(s.id);
    const signoffs = events.filter((e) => e.kind === 'model.signoff').map((e) => e.data as Signoff);
    return { s, sites, signoffs, released: events.some((e) => e.kind === 'model.released'), missing: checkRelease(signoffs, sites, policies(cfg)) };
  }

  app.post<{ Params: { id: string }; Body: SignoffRequest }>('/v1/studies/:id/signoff', { schema: { params: IdParams, querystring: NoQuery, body: SignoffBody, response: { 200: SignoffReply } } }, async (req) => {
    const user = requireUser(req.principal!, 'model.signoff');
    const { s } = await releaseState(req.params.id);
    checkOwnStudy(user, s);
    if (s.status !== 'completed') throw new HttpError(409, 'not_completed', `study ${s.id} is ${s.status}; its model can be signed off once it completes`);
    let site: SiteMembership | undefined;
    if (req.body.site) site = await siteForAdmin(ctx, user, req.body.site);
    else if (user.role === 'site_admin') throw new HttpError(400, 'invalid_request', 'a site admin signs off for a site: give "site"');
    const inst = user.institution ? (await store.listInstitutions()).find((i) => i.id === user.institution || i.name === user.institution) : undefined;
    const signoff: Signoff = { role: user.role, by: user.id, jurisdiction: site?.jurisdiction ?? inst?.jurisdiction ?? '', ...(site ? { site: site.name } : {}) };
    const t = now();
    // Sign-offs are kept with the study's governance events; the release's audit entry seals every one of them.
    await store.addEvent({ studyId: s.id, kind: 'model.signoff', actor: user.id, data: signoff, at: t });
    const st = await releaseState(s.id);
    return { signoff, missing: st.missing };
  });

  app.get<{ Params: { id: string } }>('/v1/studies/:id/release', { schema: { params: IdParams, querystring: NoQuery, response: { 200: ReleaseStateSchema } } }, async (req) => {
    requireUser(req.principal!, 'study.view');
    const st = await releaseState(req.params.id);
    return { released: st.released, signoffs: st.signoffs, missing: st.missing };
  });

  app.post<{ Params: { id: string } }>('/v1/studies/:id/release', { schema: { params: IdParams, querystring: NoQuery, body: NoBody, response: { 200: ReleasedReply } } }, async (req, reply) => {
    const user = requireUser(req.principal!, 'model.release');
    const st = await releaseState(req.params.id);
    checkOwnStudy(user, st.s);
    if (st.s.status !== 'completed') throw new HttpError(409, 'not_completed', `study ${st.s.id} is ${st.s.status}`);
    if (st.released) throw new HttpError(409, 'conflict', `the model of study ${st.s.id} is already released`);
    if (st.missing.length) {
      return reply.status(409).send({ error: 'signoff_missing', message: `the model of study ${st.s.id} cannot be released yet: ${describeViolations(st.missing)}`, violations: st.missing });
    }
    const t = now();
    const mv = await store.latestModelVersion(st.s.id);
    await store.transaction(async (tx) => {
      await tx.addEvent({ studyId: st.s.id, kind: 'model.released', actor: user.id, data: { model: mv?.id ?? null, digest: mv?.digest ?? null, signoffs: st.signoffs }, at: t });
      await appendAudit(tx, ctx.audit.key, { ts: t, actor: user.id, kind: 'model.released', subject: st.s.id, data: JSON.parse(JSON.stringify({ model: mv?.id ?? null, digest: mv?.digest ?? null, signoffs: st.signoffs })) });
    });
    return { released: true, model: mv?.id ?? null, digest: mv?.digest ?? null };
  });

  app.get('/v1/policies', { schema: { querystring: NoQuery, response: { 200: PoliciesSchema } } }, async (req) => {
    requireUser(req.principal!, 'policy.view');
    return { dir: cfg.policiesDir, coordinatorJurisdiction: cfg.coordinatorJurisdiction ?? null, policies: Object.values(policies(cfg)) };
  });

  /**
   * Dry run of what `start` checks: the jurisdiction rules for every site that would take part (approved, or still
   * awaiting its decision), and what else remains before the study may start: approvals still pending, too few
   * sites for minSites or SecAgg+. `ok` is true only when `start` would succeed now.
   */
  app.get<{ Params: { id: string } }>('/v1/studies/:id/policy-check', { schema: { params: IdParams, querystring: NoQuery, response: { 200: PolicyCheckSchema } } }, async (req) => {
    requireUser(req.principal!, 'policy.view');
    const s = await studyOr404(ctx, req.params.id);
    const spec = JSON.parse(s.spec) as StudySpec;
    const l = await loadLifecycle(store, s.id);
    const t = now();
    const members = await store.listMemberships();
    const nameOf = (id: string) => members.find((m) => m.id === id)?.name ?? id;
    const invited = l ? l.sites : (await invitedSites(store, spec).catch(asHttp)).map((x) => x.id);
    const approved = l ? lc.eligibleSites(l, t) : [];
    const statusOf = (id: string) => (l ? l.approvals[id]?.status ?? 'pending' : 'pending');
    const waiting = invited.filter((id) => statusOf(id) === 'pending');
    // The rules are checked for every site that may still take part, so a lead learns of a rule before the approvals.
    const { violations, inputs } = await checkStudyPolicy(store, spec, s.id, [...approved, ...waiting], cfg.coordinatorJurisdiction, policies(cfg), (id, d) => store.cohortSize(id, d));
    const inst = (id: string) => members.find((m) => m.id === id)?.institution ?? null;
    const remaining: { site: string | null; what: string }[] = [];
    if (s.status !== 'created') remaining.push({ site: null, what: `the study is ${s.status}; only a study not yet started can start` });
    else if (!l && invited.some((id) => members.find((m) => m.id === id && (m.institutionId || m.jurisdiction)))) remaining.push({ site: null, what: `propose the study (setu study propose ${s.id}) so the site admins can approve it` });
    for (const id of l ? waiting : []) remaining.push({ site: nameOf(id), what: `approval by a site admin of ${inst(id) ?? 'its institution'} (setu study approve ${s.id} --site ${nameOf(id)} --terms "…")` });
    const need = Math.max(1, spec.minSites ?? 1);
    if (l && approved.length < need) remaining.push({ site: null, what: `${need} approved site(s) needed to start (minSites), ${approved.length} so far` });
    for (const p of startProblems(spec, (l ? approved : invited).map(nameOf))) remaining.push({ site: null, what: p });
    return {
      ok: violations.length === 0 && remaining.length === 0, violations, remaining,
      approvals: invited.map((id) => ({ site: nameOf(id), status: l ? statusOf(id) : 'draft' })),
      plan: inputs.plan, sites: inputs.sites, placements: inputs.placements, unchecked: inputs.unchecked,
    };
  });
}

function view(l: lc.LifecycleStudy, members: SiteMembership[]) {
  const name = new Map(members.map((m) => [m.id, m.name]));
  return {
    id: l.id,
    state: l.state,
    approvals: l.sites.map((id) => ({ site: name.get(id) ?? id, ...l.approvals[id] })),
    eligible: lc.eligibleSites(l).map((id) => name.get(id) ?? id),
  };
}

/**
 * POST /v1/studies/:id/start: the lifecycle's start (approved sites only become participants), the jurisdiction
 * policy check for every one of them (409 listing every rule broken), then the study, its participants, its
 * initial model, its lifecycle and the audit entries, in one transaction.
 */
export async function governedStart(ctx: RouteContext, principal: Principal, studyId: string, reply: FastifyReply) {
  return startInner(ctx, principal, studyId, reply, ctx.governance).catch(asHttp);
}

async function startInner(ctx: RouteContext, principal: Principal, studyId: string, reply: FastifyReply, cfg: GovernanceConfig) {
  const { store, now } = ctx;
  const user = requireUser(principal, 'study.start');
  const s = await studyOr404(ctx, studyId);
  checkOwnStudy(user, s);
  if (s.status !== 'created') throw new HttpError(409, 'conflict', `study ${s.id} is ${s.status}`);
  const spec = JSON.parse(s.spec) as StudySpec;
  // The model version 0: the study lead's initial weights (a custom model must have them), else the family's own.
  const uploaded = await store.getModelVersion(`${s.id}.v0`);
  if (!uploaded && spec.model.kind === 'custom') {
    throw new HttpError(409, 'no_initial_weights', `study ${s.id} has a custom model and no initial weights yet: upload them (PUT /v1/studies/${s.id}/initial-weights, or setu study create --weights FILE)`);
  }
  const t = now();
  const who = { by: user.id, at: t };
  const before = await loadLifecycle(store, s.id);
  const steps: lc.Transition[] = [];
  let cur = before;
  if (!cur) {
    // Direct start of a draft: only when no invited site belongs to the consortium (no institution, no
    // jurisdiction), e.g. the one-host demo. A consortium site's data is used only with its own admin's approval.
    const sites = await invitedSites(store, spec).catch(asHttp);
    if (sites.length === 0) throw new HttpError(409, 'no_sites', 'no active site can take part');
    const members = sites.filter((x) => x.institutionId || x.jurisdiction);
    if (members.length) {
      throw new HttpError(409, 'lifecycle', `study ${s.id} is a draft: propose it (setu study propose ${s.id}) and get the approval of ${members.map((m) => m.name).join(', ')} (consortium sites) before it can start`);
    }
    cur = step(() => lc.newStudy(s.id, sites.map((x) => x.id)));
    const proposed = step(() => lc.propose(cur!, who));
    steps.push(proposed);
    cur = proposed.study;
    for (const site of sites) {
      const a = step(() => lc.approve(cur!, site.id, { purpose: 'direct start of a study over sites outside the consortium', conditions: [`site ${site.name} belongs to no institution; approved by ${user.id}, who started the study`] }, who));
      (a.audit.data as Record<string, unknown>).direct = true;
      steps.push(a);
      cur = a.study;
    }
  }
  const started = step(() => lc.start(cur!, who, spec.minSites ?? 1));
  const participants = lc.eligibleSites(cur, t);
  const members = new Map((await store.listMemberships()).map((m) => [m.id, m.name]));
  const problems = startProblems(spec, participants.map((id) => members.get(id) ?? id));
  if (problems.length) throw new HttpError(409, 'cannot_start', `study ${s.id} cannot start: ${problems.join('; ')}`);
  // Every participant's trainer must be able to serve the study (its declaration, PUT /v1/agent/trainer).
  const unfit = trainerProblems(spec, await Promise.all(participants.map(async (id) => ({ name: members.get(id) ?? id, trainer: await declaredTrainer(store, id) }))));
  if (unfit.length) throw new HttpError(409, 'trainer_unfit', `study ${s.id} cannot start: ${unfit.join('; ')}`);
  const pol = policies(cfg);
  const { violations, inputs } = await checkStudyPolicy(store, spec, s.id, participants, cfg.coordinatorJurisdiction, pol, (id, d) => store.cohortSize(id, d));
  if (violations.length) {
    await recordRefusal({ store, audit: ctx.audit.key }, s.id, user.id, t, violations);
    return reply.status(409).send({ error: 'policy_refused', message: `study ${s.id} breaks ${violations.length} jurisdiction rule(s): ${describeViolations(violations)}`, violations });
  }
  steps.push(started);
  const blob = uploaded ? undefined : await store.blobs.put(encodeSafetensors(initialWeights(spec), { study: s.id, round: '0' }));
  await store.transaction(async (tx) => {
    await tx.startStudy(s.id, participants, blob && { id: `${s.id}.v0`, study_id: s.id, round: 0, digest: blob.digest, size: blob.size, created_at: t }, t);
    // What each participant declared for the dataset now bounds its example counts (FedAvg weights) in this study.
    await tx.snapshotStudyCohorts(s.id, spec.dataset, participants, t);
    await commitTransitions(tx, { store, audit: ctx.audit.key }, before, steps);
  });
  ctx.bus.emit({ type: 'study.status', studyId: s.id, status: 'running' });
  ctx.engine.kick();
  return { id: s.id, status: 'running', participants: participants.length, placements: inputs.placements, unchecked: inputs.unchecked };
}

/** POST /v1/studies/:id/stop: the study stops for good; its lifecycle records why and who, audited. */
export async function governedStop(ctx: RouteContext, principal: Principal, studyId: string, reason: string | undefined) {
  return stopInner(ctx, principal, studyId, reason).catch(asHttp);
}

async function stopInner(ctx: RouteContext, principal: Principal, studyId: string, reason: string | undefined) {
  const { store, now } = ctx;
  const user = requireUser(principal, 'study.stop');
  const s = await studyOr404(ctx, studyId);
  checkOwnStudy(user, s);
  const t = now();
  await store.transaction(async (tx) => {
    await tx.transitionStudy(s.id, ['created', 'running'], 'stopped', t);
    const cur = await loadLifecycle(tx, s.id);
    const base = cur ?? step(() => lc.newStudy(s.id, JSON.parse(s.participants ?? '[]') as string[]));
    await commitTransitions(tx, { store, audit: ctx.audit.key }, cur, [step(() => lc.stop(base, reason?.trim() || `stopped by ${user.id}`, { by: user.id, at: t }))]);
  });
  ctx.bus.emit({ type: 'study.status', studyId: s.id, status: 'stopped' });
  return { id: s.id, status: 'stopped' };
}

export type { Violation };
