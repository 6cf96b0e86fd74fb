/**
 * The compute federation over HTTP.
 *
 * Operators: register resources (POST /v1/compute/resources), list them with what is placed on them, see the
 * queues of placed tasks, the usage records and the IN/JP contribution report.
 *
 * Site agents: declare whether they train on their own machine or need placed compute (PUT /v1/agent/compute),
 * ask where a task runs (POST /v1/agent/tasks/:id/placement: the coordinator places it on a resource in the
 * data's jurisdiction with the most free capacity, or refuses naming why), report the scheduler job
 * (…/job), the task's CPU- and GPU-seconds (…/usage), and a refusal by their local policy (…/refuse).
 */
import type { RoutePlugin } from './context.js';
import { HttpError, requireSite, requireUser } from '../auth.js';
import {
  ComputeProfileBody, ComputeProfileReply, IdParams, JobBody, LedgerQuery, LedgerReply, NoBody, NoQuery, OkReply, PlacementReply, QueuesSchema, RecordedReply, RefuseBody,
  ResourceListSchema, ResourceRegisteredReply, UsageBody, UsageQuery, UsageReply, type ComputeProfileRequest, type JobRequest, type RefuseRequest, type UsageRequest,
} from '../../protocol/replies.js';
import { appendAudit } from '../../governance/audit-store.js';
import { auditsRefusal } from '../../store/audit-bounds.js';
import type { Placement } from '../../store/governance.js';
import { ComputeValidationError, parseResource } from '../../compute/validate.js';
import { freeAt, place } from '../../compute/placement.js';
import { contributionReport, summarize } from '../../compute/ledger.js';
import { ComputeResource as ComputeResourceSchema, type ComputeResource, type FreeCapacity } from '../../compute/types.js';
import { allowedCompute } from '../../governance/study-governance.js';
import { policies } from './governance.js';
import { recordUsageInTx, usageRecordOf } from '../usage-record.js';

/** What is free on each resource once the tasks placed on it and not yet finished are subtracted. */
export async function withPlacedLoad(resources: ComputeResource[], active: Placement[], demand: (p: Placement) => Promise<FreeCapacity>, at = new Date()): Promise<ComputeResource[]> {
  const load = new Map<string, FreeCapacity>();
  for (const p of active) {
    const d = await demand(p);
    const l = load.get(p.resourceId) ?? { cpus: 0, gpus: 0, ramGiB: 0 };
    load.set(p.resourceId, { cpus: l.cpus + d.cpus, gpus: l.gpus + d.gpus, ramGiB: l.ramGiB + d.ramGiB });
  }
  return resources.map((r) => {
    const l = load.get(r.id);
    const free = freeAt(r, at);
    if (!l || !free) return r;
    const now = { cpus: Math.max(0, free.cpus - l.cpus), gpus: Math.max(0, free.gpus - l.gpus), ramGiB: Math.max(0, free.ramGiB - l.ramGiB) };
    return { ...r, availability: { now } };
  });
}

