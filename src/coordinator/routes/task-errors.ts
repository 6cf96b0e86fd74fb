/**
 * POST /v1/agent/tasks/:id/error: a site that cannot run its task says why (reason code and message, see
 * protocol/task-errors.ts). In one transaction the task closes as failed (it is not delivered again), the error
 * is recorded (one per task: a second answers 409) and audited (`task.failed`); then the study lead's views hear
 * of it at once (`task.failed` on the event stream) and the engine is woken, so a round whose every site has
 * answered closes now rather than at its deadline (round-close.ts).
 */
import type { RoutePlugin } from './context.js';
import { IdParams, NoQuery } from '../../protocol/replies.js';
import { TaskErrorRequestSchema, TaskErrorResponseSchema, type TaskErrorRequest, type TaskErrorResponse } from '../../protocol/task-errors.js';
import { appendAudit } from '../../governance/audit-store.js';
import { HttpError, requireSite } from '../auth.js';

export const taskErrorRoutes: RoutePlugin = async (app, ctx) => {
  const { store, bus, now } = ctx;

  app.post<{ Params: { id: string }; Body: TaskErrorRequest; Reply: TaskErrorResponse }>(
    '/v1/agent/tasks/:id/error',
    {
      schema: {
        params: IdParams,
        querystring: NoQuery,
        body: TaskErrorRequestSchema,
        response: { 200: TaskErrorResponseSchema },
      },
    },
    async (req) => {
      // Reporting on its own task is part of a site taking part in a study, like a result or a refusal.
      const site = requireSite(req.principal!, 'update.submit');
      const task = await store.getTask(req.params.id);
      if (!task || task.site_id !== site.id) throw new HttpError(403, 'forbidden', `task ${req.params.id} was not given to this site`);
      const { code, message } = req.body;
      const t = now();
      const closed = await store.transaction(async (tx) => {
        if (!(await tx.failTask({ task_id: task.id, study_id: task.study_id, round: task.round, site_id: site.id, code, message, at: t }))) return false;
        await tx.addEvent({ studyId: task.study_id, kind: 'task.failed', actor: site.id, data: { task: task.id, code, message }, at: t });
        await appendAudit(tx, ctx.audit.key, { ts: t, actor: site.id, kind: 'task.failed', subject: task.id, data: { study: task.study_id, round: task.round, site: site.name, code, message } });
        return true;
      });
      if (!closed) {
        const cur = await store.getTask(task.id);
        throw new HttpError(409, 'conflict', `task ${task.id} is ${cur?.status ?? 'gone'}: only an open task (issued or delivered) takes an error, once`);
      }
      if (await store.getPlacement(task.id)) await store.updatePlacement(task.id, { state: 'failed' });
      bus.emit({ type: 'task.failed', studyId: task.study_id, round: task.round, siteId: site.id, site: site.name, taskId: task.id, code, message });
      ctx.engine.roundReady(task.study_id);
      return { recorded: true, taskId: task.id, status: 'failed' as const };
    },
  );
};
