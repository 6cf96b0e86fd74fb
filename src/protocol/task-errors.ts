/**
 * A task error: a site that cannot run a task (its data is broken, the model does not fit its data, its trainer
 * crashed, its privacy budget is spent) says so at once, with a reason code and a message, instead of retrying it
 * in its own log until the round's deadline. `POST /v1/agent/tasks/:id/error` closes the task (one error per
 * task); the study lead sees it per site in `GET /v1/studies/:id` (`taskErrors`), `setu study status`, the
 * dashboard and the event stream (`task.failed`).
 *
 * A refusal (`…/refuse`) is different: the site could run the task and its policy says no. Both count as the
 * site's answer, so a round whose every site answered closes without waiting for its deadline.
 */
import { Type, type Static } from '@sinclair/typebox';

/**
 * Why a site could not run a task. `other` is anything the agent could not classify (its message says what);
 * `result_refused`: the coordinator refused the site's result for the task three times, so the site gave up on it.
 */
export const TASK_ERROR_CODES = ['bad_data', 'model_mismatch', 'trainer_failed', 'budget_exhausted', 'placement_failed', 'result_refused', 'other'] as const;
export type TaskErrorCode = (typeof TASK_ERROR_CODES)[number];

/** What each code means, for help texts and the dashboard's tooltips. */
export const TASK_ERROR_MEANING: Record<TaskErrorCode, string> = {
  bad_data: "the site's dataset could not be read or does not match the study's data schema",
  model_mismatch: "the study's model does not fit the site's data (input width, labels, tensor layout)",
  trainer_failed: "the site's trainer crashed, hung past its timeout or produced unusable weights",
  budget_exhausted: "the task would take the site past its privacy budget for the study",
  placement_failed: 'the compute job placed for the task could not run',
  result_refused: "the coordinator refused the site's result for the task three times; the site stopped redoing it",
  other: 'an error the agent could not classify (the message says what)',
};

export const TaskErrorRequestSchema = Type.Object(
  {
    // A string enum (not a union of literals), so a refusal says "must be one of the allowed values" and lists them.
    code: Type.Unsafe<TaskErrorCode>({ type: 'string', enum: [...TASK_ERROR_CODES], description: `one of ${TASK_ERROR_CODES.join(', ')}` }),
    message: Type.String({ minLength: 1, maxLength: 2000, description: 'what went wrong, for the study lead (no patient data)' }),
  },
  { additionalProperties: false },
);
export type TaskErrorRequest = Static<typeof TaskErrorRequestSchema>;

export const TaskErrorResponseSchema = Type.Object(
  { recorded: Type.Boolean(), taskId: Type.String(), status: Type.Literal('failed') },
  { additionalProperties: false },
);
export type TaskErrorResponse = Static<typeof TaskErrorResponseSchema>;

/** A task error as the study detail shows it (site by name). */
export const TaskErrorViewSchema = Type.Object(
  {
    round: Type.Integer(),
    site: Type.String({ description: 'site name' }),
    taskId: Type.String(),
    code: Type.String(),
    message: Type.String(),
    at: Type.Number(),
  },
  { additionalProperties: true },
);
export type TaskErrorView = Static<typeof TaskErrorViewSchema>;
