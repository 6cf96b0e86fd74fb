/**
 * What a site says about its trainer: its declared capabilities (PUT /v1/agent/trainer, checked when a study
 * starts, see trainer-capabilities.ts) and the progress lines its trainer prints while a task runs
 * (POST /v1/agent/tasks/:id/progress), which the study lead sees in the study's detail and on the event stream.
 * Both are small documents kept in the store's key-value table: the latest declaration per site, the latest
 * progress per task.
 */
import type { RoutePlugin } from './context.js';
import { TaskProgressSchema, TrainerDeclarationSchema, type TaskProgress, type TrainerDeclaration } from '../../protocol/api.js';
import type { Store } from '../../store/store.js';
import { HttpError, requireSite } from '../auth.js';
import { IdParams, NoQuery, OkReply, TrainerDeclaredReply } from '../../protocol/replies.js';

const trainerKey = (siteId: string) => `site:${siteId}:trainer`;
const progressKey = (taskId: string) => `task:${taskId}:progress`;

export async function declaredTrainer(store: Store, siteId: string): Promise<TrainerDeclaration | undefined> {
  const v = await store.getKv(trainerKey(siteId));
  return v ? (JSON.parse(v) as TrainerDeclaration) : undefined;
}

export interface ProgressView extends TaskProgress {
  /** Site id (the study detail route names it). */
  site: string;
  taskId: string;
  at: number;
}

/** The latest progress of each task of a round, in task order. */
export async function progressOfRound(store: Store, studyId: string, round: number): Promise<ProgressView[]> {
  const out: ProgressView[] = [];
  for (const t of await store.listTasks(studyId, round)) {
    if (t.status !== 'delivered') continue; // issued: not started; done or closed: its result or refusal says more
    const v = await store.getKv(progressKey(t.id));
    if (v) out.push({ ...(JSON.parse(v) as TaskProgress & { at: number }), site: t.site_id, taskId: t.id });
  }
  return out;
}

export const trainerRoutes: RoutePlugin = async (app, ctx) => {
  const { store, bus, now } = ctx;

  // Declared like its cohorts and compute: part of the site submitting plausible updates (update.submit).
  app.put<{ Body: TrainerDeclaration }>('/v1/agent/trainer', { schema: { querystring: NoQuery, body: TrainerDeclarationSchema, response: { 200: TrainerDeclaredReply } } }, async (req) => {
    const site = requireSite(req.principal!, 'update.submit');
    await store.setKv(trainerKey(site.id), JSON.stringify(req.body));
    return { siteId: site.id, trainer: req.body };
  });

  app.post<{ Params: { id: string }; Body: TaskProgress }>('/v1/agent/tasks/:id/progress', { schema: { params: IdParams, querystring: NoQuery, body: TaskProgressSchema, response: { 200: OkReply } } }, async (req) => {
    const site = requireSite(req.principal!, 'update.submit');
    const task = await store.getTask(req.params.id);
    if (!task || task.site_id !== site.id) throw new HttpError(403, 'forbidden', `task ${req.params.id} was not given to this site`);
    if (task.status !== 'issued' && task.status !== 'delivered') throw new HttpError(409, 'conflict', `task ${task.id} is ${task.status}`);
    const p = req.body;
    for (const [k, v] of Object.entries(p.metrics ?? {})) if (!Number.isFinite(v)) throw new HttpError(400, 'non_finite', `progress metric ${k} is not finite`);
    const at = now();
    await store.setKv(progressKey(task.id), JSON.stringify({ ...p, at }));
    bus.emit({ type: 'task.progress', studyId: task.study_id, round: task.round, siteId: site.id, taskId: task.id, progress: p });
    return { ok: true };
  });
}
