/**
 * In-process notifications: wake long-polls when tasks are issued and feed live views (SSE). With several
 * coordinator processes on one PostgreSQL the live events of each reach the others' buses (peer-events.ts).
 * Only a hint: every waiter re-reads the store, so several coordinator processes stay correct
 * (they also poll the store on a timer).
 */
import { EventEmitter } from 'node:events';
import type { TaskProgress } from '../protocol/api.js';
import type { TaskRow } from '../store/store.js';

export type CoordinatorEvent =
  /**
   * Tasks issued for these sites. `taskIds`: the tasks issued, when the emitter has them (TaskWake then does not
   * announce them a second time). `tasks`: the rows themselves, when the emitter has just created them (a round or
   * version opened by this process): a woken long-poll delivers its own with one compare-and-set, no read.
   */
  | { type: 'tasks'; siteIds: string[]; taskIds?: string[]; tasks?: TaskRow[] }
  // A user's or site's identity changed (revoked, key rotated): its open event streams re-check it at once.
  | { type: 'identity.changed'; id: string }
  | { type: 'round.opened'; studyId: string; round: number; kind: string; sites: number }
  | { type: 'update.accepted'; studyId: string; round: number; siteId: string; received: number; expected: number }
  | { type: 'update.refused'; studyId: string | null; round: number | null; siteId: string | null; reason: string }
  | { type: 'round.committed'; studyId: string; round: number; kind: string; metrics: Record<string, number> }
  | { type: 'study.status'; studyId: string; status: string; error?: string | null }
  | { type: 'task.progress'; studyId: string; round: number; siteId: string; taskId: string; progress: TaskProgress }
  // A site could not run its task (routes/task-errors.ts); `site` is its name, `code` one of TASK_ERROR_CODES.
  | { type: 'task.failed'; studyId: string; round: number; siteId: string; site: string; taskId: string; code: string; message: string };

export class EventBus {
  private readonly ee = new EventEmitter();
  /** Events another coordinator process emitted (peer-events.ts): shown on streams, not counted or relayed again. */
  private readonly peers = new WeakSet<CoordinatorEvent>();
  constructor() {
    this.ee.setMaxListeners(0);
  }
  emit(e: CoordinatorEvent): void {
    this.ee.emit('event', e);
  }
  /** Emits an event that happened at another coordinator on the same database. */
  emitFromPeer(e: CoordinatorEvent): void {
    this.peers.add(e);
    this.emit(e);
  }
  /** Whether `e` happened at another coordinator (its metrics and relays are that process's). */
  fromPeer(e: CoordinatorEvent): boolean {
    return this.peers.has(e);
  }
  on(fn: (e: CoordinatorEvent) => void): () => void {
    this.ee.on('event', fn);
    return () => this.ee.off('event', fn);
  }
  /** Resolves when `pred` matches an event or after `ms`; returns whether it matched. */
  waitFor(pred: (e: CoordinatorEvent) => boolean, ms: number, signal?: AbortSignal): Promise<boolean> {
    return this.next(pred, ms, signal).then((e) => e !== undefined);
  }

  /** The next event that matches, or undefined once `ms` passed or `signal` aborted. */
  next(pred: (e: CoordinatorEvent) => boolean, ms: number, signal?: AbortSignal): Promise<CoordinatorEvent | undefined> {
    return new Promise((resolve) => {
      const done = (v: CoordinatorEvent | undefined) => {
        clearTimeout(timer);
        off();
        signal?.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const off = this.on((e) => pred(e) && done(e));
      const timer = setTimeout(() => done(undefined), ms);
      const onAbort = () => done(undefined);
      signal?.addEventListener('abort', onAbort);
    });
  }
}
