/**
 * What the agent does when it cannot run a task: it tells the coordinator once, with a reason code and a message
 * (POST /v1/agent/tasks/:id/error, protocol/task-errors.ts), so the study lead sees it at once and the round goes
 * on without this site, instead of the agent retrying the task in its own log every second until the deadline.
 *
 * And when the agent itself keeps failing (the coordinator refuses it, the same task keeps coming back), it waits
 * longer each time (exponential, capped, reset on success) rather than polling in a tight loop; a task whose result
 * the coordinator refused three times is given up with a task error (result_refused).
 */
import { basename } from 'node:path';
import type { StudyModelSpec, TaskMessage } from '../protocol/api.js';
import { TASK_ERROR_CODES, type TaskErrorCode } from '../protocol/task-errors.js';
import { ApiError, CoordinatorUnavailable, TlsTrustError, type HttpClient } from './http.js';
import { CsvError } from './data/csv.js';
import { SchemaMismatchError } from './data/tabular.js';
import { ExternalTrainerError } from './trainers/external.js';
import { MappingError } from '../datasources/mapping.js';

/** Thrown where the agent knows why a task cannot run; the code is what the study lead filters on. */
export class TaskFailure extends Error {
  override name = 'TaskFailure';
  constructor(
    readonly code: TaskErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** File-system errors that mean the site's data is not where its config says (or not readable). */
const DATA_ERRNO = new Set(['ENOENT', 'EACCES', 'EISDIR', 'ENOTDIR', 'EPERM']);

/**
 * The task error for an exception thrown while running a task, or undefined when it is not the task's fault: the
 * coordinator refused a request, is unreachable or untrusted, or the agent is stopping. Those go on to the agent's
 * own retry. Paths are cut to their file name: the study lead needs to know which file, not the hospital's layout.
 */
export function classifyTaskError(e: unknown): { code: TaskErrorCode; message: string } | undefined {
  if (e instanceof ApiError || e instanceof CoordinatorUnavailable || e instanceof TlsTrustError) return undefined;
  if (!(e instanceof Error) || e.name === 'AbortError') return undefined;
  if (e instanceof ExternalTrainerError && e.kind === 'aborted') return undefined;
  let code: TaskErrorCode;
  let message = e.message;
  if (e instanceof TaskFailure) code = e.code;
  else if (e instanceof ExternalTrainerError) code = 'trainer_failed';
  else if (e instanceof CsvError) {
    code = 'bad_data';
    message = message.split(e.file).join(basename(e.file));
  } else if (e instanceof SchemaMismatchError || e instanceof MappingError) code = 'bad_data';
  else if (DATA_ERRNO.has((e as NodeJS.ErrnoException).code ?? '')) {
    code = 'bad_data';
    const path = (e as NodeJS.ErrnoException).path;
    if (path) message = message.split(path).join(basename(path));
  } else if (/^cannot read data file /.test(message)) {
    // readCsv's own wording (datasources/csv.ts) for a file that is not there or not readable.
    code = 'bad_data';
    message = message.replace(/^cannot read data file (\S+?):/, (_, p: string) => `cannot read data file ${basename(p)}:`).replace(/'\/[^']*\/([^'/]+)'/g, "'$1'");
  } else code = 'other';
  if (!(TASK_ERROR_CODES as readonly string[]).includes(code)) code = 'other';
  return { code, message: (message.trim() || e.name).slice(0, 2000) };
}

/**
 * Reports `e` as the task's error and returns; rethrows what is not a task error (see classifyTaskError), and a
 * report the coordinator would not take other than "already closed" (409: the round went on, or it was reported).
 */
export async function reportTaskError(http: HttpClient, task: Pick<TaskMessage, 'taskId'>, e: unknown, log: (m: string) => void): Promise<void> {
  const err = classifyTaskError(e);
  if (!err) throw e;
  log(`task ${task.taskId}: cannot run it (${err.code}): ${err.message}; telling the coordinator`);
  try {
    await http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/error`, err);
  } catch (x) {
    if (x instanceof ApiError && x.status === 409) return log(`task ${task.taskId}: already closed at the coordinator (${x.message})`);
    throw x;
  }
}

/** A built-in model whose input width is not what this site's data encodes to cannot train here. */
export function checkModelFits(model: StudyModelSpec, columns: number): void {
  if (!('inputDim' in model) || model.inputDim === columns) return;
  throw new TaskFailure('model_mismatch', `the study's ${model.kind} model takes ${model.inputDim} inputs; this site's data encodes to ${columns} columns under the study's schema`);
}

/** How many times the coordinator may refuse a task's result before the site gives the task up (result_refused). */
export const MAX_REFUSED_RESULTS = 3;

/**
 * The results the coordinator refused, per task. A refused result is redone (the next poll hands the task back),
 * but a result that cannot pass (more examples than the site declared, the wrong tensors…) would be redone until
 * the deadline: after MAX_REFUSED_RESULTS refusals the site reports a task error instead, with the last reason.
 */
export class RefusedResults {
  private readonly byTask = new Map<string, { n: number; last: string }>();
  note(taskId: string, reason: string): void {
    const c = this.byTask.get(taskId);
    this.byTask.set(taskId, { n: (c?.n ?? 0) + 1, last: reason });
    // Bounded: only the latest few tasks matter.
    if (this.byTask.size > 64) this.byTask.delete(this.byTask.keys().next().value!);
  }
  /** The task error to report instead of running the task again, or undefined while it may still pass. */
  giveUp(taskId: string): TaskFailure | undefined {
    const c = this.byTask.get(taskId);
    if (!c || c.n < MAX_REFUSED_RESULTS) return undefined;
    this.byTask.delete(taskId);
    return new TaskFailure('result_refused', `the coordinator refused this site's result ${c.n} times; the last time: ${c.last}`);
  }
}

/**
 * Exponential backoff for the agent's loop: 1 s, 2 s, 4 s … capped (60 s by default), back to the start after a
 * success. `failed` says how long to wait after one more failure in a row.
 */
export class Backoff {
  private failures = 0;
  constructor(
    readonly baseMs = 1000,
    readonly maxMs = 60_000,
  ) {}
  failed(): number {
    this.failures++;
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.failures - 1, 30));
  }
  reset(): void {
    this.failures = 0;
  }
  get streak(): number {
    return this.failures;
  }
}

/** Waits `ms`, or less if `signal` aborts. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done);
  });
}
