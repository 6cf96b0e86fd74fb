/**
 * Wakes the long-polls for tasks another coordinator issued. The engine of this process wakes its own sites
 * through the bus at once; a task issued by another coordinator on the same PostgreSQL is seen here, once a second,
 * by ONE query for the tasks issued lately (Store.issuedTasksSince), and announced on the bus like the engine's.
 * Each waiting long-poll used to re-read its site's pending tasks every second instead: a thousand waiting sites
 * were a thousand queries a second, each after its request's authentication.
 *
 * With several coordinators on one PostgreSQL, the one that issued tasks also says so (Store.peers, a NOTIFY): the
 * others look at once instead of at their next second, so a site whose long-poll waits at another process gets its
 * task as soon as one waiting here does.
 *
 * Only a hint, as the bus is: a long-poll reads the store when it starts, so a task missed here (a clock far
 * behind this one's window) reaches its site at its next poll.
 */
import type { Store } from '../store/store.js';
import type { EventBus } from './events.js';

/** How far back each look reaches, in the store's own created_at: covers clocks that differ and slow looks. */
const WINDOW_MS = 60_000;

export class TaskWake {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** A look was asked for while one ran: it may have read before the new tasks committed, so look once more. */
  private again = false;
  /** Task ids already announced, with their created_at, kept for the window. */
  private readonly seen = new Map<string, number>();
  private latest = 0;

  constructor(
    private readonly store: Store,
    private readonly bus: EventBus,
    private readonly everyMs = 1000,
  ) {}

  private off: (() => void) | undefined;
  private offPeers: (() => void) | undefined;
  /** Task ids this process announced itself, with when (this machine's clock: the store's may be another's), kept for the window. */
  private readonly announced = new Map<string, number>();

  start(): void {
    this.timer ??= setInterval(() => void this.look(), this.everyMs);
    this.timer.unref();
    // The tasks this process's engine issued and announced itself: announcing them again a second later woke every
    // site whose next long-poll was already waiting, for a pendingTasks query that found nothing (a third of a
    // round's pendingTasks statements, SETU_SQL_TRACE over bench live). Another coordinator's tasks still come here.
    this.off ??= this.bus.on((e) => {
      if (e.type !== 'tasks' || !e.taskIds) return;
      const at = Date.now();
      for (const id of e.taskIds) this.announced.set(id, at);
      this.store.peers?.publish({ kind: 'tasks' });
    });
    this.offPeers ??= this.store.peers?.subscribe((s) => {
      if (s.kind === 'tasks') void this.look();
    });
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.off?.();
    this.off = undefined;
    this.offPeers?.();
    this.offPeers = undefined;
  }

  /** One look: announces the sites of issued tasks not announced yet. */
  async look(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      const rows = await this.store.issuedTasksSince(this.latest - WINDOW_MS);
      const sites = new Set<string>();
      for (const r of rows) {
        this.latest = Math.max(this.latest, r.created_at);
        if (this.seen.has(r.id) || this.announced.has(r.id)) continue;
        this.seen.set(r.id, r.created_at);
        sites.add(r.site_id);
      }
      for (const [id, at] of this.seen) if (at < this.latest - WINDOW_MS) this.seen.delete(id);
      const t = Date.now();
      for (const [id, at] of this.announced) if (at < t - WINDOW_MS) this.announced.delete(id);
      if (sites.size) this.bus.emit({ type: 'tasks', siteIds: [...sites] });
    } catch {
      // The store is unavailable: the next look tries again (the long-polls answer 204 and come back meanwhile).
    } finally {
      this.running = false;
    }
    if (this.again) {
      this.again = false;
      await this.look();
    }
  }
}