export const computeRoutes: RoutePlugin = async (app, ctx) => {
  const { store, now, governance: cfg } = ctx;

  // ---- operators ----
  app.post('/v1/compute/resources', { schema: { querystring: NoQuery, body: ComputeResourceSchema, response: { 200: ResourceRegisteredReply, 201: ResourceRegisteredReply } } }, async (req, reply) => {
    const user = requireUser(req.principal!, 'compute.register');
    let r: ComputeResource;
    try {
      r = parseResource(req.body);
    } catch (e) {
      if (e instanceof ComputeValidationError) throw new HttpError(400, 'invalid_resource', e.message);
      throw e;
    }
    const inst = await store.getInstitution(r.institution);
    if (!inst) throw new HttpError(409, 'unknown_institution', `resource ${r.id}: no institution ${r.institution}; register it first (setu institution add)`);
    if (user.scope === 'own-institution' && user.institution !== inst.id && user.institution !== inst.name) {
      throw new HttpError(403, 'forbidden', `resource ${r.id} belongs to ${inst.id}, not to your institution`);
    }
    if (r.scheduler === 'kubernetes' && !(r.schedulerConfig?.kubeContext || r.schedulerConfig?.kubeconfig) ) {
      throw new HttpError(400, 'invalid_resource', `resource ${r.id}: a Kubernetes resource needs schedulerConfig.kubeContext or kubeconfig (kubectl is used only when one is configured)`);
    }
    const t = now();
    const outcome = await store.transaction(async (tx) => {
      const o = await tx.putResource(r, r, t);
      await tx.addEvent({ studyId: null, kind: 'compute.registered', actor: user.id, data: { id: r.id, institution: r.institution, jurisdiction: r.jurisdiction, scheduler: r.scheduler, outcome: o }, at: t });
      await appendAudit(tx, ctx.audit.key, { ts: t, actor: user.id, kind: 'compute.registered', subject: r.id, data: JSON.parse(JSON.stringify({ ...r, outcome: o })) });
      return o;
    });
    return reply.status(outcome === 'created' ? 201 : 200).send({ ...r, outcome });
  });

  app.get('/v1/compute/resources', { schema: { querystring: NoQuery, response: { 200: ResourceListSchema } } }, async (req) => {
    requireUser(req.principal!, 'compute.view');
    const active = await store.listPlacements({ activeOnly: true });
    return (await store.listResources()).map((r) => {
      const spec = r.spec as ComputeResource;
      return { ...spec, status: r.status, free: freeAt(spec, new Date()) ?? null, activeTasks: active.filter((p) => p.resourceId === r.id).length };
    });
  });

  app.get('/v1/compute/queues', { schema: { querystring: NoQuery, response: { 200: QueuesSchema } } }, async (req) => {
    requireUser(req.principal!, 'compute.view');
    const [resources, placements, members] = await Promise.all([store.listResources(), store.listPlacements(), store.listMemberships()]);
    const name = new Map(members.map((m) => [m.id, m.name]));
    return resources.map((r) => {
      const mine = placements.filter((p) => p.resourceId === r.id);
      return {
        resource: r.id, scheduler: r.scheduler, jurisdiction: r.jurisdiction,
        active: mine.filter((p) => ['placed', 'submitted', 'pending', 'running'].includes(p.state)).map((p) => ({ task: p.taskId, site: name.get(p.siteId) ?? p.siteId, state: p.state, jobId: p.jobId, placedAt: p.placedAt })),
        finished: mine.filter((p) => !['placed', 'submitted', 'pending', 'running'].includes(p.state)).length,
      };
    });
  });

  app.get<{ Querystring: { study?: string } }>('/v1/compute/usage', { schema: { querystring: UsageQuery, response: { 200: UsageReply } } }, async (req) => {
    requireUser(req.principal!, 'compute.view');
    const records = await store.listUsage(req.query.study);
    return { records, summary: summarize(records) };
  });

  app.get<{ Querystring: { study?: string; countries?: string } }>('/v1/compute/ledger', { schema: { querystring: LedgerQuery, response: { 200: LedgerReply } } }, async (req) => {
    requireUser(req.principal!, 'compute.view');
    const records = await store.listUsage(req.query.study);
    const countries = req.query.countries ? req.query.countries.split(',').map((c) => c.trim()).filter(Boolean) : ['IN', 'JP'];
    return { summary: summarize(records), contribution: contributionReport(records, countries) };
  });

  // ---- site agents ----
  app.put<{ Body: ComputeProfileRequest }>('/v1/agent/compute', { schema: { querystring: NoQuery, body: ComputeProfileBody, response: { 200: ComputeProfileReply } } }, async (req) => {
    const site = requireSite(req.principal!, 'task.poll');
    const prev = await store.getSiteProfile(site.id);
    await store.putSiteProfile(site.id, { compute: req.body, datasets: prev?.datasets ?? {}, updatedAt: now() });
    return { site: site.name, compute: req.body };
  });

  async function siteTask(siteId: string, taskId: string) {
    const task = await store.getTask(taskId);
    if (!task || task.site_id !== siteId) throw new HttpError(403, 'forbidden', `task ${taskId} was not given to this site`);
    return task;
  }

  async function demandOf(siteId: string): Promise<FreeCapacity & { minGpuMemoryGiB?: number; gpuType?: string }> {
    const c = (await store.getSiteProfile(siteId))?.compute;
    return { cpus: c?.cpus ?? 1, gpus: c?.gpus ?? 0, ramGiB: c?.ramGiB ?? 1, ...(c?.minGpuMemoryGiB !== undefined ? { minGpuMemoryGiB: c.minGpuMemoryGiB } : {}),
      ...(c?.gpuType !== undefined ? { gpuType: c.gpuType } : {}) };
  }

  app.post<{ Params: { id: string } }>('/v1/agent/tasks/:id/placement', { schema: { params: IdParams, querystring: NoQuery, body: NoBody, response: { 200: PlacementReply } } }, async (req) => {
    const site = requireSite(req.principal!, 'task.poll');
    const task = await siteTask(site.id, req.params.id);
    const resources = await store.listResources();
    const existing = await store.getPlacement(task.id);
    if (existing) return { placement: existing, resource: resources.find((r) => r.id === existing.resourceId)?.spec };
    if (task.status !== 'issued' && task.status !== 'delivered') throw new HttpError(409, 'conflict', `task ${task.id} is ${task.status}`);
    const member = (await store.listMemberships()).find((m) => m.id === site.id);
    if (!member?.jurisdiction) throw new HttpError(409, 'no_jurisdiction', `site ${site.name} belongs to no jurisdiction, so its data cannot be placed anywhere`);
    const d = await demandOf(site.id);
    const active = await store.listPlacements({ activeOnly: true });
    const live = await withPlacedLoad(resources.filter((r) => r.status === 'active').map((r) => r.spec as ComputeResource), active, (p) => demandOf(p.siteId));
    const allowed = allowedCompute({ id: site.name, jurisdiction: member.jurisdiction }, policies(cfg));
    const r = place({ siteId: site.name, dataJurisdiction: member.jurisdiction, cpus: d.cpus, gpus: d.gpus, ramGiB: d.ramGiB,
      ...(d.minGpuMemoryGiB !== undefined ? { minGpuMemoryGiB: d.minGpuMemoryGiB } : {}), ...(d.gpuType !== undefined ? { gpuType: d.gpuType } : {}), allowedJurisdictions: allowed }, live);
    const t = now();
    if (!r.ok) {
      // One transaction: the refusal (counted per task, store/audit-bounds.ts), its event and its audit entry (on the
      // 1st, 2nd, 4th… refusal of the task, so an agent retrying placement cannot grow the log without end).
      await store.transaction(async (tx) => {
        const count = await tx.countRefusal({ study_id: task.study_id, round: task.round, site_id: site.id, task_id: task.id, code: 'no_placement', reason: r.reason, at: t });
        if (!auditsRefusal(count)) return;
        await tx.addEvent({ studyId: task.study_id, kind: 'placement.refused', actor: 'coordinator', data: { task: task.id, site: site.name, reason: r.reason, rejected: r.rejected, count }, at: t });
        await appendAudit(tx, ctx.audit.key, { ts: t, actor: 'coordinator', kind: 'placement.refused', subject: task.id, data: JSON.parse(JSON.stringify({ study: task.study_id, round: task.round, site: site.name, reason: r.reason, rejected: r.rejected, count })) });
      });
      throw new HttpError(409, 'no_placement', r.reason);
    }
    const p: Placement = { taskId: task.id, studyId: task.study_id, siteId: site.id, resourceId: r.resource.id, reason: r.reason, placedAt: t, jobId: null, state: 'placed' };
    await store.transaction(async (tx) => {
      await tx.putPlacement(p);
      await tx.addEvent({ studyId: task.study_id, kind: 'task.placed', actor: 'coordinator', data: { task: task.id, site: site.name, resource: r.resource.id, jurisdiction: r.resource.jurisdiction, reason: r.reason }, at: t });
    });
    return { placement: p, resource: resources.find((x) => x.id === r.resource.id)!.spec };
  });

  app.post<{ Params: { id: string }; Body: JobRequest }>('/v1/agent/tasks/:id/job', { schema: { params: IdParams, querystring: NoQuery, body: JobBody, response: { 200: OkReply } } }, async (req) => {
    const site = requireSite(req.principal!, 'task.poll');
    await siteTask(site.id, req.params.id);
    if (!(await store.getPlacement(req.params.id))) throw new HttpError(409, 'not_placed', `task ${req.params.id} has no placement`);
    await store.updatePlacement(req.params.id, { jobId: req.body.jobId, state: req.body.state });
    return { ok: true };
  });

  app.post<{ Params: { id: string }; Body: UsageRequest }>('/v1/agent/tasks/:id/usage', { schema: { params: IdParams, querystring: NoQuery, body: UsageBody, response: { 201: RecordedReply } } }, async (req, reply) => {
    const site = requireSite(req.principal!, 'update.submit');
    const task = await siteTask(site.id, req.params.id);
    // Built and checked as a result's own usage is (usage-record.ts); a task's usage is recorded once.
    const r = await usageRecordOf(store, site, task, req.body, now());
    const recorded = await store.transaction((tx) => recordUsageInTx(tx, r));
    if (!recorded) throw new HttpError(409, 'conflict', `usage of task ${task.id} is already recorded`);
    return reply.status(201).send({ recorded: true });
  });

  app.post<{ Params: { id: string }; Body: RefuseRequest }>('/v1/agent/tasks/:id/refuse', { schema: { params: IdParams, querystring: NoQuery, body: RefuseBody, response: { 200: RecordedReply } } }, async (req) => {
    const site = requireSite(req.principal!, 'update.submit');
    const task = await siteTask(site.id, req.params.id);
    if (task.status !== 'issued' && task.status !== 'delivered') throw new HttpError(409, 'conflict', `task ${task.id} is ${task.status}`);
    const t = now();
    const reason = `site ${site.name} refused task ${task.id}: ${req.body.reason}`;
    // One transaction, closing the task first: of two refusals (or a refusal and the deadline) one wins, and the
    // refusal row, the event, the audit entry and the placement's state are written with the close or not at all.
    const closed = await store.transaction(async (tx) => {
      // A refused task is closed: it is not delivered again (the agent would refuse it on every poll) and takes no result.
      if (!(await tx.refuseTask(task.id, t))) return false;
      await tx.countRefusal({ study_id: task.study_id, round: task.round, site_id: site.id, task_id: task.id, code: 'site_refused', reason, at: t });
      await tx.addEvent({ studyId: task.study_id, kind: 'task.refused', actor: site.id, data: { task: task.id, reason: req.body.reason }, at: t });
      await appendAudit(tx, ctx.audit.key, { ts: t, actor: site.id, kind: 'update.refused', subject: task.id, data: { study: task.study_id, round: task.round, site: site.name, by: 'site', reason: req.body.reason } });
      if (await tx.getPlacement(task.id)) await tx.updatePlacement(task.id, { state: 'refused' });
      return true;
    });
    if (!closed) throw new HttpError(409, 'conflict', `task ${task.id} is no longer open; it takes no refusal`);
    ctx.bus.emit({ type: 'update.refused', studyId: task.study_id, round: task.round, siteId: site.id, reason });
    // A refusal is the site's answer: a round whose every site has answered closes now (round-close.ts).
    ctx.engine.roundReady(task.study_id);
    return { recorded: true };
  });
}
